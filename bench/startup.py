"""Start-up benchmark: ``mailbot run`` from exec to READY=1 with 100,000 open tickets.

    .venv/bin/python bench/startup.py [--tickets 100000] [--repeat 3]
                                      [--db postgresql://postgres@127.0.0.1:55432/mailbot_h5]
                                      [--server dovecot|pymap] [--profile FILE]

1. A database is filled in bulk (raw SQL: ``executemany`` on SQLite, ``COPY`` on PostgreSQL)
   with N open tickets, each with what a real one has: its participant, the customer's
   inbound message (raw bytes kept), our acknowledgement and the agent's notification
   (outbound messages, outbox rows ``sent``), two SLA clocks running (first response,
   resolution), the ``arrived`` clock event and three pending reminders (50 %, 80 %,
   breach). Every deadline lies in the future, as after a planned restart: the first sweeps
   find nothing due, so the figure is start-up, not a backlog being sent.
2. ``mailbot run`` (the console script, as systemd starts it) runs with ``NOTIFY_SOCKET``
   set to a socket this process listens on; measured: exec -> ``READY=1`` (sent after the
   database is open and the first IMAP sync worked), the median of ``--repeat`` starts.
   After READY the process is watched for 5 s more: CPU seconds it used (work done after
   READY, e.g. sweeps) and its peak RSS. IMAP: an empty INBOX on Dovecot (pymap in this
   process when Dovecot cannot start); SMTP: an aiosmtpd sink in this process.
3. Floor: the same process started the same way on an empty database (after one unmeasured
   start that warms the page cache and Dovecot's indexes).

Printed: both times, the ratio, PASS/FAIL against the target (< 5 s). Exit 0 always.
``--profile FILE`` also runs one start under cProfile (stopped 5 s after READY) and prints
the top functions by cumulative time. ``--db`` takes a PostgreSQL URL (the database is
emptied: DROP SCHEMA public CASCADE); without it a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import pstats
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    NotifyListener,
    bench_rules,
    cpu_seconds,
    daemon_env,
    imap_servers,
    mailbot_command,
    proc_status,
    verdict,
)

from mailbot.devservers.smtp_sink import running_smtp_sink
from mailbot.tickets.database import close_database, open_database, sqlite_path, sqlite_url

Row = tuple[Any, ...]
TARGET_S = 5.0
WATCH_AFTER_READY = 5.0
PLANS = [("core", 0), ("pro", 10), ("ultimate", 20)]
AGENTS = ["maria", "erik", "giulia"]
LANGUAGES = ["sv", "en", "it"]

# Every column of each table, in this order (mailbot/tickets/models.py). A column added to
# a model without a SQL default must be added here too: the INSERT then fails and says so.
COLUMNS = {
    "ticket": "id status plan customer customer_name language subject created_at updated_at"
    " deadline severity urgent priority assignee team account category howto wiki_redirect"
    " resolved_at spam linked_ticket_id mailbox",
    "participant": "id ticket_id address role",
    "message": "id ticket_id direction state message_id mailbox uidvalidity uid source"
    " content_hash raw_bytes from_addr subject text sent_date received_at auto_generated"
    " auto_reason bounce error role rules_version",
    "outbox": "id ticket_id message_id kind mail_from rcpt_to status attempts next_attempt_at"
    " claimed_at created_at sent_at last_error mailbox",
    "ticket_clock": "id ticket_id name status started_at due_at breached_at stopped_at",
    "clock_event": "id ticket_id kind clock at",
    "reminder": "id ticket_id clock kind recipient due_at status decided_at note",
}

INBOUND = """\
From: Customer {i} <{addr}>
To: support@example.com
Subject: {subject}
Date: {date}
Message-ID: <{i}.request@shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

{body}
"""

OUTBOUND = """\
From: Example Support <support@example.com>
To: {to}
Subject: [#{i}] {subject}
Date: {date}
Message-ID: <{i}.{kind}@example.com>
In-Reply-To: <{i}.request@shop.example>
References: <{i}.request@shop.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Thank you, we have registered your request as #{i}. {text}
"""


def chunks(tickets: int, now: datetime, size: int = 5_000) -> Iterator[dict[str, list[Row]]]:
    """The rows of each table for ``size`` tickets at a time (Python values; SQLite gets
    them converted), so that 100k tickets never sit in memory at once."""
    subjects = ["Checkout fails with error 502", "Frakten räknas fel", "Il pagamento non va"]
    body = "Since this morning customers cannot pay in the checkout. " * 12

    def one(i: int) -> dict[str, list[Row]]:
        rng = random.Random(i)
        created = now - timedelta(minutes=rng.randrange(1, 60 * 24 * 14))
        first_due = now + timedelta(minutes=rng.randrange(60, 60 * 24 * 10))
        resolution_due = first_due + timedelta(days=5)
        plan, priority = PLANS[i % 3]
        addr = f"c{i}@shop{i % 500}.example"
        agent = AGENTS[i % 3]
        subject = subjects[i % 3]
        date = created.strftime("%a, %d %b %Y %H:%M:%S +0000")
        raw_in = INBOUND.format(i=i, addr=addr, subject=subject, date=date, body=body).encode()
        raw_ack = OUTBOUND.format(
            i=i,
            to=addr,
            subject=subject,
            date=date,
            kind="ack",
            text="We answer within 4 working hours. " * 10,
        ).encode()
        raw_note = OUTBOUND.format(
            i=i, to=f"{agent}@example.com", subject=subject, date=date, kind="notice", text=body
        ).encode()
        m_in, m_ack, m_note = 3 * i - 2, 3 * i - 1, 3 * i
        messages = [
            (
                m_in,
                i,
                "in",
                "stored",
                f"<{i}.request@shop.example>",
                "old@127.0.0.1:143/INBOX",
                1,
                i,
                "",
                _hash(raw_in),
                raw_in,
                addr,
                subject,
                body,
                created,
                created,
                False,
                None,
                False,
                None,
                "customer",
                "bench",
            ),
            (
                m_ack,
                i,
                "out",
                "stored",
                f"<{i}.ack@example.com>",
                None,
                None,
                None,
                "",
                _hash(raw_ack),
                raw_ack,
                "support@example.com",
                subject,
                "",
                created,
                created,
                True,
                None,
                False,
                None,
                "system",
                None,
            ),
            (
                m_note,
                i,
                "out",
                "stored",
                f"<{i}.notice@example.com>",
                None,
                None,
                None,
                "",
                _hash(raw_note),
                raw_note,
                "support@example.com",
                subject,
                "",
                created,
                created,
                True,
                None,
                False,
                None,
                "internal",
                None,
            ),
        ]
        return {
            "ticket": [
                (
                    i,
                    "open",
                    plan,
                    addr,
                    f"Customer {i}",
                    LANGUAGES[i % 3],
                    subject,
                    created,
                    created,
                    first_due,
                    f"L{1 + i % 4}",
                    i % 10 == 0,
                    priority,
                    agent,
                    "support",
                    None,
                    "support",
                    False,
                    None,
                    None,
                    False,
                    None,
                    "",  # the mailbox: "" for a daemon of one mailbox
                )
            ],
            "participant": [(i, i, addr, "customer")],
            "message": messages,
            "outbox": [
                (
                    2 * i - 1,
                    i,
                    m_ack,
                    "ack",
                    "support@example.com",
                    addr,
                    "sent",
                    1,
                    created,
                    created,
                    created,
                    created,
                    None,
                    "",
                ),
                (
                    2 * i,
                    i,
                    m_note,
                    "notice",
                    "support@example.com",
                    f"{agent}@example.com",
                    "sent",
                    1,
                    created,
                    created,
                    created,
                    created,
                    None,
                    "",
                ),
            ],
            "ticket_clock": [
                (2 * i - 1, i, "first_response", "running", created, first_due, None, None),
                (2 * i, i, "resolution", "running", created, resolution_due, None, None),
            ],
            "clock_event": [(i, i, "arrived", None, created)],
            "reminder": [
                (
                    3 * i - 2,
                    i,
                    "first_response",
                    "percent:50",
                    "team@example.com",
                    now + (first_due - now) / 2,
                    "pending",
                    None,
                    None,
                ),
                (
                    3 * i - 1,
                    i,
                    "first_response",
                    "percent:80",
                    "team@example.com",
                    now + (first_due - now) * 4 / 5,
                    "pending",
                    None,
                    None,
                ),
                (
                    3 * i,
                    i,
                    "first_response",
                    "breach",
                    "team@example.com",
                    first_due,
                    "pending",
                    None,
                    None,
                ),
            ],
        }

    for start in range(1, tickets + 1, size):
        out: dict[str, list[Row]] = {name: [] for name in COLUMNS}
        for i in range(start, min(start + size, tickets + 1)):
            for name, table_rows in one(i).items():
                out[name] += table_rows
        yield out


def _hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _sqlite_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def reset(db: str | None, work: Path) -> str:
    """An empty database with mailbot's schema; its URL."""
    if db is None:
        url = sqlite_url(work / f"mailbot-{time.monotonic_ns()}.sqlite3")
    else:
        url = db
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()
    await open_database(url)
    await close_database()
    return url


def populate_sqlite(url: str, tickets: int, now: datetime) -> None:
    path = sqlite_path(url)
    assert path is not None
    db = sqlite3.connect(path)
    try:
        for chunk in chunks(tickets, now):
            for name, columns in COLUMNS.items():
                names = columns.split()
                marks = ", ".join("?" * len(names))
                sql = f"INSERT INTO {name} ({', '.join(names)}) VALUES ({marks})"
                db.executemany(sql, (tuple(map(_sqlite_value, r)) for r in chunk[name]))
        db.commit()
        db.execute("ANALYZE")
    finally:
        db.close()


async def populate(url: str, tickets: int) -> None:
    now = datetime.now(UTC)
    if url.startswith("sqlite"):
        await asyncio.to_thread(populate_sqlite, url, tickets, now)
        return
    conn = await asyncpg.connect(url)
    try:
        for chunk in chunks(tickets, now):
            for name, columns in COLUMNS.items():
                await conn.copy_records_to_table(name, records=chunk[name], columns=columns.split())
        for name in COLUMNS:
            # COPY with explicit ids leaves the sequences behind: new rows would collide.
            sequence = f"pg_get_serial_sequence('{name}', 'id')"
            await conn.execute(f"SELECT setval({sequence}, (SELECT max(id) FROM {name}))")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def start_once(
    url: str, imap_url: str, smtp_url: str, work: Path, *, profile: Path | None = None
) -> dict[str, float]:
    """Start ``mailbot run``; exec -> READY=1 in seconds, CPU after READY, peak RSS."""
    listener = NotifyListener(work)
    state = work / f"state-{time.monotonic_ns()}"
    env = daemon_env(
        state=state,
        imap_url=imap_url,
        smtp_url=smtp_url,
        rules=work / "rules.yaml",
        db_url=url,
        extra={"NOTIFY_SOCKET": str(listener.path)},
    )
    command = mailbot_command()
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "mailbot.cli"]
    log = (work / "daemon.log").open("ab")
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *command, "run", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    try:
        ready = await listener.wait_for("READY=1", timeout=300) - start
        cpu_at_ready = cpu_seconds(proc.pid)
        await asyncio.sleep(WATCH_AFTER_READY)
        cpu_after = cpu_seconds(proc.pid) - cpu_at_ready
        peak = proc_status(proc.pid)["VmHWM"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
        listener.close()
    return {"ready": ready, "cpu_after": cpu_after, "peak": peak, "cpu_at_ready": cpu_at_ready}


async def series(
    label: str, url: str, imap_url: str, smtp_url: str, work: Path, repeat: int
) -> dict[str, float]:
    runs = [await start_once(url, imap_url, smtp_url, work) for _ in range(repeat)]
    ready = [r["ready"] for r in runs]
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"{label:34s} exec->READY {out['ready']:6.2f} s (runs: "
        f"{', '.join(f'{r:.2f}' for r in ready)}); CPU to READY {out['cpu_at_ready']:.2f} s, "
        f"CPU in {WATCH_AFTER_READY:g} s after READY {out['cpu_after']:.2f} s; "
        f"peak RSS {out['peak']:.0f} MB"
    )
    return out


async def main(args: argparse.Namespace) -> Path:
    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-startup-"))
    bench_rules(work)
    kind = "PostgreSQL" if args.db else "SQLite (file, WAL, synchronous=FULL)"
    async with imap_servers(args.server) as servers, running_smtp_sink() as sink:
        imap_url = await servers.mailbox("bench")
        smtp_url = f"smtp+plain://{sink.host}:{sink.port}"
        print(f"database: {kind}; IMAP: {servers.kind} (empty INBOX); SMTP: aiosmtpd sink")
        url = await reset(args.db, work)
        await start_once(url, imap_url, smtp_url, work)  # warm-up (caches, Dovecot indexes)
        floor = await series("floor (empty database)", url, imap_url, smtp_url, work, args.repeat)
        url = await reset(args.db, work)
        t0 = time.perf_counter()
        await populate(url, args.tickets)
        print(
            f"populated: {args.tickets} open tickets ({3 * args.tickets} messages, "
            f"{2 * args.tickets} outbox rows, {2 * args.tickets} clocks, {3 * args.tickets} "
            f"reminders) in {time.perf_counter() - t0:.0f} s (set-up, not a figure)"
        )
        full = await series(
            f"{args.tickets} open tickets", url, imap_url, smtp_url, work, args.repeat
        )
        print(
            f"ratio to floor: {full['ready'] / floor['ready']:.2f} x "
            f"(+{full['ready'] - floor['ready']:.2f} s for the tickets)"
        )
        print(
            verdict(
                f"start-up with {args.tickets} open tickets ({kind.split()[0]})",
                full["ready"],
                TARGET_S,
                "s",
            )
        )
        if args.profile:
            path = Path(args.profile)
            await start_once(url, imap_url, smtp_url, work, profile=path)
            text = io.StringIO()
            pstats.Stats(str(path), stream=text).sort_stats("cumulative").print_stats(30)
            print(f"\nprofile of one start (until {WATCH_AFTER_READY:g} s after READY): {path}")
            print(text.getvalue())
    return work


def clean(work: Path) -> None:
    """The SQLite files are large (about 0.5 GB for 100k tickets)."""
    for file in work.glob("mailbot-*.sqlite3*"):
        with contextlib.suppress(OSError):
            file.unlink()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="starts per series (median)")
    parser.add_argument("--db", help="postgresql://... (emptied!); default: a SQLite file")
    parser.add_argument("--server", choices=["dovecot", "pymap"], default="dovecot")
    parser.add_argument("--profile", help="also profile one start into this file")
    clean(asyncio.run(main(parser.parse_args())))
    sys.exit(0)
