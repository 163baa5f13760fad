"""PostgreSQL: outbox and reminder claims lock rows ``FOR UPDATE SKIP LOCKED``. A row that
another daemon's transaction holds is skipped at once, never waited for: the rest of the
work goes on, and the held row is done by whoever holds it (or later).

The lock is held from a second, separate connection (asyncpg), as another daemon would. With
a plain conditional UPDATE the sender and the sweep would block behind that lock until it is
released, and these tests would time out."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest

from mailbot.clock import FixedClock
from mailbot.devservers.smtp_sink import running_smtp_sink
from mailbot.policy import Policy
from mailbot.reminders import ReminderSweeper
from mailbot.tickets.models import OutboxRow, OutboxStatus, Reminder, ReminderStatus
from tests.db import POSTGRES_ENV
from tests.integration.test_reminders import T0, shipped_policy, ticket_with_reminders
from tests.integration.test_sender import queue, sender_for

__all__ = ["shipped_policy"]

pytestmark = pytest.mark.skipif(
    not os.environ.get(POSTGRES_ENV),
    reason=f"row locks are PostgreSQL's: set {POSTGRES_ENV} (CI's PostgreSQL run does)",
)


async def _other_daemon(database: str) -> object:
    import asyncpg

    parts = urlsplit(database)
    return await asyncpg.connect(urlunsplit(("postgresql", *parts[1:])))


async def test_sender_skips_a_row_another_daemon_holds(database: str) -> None:
    clock = FixedClock(T0)
    async with running_smtp_sink() as sink:
        ids = [await queue(f"c{n}@shop.example", clock, n) for n in range(5)]
        other = await _other_daemon(database)
        try:
            tx = other.transaction()  # type: ignore[attr-defined]
            await tx.start()
            await other.execute(  # type: ignore[attr-defined]
                "SELECT id FROM outbox WHERE id = $1 FOR UPDATE", ids[2]
            )
            sent = await asyncio.wait_for(sender_for(sink, clock).run_once(), timeout=10)
            assert sent == 4
            assert (await OutboxRow.get(id=ids[2])).status is OutboxStatus.QUEUED
            await tx.rollback()
        finally:
            await other.close()  # type: ignore[attr-defined]
        assert await sender_for(sink, clock).run_once() == 1  # released: sent now, once
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == [
            f"c{n}@shop.example" for n in range(5)
        ]


async def test_sweep_skips_a_reminder_another_daemon_holds(
    database: str, shipped_policy: Policy
) -> None:
    ticket_id = await ticket_with_reminders()
    rows = await Reminder.filter(ticket_id=ticket_id).order_by("due_at")
    held = rows[0]
    clock = FixedClock(T0 + timedelta(hours=2))  # only the 50 % reminder is due
    other = await _other_daemon(database)
    try:
        tx = other.transaction()  # type: ignore[attr-defined]
        await tx.start()
        await other.execute(  # type: ignore[attr-defined]
            "SELECT id FROM reminder WHERE id = $1 FOR UPDATE", held.id
        )
        report = await asyncio.wait_for(
            ReminderSweeper(lambda: shipped_policy, clock).run_once(), timeout=10
        )
        assert (report.sent, report.lost_races) == (0, 1)
        await tx.rollback()
    finally:
        await other.close()  # type: ignore[attr-defined]
    report = await ReminderSweeper(lambda: shipped_policy, clock).run_once()
    assert report.sent == 1
    assert (await Reminder.get(id=held.id)).status is ReminderStatus.SENT
    assert await OutboxRow.filter(kind="reminder").count() == 1
