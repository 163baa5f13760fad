"""The mailbox lease on a real database (SQLite file, or PostgreSQL in CI's second run)."""

from __future__ import annotations

import asyncio
import socket
import sys
from datetime import UTC, datetime, timedelta

from mailbot.clock import FixedClock
from mailbot.mailbox.lease import MailboxLeaseKeeper, holder_is_dead
from mailbot.tickets.models import MailboxLease

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
KEY = "support@imap.example:993/INBOX"


async def test_one_holder_until_the_lease_lapses(database: str) -> None:
    clock = FixedClock(T0)
    first = MailboxLeaseKeeper(KEY, clock, seconds=30)
    second = MailboxLeaseKeeper(KEY, clock, seconds=30)
    assert (await first.acquire()).held
    state = await second.acquire()
    assert not state.held and state.holder == first.holder
    clock.set(T0 + timedelta(seconds=20))
    assert (await first.acquire()).held  # renewed: now until T0 + 50 s
    clock.set(T0 + timedelta(seconds=45))
    assert not (await second.acquire()).held
    clock.set(T0 + timedelta(seconds=51))  # the holder stopped renewing
    assert (await second.acquire()).held
    lost = await first.acquire()
    assert not lost.held and lost.holder == second.holder and not first.held


async def test_release_hands_over_at_once(database: str) -> None:
    clock = FixedClock(T0)
    first = MailboxLeaseKeeper(KEY, clock)
    second = MailboxLeaseKeeper(KEY, clock)
    assert (await first.acquire()).held
    await first.release()
    assert (await second.acquire()).held
    await first.release()  # not the holder any more: changes nothing
    assert (await MailboxLease.get(key=KEY)).holder == second.holder


async def test_simultaneous_acquires_give_one_holder(database: str) -> None:
    clock = FixedClock(T0)
    keepers = [MailboxLeaseKeeper(KEY, clock) for _ in range(8)]
    states = await asyncio.gather(*(k.acquire() for k in keepers))
    assert sum(state.held for state in states) == 1
    row = await MailboxLease.get(key=KEY)
    assert [k.holder for k, s in zip(keepers, states, strict=True) if s.held] == [row.holder]


async def test_a_dead_holder_on_this_host_is_taken_over_before_expiry(database: str) -> None:
    clock = FixedClock(T0)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()
    dead = f"{socket.gethostname()} {out.decode().strip()} 0badf00d"
    assert holder_is_dead(dead)
    await MailboxLease.create(
        key=KEY, holder=dead, acquired_at=T0, expires_at=T0 + timedelta(minutes=5)
    )
    assert (await MailboxLeaseKeeper(KEY, clock).acquire()).held


def test_only_a_gone_process_on_this_host_counts_as_dead() -> None:
    import os

    assert not holder_is_dead(f"{socket.gethostname()} {os.getpid()} abcd")  # this process
    assert not holder_is_dead(f"{socket.gethostname()} 1 abcd")  # init: alive
    assert not holder_is_dead("another-host.example 999999 abcd")  # cannot know: wait
    assert not holder_is_dead("garbage")
