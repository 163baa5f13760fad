"""The action table end to end over real IMAP and SMTP: out-of-scope answers naming the paid
option, the training offer on the third how-to question, escalation to the leads and the
account manager, and silence. (Seed 004's promises, and seed 000's priority handling.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.policy import load_policy
from mailbot.tickets.models import OutboxRow, Ticket
from tests.e2e.conftest import REPO, make_settings
from tests.e2e.test_agents import plain, sent_to
from tests.e2e.test_spine import append, mail
from tests.unit.test_actions import ACTIONS, PEOPLE, RULES

MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Stockholm


@pytest.fixture
def daemon_for(tmp_path: Path, imap_server: Any, smtp_sink: Any, database: str) -> Any:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES + PEOPLE + ACTIONS, encoding="utf-8")
    policy = load_policy(path, REPO / "templates")
    settings = make_settings(imap_server, smtp_sink, path, database)

    def build(clock: FixedClock) -> Daemon:
        return Daemon(settings, policy, clock)

    return build


def only(messages: list[Message]) -> Message:
    assert len(messages) == 1, [str(m["Subject"]) for m in messages]
    return messages[0]


async def test_hosting_question_gets_the_paid_support_notice(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    daemon = daemon_for(FixedClock(MONDAY_10))
    _, raw = mail(
        "Mario Rossi <mario@negozio.it>",
        "Il sito è lento",
        "Buongiorno, abbiamo un problema di connessione al database sul vostro hosting.",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="mario@negozio.it")
    assert ticket.category == "configuration"
    answer = only(sent_to(smtp_sink, "mario@negozio.it"))
    text = plain(answer)
    assert "Assistenza a pagamento: 60 EUR l'ora." in text
    assert "non è coperto dal supporto Ultimate" in text
    assert f"[#{ticket.id}]" in str(answer["Subject"])
    assert answer["Auto-Submitted"] == "auto-replied"
    row = await OutboxRow.get(ticket_id=ticket.id, rcpt_to="mario@negozio.it")
    assert row.kind == "out_of_scope"


async def test_the_third_howto_question_in_a_month_gets_the_training_offer(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    questions = [
        ("How do I change the logo colour?", "How do I change the colour of the logo?"),
        ("How can I add a shipping zone?", "How do I add a new shipping zone?"),
        ("How do I export orders?", "How can I export my orders to Excel?"),
    ]
    kinds = []
    for day, (subject, body) in enumerate(questions):
        daemon = daemon_for(FixedClock(MONDAY_10 + timedelta(days=day)))
        _, raw = mail("John Smith <john@example.org>", subject, body)
        await append(imap_server, raw)
        await daemon.run_once()
        ticket = await Ticket.filter(customer="john@example.org").order_by("-id").first()
        assert ticket is not None and ticket.howto
        row = await OutboxRow.get(ticket_id=ticket.id, rcpt_to="john@example.org")
        kinds.append(row.kind)
    assert kinds == ["ack", "ack", "training"]
    offer = sent_to(smtp_sink, "john@example.org")[-1]
    assert "A two-hour session costs 150 EUR." in plain(offer)
    # Forty days later the count starts again.
    daemon = daemon_for(FixedClock(MONDAY_10 + timedelta(days=42)))
    _, raw = mail("John Smith <john@example.org>", "How do I add a user?", "How do I add one?")
    await append(imap_server, raw)
    await daemon.run_once()
    latest = await Ticket.filter(customer="john@example.org").order_by("-id").first()
    assert latest is not None
    row = await OutboxRow.get(ticket_id=latest.id, rcpt_to="john@example.org")
    assert row.kind == "ack"


async def test_an_outage_is_acknowledged_and_escalated_to_lead_and_account_manager(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    daemon = daemon_for(FixedClock(MONDAY_10))
    _, raw = mail("Mario Rossi <mario@negozio.it>", "URGENT", "Our site is down since 9:00!")
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="mario@negozio.it")
    assert (ticket.severity, ticket.urgent) == ("L1", True)
    only(sent_to(smtp_sink, "mario@negozio.it"))  # the customer is acknowledged once
    row = await OutboxRow.get(ticket_id=ticket.id, rcpt_to="mario@negozio.it")
    assert row.kind == "ack"
    assert ticket.deadline == MONDAY_10 + timedelta(hours=4)  # Ultimate: 4 hours
    for lead_or_manager in ("lena@example.com", "mona@example.com"):
        notes = sent_to(smtp_sink, lead_or_manager)
        escalated = [n for n in notes if "ESCALATED" in plain(n)]
        assert len(escalated) == 1, lead_or_manager
        assert "ultimate-outage" in plain(escalated[0])
        assert "Our site is down" in plain(escalated[0])


async def test_silence_opens_a_ticket_and_tells_the_agents_but_not_the_customer(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    daemon = daemon_for(FixedClock(MONDAY_10))
    _, raw = mail("Anna <anna@butiken.se>", "Nyhetsbrev", "Här kommer vårt nyhetsbrev.")
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna@butiken.se")
    assert sent_to(smtp_sink, "anna@butiken.se") == []
    assert ticket.deadline is not None
    # Silence is towards the customer only: the team still hears of the ticket.
    assert sent_to(smtp_sink, "lena@example.com") or sent_to(smtp_sink, "olle@example.com")
