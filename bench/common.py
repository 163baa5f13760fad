"""Helpers shared by bench/latency.py, bench/memory.py and bench/startup.py.

Message generation follows bench/ingest.py (new requests in en/sv/it, threaded replies with
quotes, HTML-only mail, attachments) but yields lazily, so 100,000 messages never sit in
memory at once. Nothing here measures anything by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PASSWORD = "bench-password"
SUPPORT = "support@example.com"

SUBJECTS = [
    ("en", "Checkout fails with error 502", "Since this morning customers cannot pay. "),
    ("en", "Products missing from category page", "Several products vanished after the import. "),
    ("sv", "Kassan visar fel vid betalning", "Sedan i morse kan kunderna inte betala i kassan. "),
    ("sv", "Frakten räknas fel", "Fraktkostnaden blir dubbel för beställningar till Norge. "),
    ("it", "Errore durante l'importazione", "L'importazione dei prodotti si blocca al 50%. "),
    ("it", "Il pagamento non funziona", "I clienti non riescono a completare il pagamento. "),
]


def iter_messages(
    count: int,
    *,
    seed: int = 7,
    replies: bool = True,
    tag: str = "bench",
    attachment_bytes: int = 0,
) -> Iterator[bytes]:
    """``count`` messages, generated one at a time: new requests (60 %), threaded replies
    with quotes (30 %, only with ``replies``), HTML-only (10 %), PNG attachments (10 %).
    Every new request comes from a new address, so per-address storm brakes never apply.
    ``attachment_bytes``: every message also carries a PDF of that size."""
    rng = random.Random(seed)
    sent: list[tuple[str, str, str]] = []  # (message-id, sender, subject)
    now = format_datetime(_now())
    for index in range(count):
        msg = EmailMessage(policy=email_policy.SMTP)
        roll = rng.random()
        msg_id = make_msgid(domain=f"{tag}.example")
        if replies and roll < 0.3 and sent:
            parent_id, sender, subject = rng.choice(sent)
            msg["In-Reply-To"] = parent_id
            msg["References"] = parent_id
            msg["Subject"] = "Re: " + subject
            body = "Any news on this? It is still broken.\n\n" + "> earlier text\n" * 20
        else:
            _, subject, text = rng.choice(SUBJECTS)
            sender = f"{tag}{index}@shop{index % 50}.example"
            body = text * rng.randint(3, 30) + "\n\nBest regards\nA customer\n"
            msg["Subject"] = subject
            if len(sent) < 5000:  # replies pick among the first 5,000 threads: bounded memory
                sent.append((msg_id, sender, subject))
        msg["From"] = f"Customer {index} <{sender}>"
        msg["To"] = SUPPORT
        msg["Date"] = now
        msg["Message-ID"] = msg_id
        if roll > 0.9:
            msg.set_content(
                f"<html><body><p>{body}</p><ul><li>one</li></ul></body></html>", subtype="html"
            )
        else:
            msg.set_content(body)
        if 0.8 < roll <= 0.9:
            msg.add_attachment(
                rng.randbytes(20_000), maintype="image", subtype="png", filename="screen.png"
            )
        if attachment_bytes:
            msg.add_attachment(
                rng.randbytes(attachment_bytes),
                maintype="application",
                subtype="pdf",
                filename="invoice.pdf",
            )
        yield msg.as_bytes()


def _now() -> Any:
    from mailbot.clock import SystemClock

    return SystemClock().now()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def verdict(name: str, value: float, limit: float, unit: str, *, ok: bool | None = None) -> str:
    """One line: ``PASS``/``FAIL``, the figure and the target. A benchmark reports, it does
    not gate: callers print this and exit 0 either way."""
    passed = value < limit if ok is None else ok
    figure = f"{value:.{_digits(value)}f}"
    return f"{'PASS' if passed else 'FAIL'}  {name}: {figure} {unit} (target < {limit:g} {unit})"


def _digits(value: float) -> int:
    return 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2


# --------------------------------------------------------------------------- memory figures


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process in MB, from /proc/PID/status."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in {"VmRSS", "VmHWM"}:
                out[key] = int(rest.split()[0]) / 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- rules


def bench_rules(directory: Path) -> Path:
    """A copy of the shipped rules.yaml whose total storm brake is lifted (500 automatic
    answers an hour in all: a benchmark sends more new requests than that) to a million a
    minute: never reached, and its count spans one minute of answers, as the shipped one
    stops at 500 (a million an hour would make every message count every answer of the run:
    a cost growing with the run that production never has). The per-address limit stays;
    every generated customer writes once. Templates stay the shipped ones."""
    text = (REPO / "rules.yaml").read_text(encoding="utf-8")
    shipped = "  total: {count: 500, per: 1h}"
    if shipped not in text:
        raise RuntimeError(f"rules.yaml no longer holds {shipped.strip()!r}: update bench_rules")
    path = directory / "rules.yaml"
    path.write_text(text.replace(shipped, "  total: {count: 1000000, per: 1m}"), encoding="utf-8")
    return path


def daemon_env(
    *,
    state: Path,
    imap_url: str,
    smtp_url: str,
    rules: Path,
    db_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a ``mailbot run`` subprocess (as a systemd EnvironmentFile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
    env.update(
        {
            "MAILBOT_IMAP_URL": imap_url,
            "MAILBOT_IMAP_PASSWORD": PASSWORD,
            "MAILBOT_SMTP_URL": smtp_url,
            "MAILBOT_RULES": str(rules),
            "MAILBOT_TEMPLATES": str(REPO / "templates"),
            "MAILBOT_STATE_DIR": str(state),
            "MAILBOT_SECRET": "bench-secret-0123456789abcdef",
            "PYTHONPATH": str(REPO),
        }
    )
    if db_url is not None:
        env["MAILBOT_DB_URL"] = db_url
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.update(extra or {})
    return env


def mailbot_command() -> list[str]:
    """``mailbot`` as installed in the virtualenv (the console script), else ``-m``."""
    script = Path(sys.executable).parent / "mailbot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mailbot.cli"]


# --------------------------------------------------------------------------- sd_notify


class NotifyListener:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``; records each state
    with the ``time.perf_counter()`` it arrived at."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.seen: list[tuple[float, str]] = []

    async def wait_for(self, state: str, timeout: float) -> float:  # noqa: ASYNC109
        """perf_counter() when a datagram holding ``state`` (``READY=1``) arrived."""
        import time

        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                at = time.perf_counter()
                text = data.decode("utf-8", "replace")
                self.seen.append((at, text))
                if state in text.splitlines():
                    return at

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# --------------------------------------------------------------------------- IMAP servers


@dataclass
class ImapServers:
    """Fresh mailboxes on Dovecot (one server, a user per mailbox; a separate process, as
    in production) or, without Dovecot, on pymap (one in-process server per mailbox)."""

    kind: str
    _dovecot: Any = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def mailbox(self, user: str) -> str:
        """An ``imap+plain://`` URL of a new, empty INBOX of ``user`` (password PASSWORD)."""
        if self._dovecot is not None:
            self._dovecot.add_user(user, PASSWORD)
            return f"imap+plain://{user}@{self._dovecot.host}:{self._dovecot.imap_port}/INBOX"
        from mailbot.devservers.pymap_server import running_pymap

        srv = await self._stack.enter_async_context(running_pymap(user, PASSWORD))
        return f"imap+plain://{user}@{srv.host}:{srv.port}/INBOX"


@contextlib.asynccontextmanager
async def imap_servers(kind: str) -> AsyncIterator[ImapServers]:
    """``kind`` "dovecot" falls back to pymap (saying so on stderr) when it cannot start."""
    if kind == "dovecot":
        from tests.servers.dovecot import DovecotServer, dovecot_missing_reason

        reason = dovecot_missing_reason()
        if reason is None:
            server = DovecotServer.start()
            try:
                yield ImapServers("dovecot", _dovecot=server)
            finally:
                server.stop()
            return
        print(f"Dovecot unavailable ({reason}); using pymap", file=sys.stderr)
    servers = ImapServers("pymap (in-process)")
    async with servers._stack:
        yield servers


def endpoint_of(url: str) -> Any:
    from mailbot.endpoints import parse_endpoint

    return parse_endpoint(url, protocol="imap", password=PASSWORD)
