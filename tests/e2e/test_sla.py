"""SLA clocks end to end: classified, deadlines stored, reminders at their time, exactly once.

Uses the shipped rules.yaml (Ultimate: L1 first response within 1 hour around the clock,
warnings at 50 %/80 %/30 min before to team@, the breach to teamlead@) and an injected clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.policy import Policy, load_policy
from mailbot.settings import load_settings
from mailbot.sla.clocks import ClockStatus, EventKind
from mailbot.tickets.clocks import record_event, set_severity
from mailbot.tickets.models import Reminder, ReminderStatus, Ticket, TicketClock
from tests.e2e.conftest import REPO
from tests.e2e.test_spine import append, mail

MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Stockholm


@pytest.fixture
def shipped(tmp_path: Path) -> Policy:
    return load_policy(REPO / "rules.yaml", REPO / "templates")


def settings_for(imap_server: Any, smtp_sink: Any, db: str) -> Any:
    return load_settings(
        {
            "MAILBOT_IMAP_PASSWORD": imap_server.password,
            "MAILBOT_TEMPLATES": str(REPO / "templates"),
            "MAILBOT_SECRET": "e2e-test-token-key-0123456789",
        },
        imap_url=f"imap+plain://{imap_server.user}@{imap_server.host}:{imap_server.port}/INBOX",
        smtp_url=f"smtp+plain://{smtp_sink.host}:{smtp_sink.port}",
        db_url=db,
        rules=str(REPO / "rules.yaml"),
    )


async def test_outage_is_l1_and_the_team_is_warned_then_the_lead_escalated(
    imap_server: Any, smtp_sink: Any, shipped: Policy, database: str
) -> None:
    clock = FixedClock(MONDAY_10)
    daemon = Daemon(settings_for(imap_server, smtp_sink, database), shipped, clock)
    _, raw = mail(
        "Anna Berg <anna.berg@nordicdecor.se>",
        "Sajten ligger nere!",
        "Hej, hela sajten ligger nere sedan 09:50 och ingen kan handla. Hjälp!",
    )
    await append(imap_server, raw)
    report = await daemon.run_once()
    assert report.sent == 2  # the acknowledgement, and the notification to the account manager
    recipients = sorted(m.rcpt_tos[0] for m in smtp_sink.messages)
    assert recipients == ["anna.berg@nordicdecor.se", "maria@example.com"]
    ticket = await Ticket.get(customer="anna.berg@nordicdecor.se")
    assert (ticket.plan, ticket.severity, ticket.urgent) == ("ultimate", "L1", True)
    clocks = {c.name: c for c in await TicketClock.filter(ticket_id=ticket.id)}
    assert clocks["first_response"].due_at == MONDAY_10 + timedelta(hours=1)
    assert clocks["action_started"].due_at == MONDAY_10 + timedelta(hours=4)
    assert ticket.deadline == MONDAY_10 + timedelta(hours=1)
    ack = next(
        message_from_bytes(m.raw, policy=policy.default)
        for m in smtp_sink.messages
        if m.rcpt_tos == ("anna.berg@nordicdecor.se",)
    )
    ack_body = ack.get_body(preferencelist=("plain",))
    assert ack_body is not None and "11:00" in ack_body.get_content()  # 1 h, Stockholm time

    first = await Reminder.filter(ticket_id=ticket.id, clock="first_response").order_by(
        "due_at", "kind"
    )
    assert [(r.kind, r.due_at - MONDAY_10, r.recipient) for r in first] == [
        ("at_percent:50", timedelta(minutes=30), "team@example.com"),
        ("before:30m", timedelta(minutes=30), "team@example.com"),
        ("at_percent:80", timedelta(minutes=48), "team@example.com"),
        ("breach", timedelta(hours=1), "teamlead@example.com"),
    ]

    clock.set(MONDAY_10 + timedelta(minutes=30))
    assert (await daemon.run_once()).sent == 2  # 50 % and 30 min before: both at 10:30
    clock.set(MONDAY_10 + timedelta(minutes=48))
    assert (await daemon.run_once()).sent == 1  # 80 %
    clock.set(MONDAY_10 + timedelta(minutes=61))
    report = await daemon.run_once()
    assert report.sent == 1
    escalation = message_from_bytes(smtp_sink.messages[-1].raw, policy=policy.default)
    assert escalation["To"].addresses[0].addr_spec == "teamlead@example.com"
    assert escalation["Auto-Submitted"] == "auto-generated"
    assert (await daemon.run_once()).sent == 0  # nothing twice
    statuses = {
        r.kind: r.status for r in await Reminder.filter(ticket_id=ticket.id, clock="first_response")
    }
    assert set(statuses.values()) == {ReminderStatus.SENT}


async def test_waiting_on_the_customer_pauses_and_their_answer_resumes(
    imap_server: Any, smtp_sink: Any, shipped: Policy, database: str
) -> None:
    clock = FixedClock(MONDAY_10)
    daemon = Daemon(settings_for(imap_server, smtp_sink, database), shipped, clock)
    first_id, raw = mail(
        "Anna Berg <anna.berg@nordicdecor.se>", "Fråga om frakt", "Hur ändrar jag fraktpriset?"
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna.berg@nordicdecor.se")
    due = (await TicketClock.get(ticket_id=ticket.id, name="first_response")).due_at
    assert ticket.severity == "L4" and due == MONDAY_10 + timedelta(hours=4)
    # An agent asks the customer something (issue 4 will do this by mail): the clocks pause.
    async with in_transaction() as conn:
        await Ticket.filter(id=ticket.id).update(status="waiting")
        await record_event(
            conn, shipped.rules, ticket.id, EventKind.PAUSED, MONDAY_10 + timedelta(hours=1)
        )
    paused = await TicketClock.get(ticket_id=ticket.id, name="first_response")
    assert paused.status is ClockStatus.PAUSED and paused.due_at is None
    # No warnings while paused: none had been reached before the pause.
    pending = Reminder.filter(ticket_id=ticket.id, clock="first_response", status="pending")
    assert await pending.count() == 0
    # The customer answers two hours later: the deadline moves by the paused time.
    clock.set(MONDAY_10 + timedelta(hours=3))
    _, answer = mail(
        "Anna Berg <anna.berg@nordicdecor.se>",
        "Re: Fråga om frakt",
        "Till Norge.",
        in_reply_to=first_id,
    )
    await append(imap_server, answer)
    await daemon.run_once()
    resumed = await TicketClock.get(ticket_id=ticket.id, name="first_response")
    assert resumed.status is ClockStatus.RUNNING
    assert resumed.due_at == due + timedelta(hours=2)
    assert (await Ticket.get(id=ticket.id)).status.value == "open"


async def test_a_met_clock_cancels_its_reminders(
    imap_server: Any, smtp_sink: Any, shipped: Policy, database: str
) -> None:
    clock = FixedClock(MONDAY_10)
    daemon = Daemon(settings_for(imap_server, smtp_sink, database), shipped, clock)
    _, raw = mail(
        "Anna Berg <anna.berg@nordicdecor.se>", "Sajten ligger nere", "Sajten ligger nere!"
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna.berg@nordicdecor.se")
    async with in_transaction() as conn:
        await record_event(
            conn,
            shipped.rules,
            ticket.id,
            EventKind.MET,
            MONDAY_10 + timedelta(minutes=10),
            clock="first_response",
        )
    clock.set(MONDAY_10 + timedelta(hours=2))
    sent_before = len(smtp_sink.messages)
    await daemon.run_once()
    first = await Reminder.filter(ticket_id=ticket.id, clock="first_response")
    assert first == [] or all(r.status is not ReminderStatus.SENT for r in first)
    met = await TicketClock.get(ticket_id=ticket.id, name="first_response")
    assert met.status is ClockStatus.MET
    # Other clocks still run: their warnings (not the first response's) went out.
    sent = [
        message_from_bytes(m.raw, policy=policy.default) for m in smtp_sink.messages[sent_before:]
    ]
    assert all("first" not in str(m["Subject"]).lower() for m in sent)


async def test_an_agent_raising_the_severity_tightens_the_deadlines(
    imap_server: Any, smtp_sink: Any, shipped: Policy, database: str
) -> None:
    clock = FixedClock(MONDAY_10)
    daemon = Daemon(settings_for(imap_server, smtp_sink, database), shipped, clock)
    _, raw = mail(
        "Anna Berg <anna.berg@nordicdecor.se>", "Fråga om frakt", "Hur ändrar jag frakten?"
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna.berg@nordicdecor.se")
    assert ticket.severity == "L4" and ticket.deadline == MONDAY_10 + timedelta(hours=4)
    async with in_transaction() as conn:
        await set_severity(
            conn,
            shipped.rules,
            ticket.id,
            severity="L1",
            urgent=True,
            at=MONDAY_10 + timedelta(minutes=5),
        )
    ticket = await Ticket.get(id=ticket.id)
    assert (ticket.severity, ticket.urgent) == ("L1", True)
    assert ticket.deadline == MONDAY_10 + timedelta(hours=1)
    breach = await Reminder.get(ticket_id=ticket.id, clock="first_response", kind="breach")
    assert breach.due_at == MONDAY_10 + timedelta(hours=1)
    # A restarted daemon sends the due reminders once, like the first one would have.
    clock.set(MONDAY_10 + timedelta(minutes=61))
    restarted = Daemon(settings_for(imap_server, smtp_sink, database), shipped, clock)
    assert (await restarted.run_once()).sent >= 1
    assert (
        await Daemon(settings_for(imap_server, smtp_sink, database), shipped, clock).run_once()
    ).sent == 0
