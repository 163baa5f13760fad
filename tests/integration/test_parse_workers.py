"""Parse workers: real worker processes (forkserver), compared with parsing in the daemon."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from mailbot.ingest.parse_workers import (
    PARSE_IN_THREAD_BYTES,
    ParseWorkers,
    Prepared,
    Unparsed,
    chunked,
    prepare,
)
from tests.loop_ticks import loop_ticks

LANGUAGES = ("en", "sv")


def _mail(index: int, *, attachment: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {index} <customer{index}@shop.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"Checkout fails ({index})"
    msg["Message-ID"] = make_msgid(domain="shop.example")
    msg.set_content(
        f"Hi, the checkout fails for order {index}.\n\n"
        "On Mon, 7 Dec 2026 at 10:00, Support <support@example.com> wrote:\n"
        "> What do you see?\n"
    )
    if attachment:
        msg.add_attachment(b"\x89PNG" + os.urandom(attachment), "image", "png", filename="a.png")
    return msg.as_bytes()


def _batch() -> list[bytes]:
    raws = [_mail(i) for i in range(9)]
    raws.insert(3, b"no header here, only words\r\n")  # ParseError: quarantined
    raws.insert(6, b"   \r\n")  # empty
    return raws


@pytest.fixture
async def workers() -> Any:
    pool = ParseWorkers(1, min_batch=4, chunk=3)
    yield pool
    await pool.close()


async def _all(workers: ParseWorkers, raws: list[bytes]) -> list[Any]:
    batch = workers.parse_ahead(raws, LANGUAGES)
    return [await batch.get(i) for i in range(len(raws))]


def test_chunks_grow_to_the_largest_within_their_bytes() -> None:
    def lengths(count: int, largest: int, sizes: list[int] | None = None) -> list[int]:
        sizes = sizes or [100] * count
        chunks = chunked(list(range(count)), sizes, largest, 1000)
        assert [i for chunk in chunks for i in chunk] == list(range(count))
        return [len(chunk) for chunk in chunks]

    assert lengths(0, 8) == []
    assert lengths(1, 8) == [1]
    assert lengths(20, 8) == [1, 2, 4, 8, 5]
    assert lengths(50, 8) == [1, 2, 4, 8, 8, 8, 8, 8, 3]
    assert sum(lengths(37, 3)) == 37
    # At most 1,000 bytes a chunk; a bigger message alone.
    assert lengths(6, 8, [100, 600, 500, 2000, 300, 300]) == [1, 1, 1, 1, 2]
    assert chunked([1, 3, 5], [0, 400, 0, 400, 0, 400], 8, 1000) == [[1], [3, 5]]


async def test_a_worker_prepares_what_the_daemon_would(workers: ParseWorkers) -> None:
    raws = _batch()
    results = await _all(workers, raws)
    assert results == [prepare(raw, LANGUAGES) for raw in raws]
    pids = workers.worker_pids()
    assert pids and os.getpid() not in pids  # parsed in another process
    unparsed = [r for r in results if isinstance(r, Unparsed)]
    assert [u.error.split(":")[0] for u in unparsed] == ["unparseable", "unparseable"]
    first = results[0]
    assert isinstance(first, Prepared)
    assert first.text == "Hi, the checkout fails for order 0."  # the quote is stripped


async def test_a_small_batch_is_parsed_here_but_a_big_message_goes_to_a_worker(
    workers: ParseWorkers,
) -> None:
    small = [_mail(1), _mail(2)]
    assert await _all(workers, small) == [prepare(raw, LANGUAGES) for raw in small]
    assert workers.worker_pids() == []  # no process for two small messages

    big = _mail(3, attachment=PARSE_IN_THREAD_BYTES)
    results = await _all(workers, [_mail(4), big])
    assert results[1] == prepare(big, LANGUAGES)
    assert workers.worker_pids()


async def test_a_dead_worker_loses_nothing(workers: ParseWorkers) -> None:
    await workers.start()
    [pid] = workers.worker_pids()
    raws = [_mail(i, attachment=20_000) for i in range(24)]
    batch = workers.parse_ahead(raws, LANGUAGES)
    os.kill(pid, signal.SIGKILL)
    results = [await batch.get(i) for i in range(len(raws))]
    assert results == [prepare(raw, LANGUAGES) for raw in raws]
    assert workers.reparsed >= 1

    # The next batch starts a new worker.
    again = _batch()
    assert await _all(workers, again) == [prepare(raw, LANGUAGES) for raw in again]
    new_pids = workers.worker_pids()
    assert new_pids and pid not in new_pids


async def test_an_abandoned_batch_is_not_parsed_further(workers: ParseWorkers) -> None:
    raws = [_mail(i, attachment=50_000) for i in range(30)]
    batch = workers.parse_ahead(raws, LANGUAGES)
    assert await batch.get(0) == prepare(raws[0], LANGUAGES)
    batch.cancel()
    # The pool stays usable.
    assert await _all(workers, raws[:8]) == [prepare(raw, LANGUAGES) for raw in raws[:8]]


async def test_the_new_text_follows_a_reload_of_the_languages() -> None:
    raw = (
        b"From: a@shop.example\r\nTo: support@example.com\r\nSubject: Kassan\r\n\r\n"
        b"Kassan fungerar inte.\r\n\r\n"
        b"Den 7 dec. 2026 kl. 10:00 skrev Support <support@example.com>:\r\n> Hej\r\n"
    )
    prepared = prepare(raw, ("en",))
    assert isinstance(prepared, Prepared)
    assert prepared.text_for(("en",)) == prepared.text
    again = prepare(raw, ("en", "sv"))
    assert isinstance(again, Prepared)
    assert prepared.text_for(("en", "sv")) == again.text


async def test_workers_that_cannot_start_are_given_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What a host without /dev/shm (multiprocessing's semaphores) raises.
    def no_semaphores(method: str | None = None) -> Any:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(multiprocessing, "get_context", no_semaphores)
    workers = ParseWorkers(1, min_batch=2)
    await workers.start()
    raws = _batch()
    assert await _all(workers, raws) == [prepare(raw, LANGUAGES) for raw in raws]
    assert workers.unavailable == "OSError: [Errno 38] Function not implemented"
    assert not workers.active
    assert [r.message for r in caplog.records].count(
        "parse workers unavailable (OSError: [Errno 38] Function not implemented); every "
        "message is parsed in the daemon"
    ) == 1
    await workers.close()


async def test_the_event_loop_turns_while_a_worker_parses(workers: ParseWorkers) -> None:
    await workers.start()
    raws = [_mail(i, attachment=PARSE_IN_THREAD_BYTES * 2) for i in range(6)]
    async with loop_ticks(0.001) as ticks:
        batch = workers.parse_ahead(raws, LANGUAGES)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batch.get(len(raws) - 1)
        elapsed = loop.time() - started
    # At least a tick every 10 ms while the worker parsed (a parse here would hold the loop).
    assert ticks.count >= elapsed / 0.01, (ticks.count, elapsed)


_ORPHAN_SCRIPT = """
import asyncio, os, sys, time
from mailbot.ingest.parse_workers import ParseWorkers

async def main():
    workers = ParseWorkers(1)
    await workers.start()
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(" ".join(map(str, workers.worker_pids())))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            return not any(line.startswith("State:\tZ") for line in status)
    except FileNotFoundError:
        return False


def test_a_worker_does_not_outlive_a_killed_daemon(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # No pipes: a worker left behind would hold them open.
    daemon = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(pids)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    worker = 0
    try:
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.05)
        [worker] = [int(pid) for pid in pids.read_text().split()]
        assert _running(worker)
    finally:
        daemon.kill()  # SIGKILL: the daemon cannot stop its worker
        daemon.wait()
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the parse worker outlived its daemon")
