"""One fetcher per mailbox among several daemons on one database: a lease row with expiry.

Every daemon may send the outbox and sweep reminders (their rows are claimed one by one), but
only the holder of a mailbox's lease fetches it, so two daemons never download, parse and
decide the same mail. The holder renews the lease every third of its length; a daemon that
cannot renew (it was stalled past the expiry, or the database is gone) stops fetching at once.
Another daemon takes over when the lease has expired, or at once when the holder ran on the
same host and its process no longer exists (a crash followed by a restart).

Acquiring and renewing are one conditional UPDATE (``WHERE holder = me OR expires_at < now``)
or an INSERT that fails on the primary key, so they are atomic on SQLite and PostgreSQL
alike. Clocks of different machines should agree to within a fraction of the lease (NTP);
should a stalled holder still commit a batch after losing its lease, the message table's
(mailbox, UIDVALIDITY, UID) key and the Message-ID/hash de-duplication make the second copy a
duplicate, never a second ticket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.expressions import Q

from mailbot.clock import Clock
from mailbot.errors import DatabaseBusyError, MailbotError
from mailbot.mailbox.poller import cannot_write
from mailbot.tickets.models import MailboxLease

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0


def holder_id() -> str:
    """This process: host, pid and a random token (a reused pid is another holder)."""
    return f"{socket.gethostname()} {os.getpid()} {secrets.token_hex(4)}"


def holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` ran on this host and its process is gone (safe answer: False)."""
    parts = holder.split(" ")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # this process: another Daemon object in it holds the lease
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@dataclass(frozen=True, slots=True)
class LeaseState:
    held: bool
    holder: str | None  # who holds it when we do not
    expires_at: datetime | None


class MailboxLeaseKeeper:
    """The lease on one mailbox for this daemon."""

    def __init__(self, key: str, clock: Clock, *, seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.key = key
        self.clock = clock
        self.seconds = seconds
        self.holder = holder_id()
        self.held = False

    @property
    def renew_every(self) -> float:
        return self.seconds / 3

    async def acquire(self) -> LeaseState:
        """Take or renew the lease if it is ours, free, expired or its holder is dead.
        A database that refuses it raises ``DatabaseBusyError``."""
        try:
            return await self._acquire()
        except (OperationalError, DBConnectionError) as exc:
            raise DatabaseBusyError(f"mailbox {self.key}: the lease: {exc}") from exc

    async def _acquire(self) -> LeaseState:
        now = self.clock.now()
        until = now + timedelta(seconds=self.seconds)
        current = await MailboxLease.filter(key=self.key).first()
        if current is None:
            try:
                await MailboxLease.create(
                    key=self.key, holder=self.holder, acquired_at=now, expires_at=until
                )
            except IntegrityError:
                return await self._lost_race()
            return self._got(until, fresh=True)
        takeable = Q(holder=self.holder) | Q(expires_at__lt=now)
        if current.holder != self.holder and holder_is_dead(current.holder):
            takeable |= Q(holder=current.holder)  # only that holder: a newer one may exist
        fresh = current.holder != self.holder
        changes: dict[str, object] = {"holder": self.holder, "expires_at": until}
        if fresh:
            changes["acquired_at"] = now
        updated = await MailboxLease.filter(Q(key=self.key) & takeable).update(**changes)
        if not updated:
            return await self._lost_race()
        if fresh and current.holder:
            log.info(
                "mailbox %s: lease taken over from %s (expired %s)",
                self.key,
                current.holder,
                current.expires_at.isoformat(),
            )
        return self._got(until, fresh=fresh)

    def _got(self, until: datetime, *, fresh: bool) -> LeaseState:
        if fresh or not self.held:
            log.info("mailbox %s: this daemon (%s) fetches it now", self.key, self.holder)
        self.held = True
        return LeaseState(True, None, until)

    async def _lost_race(self) -> LeaseState:
        if self.held:
            log.warning("mailbox %s: lease lost; another daemon fetches it now", self.key)
        self.held = False
        row = await MailboxLease.filter(key=self.key).first()
        return LeaseState(False, row.holder if row else None, row.expires_at if row else None)

    async def release(self) -> None:
        """Give the lease up (a graceful stop): another daemon may take it at once."""
        if not self.held:
            return
        self.held = False
        await MailboxLease.filter(key=self.key, holder=self.holder).update(
            holder="", expires_at=self.clock.now() - timedelta(seconds=1)
        )
        log.info("mailbox %s: lease released", self.key)


async def fetch_while_leased(
    keeper: MailboxLeaseKeeper,
    fetch: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    on_standby: Callable[[LeaseState], None] = lambda state: None,
) -> None:
    """Run ``fetch(until)`` while this daemon holds the lease; renew it in the background.

    A failed or refused renewal stops the fetch at once (the task is cancelled: a batch in
    hand rolls back, nothing of it is acknowledged). Without the lease, try again every
    ``renew_every`` seconds until ``stop``. The lease is released on the way out."""
    try:
        while not stop.is_set():
            try:
                state = await keeper.acquire()
            except (MailbotError, OSError) as exc:
                if cannot_write(exc):
                    log.error(
                        "mailbox %s: THE DATABASE CANNOT WRITE (%s): no mail is fetched until"
                        " it can; everything stays in the mailbox",
                        keeper.key,
                        exc,
                    )
                else:
                    log.warning("mailbox %s: cannot take the lease: %s", keeper.key, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), keeper.renew_every)
                continue
            if not state.held:
                on_standby(state)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), keeper.renew_every)
                continue
            await _fetch_and_renew(keeper, fetch, stop)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(keeper.release())


async def _fetch_and_renew(
    keeper: MailboxLeaseKeeper,
    fetch: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
) -> None:
    fetching = asyncio.ensure_future(fetch(stop))
    try:
        while not fetching.done():
            done, _ = await asyncio.wait({fetching}, timeout=keeper.renew_every)
            if done:
                break
            try:
                state = await keeper.acquire()
            except (MailbotError, OSError) as exc:
                log.error(
                    "mailbox %s: cannot renew the lease (%s): fetching stops", keeper.key, exc
                )
                keeper.held = False
                break
            if not state.held:
                log.error(
                    "mailbox %s: the lease went to %s: fetching stops", keeper.key, state.holder
                )
                break
    finally:
        if not fetching.done():
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching
    if fetching.done() and not fetching.cancelled():
        fetching.result()  # the fetcher's own error, if any
