"""The IMAP poller: UID checkpoint, batched BODY.PEEK[] fetches, ack after commit, IDLE.

For each batch: sizes first (``RFC822.SIZE``; oversized mail is recorded and left on the
server), then the bodies in parts of at most ``MAILBOT_BATCH_BYTES``, each part's messages
through ``Intake.accept`` (a savepoint each) and committed with the checkpoint in one
transaction, then one ranged STORE or MOVE for the UIDs that committed. The next part
downloads while one is stored when both fit in ``MAILBOT_BATCH_BYTES``. A crash between commit
and ack leaves committed mail unacknowledged on the server; the next sync acknowledges it
(``_reconcile``), and the UID checkpoint plus Message-ID/hash dedup mean it is never stored
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import DBConnectionError, OperationalError
from tortoise.transactions import in_transaction

from mailbot.clock import Clock
from mailbot.domain import Disposition
from mailbot.endpoints import Endpoint
from mailbot.errors import (
    ImapPermanentError,
    ImapThrottledError,
    MailbotError,
    TransientError,
)
from mailbot.ingest.parse_workers import ParseWorkers, parse_ahead
from mailbot.ingest.pipeline import Intake
from mailbot.mailbox.imap import FetchedMessage, ImapSession
from mailbot.settings import DONE_KEYWORD, Settings
from mailbot.tickets.service import (
    Origin,
    advance_checkpoint,
    ensure_mailbox_state,
    find_duplicate,
    sha256_hex,
    store_quarantined,
)

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_CAP = 300.0


def mailbox_key(endpoint: Endpoint) -> str:
    """The checkpoint key of a mailbox: account, server and folder."""
    return f"{endpoint.user or ''}@{endpoint.host}:{endpoint.port}/{endpoint.mailbox}"


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def by_size(uids: Sequence[int], sizes: Mapping[int, int], limit: int) -> list[list[int]]:
    """``uids`` in order, cut into parts whose sizes add up to at most ``limit`` bytes; a
    message bigger than ``limit`` is a part of its own."""
    parts: list[list[int]] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if parts and total + size <= limit:
            parts[-1].append(uid)
            total += size
        else:
            parts.append([uid])
            total = size
    return parts


@dataclass(frozen=True, slots=True)
class _Part:
    """Part of a fetch batch: the UIDs to download, the batch's oversized UIDs (on its first
    part), the batch's sizes, and the UID checkpoint once the part is committed."""

    uids: list[int]
    oversized: list[int]
    sizes: dict[int, int]
    checkpoint: int

    @property
    def size(self) -> int:
        """The bytes its download holds (RFC822.SIZE)."""
        return sum(self.sizes.get(uid, 0) for uid in self.uids)


@dataclass(frozen=True, slots=True)
class _Fetched:
    part: _Part
    #: None: not downloaded yet (it did not fit beside the part in hand).
    messages: list[FetchedMessage] | None


_CANNOT_WRITE = (
    "readonly database",
    "read-only",
    "database or disk is full",
    "disk i/o error",
    "no space left",
    "disk full",
    "could not extend file",
)


def cannot_write(exc: BaseException) -> bool:
    """Whether an error (or its cause) says the database refuses every write (read-only
    file system, disk full), as opposed to a busy lock that the next try may get past."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        text = str(seen).lower()
        if any(marker in text for marker in _CANNOT_WRITE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class MailboxPoller:
    def __init__(
        self,
        endpoint: Endpoint,
        intake: Intake,
        settings: Settings,
        clock: Clock,
        *,
        on_stored: Callable[[], None] = lambda: None,
        parsers: ParseWorkers | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.intake = intake
        #: Parse workers (shared by a daemon's pollers); None: every message parsed here.
        self.parsers = parsers
        self.settings = settings
        self.clock = clock
        self.on_stored = on_stored
        self.key = mailbox_key(endpoint)
        self.label = endpoint.redacted()
        self.stats: dict[Disposition, int] = dict.fromkeys(Disposition, 0)
        self._reconciled: ImapSession | None = None
        #: ``run``'s stop event: a sync stops between batches once it is set.
        self._stop: asyncio.Event | None = None

    async def open(self) -> ImapSession:
        return await ImapSession.open(self.endpoint)

    async def run_once(self) -> int:
        """Connect, process everything new, acknowledge, disconnect. Returns messages handled."""
        self._stop = None  # a stop of an earlier ``run`` does not cut this one short
        session = await self.open()
        try:
            return await self.sync(session)
        finally:
            await session.close()

    async def sync(self, session: ImapSession) -> int:
        async with in_transaction() as conn:
            last_uid = await ensure_mailbox_state(conn, self.key, session.uidvalidity)
        if session is not self._reconciled:
            # Once per connection: a server that drops our keyword would otherwise be asked
            # to flag the whole mailbox again at every sync.
            await self._reconcile(session, last_uid)
            self._reconciled = session
        uids = await session.search_uids(last_uid + 1)
        plan = self._plan(session, uids)
        handled = 0
        # The next part downloads while this one is stored: the IMAP server's work and the
        # wire overlap the intake. One command at a time on the connection still: the
        # acknowledgement waits for the download in flight. Both parts together stay within
        # MAILBOT_BATCH_BYTES; a next part that does not fit downloads after this one.
        ahead: asyncio.Future[_Fetched | None]
        ahead = asyncio.ensure_future(self._download(session, plan, None))
        try:
            while (fetched := await ahead) is not None:
                if self._stop is not None and self._stop.is_set():
                    break  # SIGTERM: the part in hand is finished, nothing more is stored
                if fetched.messages is None:
                    fetched = _Fetched(fetched.part, await session.fetch(fetched.part.uids))
                room = self.settings.batch_bytes - fetched.part.size
                ahead = asyncio.ensure_future(self._download(session, plan, room))
                handled += await self._process_part(session, fetched, ahead)
        except BaseException:
            ahead.cancel()  # a command cut short: the session is broken and is not reused
            raise
        finally:
            if not ahead.done():
                await asyncio.wait([ahead])  # a download in flight ends: the session stays usable
            if not ahead.cancelled():
                ahead.exception()  # its error was raised above, or does not matter any more
            await plan.aclose()
        return handled

    async def _plan(self, session: ImapSession, uids: list[int]) -> AsyncGenerator[_Part, None]:
        """The parts to fetch, batch by batch: sizes first (oversized mail is recorded and
        left on the server), the rest cut into parts of at most ``MAILBOT_BATCH_BYTES`` (at
        least one message each), so that a batch of big mail is never held in memory whole.
        """
        limit = self.settings.max_message_bytes
        for batch in chunks(uids, self.settings.batch):
            sizes = await session.fetch_sizes(batch)
            oversized = [uid for uid in batch if sizes.get(uid, 0) > limit]
            wanted = [uid for uid in batch if uid in sizes and sizes[uid] <= limit]
            parts = by_size(wanted, sizes, self.settings.batch_bytes) or [[]]
            for index, part in enumerate(parts):
                yield _Part(
                    uids=part,
                    oversized=oversized if index == 0 else [],
                    sizes=sizes,
                    # Every UID up to here is handled (or vanished, expunged by another client).
                    checkpoint=max(batch) if index == len(parts) - 1 else max(part),
                )

    async def _download(
        self, session: ImapSession, plan: AsyncIterator[_Part], room: int | None
    ) -> _Fetched | None:
        """The next part of ``plan`` (None when there is none), its messages fetched if
        they fit in ``room`` bytes (None: any size)."""
        part = await anext(plan, None)
        if part is None:
            return None
        if room is not None and part.size > room:
            return _Fetched(part, None)
        return _Fetched(part, await session.fetch(part.uids) if part.uids else [])

    async def _process_part(
        self, session: ImapSession, fetched: _Fetched, ahead: asyncio.Future[Any] | None = None
    ) -> int:
        """Group commit: one transaction per part, a savepoint per message, then the ack.

        Each message is atomic on its own (``Intake.accept`` opens a nested transaction, a
        SAVEPOINT), a part commits once (one fsync), and only then are its UIDs
        acknowledged on the server, once the download ``ahead`` has ended. A database error
        rolls the part back and nothing of it is acknowledged: it is fetched again after
        the reconnect.
        """
        part, messages = fetched.part, fetched.messages or []
        outcomes: Counter[Disposition] = Counter()
        answered = False
        raws = [message.raw for message in messages]
        languages = tuple(self.intake.policy.rules.languages)
        # A worker parses the part ahead while the messages are stored one by one; a
        # database error drops what it has not started.
        with parse_ahead(self.parsers, raws, languages) as parsing:
            async with in_transaction():
                for uid in part.oversized:
                    if await self._record_oversized(session, uid, part.sizes[uid]):
                        outcomes[Disposition.QUARANTINED] += 1
                for index, message in enumerate(messages):
                    origin = Origin(
                        label=f"{self.endpoint.mailbox} uid {message.uid}",
                        mailbox=self.key,
                        uidvalidity=session.uidvalidity,
                        uid=message.uid,
                    )
                    parsed = await parsing.get(index)
                    outcome = await self.intake.accept(message.raw, origin, parsed)
                    outcomes[outcome.disposition] += 1
                    answered |= outcome.reply is not None
                await advance_checkpoint(self.key, session.uidvalidity, part.checkpoint)
        for disposition, count in outcomes.items():
            self.stats[disposition] += count
        if answered:
            self.on_stored()
        acknowledged = sorted([*part.oversized, *part.uids])
        if acknowledged:
            if ahead is not None and not ahead.done():
                await asyncio.wait([ahead])
            await self._ack(session, acknowledged)
        return len(acknowledged)

    async def _record_oversized(self, session: ImapSession, uid: int, size: int) -> bool:
        origin = Origin(
            label=f"{self.endpoint.mailbox} uid {uid}",
            mailbox=self.key,
            uidvalidity=session.uidvalidity,
            uid=uid,
        )
        error = (
            f"message of {size} bytes exceeds MAILBOT_MAX_MESSAGE_BYTES="
            f"{self.settings.max_message_bytes}; not downloaded, left on the server "
            f"as UID {uid} in {self.endpoint.mailbox} (UIDVALIDITY {session.uidvalidity})"
        )
        digest = sha256_hex(f"oversized {self.key} {session.uidvalidity} {uid}".encode())
        async with in_transaction() as conn:
            if await find_duplicate(conn, origin, None, digest) is not None:
                return False  # recorded before a crash; only the acknowledgement was missing
            await store_quarantined(
                conn, raw=b"", origin=origin, content_hash=digest, error=error, now=self.clock.now()
            )
        log.warning("quarantined %s uid %d: %s", self.label, uid, error)
        return True

    async def _ack(self, session: ImapSession, uids: list[int]) -> None:
        if self.settings.ack.move_to:
            await session.move(uids, self.settings.ack.move_to)
        else:
            await session.add_flags(uids, ["\\Seen", DONE_KEYWORD])
        log.debug("acknowledged %d messages on %s", len(uids), self.label)

    async def _reconcile(self, session: ImapSession, last_uid: int) -> None:
        """Acknowledge mail that committed before a crash but was never acknowledged."""
        if last_uid <= 0:
            return
        if self.settings.ack.move_to:
            pending = await session.search(f"UID 1:{last_uid}")
        else:
            pending = await session.search(f"UID 1:{last_uid} UNKEYWORD {DONE_KEYWORD}")
        pending = [uid for uid in pending if uid <= last_uid]
        if pending:
            log.warning(
                "%s: %d committed messages were not acknowledged (crash?): acknowledging now",
                self.label,
                len(pending),
            )
            await self._ack(session, pending)

    async def run(self, stop: asyncio.Event) -> None:
        """Sync, then IDLE (or poll) until ``stop``; reconnect with capped backoff on trouble."""
        self._stop = stop
        delay = BACKOFF_START
        not_before = 0.0  # a server that asked us to slow down: at least this long
        while not stop.is_set():
            session: ImapSession | None = None
            try:
                session = await self.open()
                delay = BACKOFF_START
                while not stop.is_set():
                    await self.sync(session)
                    wait = (
                        self.settings.idle_seconds
                        if session.has_idle
                        else self.settings.poll_seconds
                    )
                    await session.wait_for_news(wait, wake=stop)
            except asyncio.CancelledError:
                raise
            except ImapPermanentError as exc:
                log.error("%s: %s (retrying in %.0f s)", self.label, exc, BACKOFF_CAP)
                delay = BACKOFF_CAP
            except ImapThrottledError as exc:
                not_before = exc.retry_after
                log.warning("%s: %s (next try in %.0f s)", self.label, exc, not_before)
            except (
                TransientError,
                MailbotError,
                OSError,
                OperationalError,
                DBConnectionError,
            ) as exc:
                # Database trouble outside a message (checkpoint, batch commit): nothing was
                # acknowledged, so reconnecting and fetching again loses nothing.
                if cannot_write(exc):
                    log.error(
                        "%s: THE DATABASE CANNOT WRITE (%s): no mail is acknowledged on the "
                        "server until it can; everything stays in the mailbox (retrying in "
                        "%.1f s)",
                        self.label,
                        exc,
                        delay,
                    )
                else:
                    log.warning("%s: %s (reconnecting in %.1f s)", self.label, exc, delay)
            finally:
                if session is not None:
                    await session.close()
            if stop.is_set():
                break
            pause = max(delay * random.uniform(0.8, 1.2), not_before)
            not_before = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            delay = min(delay * 2, BACKOFF_CAP)
