"""Ingest benchmark: mailbot end to end against a floor measured in the same run.

    .venv/bin/python bench/ingest.py [-n 1000] [--latency 200] [--server dovecot|pymap]
                                     [--db postgresql://user@host:port/THROWAWAY] [--phases]

The IMAP server is Dovecot (a separate process, as in production) when installed, else pymap,
which runs inside this process and so takes CPU from both the floor and mailbot.

1. Generates N realistic messages (new requests in en/sv/it, threaded replies with quotes,
   some HTML-only, some with attachments) and APPENDs them to a real IMAP server.
2. Floor: one connection fetches the same UIDs in the same batches with BODY.PEEK[] and parses
   each with the standard library alone (email.message_from_bytes + get_body). Nothing stored.
3. mailbot: `Daemon.run_once()` ingests them all (parse, loop check, threading, decision,
   agent notifications, outbox rows; one commit per fetch batch, SQLite with
   synchronous=FULL, a savepoint per message; one ranged ack on IMAP per batch), then sends
   the answers to an aiosmtpd server. Reported: ingest messages/s (poller), end-to-end
   messages/s (including SMTP), and the ratio to the floor.
4. Latency: the daemon runs with IDLE; new requests from senders not seen before are
   APPENDed one at a time and the time from APPEND's completion to the acknowledgement
   addressed to that sender arriving at the SMTP server is measured (not just any mail: the
   agents' notifications arrive there too).
5. Peak RSS of the process (ru_maxrss).
6. ``--phases``: where the ingest's time goes: the wall time spent inside each main step of
   intake (inclusive, so nested steps are also inside their callers), in ms per message, and
   the main thread's CPU time against the wall time. The steps are timed by wrapping them,
   which costs ~1 µs a call (a profiler would multiply the time of everything it sees).

The database is a fresh SQLite file unless ``--db postgresql://...`` names a PostgreSQL
database, which is EMPTIED first (its ``public`` schema dropped): use a throw-away one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from email import policy as email_policy
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, however run

from common import iter_messages

from mailbot.daemon import Daemon
from mailbot.devservers.pymap_server import running_pymap
from mailbot.devservers.smtp_sink import running_smtp_sink
from mailbot.endpoints import parse_endpoint
from mailbot.mailbox.imap import ImapSession, append_messages
from mailbot.policy import Policy, load_policy
from mailbot.rules.schema import Window
from mailbot.settings import load_settings
from mailbot.tickets.database import close_database, open_database

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bench", "bench-password"


def generate(count: int, seed: int = 7) -> list[bytes]:
    """``count`` messages of ``bench/common.py``'s mix (new requests in en/sv/it, threaded
    replies with quotes, HTML-only, attachments), senders ``customerN@shopM.example``."""
    return list(iter_messages(count, seed=seed, tag="customer"))


async def floor(endpoint: Any, batch: int) -> float:
    """Fetch every message in batches and parse it with the standard library only."""
    start = time.perf_counter()
    session = await ImapSession.open(endpoint)
    try:
        uids = await session.search_uids(1)
        for i in range(0, len(uids), batch):
            for fetched in await session.fetch(uids[i : i + batch]):
                parsed = email.message_from_bytes(fetched.raw, policy=email_policy.default)
                body = parsed.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
                if body is not None:
                    body.get_content()
    finally:
        await session.close()
    return len(uids) / (time.perf_counter() - start)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def without_total_limit(policy: Policy) -> Policy:
    """The shipped storm brake allows 500 automatic answers an hour in all; a benchmark sends
    more new requests than that in a minute, so it is lifted here (the per-address limit
    stays: every generated customer writes once)."""
    limits = policy.rules.auto_reply_limits
    rules = policy.rules.model_copy(
        update={
            "auto_reply_limits": limits.model_copy(
                update={"total": Window(count=1_000_000, per="1h")}
            )
        }
    )
    return dataclasses.replace(policy, rules=rules)


async def wait_for_mail_to(sink: Any, address: str, seen: int, timeout: float) -> None:  # noqa: ASYNC109
    """Until a message addressed to ``address`` is among the sink's messages from ``seen`` on."""
    deadline = time.perf_counter() + timeout
    address = address.lower()
    while True:
        if any(address in (r.lower() for r in m.rcpt_tos) for m in sink.messages[seen:]):
            return
        seen = len(sink.messages)
        await sink.wait_for(seen + 1, timeout=max(0.01, deadline - time.perf_counter()))


async def measure_latency(
    imap_url: str, sink: Any, settings: Any, policy: Any, count: int
) -> list[float]:
    daemon = Daemon(settings, policy)
    task = asyncio.create_task(daemon.run())
    endpoint = parse_endpoint(imap_url, protocol="imap", password=PASSWORD)
    session = await ImapSession.open(endpoint)
    latencies: list[float] = []
    try:
        await asyncio.sleep(0.5)  # let the daemon log in and enter IDLE (not part of any figure)
        for raw in generate(count, seed=99):
            if b"In-Reply-To" in raw:
                continue
            # Senders the ingest run has not seen (its per-address brake would refuse them).
            raw = raw.replace(b"@shop", b"@late-shop")
            sender = email.message_from_bytes(raw, policy=email_policy.default)["From"]
            address = sender.addresses[0].addr_spec
            before = len(sink.messages)
            await session.append(raw)
            appended = time.perf_counter()
            await wait_for_mail_to(sink, address, before, timeout=10.0)
            latencies.append(time.perf_counter() - appended)
    finally:
        await session.close()
        daemon.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
    return latencies


@contextlib.asynccontextmanager
async def imap_server(kind: str) -> AsyncIterator[tuple[str, str, int]]:
    """(kind, host, port) of a fresh IMAP server with the user USER/PASSWORD."""
    if kind == "dovecot":
        sys.path.insert(0, str(REPO))
        from tests.servers.dovecot import DovecotServer, dovecot_missing_reason

        reason = dovecot_missing_reason()
        if reason is None:
            server = DovecotServer.start()
            try:
                server.add_user(USER, PASSWORD)
                yield "dovecot", server.host, server.imap_port
            finally:
                server.stop()
            return
        print(f"Dovecot unavailable ({reason}); using pymap", file=sys.stderr)
    async with running_pymap(USER, PASSWORD) as srv:
        yield "pymap (in-process)", srv.host, srv.port


async def empty_postgres(url: str) -> None:
    """Drop every table of the throw-away PostgreSQL database ``url`` (tests/db.py's)."""
    sys.path.insert(0, str(REPO))
    from tests.db import empty_postgres as drop_tables

    try:
        await drop_tables(url)
    finally:
        await close_database()


#: (module, function) timed by ``--phases``; each is replaced where mailbot's modules hold it.
PHASES = (
    ("mailbot.ingest.parse", "parse_message"),
    ("mailbot.tickets.service", "find_duplicate"),
    ("mailbot.ingest.pipeline", "analyse"),
    ("mailbot.tickets.service", "thread_facts"),
    ("mailbot.ingest.quotes", "new_text"),
    ("mailbot.rules.engine", "decide"),
    ("mailbot.tickets.service", "apply_inbound"),
    ("mailbot.tickets.clocks", "store_sla"),
    ("mailbot.tickets.limits", "auto_reply_refusal"),
    ("mailbot.outbound.reply", "build_reply"),
    ("mailbot.tickets.assignment", "assign_new_ticket"),
    ("mailbot.tickets.notices", "notify_agents"),
    ("mailbot.tickets.notices", "ticket_summary"),
    ("mailbot.outbound.agent_mail", "compose_notification"),
    ("mailbot.outbound.compose", "compose"),
    ("mailbot.tickets.service", "queue_outgoing"),
)


def time_phases() -> tuple[dict[str, float], dict[str, int]]:
    """Wrap each of PHASES to add its wall time and calls to the returned counters."""
    import functools
    import importlib
    import inspect

    spent: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timed(name: str, function: Any) -> Any:
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await function(*args, **kwargs)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
                    calls[name] = calls.get(name, 0) + 1

            return timed_async

        @functools.wraps(function)
        def timed_sync(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
                calls[name] = calls.get(name, 0) + 1

        return timed_sync

    for module_name, name in PHASES:
        original = getattr(importlib.import_module(module_name), name)
        wrapper = timed(name, original)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith("mailbot") and (
                getattr(module, name, None) is original
            ):
                setattr(module, name, wrapper)
    return spent, calls


async def main(
    count: int,
    latency_count: int,
    server: str,
    db: str | None,
    phases: bool = False,
    parse_workers: str = "auto",
) -> None:
    logging.basicConfig(level=logging.WARNING)
    raws = generate(count)
    state = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    async with imap_server(server) as (kind, host, port), running_smtp_sink() as sink:
        imap_url = f"imap+plain://{USER}@{host}:{port}/INBOX"
        settings = load_settings(
            {
                "MAILBOT_STATE_DIR": str(state),
                "MAILBOT_IMAP_PASSWORD": PASSWORD,
                "MAILBOT_TEMPLATES": str(REPO / "templates"),
                "MAILBOT_IDLE_SECONDS": "600",
                "MAILBOT_PARSE_WORKERS": parse_workers,
            },
            imap_url=imap_url,
            smtp_url=f"smtp+plain://{sink.host}:{sink.port}",
            rules=str(REPO / "rules.yaml"),
            db_url=db,
        )
        assert settings.imap is not None
        policy = without_total_limit(load_policy(settings.rules_path, settings.templates_dir))
        t0 = time.perf_counter()
        await append_messages(settings.imap, raws)
        append_rate = count / (time.perf_counter() - t0)
        floor_rate = await floor(settings.imap, settings.batch)

        if db is not None:
            await empty_postgres(db)
        await open_database(settings.db_url)
        try:
            daemon = Daemon(settings, policy)
            if daemon.poller.parsers is not None:
                await daemon.poller.parsers.start()  # as `mailbot run` does before READY
            spent, calls = time_phases() if phases else ({}, {})
            start = time.perf_counter()
            cpu_start = time.thread_time()
            await daemon.poller.run_once()
            ingest_s = time.perf_counter() - start
            ingest_cpu = time.thread_time() - cpu_start
            sent = 0
            while batch := await daemon.sender.run_once():
                sent += batch
            total_s = time.perf_counter() - start
            stats = dict(daemon.poller.stats)
            latencies = await measure_latency(imap_url, sink, settings, policy, latency_count)
        finally:
            await close_database()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ingest_rate = count / ingest_s
    print(f"IMAP server:         {kind}")
    print(f"database:            {'PostgreSQL' if db else 'SQLite (WAL, synchronous=FULL)'}")
    print(f"parse workers:       {settings.parse_workers} (MAILBOT_PARSE_WORKERS={parse_workers})")
    print(f"messages:            {count} ({', '.join(f'{k.value} {v}' for k, v in stats.items())})")
    print(f"APPEND rate:         {append_rate:8.1f} msg/s (setup, not a figure)")
    print(f"floor (fetch+parse): {floor_rate:8.1f} msg/s")
    print(
        f"mailbot ingest:      {ingest_rate:8.1f} msg/s  = {ingest_rate / floor_rate:.2f} x floor"
    )
    print(f"mailbot incl. SMTP:  {count / total_s:8.1f} msg/s  ({sent} answers sent)")
    if latencies:
        print(
            f"APPEND->ack latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.0f} ms over {len(latencies)} messages (IDLE)"
        )
    print(f"peak RSS:            {rss_mb:.0f} MB")
    if phases:
        print(
            f"main thread CPU:     {ingest_cpu / count * 1000:.2f} ms a message of "
            f"{ingest_s / count * 1000:.2f} ms wall (the rest: waiting on the database's "
            "thread and the IMAP server)"
        )
        print("phase (wall, inclusive)      ms/message   calls")
        for name, _ in sorted(spent.items(), key=lambda item: -item[1]):
            print(f"  {name:26s} {spent[name] / count * 1000:8.3f}  {calls[name]:6d}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="messages to ingest")
    parser.add_argument("--latency", type=int, default=200, help="messages for the latency run")
    parser.add_argument("--server", choices=["dovecot", "pymap"], default="dovecot")
    parser.add_argument(
        "--db", help="postgresql://... (a throw-away database: it is emptied first)"
    )
    parser.add_argument(
        "--phases", action="store_true", help="print where the ingest's wall time goes"
    )
    parser.add_argument(
        "--parse-workers",
        default="auto",
        help="MAILBOT_PARSE_WORKERS for the run (default auto: 1 with two cores or more)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.n, args.latency, args.server, args.db, args.phases, args.parse_workers))
    sys.exit(0)
