"""Memory benchmark: RSS while ingesting many messages, against a stdlib-parse floor.

    .venv/bin/python bench/memory.py [--messages 100000] [--every 10000]
        [--imap-messages 5000] [--series floor,direct,imap] [--server dovecot|pymap]
        [--attachment-kb N] [--batch-bytes BYTES]

Each series runs in a fresh process of its own (peak RSS is per process), sampling its
VmRSS (and VmHWM, the peak) from /proc/self/status every ``--every`` messages:

* ``floor``: the same generated messages (bench/common.py: new requests in en/sv/it, threaded
  replies, HTML-only, attachments; generated lazily) parsed with the standard library only
  (``email.message_from_bytes`` + ``get_body``), nothing stored.
* ``direct``: ``Intake.accept`` as the poller's ``_process_batch`` drives it: one
  transaction per batch of ``MAILBOT_BATCH`` (50), a savepoint per message, the UID
  checkpoint advanced in the batch's transaction; into a SQLite file (WAL,
  synchronous=FULL) with the shipped rules.yaml (total storm brake lifted). No IMAP, no SMTP:
  outbox rows are written, not sent.
* ``imap`` (full path, fewer messages): the messages are APPENDed to Dovecot (pymap when it
  cannot start) first, then ``Daemon.run_once()`` in the child fetches, ingests,
  acknowledges on IMAP and sends every answer to an aiosmtpd sink in the parent process;
  sampled every 0.25 s by a task in the child. With the default ``MAILBOT_PARSE_WORKERS``
  the child has a parse worker (and multiprocessing's forkserver and resource tracker):
  their proportional set size (PSS: shared pages divided among the processes sharing them,
  from /proc/PID/smaps_rollup) is sampled too and printed beside the daemon's RSS.

Printed: the curve (RSS at 10k, 20k, ...), the peak, and the slope of the last half (least
squares, MB per 10k messages). Targets: peak < 200 MB and flat (slope of the last half
< 2 MB per 10k messages, i.e. < 20 MB more per further 100k). Exit 0 always.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import json
import os
import subprocess
import sys
import tempfile
import time
from email import policy as email_policy
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    bench_rules,
    endpoint_of,
    imap_servers,
    iter_messages,
    proc_status,
    verdict,
)

from mailbot.devservers.smtp_sink import running_smtp_sink

PEAK_TARGET_MB = 200.0
SLOPE_TARGET_MB = 2.0  # per 10k messages, over the last half of the curve
BATCH = 50
KEY = "bench@127.0.0.1:143/INBOX"

#: (messages, VmRSS MB, VmHWM MB, seconds, the PSS of every descendant process in MB)
Sample = tuple[int, float, float, float, float]
_STARTED = time.perf_counter()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (parse workers, multiprocessing's forkserver and
    resource tracker), from the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def descendants_pss() -> float:
    """The proportional set size of every process below this one, in MB: their memory,
    pages shared with this process or between them counted once in all (their RSS would
    count the forkserver's pages again in every worker forked from it)."""
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
                        break
        except OSError:
            continue  # gone meanwhile
    return total


def sample(done: int) -> Sample:
    status = proc_status()
    return (
        done,
        status["VmRSS"],
        status["VmHWM"],
        time.perf_counter() - _STARTED,
        descendants_pss(),
    )


# --------------------------------------------------------------------------- children


def child_floor(count: int, every: int) -> list[Sample]:
    curve = [sample(0)]
    for done, raw in enumerate(iter_messages(count), start=1):
        parsed = email.message_from_bytes(raw, policy=email_policy.default)
        body = parsed.get_body(preferencelist=("plain", "html"))
        if body is not None:
            body.get_content()
        if done % every == 0 or done == count:
            curve.append(sample(done))
    return curve


async def child_direct(count: int, every: int) -> list[Sample]:
    from tortoise.transactions import in_transaction

    from mailbot.agents.tokens import TokenSigner
    from mailbot.clock import SystemClock
    from mailbot.ingest.pipeline import Intake
    from mailbot.policy import load_policy
    from mailbot.tickets.database import close_database, open_database, sqlite_url
    from mailbot.tickets.service import Origin, advance_checkpoint, ensure_mailbox_state

    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-memory-"))
    policy = load_policy(bench_rules(work), REPO / "templates")
    await open_database(sqlite_url(work / "mailbot.sqlite3"))
    curve = [sample(0)]
    try:
        intake = Intake(policy, SystemClock(), signer=TokenSigner(b"bench-secret-0123456789abcdef"))
        async with in_transaction() as conn:
            await ensure_mailbox_state(conn, KEY, 1)
        messages = iter_messages(count)
        done = 0
        while batch := list(islice(messages, BATCH)):
            async with in_transaction():  # as MailboxPoller._process_batch
                for raw in batch:
                    done += 1
                    origin = Origin(label=f"INBOX uid {done}", mailbox=KEY, uidvalidity=1, uid=done)
                    await intake.accept(raw, origin)
                await advance_checkpoint(KEY, 1, done)
            if done % every < BATCH or done == count:
                curve.append(sample(done))
    finally:
        await close_database()
    return curve


async def child_imap(
    count: int, every: int, imap_url: str, smtp_url: str, batch_bytes: str
) -> list[Sample]:
    from common import PASSWORD

    from mailbot.daemon import Daemon
    from mailbot.policy import load_policy
    from mailbot.settings import load_settings
    from mailbot.tickets.database import close_database, open_database

    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-memory-imap-"))
    settings = load_settings(
        {
            "MAILBOT_STATE_DIR": str(work),
            "MAILBOT_IMAP_PASSWORD": PASSWORD,
            "MAILBOT_TEMPLATES": str(REPO / "templates"),
            "MAILBOT_SECRET": "bench-secret-0123456789abcdef",
            **({"MAILBOT_BATCH_BYTES": batch_bytes} if batch_bytes else {}),
        },
        imap_url=imap_url,
        smtp_url=smtp_url,
        rules=str(bench_rules(work)),
    )
    policy = load_policy(settings.rules_path, settings.templates_dir)
    await open_database(settings.db_url)
    curve = [sample(0)]
    try:
        daemon = Daemon(settings, policy)
        run = asyncio.create_task(daemon.run_once())
        mark = every
        while not run.done():
            await asyncio.wait({run}, timeout=0.25)
            done = sum(daemon.poller.stats.values())
            if done >= mark:
                curve.append(sample(done))
                mark = (done // every + 1) * every
        report = run.result()
        curve.append(sample(sum(report.ingested.values())))
        print(f"imap child: sent {report.sent} answers", file=sys.stderr)
    finally:
        await close_database()
    return curve


# --------------------------------------------------------------------------- parent


def run_child(mode: str, count: int, every: int, *extra: str) -> tuple[list[Sample], float]:
    start = time.perf_counter()
    command = [sys.executable, __file__, "--child", mode, "--messages", str(count)]
    out = subprocess.run(
        [*command, "--every", str(every), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        print(f"{mode}: the child failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return [], elapsed
    return [tuple(s) for s in json.loads(out.stdout.splitlines()[-1])], elapsed


def slope_per_10k(curve: list[Sample]) -> float:
    """Least-squares slope of RSS over the last half of the curve, MB per 10k messages."""
    points = [(n, rss) for n, rss, _, _, _ in curve if n > 0]
    half = points[len(points) // 2 :] if len(points) >= 4 else points
    if len(half) < 2:
        return 0.0
    mean_n = sum(n for n, _ in half) / len(half)
    mean_r = sum(r for _, r in half) / len(half)
    var = sum((n - mean_n) ** 2 for n, _ in half)
    if var == 0:
        return 0.0
    cov = sum((n - mean_n) * (r - mean_r) for n, r in half)
    return cov / var * 10_000


def show(name: str, curve: list[Sample], elapsed: float, floor_peak: float | None) -> None:
    if not curve:
        return
    last = curve[-1][0]
    print(f"\n== {name}: {last} messages in {elapsed:.0f} s ({last / elapsed:.0f} msg/s)")
    # The rate of each interval: a cost that grows with the database shows as a falling rate.
    print("   messages    RSS MB   peak MB  workers MB   msg/s in the interval")
    previous: Sample | None = None
    for n, rss, hwm, at, others in curve:
        rate = (
            f"{(n - previous[0]) / (at - previous[3]):8.0f}"
            if previous is not None and at > previous[3] and n > previous[0]
            else ""
        )
        print(f"   {n:8d}  {rss:8.1f}  {hwm:8.1f}  {others:10.1f}  {rate}")
        previous = (n, rss, hwm, at, others)
    peak = max(h for _, _, h, _, _ in curve)
    workers = max(o for _, _, _, _, o in curve)
    slope = slope_per_10k(curve)
    ratio = f" = {peak / floor_peak:.1f} x floor" if floor_peak else ""
    print(f"   peak {peak:.0f} MB{ratio}; slope of the last half {slope:+.2f} MB per 10k messages")
    if workers:
        print(
            f"   the processes below it (parse worker, forkserver, resource tracker): at most"
            f" {workers:.0f} MB (PSS); with the daemon's peak {peak + workers:.0f} MB"
        )
    if name != "floor":
        print(verdict(f"{name} peak RSS", peak, PEAK_TARGET_MB, "MB"))
        if workers:
            total = peak + workers
            print(verdict(f"{name} peak RSS with its workers", total, PEAK_TARGET_MB, "MB"))
        print(verdict(f"{name} RSS slope (last half)", slope, SLOPE_TARGET_MB, "MB/10k"))


async def prepare_imap(count: int, server: str, attachment_kb: int, batch_bytes: str) -> None:
    """APPEND ``count`` messages, then run the imap child against them and a sink here."""
    from mailbot.mailbox.imap import append_messages

    async with imap_servers(server) as servers, running_smtp_sink() as sink:
        url = await servers.mailbox("bench")
        start = time.perf_counter()
        await append_messages(
            endpoint_of(url), iter_messages(count, attachment_bytes=attachment_kb * 1024)
        )
        took = time.perf_counter() - start
        print(f"imap: {count} messages APPENDed to {servers.kind} in {took:.0f} s (set-up)")
        every = max(1, count // 10)
        smtp = f"smtp+plain://{sink.host}:{sink.port}"
        extra = ["--imap-url", url, "--smtp-url", smtp, "--batch-bytes", batch_bytes]
        curve, elapsed = await asyncio.to_thread(run_child, "imap", count, every, *extra)
        name = f"imap full path ({servers.kind}, {len(sink.messages)} mails at SMTP)"
        show(name, curve, elapsed, None)


def main(args: argparse.Namespace) -> None:
    series = set(args.series.split(","))
    print(f"memory: {args.messages} messages, RSS sampled every {args.every}")
    floor_peak = None
    if "floor" in series or "direct" in series:
        floor, floor_s = run_child("floor", args.messages, args.every)
        show("floor", floor, floor_s, None)
        floor_peak = max((h for _, _, h, _, _ in floor), default=0.0) or None
    if "direct" in series:
        direct, direct_s = run_child("direct", args.messages, args.every)
        show("direct (Intake.accept in batches of 50, SQLite)", direct, direct_s, floor_peak)
    if "imap" in series and args.imap_messages > 0:
        asyncio.run(
            prepare_imap(args.imap_messages, args.server, args.attachment_kb, args.batch_bytes)
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000, help="sample RSS every N")
    parser.add_argument("--imap-messages", type=int, default=5_000, help="0: no IMAP run")
    parser.add_argument("--series", default="floor,direct,imap", help="which series to run")
    parser.add_argument("--server", choices=["dovecot", "pymap"], default="dovecot")
    parser.add_argument(
        "--attachment-kb", type=int, default=0, help="imap: every message carries a PDF this big"
    )
    parser.add_argument(
        "--batch-bytes", default="", help="imap: MAILBOT_BATCH_BYTES (default: mailbot's)"
    )
    parser.add_argument("--child", choices=["floor", "direct", "imap"], help=argparse.SUPPRESS)
    parser.add_argument("--imap-url", help=argparse.SUPPRESS)
    parser.add_argument("--smtp-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "floor":
        print(json.dumps(child_floor(args.messages, args.every)))
    elif args.child == "direct":
        print(json.dumps(asyncio.run(child_direct(args.messages, args.every))))
    elif args.child == "imap":
        result = asyncio.run(
            child_imap(args.messages, args.every, args.imap_url, args.smtp_url, args.batch_bytes)
        )
        print(json.dumps(result))
    else:
        main(args)
    sys.exit(0)
