"""Latency benchmark: APPEND to acknowledgement with IDLE, against an IDLE floor.

    .venv/bin/python bench/latency.py [-n 200] [--mode paced|burst|both] [--server dovecot|pymap]

The daemon is ``mailbot run`` in a subprocess (as systemd starts it): its own process and
event loop, so neither the load generator nor the SMTP server in this process shares its
loop, and start-up, imports and the log set-up are the production ones. IMAP is Dovecot (a
separate process; pymap in this process when Dovecot cannot start), SMTP an aiosmtpd sink
in this process. Rules: the shipped rules.yaml with its total storm brake lifted.

For each mode (``paced``: one APPEND every 50-100 ms, random; ``burst``: back to back):

1. floor: a bare aioimaplib client in IDLE on another mailbox of the same server; at each
   push it ends IDLE, ``UID FETCH``es the new messages with ``BODY.PEEK[]`` and parses each
   with the standard library (``email.message_from_bytes`` + ``get_body``). Measured per
   message: APPEND's completion -> the IDLE push (the server's notification itself), and
   APPEND's completion -> parsed.
2. mailbot: the daemon in IDLE; APPEND's completion -> the acknowledgement (an automatic
   answer to the sender whose In-Reply-To is the message's Message-ID) received by the SMTP
   server. Every message is a new request from a new address, so each gets one.

Printed: p50/p90/p99/max per series, the ratio of mailbot's p50/p99 to the floor's
(fetch + parse), and PASS/FAIL against the targets (p50 < 250 ms, p99 < 1 s). Exit 0 always.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.utils
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aioimaplib
from common import (
    PASSWORD,
    NotifyListener,
    bench_rules,
    daemon_env,
    endpoint_of,
    imap_servers,
    iter_messages,
    mailbot_command,
    percentile,
    proc_status,
    verdict,
)

from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from mailbot.mailbox.imap import ImapSession

P50_TARGET_MS = 250.0
P99_TARGET_MS = 1000.0
WAIT_AFTER_LAST = 30.0  # seconds to wait for the last acknowledgements of a series


@dataclass
class Series:
    """APPEND completion times and the time each message was seen done (time.monotonic())."""

    appended: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    pushed: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def mark(self, mid: str, at: float, pushed: float | None = None) -> None:
        self.done.setdefault(mid, at)
        if pushed is not None:
            self.pushed.setdefault(mid, pushed)
        self.changed.set()

    def latencies(self, which: dict[str, float]) -> list[float]:
        return [which[m] - t for m, t in self.appended.items() if m in which]

    def lost(self) -> int:
        return len([m for m in self.appended if m not in self.done])


def message_id(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Message-ID"]).strip()


def batches(count: int, tag: str, seed: int) -> list[tuple[str, bytes]]:
    """New requests only (each gets an acknowledgement), with their Message-IDs."""
    return [
        (message_id(raw), raw) for raw in iter_messages(count, seed=seed, replies=False, tag=tag)
    ]


async def drive(
    url: str,
    messages: list[tuple[str, bytes]],
    series: Series | None,
    *,
    paced: bool,
    rng: random.Random,
) -> None:
    """APPEND each message (to ``url``'s INBOX) and note when each APPEND completed."""
    async with await ImapSession.open(endpoint_of(url)) as session:
        for mid, raw in messages:
            start = time.monotonic()
            await session.append(raw)
            if series is not None:
                series.appended[mid] = time.monotonic()
            if paced:
                await asyncio.sleep(max(0.0, rng.uniform(0.05, 0.1) - (time.monotonic() - start)))


async def wait_done(series: Series, *, timeout: float) -> None:  # noqa: ASYNC109
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while series.lost():
                series.changed.clear()
                await series.changed.wait()


# --------------------------------------------------------------------------- floor


def _fetched(lines: list[Any]) -> list[tuple[int, bytes]]:
    """(uid, raw) of each message in aioimaplib's lines of a UID FETCH response."""
    out: list[tuple[int, bytes]] = []
    header = b""
    for line in lines:
        if isinstance(line, bytearray):
            uid_at = header.find(b"UID ")
            if uid_at >= 0:
                out.append((int(header[uid_at + 4 :].split()[0].strip(b")")), bytes(line)))
        elif isinstance(line, bytes):
            header = line
    return out


class FloorClient:
    """The bare IDLE client: aioimaplib, IDLE, UID FETCH BODY.PEEK[], stdlib parse."""

    def __init__(self, url: str) -> None:
        self.endpoint = endpoint_of(url)
        self.series = Series()
        self.stop = asyncio.Event()
        self.idling = asyncio.Event()
        self.last_uid = 0

    async def run(self) -> None:
        client = aioimaplib.IMAP4(host=self.endpoint.host, port=self.endpoint.port, timeout=30)
        await client.wait_hello_from_server()
        await client.login(self.endpoint.user, PASSWORD)
        await client.select("INBOX")
        try:
            while not self.stop.is_set():
                idle = await client.idle_start(timeout=600)
                self.idling.set()
                pushed = None
                while pushed is None and not self.stop.is_set():
                    try:
                        push = await client.wait_server_push(timeout=0.2)
                    except TimeoutError:
                        continue
                    if "EXISTS" in str(push):
                        pushed = time.monotonic()
                client.idle_done()
                await asyncio.wait_for(idle, 30)
                if pushed is not None:
                    await self._fetch_new(client, pushed)
        finally:
            with contextlib.suppress(Exception):
                await client.logout()

    async def _fetch_new(self, client: Any, pushed: float) -> None:
        response = await client.uid("fetch", f"{self.last_uid + 1}:*", "(UID BODY.PEEK[])")
        for uid, raw in _fetched(response.lines):
            if uid <= self.last_uid:
                continue
            self.last_uid = uid
            parsed = email.message_from_bytes(raw, policy=email_policy.default)
            body = parsed.get_body(preferencelist=("plain", "html"))
            if body is not None:
                body.get_content()
            mid = str(parsed["Message-ID"]).strip()
            self.series.mark(mid, time.monotonic(), pushed)


async def run_floor(
    url: str, modes: list[str], count: int, warmup: int, rng: random.Random
) -> dict[str, Series]:
    client = FloorClient(url)
    task = asyncio.create_task(client.run())
    out: dict[str, Series] = {}
    try:
        await asyncio.wait_for(client.idling.wait(), 30)
        await drive(url, batches(warmup, "floorwarm", 1), None, paced=True, rng=rng)
        await asyncio.sleep(1.0)
        for mode in modes:
            client.series = Series()
            messages = batches(count, f"floor{mode}", 2)
            await drive(url, messages, client.series, paced=mode == "paced", rng=rng)
            await wait_done(client.series, timeout=WAIT_AFTER_LAST)
            out[mode] = client.series
            await asyncio.sleep(0.5)
    finally:
        client.stop.set()
        await asyncio.wait_for(task, 30)
    return out


# --------------------------------------------------------------------------- mailbot


class AckWatcher:
    """Matches what the SMTP sink receives to APPENDed messages by In-Reply-To."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.seen = 0
        self.series = Series()
        self.senders: dict[str, str] = {}  # Message-ID -> the customer's address

    async def run(self) -> None:
        while True:
            await self.sink.wait_for(self.seen + 1, timeout=3600)
            for received in self.sink.messages[self.seen :]:
                headers = BytesHeaderParser().parsebytes(received.raw)
                parent = str(headers.get("In-Reply-To", "")).strip()
                sender = self.senders.get(parent)
                if sender is not None and sender in received.rcpt_tos:
                    self.series.mark(parent, received.arrived)
            self.seen = len(self.sink.messages)


def senders_of(messages: list[tuple[str, bytes]]) -> dict[str, str]:
    out = {}
    for mid, raw in messages:
        address = email.utils.parseaddr(str(BytesHeaderParser().parsebytes(raw)["From"]))[1]
        out[mid] = address
    return out


async def run_mailbot(
    url: str, sink: SmtpSink, modes: list[str], count: int, warmup: int, rng: random.Random
) -> tuple[dict[str, Series], dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="mailbot-bench-latency-"))
    listener = NotifyListener(work)
    env = daemon_env(
        state=work / "state",
        imap_url=url,
        smtp_url=f"smtp+plain://{sink.host}:{sink.port}",
        rules=bench_rules(work),
        extra={"NOTIFY_SOCKET": str(listener.path)},
    )
    log = (work / "daemon.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *mailbot_command(), "run", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    watcher = AckWatcher(sink)
    watch = asyncio.create_task(watcher.run())
    out: dict[str, Series] = {}
    rss: dict[str, float] = {}
    try:
        await listener.wait_for("READY=1", timeout=60)
        await asyncio.sleep(1.0)  # READY follows the first sync; let it enter IDLE
        warm = batches(warmup, "warm", 1)
        watcher.senders.update(senders_of(warm))
        await drive(url, warm, watcher.series, paced=True, rng=rng)
        await wait_done(watcher.series, timeout=WAIT_AFTER_LAST)
        for mode in modes:
            messages = batches(count, mode, 3)
            watcher.senders.update(senders_of(messages))
            watcher.series = Series()
            await drive(url, messages, watcher.series, paced=mode == "paced", rng=rng)
            await wait_done(watcher.series, timeout=WAIT_AFTER_LAST)
            out[mode] = watcher.series
            await asyncio.sleep(0.5)
        rss = proc_status(proc.pid)
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await watch
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
        listener.close()
        if proc.returncode not in (0, None):
            print(f"mailbot exited with {proc.returncode}; log: {work / 'daemon.log'}")
    return out, rss


# --------------------------------------------------------------------------- report


def figures(values: list[float]) -> str:
    if not values:
        return "no values"
    ms = [v * 1000 for v in values]
    return (
        f"p50 {statistics.median(ms):6.0f}  p90 {percentile(ms, 90):6.0f}  "
        f"p99 {percentile(ms, 99):6.0f}  max {max(ms):6.0f} ms  (n={len(ms)})"
    )


def report(mode: str, floor: Series, mailbot: Series, kind: str) -> None:
    print(f"\n== {mode} ({'one APPEND every 50-100 ms' if mode == 'paced' else 'back to back'})")
    print(f"floor  APPEND -> IDLE push:       {figures(floor.latencies(floor.pushed))}")
    print(f"floor  APPEND -> fetched+parsed:  {figures(floor.latencies(floor.done))}")
    print(f"mailbot APPEND -> ack at SMTP:    {figures(mailbot.latencies(mailbot.done))}")
    lost = mailbot.lost()
    if lost:
        print(
            f"mailbot: {lost} of {len(mailbot.appended)} messages had no acknowledgement "
            f"within {WAIT_AFTER_LAST:g} s of the last APPEND"
        )
    base, ours = floor.latencies(floor.done), mailbot.latencies(mailbot.done)
    if not base or not ours:
        print("FAIL  no figures")
        return
    p50, p99 = statistics.median(ours) * 1000, percentile(ours, 99) * 1000
    f50, f99 = statistics.median(base) * 1000, percentile(base, 99) * 1000
    print(f"ratio to floor (fetch+parse):    p50 {p50 / f50:.1f} x   p99 {p99 / f99:.1f} x")
    print(f"mailbot's own share (p50 - floor p50): {p50 - f50:.0f} ms")
    print(verdict(f"{mode} p50 APPEND->ack ({kind})", p50, P50_TARGET_MS, "ms"))
    ok = p99 < P99_TARGET_MS and lost == 0
    print(verdict(f"{mode} p99 APPEND->ack ({kind})", p99, P99_TARGET_MS, "ms", ok=ok))


async def main(count: int, modes: list[str], server: str, warmup: int) -> None:
    rng = random.Random(11)
    async with imap_servers(server) as servers, running_smtp_sink() as sink:
        floor_url = await servers.mailbox("floor")
        floors = await run_floor(floor_url, modes, count, warmup, rng)
        bench_url = await servers.mailbox("bench")
        ours, rss = await run_mailbot(bench_url, sink, modes, count, warmup, rng)
    print(f"IMAP server: {servers.kind}; daemon: `mailbot run` subprocess, shipped rules.yaml")
    print(f"messages per mode: {count} new requests (after {warmup} warm-up messages)")
    for mode in modes:
        if mode in floors and mode in ours:
            report(mode, floors[mode], ours[mode], servers.kind.split()[0])
    if rss:
        print(f"\ndaemon RSS at the end: {rss['VmRSS']:.0f} MB (peak {rss['VmHWM']:.0f} MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="messages per mode")
    parser.add_argument("--mode", choices=["paced", "burst", "both"], default="both")
    parser.add_argument("--server", choices=["dovecot", "pymap"], default="dovecot")
    parser.add_argument("--warmup", type=int, default=5, help="messages before measuring")
    args = parser.parse_args()
    chosen = ["paced", "burst"] if args.mode == "both" else [args.mode]
    asyncio.run(main(args.n, chosen, args.server, args.warmup))
    sys.exit(0)
