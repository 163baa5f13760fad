"""A real Dovecot for the tests: ``dovecot -F -c <generated config>`` on free loopback ports.

Debian packages: ``dovecot-imapd`` (pulls in ``dovecot-core``) and ``openssl`` (the test
certificate). Everything lives in a fresh directory under ``/tmp`` (``base_dir``, ``state_dir``,
the log, the passwd-file, the maildirs); nothing from ``/etc/dovecot`` is read.

Quirks of running it from a test suite as root:

* the master runs as root; login processes run as ``dovenull`` and internal ones as
  ``dovecot`` (both users are created by the package);
* Dovecot never lets mail processes run as UID 0, so mail belongs to the ``mail`` user
  (``nobody`` when there is no ``mail``); ``first_valid_uid`` is lowered to allow it and the
  work directory is made world-traversable (0755) for those users;
* ``auth_failure_delay = 0`` and no ``anvil-auth-penalty`` socket: after a wrong password
  Dovecot would otherwise delay every later login from 127.0.0.1 by 2 to 15 seconds;
  ``mailbox_idle_check_interval = 1 secs`` (IDLE notices new mail quickly even without
  inotify), ``disable_plaintext_auth = no`` (LOGIN over plain loopback connections);
* ``ssl = yes`` with a self-signed EC certificate, so both STARTTLS (port ``imap_port``) and
  implicit TLS (``imaps_port``) can be tested (clients use ``verify_tls=False``);
* the process group is Dovecot's own, so :meth:`DovecotServer.kill` and
  :meth:`DovecotServer.freeze` reach the per-connection ``imap`` processes too.

Users can be added while it runs, so one server can serve a whole test session with a fresh
user per test: each user has its own passwd-file (``users/%u.passwd``). A single shared file
would not do: Dovecot checks it for changes at most once a second.

``DovecotServer.start(oauth2_introspection_url=URL)`` also accepts ``AUTHENTICATE XOAUTH2``
and ``OAUTHBEARER``: an ``oauth2`` passdb (before the passwd-file one, which then serves only
PLAIN and LOGIN) asks ``URL`` (RFC 7662 introspection, ``introspection_mode = post``) whether
the bearer token is active and whose it is (``username``); the user must still exist
(:meth:`DovecotServer.add_user`, the userdb). Without it the configuration is the default one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailbot.devservers import self_signed_cert
from mailbot.endpoints import Endpoint, Security

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 3

CONFIG_TEMPLATE = """\
base_dir = {base}/run
state_dir = {base}/state
instance_name = mailbot-test-{instance}
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:~/Maildir
mail_fsync = never
mailbox_idle_check_interval = 1 secs
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/users/%u.passwd
}}
userdb {{
  driver = passwd-file
  args = {base}/users/%u.passwd
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
"""


OAUTH2_TEMPLATE = """\
introspection_mode = post
introspection_url = {url}
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 10000
"""

OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {base}/dovecot-oauth2.conf.ext
}}
passdb {{
  mechanisms = plain login
"""


def _with_oauth2(config: str, base: Path, url: str) -> str:
    """The default configuration plus the oauth2 passdb (see the module docstring)."""
    (base / "dovecot-oauth2.conf.ext").write_text(OAUTH2_TEMPLATE.format(url=url))
    mechanisms = "auth_mechanisms = plain login\n"
    assert config.count(mechanisms) == 1 and config.count("passdb {\n") == 1
    config = config.replace(mechanisms, "auth_mechanisms = plain login xoauth2 oauthbearer\n")
    return config.replace("passdb {\n", OAUTH2_PASSDB.format(base=base))


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` binary (also looked for in /usr/sbin), or None."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def dovecot_missing_reason() -> str | None:
    """Why Dovecot cannot be started here, or None when it can."""
    if dovecot_binary() is None:
        return "dovecot is not installed (Debian: apt-get install dovecot-imapd openssl)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (Debian: apt-get install openssl)"
    if os.geteuid() != 0:
        return "the Dovecot harness runs dovecot as root (as CI does); this user is not root"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} is missing (the dovecot-core package creates it)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mail_owner() -> pwd.struct_passwd:
    for name in ("mail", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("no 'mail' or 'nobody' user to own the test maildirs")


@dataclass
class DovecotServer:
    """A running Dovecot; start with :meth:`start`, always :meth:`stop`."""

    base: Path
    imap_port: int
    imaps_port: int
    host: str = "127.0.0.1"
    oauth2_introspection_url: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    users: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def start(cls, *, oauth2_introspection_url: str | None = None) -> DovecotServer:
        """Start Dovecot in a fresh directory; ``RuntimeError`` (with its log) when it fails.

        ``oauth2_introspection_url``: also accept XOAUTH2 tokens that URL says are active.
        """
        reason = dovecot_missing_reason()
        if reason is not None:
            raise RuntimeError(reason)
        last_error = ""
        for _ in range(_START_ATTEMPTS):  # a free port can be taken before dovecot binds it
            base = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))
            server = cls(
                base=base,
                imap_port=_free_port(),
                imaps_port=_free_port(),
                oauth2_introspection_url=oauth2_introspection_url,
            )
            try:
                server._prepare()
                server._launch()
                return server
            except RuntimeError as exc:
                last_error = str(exc)
                server.stop()
        raise RuntimeError(f"dovecot did not start: {last_error}")

    def _prepare(self) -> None:
        base = self.base
        base.chmod(0o755)  # the mail and auth processes (not root) must reach their files
        for sub in ("run", "state", "mail", "users"):
            (base / sub).mkdir()
        owner = _mail_owner()
        os.chown(base / "mail", owner.pw_uid, owner.pw_gid)
        tls = self_signed_cert(base)
        config = CONFIG_TEMPLATE.format(
            base=base,
            instance=base.name.rsplit("-", 1)[-1],
            cert=tls.cert,
            key=tls.key,
            mail_uid=owner.pw_uid,
            mail_gid=owner.pw_gid,
            internal_user="dovecot",
            internal_group="dovecot",
            login_user="dovenull",
            imap_port=self.imap_port,
            imaps_port=self.imaps_port,
        )
        if self.oauth2_introspection_url is not None:
            config = _with_oauth2(config, base, self.oauth2_introspection_url)
        (base / "dovecot.conf").write_text(config)

    def _launch(self) -> None:
        binary = dovecot_binary()
        assert binary is not None
        with (self.base / "stdout.log").open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "-F", "-c", str(self.base / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill/freeze reach children
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection((self.host, self.imap_port), timeout=1.0) as sock:
                    sock.settimeout(2.0)
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot not answering on port {self.imap_port}: {self.log()}")

    def log(self) -> str:
        """The server's log files (for failure messages)."""
        parts = []
        for name in ("stdout.log", "dovecot.log"):
            path = self.base / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        """Stop Dovecot (and every process it started) and delete its directory."""
        if self.process is not None:
            self._signal_group(signal.SIGCONT)  # in case it was frozen
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT)
            self._signal_group(signal.SIGKILL)  # leftovers in its process group, if any
            self.process = None
        shutil.rmtree(self.base, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL Dovecot and its children: every connection is cut, like a crash."""
        self._signal_group(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(STOP_TIMEOUT)

    def freeze(self) -> None:
        """SIGSTOP the whole server: connections stay open, nothing answers (half-open)."""
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        """Undo :meth:`freeze`."""
        self._signal_group(signal.SIGCONT)

    # ------------------------------------------------------------------ users

    def add_user(self, name: str, password: str) -> None:
        """Add a mail user with an empty INBOX, usable at once (a new passwd-file of its own)."""
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"user name {name!r}: letters, digits, - and _ only")
        if ":" in password or "\n" in password:
            raise ValueError("':' and newlines cannot appear in a passwd-file entry")
        owner = _mail_owner()
        home = self.base / "mail" / name
        home.mkdir()
        os.chown(home, owner.pw_uid, owner.pw_gid)
        self.users[name] = password
        entry = f"{name}:{{PLAIN}}{password}:{owner.pw_uid}:{owner.pw_gid}::{home}::\n"
        passwd = self.base / "users" / f"{name}.passwd"
        passwd.write_text(entry)
        passwd.chmod(0o644)  # read by the auth process, which is not root

    def refuse_login(self, user: str, reason: str) -> None:
        """Make Dovecot refuse ``user``'s password login with ``NO [CONTACTADMIN] <reason>``.

        A passwd-file ``nologin=y reason=...`` extra field; extra fields are split at spaces, so
        the spaces of ``reason`` are sent as tabs.
        """
        passwd = self.base / "users" / f"{user}.passwd"
        entry = passwd.read_text().rstrip("\n")
        passwd.write_text(f"{entry} nologin=y reason={reason.replace(' ', chr(9))}\n")

    def endpoint(
        self,
        user: str,
        security: Security = Security.PLAIN,
        *,
        mailbox: str = "INBOX",
        password: str | None = None,
    ) -> Endpoint:
        """An endpoint for ``user``: plain and STARTTLS on ``imap_port``, TLS on ``imaps_port``."""
        return Endpoint(
            protocol="imap",
            security=security,
            host=self.host,
            port=self.imaps_port if security is Security.TLS else self.imap_port,
            user=user,
            password=self.users[user] if password is None else password,
            mailbox=mailbox,
            verify_tls=False,  # self-signed; Endpoint allows this for loopback only
        )
