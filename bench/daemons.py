"""Ingest with one and with two daemons on one PostgreSQL database and one mailbox.

    .venv/bin/python bench/daemons.py --db postgresql://postgres@127.0.0.1:5432/mailbot_bench \
        [-n 1000] [--server dovecot|pymap]

The database named by ``--db`` is EMPTIED (its public schema dropped) before each run.

1. N generated messages (as bench/ingest.py: en/sv/it requests, threaded replies, HTML-only,
   attachments) are APPENDed to a ``Staging`` folder, not yet to the INBOX.
2. Floor: one connection fetches them in batches of 50 with ``BODY.PEEK[]`` and parses each
   with the standard library (``message_from_bytes`` + ``get_body`` + ``get_content``).
3. For 1 and then 2 daemons (``mailbot run`` processes, fresh database and mailbox each time):
   start them on the empty INBOX, wait until every one is READY (sd_notify), then move all N
   messages into the INBOX with one ``UID MOVE`` (t0). The lease holder's IDLE sees them.
   Ingest ends when the database holds N inbound messages; end to end when the SMTP sink has
   every acknowledgement and notification the database queued.
4. Printed per run: ingest and end-to-end messages/s, the ratio to the floor, which daemon
   fetched (the lease), how many outbox rows each daemon sent, duplicates (a Message-ID
   stored twice, a mail delivered twice: both must be 0).

With two daemons only the lease holder fetches, so ingest should equal one daemon's; the
second one shares the sending. The figure shows what the lease and the row claims cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from email import policy as email_policy
from pathlib import Path
from typing import Any

from common import (
    REPO,
    NotifyListener,
    bench_rules,
    daemon_env,
    endpoint_of,
    imap_servers,
    iter_messages,
    mailbot_command,
)

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BATCH = 50


async def empty_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


async def count_rows(url: str, sql: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def floor(staging: Any) -> float:
    from mailbot.mailbox.imap import ImapSession

    start = time.perf_counter()
    async with await ImapSession.open(staging) as session:
        uids = await session.search_uids(1)
        for i in range(0, len(uids), BATCH):
            for fetched in await session.fetch(uids[i : i + BATCH]):
                parsed = email.message_from_bytes(fetched.raw, policy=email_policy.default)
                body = parsed.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
                if body is not None:
                    body.get_content()
    return len(uids) / (time.perf_counter() - start)


async def stage(url: str, raws: list[bytes]) -> Any:
    """APPEND every message to Staging; the Staging endpoint."""
    from dataclasses import replace

    from mailbot.mailbox.imap import ImapSession

    inbox = endpoint_of(url)
    staging = replace(inbox, mailbox="Staging")
    async with await ImapSession.open(inbox) as session:
        await session.create_folder("Staging")
        for raw in raws:
            await session.append(raw, folder="Staging")
    return staging


async def release(staging: Any) -> None:
    from mailbot.mailbox.imap import ImapSession

    async with await ImapSession.open(staging) as session:
        uids = await session.search_uids(1)
        await session.move(uids, "INBOX", create=False)


async def run(
    count: int, daemons: int, db: str, imap: Any, raws: list[bytes], work: Path
) -> dict[str, Any]:
    from mailbot.devservers.smtp_sink import running_smtp_sink

    await empty_database(db)
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    url = await imap.mailbox(f"bench{daemons}x{int(time.time() * 1000) % 10**8}")
    staging = await stage(url, raws)
    rules = bench_rules(work)
    async with running_smtp_sink() as sink:
        notify = NotifyListener(work)
        procs: list[tuple[asyncio.subprocess.Process, Path]] = []
        try:
            for n in range(daemons):
                env = daemon_env(
                    state=work / f"state{n}",
                    imap_url=url,
                    smtp_url=sink.url,
                    rules=rules,
                    db_url=db,
                    extra={"NOTIFY_SOCKET": str(notify.path), "MAILBOT_BATCH": str(BATCH)},
                )
                log = work / f"daemon{daemons}-{n}.log"
                with log.open("wb") as out:
                    proc = await asyncio.create_subprocess_exec(
                        *mailbot_command(), "run", env=env, stdout=out, stderr=out
                    )
                procs.append((proc, log))
                await notify.wait_for("READY=1", 60)
            t0 = time.perf_counter()
            await release(staging)
            stored_at = None
            while True:
                stored = await count_rows(db, "SELECT count(*) FROM message WHERE direction='in'")
                if stored_at is None and stored >= count:
                    stored_at = time.perf_counter()
                if stored_at is not None:
                    queued = await count_rows(db, "SELECT count(*) FROM outbox")
                    if len(sink.messages) >= queued:
                        break
                if time.perf_counter() - t0 > 600:
                    raise TimeoutError(f"{stored} of {count} stored after 600 s")
                await asyncio.sleep(0.1)
            done_at = time.perf_counter()
            duplicates = await count_rows(
                db,
                "SELECT count(*) FROM (SELECT message_id FROM message WHERE direction='in'"
                " GROUP BY message_id HAVING count(*) > 1) d",
            )
        finally:
            for proc, _ in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 60)
            notify.close()
        delivered = Counter(
            (m.rcpt_tos, m.raw.split(b"Message-ID:", 1)[-1][:120]) for m in sink.messages
        )
    fetchers = [
        n for n, (_, log) in enumerate(procs) if "fetches it now" in log.read_text(errors="replace")
    ]
    sent_by = [log.read_text(errors="replace").count("sent outbox row") for _, log in procs]
    return {
        "ingest": count / (stored_at - t0),
        "e2e": count / (done_at - t0),
        "fetchers": fetchers,
        "sent_by": sent_by,
        "duplicates": duplicates,
        "delivered_twice": sum(1 for c in delivered.values() if c > 1),
        "mails": len(sink.messages),
    }


async def main(args: argparse.Namespace) -> int:
    raws = list(iter_messages(args.n, tag="daemons"))
    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-daemons-"))
    try:
        async with imap_servers(args.server) as imap:
            probe = await imap.mailbox("benchfloor")
            floor_rate = await floor(await stage(probe, raws))
            print(f"IMAP: {imap.kind}; database: {args.db} (emptied); {args.n} messages")
            print(f"floor (fetch + stdlib parse):   {floor_rate:8.1f} msg/s")
            for daemons in (1, 2):
                figures = await run(args.n, daemons, args.db, imap, raws, work / f"d{daemons}")
                plural = "s" if daemons > 1 else " "
                print(
                    f"{daemons} daemon{plural}: ingest {figures['ingest']:7.1f}"
                    f" msg/s ({figures['ingest'] / floor_rate:.2f} x floor), end to end"
                    f" {figures['e2e']:6.1f} msg/s ({figures['mails']} mails); fetched by"
                    f" daemon {figures['fetchers']}, rows sent per daemon {figures['sent_by']};"
                    f" duplicates stored {figures['duplicates']}, delivered twice"
                    f" {figures['delivered_twice']}"
                )
    finally:
        if args.keep:
            print(f"daemon logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--db", required=True, help="postgresql://... (emptied!)")
    parser.add_argument("--server", choices=["dovecot", "pymap"], default="dovecot")
    parser.add_argument("--keep", action="store_true", help="keep the daemons' logs")
    sys.exit(asyncio.run(main(parser.parse_args())))
