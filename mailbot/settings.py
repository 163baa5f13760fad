"""Connection settings from the environment (a systemd EnvironmentFile) and CLI overrides.

The variables (all ``MAILBOT_*``) are listed with their defaults in the README's "Configure"
table: IMAP_URL, SMTP_URL, IMAP_PASSWORD[_FILE], SMTP_PASSWORD[_FILE], DB_URL, RULES,
TEMPLATES, STATE_DIR, ACK, TLS_VERIFY, BATCH, IDLE_SECONDS, POLL_SECONDS, MAX_MESSAGE_BYTES,
SECRET[_FILE], STOP_TIMEOUT, LEASE_SECONDS, MAILBOXES.
IMAP_AUTH and SMTP_AUTH (``password`` or ``xoauth2``); for XOAUTH2 the ``MAILBOT_OAUTH_*``
variables read by :func:`mailbot.oauth.oauth_config_from_env`.
HTTP_LISTEN (the /metrics and /healthz endpoint: unset or ``off``, a port on 127.0.0.1,
``HOST:PORT`` or ``[IPv6]:PORT``; :mod:`mailbot.web_endpoint`) and LOG_FORMAT (``text`` or
``json``; :mod:`mailbot.log_setup`).
A password file is read once at start-up and stripped of its trailing newline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailbot.endpoints import Auth, Endpoint, parse_endpoint
from mailbot.errors import ConfigError
from mailbot.log_setup import parse_log_format
from mailbot.oauth import TokenSource, oauth_config_from_env
from mailbot.tickets.database import sqlite_url
from mailbot.web_endpoint import parse_listen

ACK_FLAG = "flag"
DONE_KEYWORD = "$MailbotDone"


@dataclass(frozen=True, slots=True)
class AckMode:
    """How a committed message is acknowledged on the server."""

    move_to: str | None  # a folder, or None to flag in place

    @classmethod
    def parse(cls, text: str) -> AckMode:
        if text == ACK_FLAG:
            return cls(None)
        kind, _, folder = text.partition(":")
        if kind == "move" and folder.strip():
            return cls(folder.strip())
        raise ConfigError(f"MAILBOT_ACK {text!r}: use 'flag' or 'move:FOLDER'")


@dataclass(frozen=True, slots=True)
class Settings:
    imap: Endpoint | None
    smtp: Endpoint | None
    db_url: str
    rules_path: Path
    templates_dir: Path
    state_dir: Path
    ack: AckMode = AckMode(None)
    batch: int = 50
    #: A fetch batch is cut into parts of at most this many bytes (RFC822.SIZE), each
    #: fetched, committed and acknowledged on its own: big mail is never held whole.
    batch_bytes: int = 16 * 1024 * 1024
    idle_seconds: float = 600.0
    poll_seconds: float = 60.0
    max_message_bytes: int = 50 * 1024 * 1024
    #: The key that signs agents' reply tokens (MAILBOT_SECRET[_FILE]); None: a key file
    #: in ``state_dir`` (see ``mailbot.agents.secret_key``).
    secret: str | None = None
    #: SIGTERM: how long the outbox may take to flush before the daemon exits anyway
    #: (MAILBOT_STOP_TIMEOUT; keep it below the unit's TimeoutStopSec=).
    stop_timeout: float = 20.0
    #: The mailbox lease (mailbot.mailbox.lease): renewed every third of it; another
    #: daemon on the same database takes over this long after the holder stopped renewing.
    lease_seconds: float = 30.0
    #: Where /metrics and /healthz listen (MAILBOT_HTTP_LISTEN); None: not at all.
    http_listen: tuple[str, int] | None = None
    #: MAILBOT_LOG_FORMAT: ``text`` (``<N>`` priorities under journald) or ``json``.
    log_format: str = "text"
    #: MAILBOT_MAILBOXES: several mailboxes in this daemon (mailbot.mailboxes); None: one,
    #: from MAILBOT_IMAP_URL and the rest.
    mailboxes_file: Path | None = None
    #: MAILBOT_PARSE_WORKERS: processes that parse fetched batches ahead of intake
    #: (mailbot.ingest.parse_workers); 0: parse in the daemon. Default: 1 with two or more
    #: usable cores, else 0.
    parse_workers: int = 0

    def require_servers(self) -> tuple[Endpoint, Endpoint]:
        if self.imap is None or self.smtp is None:
            missing = [
                n
                for n, v in (("MAILBOT_IMAP_URL", self.imap), ("MAILBOT_SMTP_URL", self.smtp))
                if v is None
            ]
            raise ConfigError(f"{' and '.join(missing)} must be set to run the daemon")
        return self.imap, self.smtp


def _secret(env: Mapping[str, str], name: str) -> str | None:
    file_var = f"{name}_FILE"
    if env.get(file_var):
        path = Path(env[file_var])
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{file_var}={path}: cannot read: {exc.strerror}") from exc
    return env.get(name) or None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigError(f"{name}={text!r}: not a number") from exc
    if value <= 0:
        raise ConfigError(f"{name}={text!r}: must be positive")
    return value


def _parse_workers(env: Mapping[str, str]) -> int:
    text = env.get("MAILBOT_PARSE_WORKERS", "").strip()
    if text in ("", "auto"):
        try:
            cores = len(os.sched_getaffinity(0))  # what this process may use (CPUAffinity=)
        except OSError:
            cores = os.cpu_count() or 1
        return 1 if cores >= 2 else 0
    if not text.isdigit() or int(text) > 64:
        raise ConfigError(
            f"MAILBOT_PARSE_WORKERS={text!r}: a number of processes from 0 to 64, or 'auto'"
        )
    return int(text)


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    imap_url: str | None = None,
    smtp_url: str | None = None,
    db_url: str | None = None,
    rules: str | None = None,
) -> Settings:
    """Read settings; keyword arguments are CLI flags and win over the environment."""
    env = os.environ if env is None else env
    verify = env.get("MAILBOT_TLS_VERIFY", "1").strip().lower() not in {"0", "false", "no"}
    imap_text = imap_url or env.get("MAILBOT_IMAP_URL")
    smtp_text = smtp_url or env.get("MAILBOT_SMTP_URL")
    imap_auth = Auth.parse(env.get("MAILBOT_IMAP_AUTH"), "MAILBOT_IMAP_AUTH")
    smtp_auth = Auth.parse(env.get("MAILBOT_SMTP_AUTH"), "MAILBOT_SMTP_AUTH")
    tokens = None  # one token source for IMAP and SMTP
    if Auth.XOAUTH2 in {imap_auth if imap_text else None, smtp_auth if smtp_text else None}:
        tokens = TokenSource(oauth_config_from_env(env, lambda name: _secret(env, name)))
    imap = (
        parse_endpoint(
            imap_text,
            protocol="imap",
            password=_secret(env, "MAILBOT_IMAP_PASSWORD"),
            verify_tls=verify,
            auth=imap_auth,
            tokens=tokens,
        )
        if imap_text
        else None
    )
    smtp = (
        parse_endpoint(
            smtp_text,
            protocol="smtp",
            password=_secret(env, "MAILBOT_SMTP_PASSWORD"),
            verify_tls=verify,
            auth=smtp_auth,
            tokens=tokens,
        )
        if smtp_text
        else None
    )
    state_dir = Path(
        env.get("MAILBOT_STATE_DIR") or env.get("STATE_DIRECTORY", "").split(":")[0] or "state"
    )
    rules_path = Path(rules or env.get("MAILBOT_RULES") or "rules.yaml")
    templates = Path(env.get("MAILBOT_TEMPLATES") or rules_path.resolve().parent / "templates")
    return Settings(
        imap=imap,
        smtp=smtp,
        db_url=db_url or env.get("MAILBOT_DB_URL") or sqlite_url(state_dir / "mailbot.sqlite3"),
        rules_path=rules_path,
        templates_dir=templates,
        state_dir=state_dir,
        ack=AckMode.parse(env.get("MAILBOT_ACK", ACK_FLAG)),
        batch=int(_number(env, "MAILBOT_BATCH", 50)),
        batch_bytes=int(_number(env, "MAILBOT_BATCH_BYTES", 16 * 1024 * 1024)),
        idle_seconds=min(_number(env, "MAILBOT_IDLE_SECONDS", 600.0), 25 * 60.0),
        poll_seconds=_number(env, "MAILBOT_POLL_SECONDS", 60.0),
        max_message_bytes=int(_number(env, "MAILBOT_MAX_MESSAGE_BYTES", 50 * 1024 * 1024)),
        secret=_secret(env, "MAILBOT_SECRET"),
        stop_timeout=_number(env, "MAILBOT_STOP_TIMEOUT", 20.0),
        lease_seconds=_number(env, "MAILBOT_LEASE_SECONDS", 30.0),
        mailboxes_file=Path(env["MAILBOT_MAILBOXES"]) if env.get("MAILBOT_MAILBOXES") else None,
        http_listen=parse_listen(env.get("MAILBOT_HTTP_LISTEN")),
        log_format=parse_log_format(env.get("MAILBOT_LOG_FORMAT")),
        parse_workers=_parse_workers(env),
    )
