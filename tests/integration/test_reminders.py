"""Reminder rows swept into the outbox: exactly once, never when irrelevant, missed when stale."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from mailbot.clock import FixedClock
from mailbot.devservers.smtp_sink import running_smtp_sink
from mailbot.domain import TicketStatus
from mailbot.outbound.sender import OutboxSender, SmtpTransport
from mailbot.policy import Policy, load_policy
from mailbot.reminders import BREACH, ReminderSweeper, plan_reminders
from mailbot.sla.clocks import ClockStatus
from mailbot.sla.plan import PlannedReminder
from mailbot.tickets.models import (
    OutboxRow,
    Reminder,
    ReminderStatus,
    Ticket,
    TicketClock,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DUE = T0 + timedelta(hours=4)


@pytest.fixture(scope="module")
def shipped_policy() -> Policy:
    return load_policy(REPO / "rules.yaml", REPO / "templates")


async def ticket_with_reminders(*, reminders: list[PlannedReminder] | None = None) -> int:
    ticket = await Ticket.create(
        plan="ultimate",
        customer="anna.berg@nordicdecor.se",
        customer_name="Anna Berg",
        language="sv",
        subject="Kassan ligger nere",
        created_at=T0,
        updated_at=T0,
        deadline=DUE,
        severity="L1",
        urgent=True,
    )
    await TicketClock.create(ticket_id=ticket.id, name="first_response", started_at=T0, due_at=DUE)
    planned = reminders or [
        PlannedReminder(
            "first_response", "percent:50", T0 + timedelta(hours=2), "team@example.com"
        ),
        PlannedReminder(
            "first_response", "percent:80", T0 + timedelta(minutes=192), "team@example.com"
        ),
        PlannedReminder("first_response", BREACH, DUE, "lead@example.com"),
    ]
    async with in_transaction() as conn:
        await plan_reminders(conn, ticket.id, planned)
    return ticket.id


async def statuses(ticket_id: int) -> dict[str, ReminderStatus]:
    return {r.kind: r.status for r in await Reminder.filter(ticket_id=ticket_id)}


async def test_each_reminder_goes_out_once_at_its_time(
    database: str, shipped_policy: Policy
) -> None:
    ticket_id = await ticket_with_reminders()
    clock = FixedClock(T0 + timedelta(minutes=119))
    sweeper = ReminderSweeper(lambda: shipped_policy, clock)
    assert (await sweeper.run_once()).sent == 0  # nothing due yet
    assert await sweeper.next_due() == T0 + timedelta(hours=2)
    clock.set(T0 + timedelta(hours=2))
    assert (await sweeper.run_once()).sent == 1
    assert (await sweeper.run_once()).sent == 0  # a second sweep finds nothing new
    clock.set(T0 + timedelta(minutes=193))
    assert (await sweeper.run_once()).sent == 1  # 80 %
    clock.set(DUE + timedelta(minutes=1))
    report = await sweeper.run_once()
    assert (report.sent, report.missed) == (1, 0)  # the breach
    assert set((await statuses(ticket_id)).values()) == {ReminderStatus.SENT}
    kinds = [r.kind for r in await OutboxRow.all().order_by("id")]
    assert kinds == ["reminder", "reminder", "escalation"]
    assert [r.rcpt_to for r in await OutboxRow.all().order_by("id")][-1] == "lead@example.com"


async def test_concurrent_sweeps_never_send_twice(database: str, shipped_policy: Policy) -> None:
    for _ in range(10):
        await ticket_with_reminders()
    clock = FixedClock(DUE + timedelta(minutes=5))
    sweepers = [ReminderSweeper(lambda: shipped_policy, clock) for _ in range(3)]
    reports = await asyncio.gather(*(s.run_once() for s in sweepers))
    assert sum(r.sent + r.missed + r.skipped for r in reports) == 30
    # Each row is decided once; the two other sweepers lose the race for it, unless it was
    # already decided when they listed the pending rows (timing: on PostgreSQL they often
    # list after the first decisions). So at most 2 lost races a row, never a second send.
    assert sum(r.lost_races for r in reports) <= 60
    assert await OutboxRow.all().count() == sum(r.sent for r in reports)
    assert await Reminder.filter(status=ReminderStatus.PENDING).count() == 0


async def test_no_reminder_once_the_clock_is_met_paused_or_the_ticket_closed(
    database: str, shipped_policy: Policy
) -> None:
    met, paused, closed = [await ticket_with_reminders() for _ in range(3)]
    await TicketClock.filter(ticket_id=met).update(status=ClockStatus.MET, stopped_at=T0)
    await TicketClock.filter(ticket_id=paused).update(status=ClockStatus.PAUSED)
    await Ticket.filter(id=closed).update(status=TicketStatus.CLOSED)
    sweeper = ReminderSweeper(lambda: shipped_policy, FixedClock(T0 + timedelta(hours=2)))
    report = await sweeper.run_once()
    assert (report.sent, report.skipped) == (0, 3)
    notes = {r.ticket_id: r.note for r in await Reminder.filter(status=ReminderStatus.SKIPPED)}
    assert notes == {
        met: "clock met",
        paused: "clock paused (waiting on the customer)",
        closed: "ticket closed",
    }
    assert await OutboxRow.all().count() == 0


async def test_reminders_that_fell_due_while_down_are_missed_except_the_latest(
    database: str, shipped_policy: Policy
) -> None:
    ticket_id = await ticket_with_reminders()
    # The daemon was down from before the 50 % mark until an hour after the breach.
    sweeper = ReminderSweeper(lambda: shipped_policy, FixedClock(DUE + timedelta(hours=1)))
    report = await sweeper.run_once()
    assert (report.sent, report.missed) == (1, 2)
    assert await statuses(ticket_id) == {
        "percent:50": ReminderStatus.MISSED,
        "percent:80": ReminderStatus.MISSED,
        BREACH: ReminderStatus.SENT,
    }


async def test_replanning_never_repeats_a_sent_reminder(
    database: str, shipped_policy: Policy
) -> None:
    ticket_id = await ticket_with_reminders()
    sweeper = ReminderSweeper(lambda: shipped_policy, FixedClock(T0 + timedelta(hours=2)))
    await sweeper.run_once()
    later = [
        PlannedReminder(
            "first_response", "percent:50", T0 + timedelta(hours=3), "team@example.com"
        ),
        PlannedReminder("first_response", BREACH, DUE + timedelta(hours=2), "lead@example.com"),
    ]
    async with in_transaction() as conn:
        created = await plan_reminders(conn, ticket_id, later)
    assert created == 1  # the 50 % reminder was already sent; only the breach is new
    rows = {r.kind: r for r in await Reminder.filter(ticket_id=ticket_id)}
    assert set(rows) == {"percent:50", BREACH}
    assert rows[BREACH].due_at == DUE + timedelta(hours=2)


async def test_the_notice_reaches_the_smtp_server_threaded_and_marked(
    database: str, shipped_policy: Policy
) -> None:
    await ticket_with_reminders()
    clock = FixedClock(DUE + timedelta(minutes=1))
    await ReminderSweeper(lambda: shipped_policy, clock).run_once()
    async with running_smtp_sink() as sink:
        sender = OutboxSender(SmtpTransport(sink.endpoint()), clock)
        assert await sender.run_once() == 1  # the breach; 50 % and 80 % were missed
        mails = [message_from_bytes(m.raw, policy=policy.default) for m in sink.messages]
    escalation = next(m for m in mails if m["To"].addresses[0].addr_spec == "lead@example.com")
    assert escalation["Auto-Submitted"] == "auto-generated"
    assert "#" in str(escalation["Subject"]) and str(escalation["Subject"]).startswith("SLA")
    body = escalation.get_body(preferencelist=("plain",))
    assert body is not None and "Anna Berg" in body.get_content()


async def test_a_reminder_names_the_deadline_not_its_own_time(
    database: str, shipped_policy: Policy
) -> None:
    await ticket_with_reminders()
    clock = FixedClock(T0 + timedelta(hours=2, minutes=1))  # the 50 % reminder, 11:01 local
    await ReminderSweeper(lambda: shipped_policy, clock).run_once()
    row = await OutboxRow.get(rcpt_to="team@example.com").prefetch_related("message")
    text = message_from_bytes(row.message.raw_bytes, policy=policy.default).get_body(
        preferencelist=("plain",)
    )
    assert text is not None
    content = text.get_content()
    # The deadline is 13:00 UTC = 14:00 in Stockholm; the reminder went out at 12:01 local.
    assert "14:00" in content and "12:00" not in content, content
