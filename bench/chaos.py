"""Crash safety, measured ("never lose, never loop"): SIGKILL the real daemon, again and again.

    .venv/bin/python bench/chaos.py [--messages 400] [--kills 40] [--seed N]
                                    [--server dovecot|pymap] [--batch 10] [-v]

The daemon runs as its own OS process (``python -m mailbot.cli run`` with ``MAILBOT_*``
settings, a SQLite file in a fresh directory), so SIGKILL is a real crash: no ``finally``, no
rollback, no goodbye to the servers. The IMAP server (Dovecot when installed, else pymap in
this process) and the SMTP sink (aiosmtpd, in this process) survive every kill.

1. Generates the mail (bench/ingest.py's mix of new requests in en/sv/it, threaded replies,
   HTML-only mail and attachments, plus about 5 % out-of-office auto-replies) and cuts it into
   one wave per kill, of random sizes.
2. For each kill: start the daemon, APPEND the wave in two parts (one at the start, the rest a
   random moment later, so intake and sending overlap), wait a random delay, SIGKILL it.
   Everything random comes from the seed. The delay counts from the process start (15 % of
   the kills: they land in start-up), from the daemon's "mailbot running" (25 %), both
   50 ms to 1.5 s, or from its first logged piece of work, a stored message or a sent mail
   (60 %, 0 to 0.3 s: a daemon catches up with a small wave within a second, so a delay
   counted from "running" often finds it idle). After each kill the database and the mailbox
   are read to see where it landed: a row left in ``sending`` (killed during an SMTP
   transaction), committed mail not acknowledged on the server (between commit and ack),
   start-up, other moments with work pending (connect, fetch, parse, before the commit), or
   idle.
3. Then ``mailbot run --once`` (a separate process again) until the mailbox is acknowledged
   and no outbox row is queued; rows left in ``sending`` by a kill are only re-queued after the
   sender's claim timeout (``RetryPolicy.stale_after``, 10 minutes), so they are drained here
   by mailbot's own ``OutboxSender`` with a clock moved past that timeout instead of waiting;
   finally one more clean ``mailbot run --once``, which must find nothing to do.
4. Verifies: every appended message stored exactly once (one inbound row per Message-ID, none
   quarantined), every customer request on its own ticket and every reply on its parent's
   ticket, every outbox row ``sent`` and received by the sink, every ticket's acknowledgement
   (kind ack or wiki) delivered, every message acknowledged on the IMAP server, and duplicate
   deliveries at the sink counted and explained: only rows a kill left in ``sending`` may
   arrive twice, so there can be no more than the number of kills that landed during a send.

Exit status 1 when anything is lost, stuck, unexplained or over the bound. The suite runs a
smaller version of this (tests/e2e/test_chaos.py) through :func:`run_chaos`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import ModuleType

from mailbot.clock import FixedClock, SystemClock
from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from mailbot.endpoints import Endpoint, parse_endpoint
from mailbot.mailbox.imap import ImapSession
from mailbot.outbound.sender import OutboxSender, RetryPolicy, SmtpTransport
from mailbot.settings import DONE_KEYWORD
from mailbot.tickets.database import close_database, open_database, sqlite_url

log = logging.getLogger("mailbot.bench.chaos")

REPO = Path(__file__).resolve().parents[1]
RUNNING_LINE = "mailbot running"  # logged by Daemon.run once the scheduler is up
#: Logged by intake for each message it stored or recognised, by the sender for each mail.
WORK_LINES = (
    " mailbot.ingest.pipeline: stored ",
    " mailbot.ingest.pipeline: duplicate ",
    " mailbot.outbound.sender: sent outbox row ",
)
SECRET = "chaos-harness-token-key-0123456789"
ACK_KINDS = frozenset({"ack", "wiki"})
NOTIFY_KIND = "notify"
NEW, REPLY, AUTO = "new", "reply", "auto"


def _load(name: str, path: Path) -> ModuleType:
    """Import a file that is not part of a package (bench/ is not one)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


ingest = _load("mailbot_bench_ingest", REPO / "bench" / "ingest.py")


# ---------------------------------------------------------------------------- the mail


def norm_id(value: object) -> str:
    """A Message-ID without angle brackets and surrounding blanks ('' for None)."""
    return str(value or "").strip().strip("<>").strip()


def auto_reply(index: int, rng: random.Random) -> bytes:
    """An out-of-office reply (RFC 3834): stored, never answered, no ticket."""
    subject, text = rng.choice(
        [
            ("Out of office", "I am away until Monday and will answer your mail then."),
            ("Frånvaro: semester", "Jag är på semester till och med vecka 32."),
            ("Risposta automatica: fuori ufficio", "Sono fuori ufficio fino a lunedì."),
        ]
    )
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = f"Away {index} <away{index}@elsewhere.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(SystemClock().now())
    msg["Message-ID"] = make_msgid(domain="chaos.example")
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    return msg.as_bytes()


def chaos_mail(count: int, seed: int) -> list[bytes]:
    """``count`` messages: bench/ingest.py's mix plus about 5 % auto-replies, seeded."""
    rng = random.Random(seed)
    autos = max(1, count // 20) if count >= 2 else 0
    raws: list[bytes] = ingest.generate(count - autos, seed=seed)
    for index in range(autos):
        raws.insert(rng.randrange(len(raws) + 1), auto_reply(index, rng))
    return raws


@dataclass(frozen=True, slots=True)
class Appended:
    """What one appended message must become."""

    message_id: str
    kind: str  # NEW (a ticket of its own), REPLY (on its parent's ticket), AUTO (no ticket)
    parent: str | None


def describe(raw: bytes) -> Appended:
    headers = BytesHeaderParser(policy=email_policy.default).parsebytes(raw)
    message_id = norm_id(headers["Message-ID"])
    if not message_id:
        raise ValueError("generated mail without a Message-ID")
    auto = str(headers.get("Auto-Submitted", "no")).strip().lower()
    if auto != "no":
        return Appended(message_id, AUTO, None)
    parent = norm_id(headers.get("In-Reply-To"))
    if parent:
        return Appended(message_id, REPLY, parent)
    return Appended(message_id, NEW, None)


def split_waves(total: int, waves: int, rng: random.Random) -> list[int]:
    """``total`` cut into ``waves`` parts of random sizes (each at least 1)."""
    if waves < 1 or total < waves:
        raise ValueError(f"cannot cut {total} messages into {waves} waves")
    cuts = sorted(rng.sample(range(1, total), waves - 1))
    return [b - a for a, b in itertools.pairwise([0, *cuts, total])]


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ChaosConfig:
    messages: int = 400
    kills: int = 40
    seed: int = 20261122
    batch: int = 10  # MAILBOT_BATCH: smaller batches, more commit/ack moments to hit
    #: When a kill comes (see ``Step.timing``): ``start`` and ``running`` kills wait a random
    #: delay of min_delay..max_delay after the process start or "mailbot running"; ``work``
    #: kills wait 0..work_delay after the daemon logged its first stored message or sent mail.
    min_delay: float = 0.05
    max_delay: float = 1.5
    work_delay: float = 0.3
    start_share: float = 0.15
    work_share: float = 0.6
    #: Longest pause between the two parts of a wave.
    max_pause: float = 0.8
    rules: Path = REPO / "rules.yaml"
    templates: Path = REPO / "templates"
    ready_timeout: float = 60.0
    run_once_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class Step:
    """One start-and-kill, decided up front from the seed."""

    number: int
    wave: int  # messages appended while this daemon runs
    split: int  # appended at the start; the rest after ``pause``
    pause: float
    delay: float
    #: From what the delay counts: the process start ("start"), "mailbot running" ("running")
    #: or its first logged piece of work, a stored message or a sent mail ("work"); an idle
    #: daemon survives a "running" kill's delay more often than not, a busy one is hit at work.
    timing: str


def plan_steps(config: ChaosConfig, rng: random.Random) -> list[Step]:
    steps = []
    for number, wave in enumerate(split_waves(config.messages, config.kills, rng), 1):
        split = rng.randint(0, wave)
        pause = round(rng.uniform(0.0, config.max_pause), 3)
        roll = rng.random()
        if roll < config.start_share:
            timing, delay = "start", rng.uniform(config.min_delay, config.max_delay)
        elif roll < config.start_share + config.work_share:
            timing, delay = "work", rng.uniform(0.0, config.work_delay)
        else:
            timing, delay = "running", rng.uniform(config.min_delay, config.max_delay)
        steps.append(Step(number, wave, split, pause, round(delay, 3), timing))
    return steps


# ---------------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class Stranded:
    """An outbox row a kill left in ``sending``: its mail may or may not have arrived."""

    row_id: int
    claimed_at: str
    message_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The database between two daemons (none running): read with the sqlite3 module."""

    inbound: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    sending: tuple[Stranded, ...] = ()
    last_uid: int = 0
    #: Queued rows free to go: no older row of their conversation (ticket and recipient) is
    #: left in "sending", which holds the rest back until its claim times out.
    queued_free: int = 0


def snapshot(db_path: Path) -> Snapshot:
    if not db_path.exists():
        return Snapshot()
    with contextlib.closing(sqlite3.connect(db_path, timeout=30.0)) as conn:
        try:
            inbound = conn.execute("SELECT count(*) FROM message WHERE direction = 'in'")
            inbound_count = int(inbound.fetchone()[0])
            statuses = conn.execute("SELECT status, count(*) FROM outbox GROUP BY status")
            by_status = {str(s): int(n) for s, n in statuses.fetchall()}
            sending = conn.execute(
                "SELECT o.id, o.claimed_at, m.message_id, o.kind FROM outbox o"
                " JOIN message m ON m.id = o.message_id WHERE o.status = 'sending'"
            ).fetchall()
            state = conn.execute("SELECT max(last_uid) FROM mailbox_state").fetchone()
            free = conn.execute(
                "SELECT count(*) FROM outbox q WHERE q.status = 'queued' AND NOT EXISTS"
                " (SELECT 1 FROM outbox s WHERE s.status = 'sending' AND s.id < q.id"
                " AND s.ticket_id = q.ticket_id AND s.rcpt_to = q.rcpt_to)"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return Snapshot()  # killed before the schema was complete
            raise
    return Snapshot(
        inbound=inbound_count,
        by_status=by_status,
        sending=tuple(Stranded(int(i), str(c), norm_id(m), str(k)) for i, c, m, k in sending),
        last_uid=int(state[0] or 0),
        queued_free=int(free[0]),
    )


@dataclass
class Kill:
    step: Step
    running: bool  # the daemon had logged "mailbot running" when it was killed
    exit_code: int | None  # -9: our SIGKILL; anything else: it had exited by itself
    alive_for: float  # seconds from the process start to the kill
    stranded: list[Stranded]  # rows this kill left in "sending"
    unacked: int  # committed messages not acknowledged on the server after this kill
    backlog: int  # messages appended before the kill and not stored after it
    inbound: int  # inbound rows in the database after this kill
    sent: int  # outbox rows sent after this kill
    queued: int  # outbox rows queued after this kill
    queued_free: int  # of those, the ones no row left in "sending" holds back

    @property
    def where(self) -> str:
        if self.stranded:
            return "send"
        if self.unacked:
            return "commit-ack"
        if not self.running:
            return "start-up"
        if self.backlog or self.queued_free:
            return "busy"
        return "idle"


@dataclass(frozen=True, slots=True)
class ImapTarget:
    """The IMAP server the daemon reads: plain loopback, one user."""

    kind: str
    host: str
    port: int
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"imap+plain://{self.user}@{self.host}:{self.port}/INBOX"

    def endpoint(self) -> Endpoint:
        return parse_endpoint(self.url, protocol="imap", password=self.password)


# ---------------------------------------------------------------------------- the report


@dataclass
class ChaosReport:
    config: ChaosConfig
    server: str
    kills: list[Kill] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    appended: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    stored: int = 0
    lost: list[str] = field(default_factory=list)
    db_duplicates: dict[str, int] = field(default_factory=dict)
    unexpected_inbound: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    misthreaded: list[str] = field(default_factory=list)
    tickets: int = 0
    outbox: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status)
    not_sent: list[str] = field(default_factory=list)
    acks_missing: list[str] = field(default_factory=list)  # ticket without a delivered ack
    acks_extra: list[str] = field(default_factory=list)  # ticket with several ack rows
    undelivered: list[str] = field(default_factory=list)  # "sent" rows the sink never got
    sink_received: int = 0
    sink_distinct: int = 0
    unknown_at_sink: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)  # Message-ID -> extra copies
    unexplained_duplicates: list[str] = field(default_factory=list)
    imap_total: int = 0
    imap_unacked: list[int] = field(default_factory=list)
    final_runs: list[str] = field(default_factory=list)  # "processed: ..." of each run --once
    stale_drained: int = 0
    clean_pass: str = ""
    clean_pass_changes: list[str] = field(default_factory=list)
    refetched_duplicates: int = 0  # "duplicate ..." lines in the daemons' logs
    reconciled: int = 0  # "... were not acknowledged (crash?)" lines in the daemons' logs
    log_errors: list[str] = field(default_factory=list)
    daemon_starts: int = 0
    wall: float = 0.0

    @property
    def duplicate_deliveries(self) -> int:
        return sum(self.duplicates.values())

    @property
    def kills_during_send(self) -> int:
        """The bound: kills that left a row in ``sending`` (killed during an SMTP send)."""
        return sum(1 for k in self.kills if k.stranded)

    @property
    def stranded_rows(self) -> int:
        return sum(len(k.stranded) for k in self.kills)

    def failures(self) -> list[str]:
        dup, bound = self.duplicate_deliveries, self.kills_during_send
        checks: list[tuple[bool, str]] = [
            (not self.unexpected_exits, f"daemon exited by itself: {self.unexpected_exits[:3]}"),
            (not self.lost, f"{len(self.lost)} messages lost: {self.lost[:5]}"),
            (not self.db_duplicates, f"stored twice: {list(self.db_duplicates.items())[:5]}"),
            (not self.unexpected_inbound, f"unexpected inbound: {self.unexpected_inbound[:5]}"),
            (not self.quarantined, f"quarantined: {self.quarantined[:5]}"),
            (not self.misthreaded, f"misthreaded: {self.misthreaded[:5]}"),
            (
                self.tickets == self.expected[NEW],
                f"{self.tickets} tickets for {self.expected[NEW]} new requests",
            ),
            (not self.not_sent, f"outbox rows not sent: {self.not_sent[:5]}"),
            (not self.acks_missing, f"acknowledgements missing: {self.acks_missing[:5]}"),
            (not self.acks_extra, f"several acknowledgements: {self.acks_extra[:5]}"),
            (not self.undelivered, f"'sent' but never at the sink: {self.undelivered[:5]}"),
            (
                not self.unknown_at_sink,
                f"at the sink, not in the outbox: {self.unknown_at_sink[:5]}",
            ),
            (
                not self.unexplained_duplicates,
                f"duplicates of rows no kill left in 'sending': {self.unexplained_duplicates[:5]}",
            ),
            (dup <= bound, f"{dup} duplicate deliveries > bound {bound}"),
            (self.imap_total == self.appended, f"IMAP {self.imap_total}, appended {self.appended}"),
            (not self.imap_unacked, f"not acknowledged on IMAP: UIDs {self.imap_unacked[:10]}"),
            (not self.clean_pass_changes, f"the clean pass did work: {self.clean_pass_changes}"),
        ]
        return [message for ok, message in checks if not ok]

    def lines(self, *, per_kill: bool = False) -> list[str]:
        c = self.config
        where = Counter(k.where for k in self.kills)
        delays = [k.step.delay for k in self.kills] or [0.0]
        killed = sum(1 for k in self.kills if k.exit_code == -signal.SIGKILL)
        acks = sum(n for (kind, _), n in self.outbox.items() if kind in ACK_KINDS)
        notifications = sum(n for (kind, _), n in self.outbox.items() if kind == NOTIFY_KIND)
        kinds = sorted({kind for kind, _ in self.outbox})
        by_kind = ", ".join(
            f"{kind} {sum(n for (k, _), n in self.outbox.items() if k == kind)}" for kind in kinds
        )
        statuses = Counter[str]()
        for (_, status), n in self.outbox.items():
            statuses[status] += n
        out = [
            f"IMAP server:           {self.server}",
            f"seed:                  {c.seed} (batch {c.batch}, kill delay "
            f"{c.min_delay:g}-{c.max_delay:g} s after the start or 'mailbot running', or"
            f" 0-{c.work_delay:g} s after its first stored message or sent mail)",
            f"kills survived:        {killed} of {c.kills} SIGKILLs"
            f" ({self.daemon_starts} daemon starts incl. the final runs; "
            f"{len(self.unexpected_exits)} exits on its own)",
            f"kill delays:           min {min(delays):.3f} s,"
            f" median {statistics.median(delays):.3f} s, max {max(delays):.3f} s",
            f"kills landed:          {where['send']} during an SMTP send (row left 'sending'),"
            f" {where['commit-ack']} between commit and IMAP ack,"
            f" {where['start-up']} during start-up, {where['busy']} elsewhere with work pending"
            f" (connect, fetch, parse, commit), {where['idle']} idle",
            f"messages:              appended {self.appended} (new {self.expected[NEW]},"
            f" replies {self.expected[REPLY]}, auto-replies {self.expected[AUTO]});"
            f" stored {self.stored}; lost {len(self.lost)};"
            f" duplicated in db {len(self.db_duplicates)}; quarantined {len(self.quarantined)};"
            f" misthreaded {len(self.misthreaded)}",
            f"  re-fetched after a kill and recognised as duplicates: {self.refetched_duplicates}"
            f" (log lines); acks repaired after a crash: {self.reconciled} times",
            f"tickets:               {self.tickets} (new requests {self.expected[NEW]})",
            f"outbound rows:         {sum(self.outbox.values())} ({by_kind});"
            f" {', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}",
            f"  acknowledgements:    {acks} rows (ack/wiki); missing or undelivered"
            f" {len(self.acks_missing)}, extra {len(self.acks_extra)}",
            f"  notifications:       {notifications} rows to agents",
            f"  not sent at the end: {len(self.not_sent)}; 'sent' but not at the sink:"
            f" {len(self.undelivered)}",
            f"mails at the sink:     {self.sink_received} received, {self.sink_distinct} distinct"
            f" Message-IDs, {len(self.unknown_at_sink)} unknown",
            f"duplicate deliveries:  {self.duplicate_deliveries} (bound: {self.kills_during_send}"
            f" kills during a send, {self.stranded_rows} rows left 'sending');"
            f" unexplained {len(self.unexplained_duplicates)}",
            f"IMAP:                  {self.imap_total} messages, {len(self.imap_unacked)} not"
            " acknowledged",
            f"final runs:            {len(self.final_runs)} x run --once"
            f" [{' | '.join(self.final_runs)}]; stale-claim drain (clock +"
            f"{RetryPolicy().stale_after.total_seconds() / 60:g} min) sent {self.stale_drained};"
            f" clean pass [{self.clean_pass}]",
            f"daemon log errors:     {len(self.log_errors)}"
            + (f" (first: {self.log_errors[0]})" if self.log_errors else ""),
            f"wall time:             {self.wall:.1f} s",
        ]
        if per_kill:
            out.append(
                "kill  wave  delay  from     alive  where       stranded  unacked  backlog"
                "  queued  stored  sent"
            )
            for k in self.kills:
                s = k.step
                out.append(
                    f"{s.number:4d}  {s.wave:4d}  {s.delay:5.3f}  "
                    f"{s.timing:7s}  {k.alive_for:5.2f}  "
                    f"{k.where:10s}  {len(k.stranded):8d}  {k.unacked:7d}  {k.backlog:7d}"
                    f"  {k.queued:6d}  {k.inbound:6d}  {k.sent:4d}"
                )
        failures = self.failures()
        out.append("RESULT:                " + ("OK" if not failures else "FAILED"))
        out.extend(f"  - {failure}" for failure in failures)
        return out


# ---------------------------------------------------------------------------- the harness


class DaemonError(RuntimeError):
    """A daemon that did not start, or a final run that failed (with its log's tail)."""


def _log_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(_log_text(path).splitlines()[-lines:])


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


class Harness:
    def __init__(self, config: ChaosConfig, imap: ImapTarget, sink: SmtpSink, workdir: Path):
        self.config = config
        self.imap = imap
        self.sink = sink
        self.workdir = workdir
        self.db_path = workdir / "mailbot.sqlite3"
        self.db_url = sqlite_url(self.db_path)
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.starts = 0
        self.appended = 0  # messages APPENDed so far
        self.seen_sending: set[tuple[int, str]] = set()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
        env.update(
            {
                "MAILBOT_IMAP_URL": imap.url,
                "MAILBOT_IMAP_PASSWORD": imap.password,
                "MAILBOT_SMTP_URL": f"smtp+plain://{sink.host}:{sink.port}",
                "MAILBOT_DB_URL": self.db_url,
                "MAILBOT_RULES": str(config.rules),
                "MAILBOT_TEMPLATES": str(config.templates),
                "MAILBOT_STATE_DIR": str(workdir / "state"),
                "MAILBOT_SECRET": SECRET,
                "MAILBOT_POLL_SECONDS": "1",
                "MAILBOT_IDLE_SECONDS": "1",
                "MAILBOT_BATCH": str(config.batch),
            }
        )
        self.env = env

    async def spawn(self, name: str, *args: str) -> tuple[asyncio.subprocess.Process, Path]:
        log_path = self.logs / f"{name}.log"
        fd = _open_log(log_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mailbot.cli",
                "run",
                *args,
                cwd=REPO,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            os.close(fd)
        self.starts += 1
        return proc, log_path

    async def wait_for(
        self, proc: asyncio.subprocess.Process, log_path: Path, needles: Sequence[str]
    ) -> None:
        """Poll the daemon's log for one of ``needles`` (bounded by ``ready_timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ready_timeout
        while not any(needle in _log_text(log_path) for needle in needles):
            if proc.returncode is not None:
                raise DaemonError(
                    f"daemon exited with {proc.returncode} before logging {needles[0]!r}:\n"
                    f"{_tail(log_path)}"
                )
            if loop.time() > deadline:
                raise DaemonError(
                    f"daemon did not log {needles[0]!r} in {self.config.ready_timeout:g} s"
                )
            await asyncio.sleep(0.01)

    async def append_wave(
        self, first: Sequence[bytes], pause: float, rest: Sequence[bytes]
    ) -> None:
        """APPEND ``first``, wait ``pause``, APPEND ``rest``; ``self.appended`` counts along."""
        session = await ImapSession.open(self.imap.endpoint())
        try:
            for raw in first:
                await session.append(raw)
                self.appended += 1
            await asyncio.sleep(pause)
            for raw in rest:
                await session.append(raw)
                self.appended += 1
        finally:
            await session.close()

    async def imap_search(self, criteria: str) -> list[int]:
        session = await ImapSession.open(self.imap.endpoint())
        try:
            return await session.search(criteria)
        finally:
            await session.close()

    async def unacked_committed(self, last_uid: int) -> int:
        if last_uid <= 0:
            return 0
        uids = await self.imap_search(f"UID 1:{last_uid} UNKEYWORD {DONE_KEYWORD}")
        return len([uid for uid in uids if uid <= last_uid])

    async def cycle(self, step: Step, wave: Sequence[bytes]) -> tuple[Kill, str | None]:
        """Start a daemon, append a wave, SIGKILL it after the step's delay; where did it land?"""
        loop = asyncio.get_running_loop()
        proc, log_path = await self.spawn(f"kill-{step.number:03d}")
        started = loop.time()
        appender = asyncio.create_task(
            self.append_wave(wave[: step.split], step.pause, wave[step.split :])
        )
        try:
            if step.timing != "start":
                await self.wait_for(proc, log_path, (RUNNING_LINE,))
            if step.timing == "work":
                await self.wait_for(proc, log_path, WORK_LINES)
            await asyncio.sleep(step.delay)
            running = RUNNING_LINE in _log_text(log_path)
            alive_for = loop.time() - started
            appended_before = self.appended
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            await appender
        unexpected = None
        if code != -signal.SIGKILL:
            unexpected = f"kill {step.number}: exit {code}: {_tail(log_path, 5)}"
        snap = snapshot(self.db_path)
        stranded = [s for s in snap.sending if (s.row_id, s.claimed_at) not in self.seen_sending]
        self.seen_sending.update((s.row_id, s.claimed_at) for s in snap.sending)
        kill = Kill(
            step=step,
            running=running,
            exit_code=code,
            alive_for=alive_for,
            stranded=stranded,
            unacked=await self.unacked_committed(snap.last_uid),
            backlog=max(0, appended_before - snap.inbound),
            inbound=snap.inbound,
            sent=snap.by_status.get("sent", 0),
            queued=snap.by_status.get("queued", 0),
            queued_free=snap.queued_free,
        )
        log.info(
            "kill %d after %.3f s (%s): landed %s, stranded %d, unacked %d, stored %d, sent %d",
            step.number,
            step.delay,
            step.timing,
            kill.where,
            len(stranded),
            kill.unacked,
            kill.inbound,
            kill.sent,
        )
        return kill, unexpected

    async def run_once(self, name: str) -> str:
        """``mailbot run --once`` to completion; its "processed: ..." line."""
        proc, log_path = await self.spawn(name, "--once")
        try:
            async with asyncio.timeout(self.config.run_once_timeout):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code != 0:
            raise DaemonError(f"{name}: mailbot run --once exited with {code}:\n{_tail(log_path)}")
        lines = [ln for ln in _log_text(log_path).splitlines() if ln.startswith("processed:")]
        return lines[-1].removeprefix("processed: ") if lines else "?"

    async def drain_stale(self) -> int:
        """Send the rows kills left in ``sending``, with a clock past the claim timeout.

        No daemon runs now, so these claims are dead. mailbot re-queues them only after
        ``RetryPolicy.stale_after`` (10 minutes); instead of waiting, its own OutboxSender runs
        here with a clock that far ahead (which also makes any backoff of the last minutes due).
        """
        retry = RetryPolicy()
        clock = FixedClock(SystemClock().now() + retry.stale_after + timedelta(seconds=1))
        transport = SmtpTransport(parse_endpoint(self.env["MAILBOT_SMTP_URL"], protocol="smtp"))
        await open_database(self.db_url)
        try:
            sender = OutboxSender(transport, clock, retry=retry)
            sent = 0
            while batch := await sender.run_once():
                sent += batch
            return sent
        finally:
            await close_database()


# ---------------------------------------------------------------------------- verification


def verify(
    report: ChaosReport, db_path: Path, appended: Sequence[Appended], sink: SmtpSink
) -> None:
    """Fill ``report`` with what the database and the sink hold against what was appended."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=30.0)) as conn:
        inbound = conn.execute(
            "SELECT message_id, ticket_id, state, auto_generated, error FROM message"
            " WHERE direction = 'in'"
        ).fetchall()
        tickets = dict(conn.execute("SELECT id, customer FROM ticket").fetchall())
        outbox = conn.execute(
            "SELECT o.id, o.kind, o.status, o.ticket_id, o.rcpt_to, m.message_id, o.last_error"
            " FROM outbox o JOIN message m ON m.id = o.message_id"
        ).fetchall()

    rows: dict[str, list[tuple[int | None, str, bool, str | None]]] = {}
    for message_id, ticket_id, state, auto, error in inbound:
        rows.setdefault(norm_id(message_id), []).append((ticket_id, state, bool(auto), error))
    expected = {a.message_id: a for a in appended}
    report.appended = len(appended)
    report.expected = Counter(a.kind for a in appended)
    report.unexpected_inbound = sorted(set(rows) - set(expected))
    for message_id, found in rows.items():
        report.quarantined += [
            f"{message_id}: {error}" for _, state, _, error in found if state != "stored"
        ]
    ticket_of: dict[str, int | None] = {}
    for a in appended:
        found = rows.get(a.message_id, [])
        if not found:
            report.lost.append(a.message_id)
            continue
        report.stored += 1
        if len(found) > 1:
            report.db_duplicates[a.message_id] = len(found)
        ticket_of[a.message_id] = found[0][0]
    new_per_ticket: Counter[int] = Counter()
    for a in appended:
        if a.message_id not in ticket_of:
            continue
        ticket_id = ticket_of[a.message_id]
        _, _, auto, _ = rows[a.message_id][0]
        if a.kind == NEW:
            if ticket_id is None:
                report.misthreaded.append(f"{a.message_id}: new request without a ticket")
            else:
                new_per_ticket[ticket_id] += 1
        elif a.kind == REPLY:
            want = ticket_of.get(a.parent or "")
            if ticket_id is None or ticket_id != want:
                report.misthreaded.append(
                    f"{a.message_id}: reply on ticket {ticket_id}, its parent on {want}"
                )
        elif ticket_id is not None or not auto:
            report.misthreaded.append(
                f"{a.message_id}: auto-reply on ticket {ticket_id} (auto_generated={auto})"
            )
    report.misthreaded += [
        f"ticket #{t}: {n} new requests on one ticket" for t, n in new_per_ticket.items() if n > 1
    ]
    report.tickets = len(tickets)

    at_sink: Counter[str] = Counter()
    header_parser = BytesHeaderParser(policy=email_policy.default)
    for received in sink.messages:
        at_sink[norm_id(header_parser.parsebytes(received.raw)["Message-ID"])] += 1
    report.sink_received = len(sink.messages)
    report.sink_distinct = len(at_sink)

    acks: dict[int, list[tuple[str, str, str]]] = {t: [] for t in tickets}
    outbound_ids: set[str] = set()
    for row_id, kind, status, ticket_id, rcpt, message_id, error in outbox:
        message_id = norm_id(message_id)
        outbound_ids.add(message_id)
        report.outbox[(str(kind), str(status))] += 1
        if status != "sent":
            report.not_sent.append(f"row {row_id} ({kind} to {rcpt}): {status} {error or ''}")
        elif at_sink[message_id] == 0:
            report.undelivered.append(f"row {row_id} ({kind} to {rcpt}) {message_id}")
        if kind in ACK_KINDS and ticket_id is not None:
            acks.setdefault(int(ticket_id), []).append((str(status), str(rcpt), message_id))
    for ticket_id, ack_rows in sorted(acks.items()):
        customer = str(tickets.get(ticket_id, "")).lower()
        if len(ack_rows) > 1:
            report.acks_extra.append(f"ticket #{ticket_id}: {len(ack_rows)} ack rows")
        delivered = [
            status
            for status, rcpt, message_id in ack_rows
            if status == "sent" and at_sink[message_id] > 0 and rcpt.lower() == customer
        ]
        if not delivered:
            report.acks_missing.append(f"ticket #{ticket_id} ({customer}): {ack_rows}")
    report.unknown_at_sink = sorted(set(at_sink) - outbound_ids)

    report.duplicates = {m: n - 1 for m, n in at_sink.items() if n > 1}
    stranded = {s.message_id for k in report.kills for s in k.stranded}
    report.unexplained_duplicates = sorted(set(report.duplicates) - stranded)


def scan_logs(report: ChaosReport, logs: Path) -> None:
    for path in sorted(logs.glob("*.log")):
        for line in _log_text(path).splitlines():
            if " mailbot.ingest.pipeline: duplicate " in line:
                report.refetched_duplicates += 1
            elif "were not acknowledged (crash?)" in line:
                report.reconciled += 1
            if " ERROR " in line or line.startswith("Traceback"):
                report.log_errors.append(f"{path.name}: {line[:200]}")


# ---------------------------------------------------------------------------- the run


async def run_chaos(
    config: ChaosConfig, imap: ImapTarget, sink: SmtpSink, workdir: Path
) -> ChaosReport:
    """Kill the daemon ``config.kills`` times while it works, finish the work, verify it all."""
    started = time.perf_counter()
    rng = random.Random(config.seed)
    raws = chaos_mail(config.messages, config.seed)
    appended = [describe(raw) for raw in raws]
    steps = plan_steps(config, rng)
    harness = Harness(config, imap, sink, workdir)
    report = ChaosReport(config=config, server=imap.kind)

    offset = 0
    for step in steps:
        wave = raws[offset : offset + step.wave]
        offset += step.wave
        kill, unexpected = await harness.cycle(step, wave)
        report.kills.append(kill)
        if unexpected is not None:
            report.unexpected_exits.append(unexpected)

    # Until the mailbox is acknowledged and the queue empty, or a run sent nothing: what is
    # still queued then waits behind a row a kill left in 'sending' (mail of one conversation
    # goes out in order), which only the stale-claim drain below releases.
    for attempt in range(1, 4):
        processed = await harness.run_once(f"final-{attempt}")
        report.final_runs.append(processed)
        snap = snapshot(harness.db_path)
        undone = await harness.imap_search(f"UNKEYWORD {DONE_KEYWORD}")
        sent = re.search(r"sent (\d+)", processed)
        idle = sent is not None and sent.group(1) == "0"
        if not undone and (snap.by_status.get("queued", 0) == 0 or idle):
            break
    report.stale_drained = await harness.drain_stale()
    before = snapshot(harness.db_path)
    report.clean_pass = await harness.run_once("final-clean")
    after = snapshot(harness.db_path)
    if after.inbound != before.inbound:
        report.clean_pass_changes.append(f"inbound rows {before.inbound} -> {after.inbound}")
    if after.by_status != before.by_status:
        report.clean_pass_changes.append(f"outbox {before.by_status} -> {after.by_status}")

    verify(report, harness.db_path, appended, sink)
    report.imap_total = len(await harness.imap_search("ALL"))
    report.imap_unacked = await harness.imap_search(f"UNKEYWORD {DONE_KEYWORD}")
    scan_logs(report, harness.logs)
    report.daemon_starts = harness.starts
    report.wall = time.perf_counter() - started
    return report


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in (
        "mail.log",
        "mailbot.mailbox",
        "mailbot.devservers",
        "mailbot.tickets",
        "mailbot.outbound",
        "tortoise",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = ChaosConfig(messages=args.messages, kills=args.kills, seed=args.seed, batch=args.batch)
    workdir = Path(tempfile.mkdtemp(prefix="mailbot-chaos-"))
    async with (
        ingest.imap_server(args.server) as (kind, host, port),
        running_smtp_sink() as sink,
    ):
        target = ImapTarget(kind, host, port, ingest.USER, ingest.PASSWORD)
        try:
            report = await run_chaos(config, target, sink, workdir)
        except DaemonError as exc:
            print(f"FAILED: {exc}\ndatabase and daemon logs kept in {workdir}")
            return 1
    print("\n".join(report.lines(per_kill=args.verbose)))
    if report.failures() or args.keep:
        print(f"database and daemon logs kept in {workdir}")
        return 1 if report.failures() else 0
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", "-n", type=int, default=400, help="messages to append")
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs (one wave each)")
    parser.add_argument("--seed", type=int, default=ChaosConfig.seed, help="for the whole run")
    parser.add_argument("--server", choices=["dovecot", "pymap"], default="dovecot")
    parser.add_argument("--batch", type=int, default=ChaosConfig.batch, help="MAILBOT_BATCH")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress and a kill table")
    sys.exit(asyncio.run(main(parser.parse_args())))
