"""Parsing on another core: a worker process parses a fetched batch ahead of intake.

Intake is Python on one thread; parsing is a quarter of its CPU. When the poller has fetched
a batch of several messages, :meth:`ParseWorkers.parse_ahead` hands their raw bytes to a
worker process in chunks, and intake stores message *n* while the worker parses *n + 1*...
The worker returns a :class:`Prepared` per message: the frozen
:class:`~mailbot.domain.ParsedMessage` (plain strings and tuples: cheap to pickle) and its new
text (quotes stripped, for the ruleset's languages: the other costly step that needs no
database); or an :class:`Unparsed` with the reason intake quarantines under. Chunks grow
(1, 2, 4, then ``chunk`` messages, and at most ``CHUNK_BYTES``) so that intake starts on a
batch as soon as its first message is parsed.

Where it does not pay it is not used: a batch of fewer than ``min_batch`` messages (a single
message pushed by IDLE is parsed in the daemon, without a round trip), or no worker
configured (``MAILBOT_PARSE_WORKERS=0``, the default on one core). A worker that dies (the
kernel's OOM killer, a crash in C code) loses nothing: every message of the chunks it held
is parsed again in the daemon, and a new worker is started for the next batch.

The worker is started with ``forkserver`` (never ``fork``: the daemon has threads, aiosqlite's
among them), which imports only this module's dependencies, not the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from mailbot.domain import ParsedMessage
from mailbot.errors import ParseError
from mailbot.ingest.parse import parse_message
from mailbot.ingest.quotes import new_text

log = logging.getLogger(__name__)

#: A worker looks this often whether the daemon that started it is still there.
DAEMON_WATCH_SECONDS = 1.0
#: A chunk handed to a worker holds at most this many bytes of mail (or one bigger message).
CHUNK_BYTES = 4 * 1024 * 1024
#: Messages above this size are never parsed on the event loop's thread.
PARSE_IN_THREAD_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A message the parser gave up on, with the reason intake quarantines it under."""

    error: str
    #: The parser raised something other than ParseError (a bug): logged with this.
    trace: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed message, and the new part of its text for ``languages``."""

    parsed: ParsedMessage
    languages: tuple[str, ...]
    text: str

    def text_for(self, languages: tuple[str, ...]) -> str:
        """The new text for ``languages`` (computed again if a reload changed them)."""
        if languages == self.languages:
            return self.text
        return new_text(self.parsed.text, languages=languages)


Parsed = Prepared | Unparsed


def prepare(raw: bytes, languages: tuple[str, ...]) -> Parsed:
    """``raw`` parsed and its new text found, or why it could not be parsed (never raises
    but for ``BaseException``s such as MemoryError)."""
    try:
        parsed = parse_message(raw)
    except ParseError as exc:
        return Unparsed(f"unparseable: {exc}")
    except Exception as exc:  # noqa: BLE001 - a parser bug: quarantined, the trace logged
        return Unparsed(f"parser crashed: {exc!r}", traceback.format_exc())
    return Prepared(parsed, languages, new_text(parsed.text, languages=languages))


def prepare_chunk(raws: list[bytes], languages: tuple[str, ...]) -> list[Parsed]:
    """What the worker runs: each message prepared, in order."""
    return [prepare(raw, languages) for raw in raws]


def chunked(
    indexes: Sequence[int], sizes: Sequence[int], largest: int, max_bytes: int
) -> list[list[int]]:
    """``indexes`` in order, in chunks of 1, 2, 4... up to ``largest`` messages, and of at
    most ``max_bytes`` (``sizes[i]``: message i's size; a bigger message is a chunk of its
    own): every chunk is copied into a pickle here and out of it in the worker."""
    chunks: list[list[int]] = []
    target, total = 1, 0
    for index in indexes:
        if chunks and len(chunks[-1]) < target and total + sizes[index] <= max_bytes:
            chunks[-1].append(index)
            total += sizes[index]
            continue
        if chunks:
            target = min(target * 2, largest)
        chunks.append([index])
        total = sizes[index]
    return chunks


class ParseWorkers:
    """Worker processes that parse fetched batches ahead of intake.

    ``processes`` workers (0: none, every message is parsed in the daemon). Batches of fewer
    than ``min_batch`` messages are parsed in the daemon, but for messages above
    ``PARSE_IN_THREAD_BYTES``, which go to a worker whenever there is one (in the daemon they
    are parsed in a thread, which keeps the event loop turning but holds the interpreter's
    lock). A chunk of messages is one task: one pickled list each way.

    Workers that cannot be started (no ``/dev/shm`` for multiprocessing's semaphores, a
    seccomp filter refusing a call) are given up with one warning: every message is then
    parsed in the daemon.
    """

    def __init__(self, processes: int, *, min_batch: int = 8, chunk: int = 8) -> None:
        self.processes = processes
        self.min_batch = min_batch
        self.chunk = chunk
        self._pool: ProcessPoolExecutor | None = None
        #: Chunks a dead worker held, parsed again in the daemon.
        self.reparsed = 0
        #: Why workers could not be started (then none are used), for logs and status.
        self.unavailable: str | None = None

    @property
    def active(self) -> bool:
        return self.processes > 0 and self.unavailable is None

    def _executor(self) -> ProcessPoolExecutor | None:
        if self._pool is None and self.active:
            try:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload([__name__])
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=context,
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            except (OSError, ValueError, RuntimeError) as exc:
                self._give_up(exc)
        return self._pool

    def _give_up(self, exc: BaseException) -> None:
        self.unavailable = f"{type(exc).__name__}: {exc}"
        log.warning(
            "parse workers unavailable (%s); every message is parsed in the daemon",
            self.unavailable,
        )
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        """Start the workers now rather than at the first batch that needs them, and wait
        until one has answered (in a thread: starting a process waits for it to boot)."""
        executor = self._executor()
        if executor is None:
            return
        try:
            future = await asyncio.to_thread(executor.submit, prepare_chunk, [], ())
            await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(executor)
        except (OSError, RuntimeError) as exc:
            self._give_up(exc)

    def parse_ahead(self, raws: Sequence[bytes], languages: tuple[str, ...]) -> ParsedBatch:
        """Start preparing ``raws``; the batch's :meth:`ParsedBatch.get` hands them out in
        order while the worker goes on with the next chunks."""
        batch = ParsedBatch(raws, languages, self)
        if not self.active:
            return batch
        if len(raws) >= self.min_batch:
            wanted = list(range(len(raws)))
        else:
            wanted = [i for i, raw in enumerate(raws) if len(raw) > PARSE_IN_THREAD_BYTES]
        loop = asyncio.get_running_loop()
        lengths = [len(raw) for raw in raws]
        for indexes in chunked(wanted, lengths, self.chunk, CHUNK_BYTES):
            executor = self._executor()
            if executor is None:
                break  # given up: the rest is parsed here
            chunk = [raws[i] for i in indexes]
            try:
                future = loop.run_in_executor(executor, prepare_chunk, chunk, languages)
            except BrokenProcessPool:  # it died before this submit: parsed here
                self._replace(executor)
                continue
            except (OSError, RuntimeError) as exc:  # a process could not be started
                self._give_up(exc)
                break
            batch.expect(indexes, future, executor)
        return batch

    def _replace(self, executor: ProcessPoolExecutor) -> None:
        """``executor``'s worker died: the next chunk starts a new one."""
        if self._pool is executor:
            log.warning("the parse worker died; its messages are parsed here, a new one starts")
            executor.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def worker_pids(self) -> list[int]:
        """The workers' process ids (for ``mailbot status`` and tests)."""
        if self._pool is None:
            return []
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)

    def status(self) -> dict[str, object]:
        """For the state file (``mailbot status``)."""
        return {
            "workers": self.processes,
            "pids": self.worker_pids(),
            "unavailable": self.unavailable,
            "reparsed": self.reparsed,
        }

    async def close(self) -> None:
        """Stop the workers (the daemon's exit; chunks still queued are cancelled)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _worker_init(daemon_pid: int) -> None:
    """In a worker: Ctrl-C in a terminal reaches the whole process group, but the daemon
    decides when to stop and stops its workers itself. And a worker outlives no daemon: one
    that is killed (SIGKILL, the OOM killer) cannot tell it, and the worker, waiting on a
    queue whose write end it holds itself, would wait forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with, args=(daemon_pid,), name="daemon-watch", daemon=True
    ).start()


def _exit_with(daemon_pid: int) -> None:
    while True:
        time.sleep(DAEMON_WATCH_SECONDS)
        try:
            os.kill(daemon_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # a new process of another user took the id: gone too
            os._exit(0)


class ParsedBatch:
    """A fetched batch being parsed: chunks in a worker, the rest here on demand."""

    def __init__(
        self,
        raws: Sequence[bytes],
        languages: tuple[str, ...],
        workers: ParseWorkers | None = None,
    ) -> None:
        self._raws = raws
        self._languages = languages
        self._workers = workers
        #: index -> (the chunk's future, its indexes, the executor it was sent to)
        self._chunks: dict[
            int, tuple[asyncio.Future[list[Parsed]], list[int], ProcessPoolExecutor]
        ] = {}
        self._done: dict[int, Parsed] = {}

    def expect(
        self,
        indexes: list[int],
        future: asyncio.Future[list[Parsed]],
        executor: ProcessPoolExecutor,
    ) -> None:
        for index in indexes:
            self._chunks[index] = (future, indexes, executor)

    async def get(self, index: int) -> Parsed:
        """Message ``index`` parsed (each is handed out once)."""
        if index in self._done:
            return self._done.pop(index)
        chunk = self._chunks.pop(index, None)
        if chunk is None:
            return await prepare_here(self._raws[index], self._languages)
        future, indexes, executor = chunk
        try:
            results = await future
        except BrokenProcessPool:
            if self._workers is not None:
                self._workers.reparsed += 1
                self._workers._replace(executor)
            for other in indexes:  # the chunk's others: prepared here when their turn comes
                self._chunks.pop(other, None)
            return await prepare_here(self._raws[index], self._languages)
        for other, result in zip(indexes, results, strict=True):
            if other != index:
                self._chunks.pop(other, None)
                self._done[other] = result
        return results[indexes.index(index)]

    def cancel(self) -> None:
        """The batch is abandoned (an error): chunks not started yet are not parsed."""
        for future, _, _ in self._chunks.values():
            future.cancel()
        self._chunks.clear()
        self._done.clear()

    def __enter__(self) -> ParsedBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def parse_ahead(
    workers: ParseWorkers | None, raws: Sequence[bytes], languages: tuple[str, ...]
) -> ParsedBatch:
    """``workers.parse_ahead``, or a batch parsed here on demand when there are none. Use it
    in a ``with`` block: leaving it early drops what the workers have not started."""
    if workers is None:
        return ParsedBatch(raws, languages)
    return workers.parse_ahead(raws, languages)


async def prepare_here(raw: bytes, languages: tuple[str, ...]) -> Parsed:
    """Prepare in the daemon: in a thread above ``PARSE_IN_THREAD_BYTES`` (off the event
    loop, though not off the interpreter's lock), else on the event loop's thread."""
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(prepare, raw, languages)
    return prepare(raw, languages)


#: The process's parse workers: one pool, shared by every poller of a daemon.
_SHARED: ParseWorkers | None = None


def shared_workers(processes: int) -> ParseWorkers | None:
    """The process's :class:`ParseWorkers` with ``processes`` workers (a different count
    replaces it); None for none (``MAILBOT_PARSE_WORKERS=0``)."""
    global _SHARED
    if processes <= 0:
        return None
    if _SHARED is None or _SHARED.processes != processes:
        old, _SHARED = _SHARED, ParseWorkers(processes)
        if old is not None and old._pool is not None:
            old._pool.shutdown(wait=False, cancel_futures=True)
    return _SHARED


async def close_shared_workers() -> None:
    """Stop the process's parse workers, if any were started (the daemon's exit)."""
    if _SHARED is not None:
        await _SHARED.close()
