"""Agents by mail, end to end over real IMAP and SMTP.

customer mail -> ack to the customer + notification to the agent -> the agent answers from a
real-world client shape -> the customer gets exactly the new text, threaded on their
conversation; commands change the ticket; nothing from a non-agent, a forged sender, a wrong
token or an auto-reply is ever relayed or executed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.domain import TicketStatus
from mailbot.policy import Policy, load_policy
from mailbot.sla.clocks import ClockStatus
from mailbot.tickets.models import Message as MessageRow
from mailbot.tickets.models import Ticket, TicketClock, TimeEntry
from tests.e2e.conftest import REPO, RULES, make_settings
from tests.e2e.test_spine import append, mail

MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Stockholm

AGENT_RULES = (
    RULES.replace(
        "  - {match: anna@butiken.se, plan: pro, name: Butiken AB, language: sv}\n",
        "  - {match: anna@butiken.se, plan: pro, name: Butiken AB, language: sv,"
        " account: butiken}\n",
    )
    + """\
agents:
  carla:
    name: Carla Neri
    addresses: [carla@example.com]
    team: support
    role: account_manager
  bo:
    name: Bo Ek
    addresses: [bo@example.com, bo.ek@example.com]
    team: support
  dora:
    name: Dora Berg
    addresses: [dora@example.com]
    team: support
teams:
  support:
    name: Support
assignment:
  default: support
accounts:
  butiken:
    name: Butiken AB
    account_manager: carla
    time_bank: {monthly: 2h, warn_below: 90m}
"""
)


@pytest.fixture
def agent_rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(AGENT_RULES, encoding="utf-8")
    return path


@pytest.fixture
def agent_policy(agent_rules: Path) -> Policy:
    return load_policy(agent_rules, REPO / "templates")


def parsed(raw: bytes) -> Message:
    return message_from_bytes(raw, policy=policy.default)


def plain(msg: Message) -> str:
    body = msg.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def sent_to(sink: Any, address: str) -> list[Message]:
    found = [parsed(m.raw) for m in sink.messages]
    return [m for m in found if m["To"].addresses[0].addr_spec == address]


def agent_reply(
    notification: Message,
    sender: str,
    new_text: str,
    *,
    shape: str,
    to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """An agent's answer to ``notification`` as a real client would write it."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = to or notification["Reply-To"].addresses[0].addr_spec
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="example.com")
    original = plain(notification)
    note_id = notification["Message-ID"]
    subject = str(notification["Subject"])
    if shape == "outlook":  # no References, no '>' quoting, a From/Sent/To/Subject block
        msg["Subject"] = f"SV: {subject}"
        msg["In-Reply-To"] = note_id
        msg["Thread-Index"] = "AdlUeXBwZ2p5dGVzdA=="
        body = (
            f"{new_text}\n\n"
            f"Från: {notification['From']}\nSkickat: den 23 november 2026 10:01\n"
            f"Till: {sender}\nÄmne: {subject}\n\n{original}"
        )
    elif shape == "gmail":
        msg["Subject"] = f"Re: {subject}"
        msg["In-Reply-To"] = note_id
        msg["References"] = note_id
        quoted = "\n".join(f"> {line}" for line in original.splitlines())
        body = (
            f"{new_text}\n\nOn Mon, 23 Nov 2026 at 10:01, {notification['From']} wrote:\n\n"
            f"{quoted}\n"
        )
    elif shape == "apple":  # a client that kept neither In-Reply-To nor References
        msg["Subject"] = f"Re: {subject}"
        quoted = "\n".join(f"> {line}" for line in original.splitlines())
        body = f"{new_text}\n\n> On 23 Nov 2026, at 10:01, Support wrote:\n>\n{quoted}\n"
    else:
        raise AssertionError(shape)
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


async def _customer_ticket(
    imap_server: Any, smtp_sink: Any, settings: Any, agent_policy: Policy, clock: FixedClock
) -> tuple[Daemon, Ticket, str, Message]:
    daemon = Daemon(settings, agent_policy, clock)
    customer_id, raw = mail(
        "Anna Lindqvist <anna@butiken.se>",
        "Kassan visar fel vid betalning",
        "Hej! Kassan ger ett felmeddelande när kunderna betalar. Kan ni titta på det?",
    )
    await append(imap_server, raw)
    report = await daemon.run_once()
    assert report.sent == 2  # the acknowledgement and the notification
    ticket = await Ticket.get(customer="anna@butiken.se")
    notes = sent_to(smtp_sink, "carla@example.com")
    assert len(notes) == 1
    return daemon, ticket, customer_id, notes[0]


async def test_notification_reaches_the_account_manager_with_the_facts_and_a_token(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    _, ticket, customer_id, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    assert (ticket.assignee, ticket.team, ticket.account) == ("carla", "support", "butiken")
    reply_to = note["Reply-To"].addresses[0].addr_spec
    assert reply_to.startswith(f"support+mb-{ticket.id}-") and reply_to.endswith("@example.com")
    assert note["Message-ID"].startswith(f"<mb.{ticket.id}.")
    assert note["Auto-Submitted"] == "auto-generated"
    assert f"[#{ticket.id}]" in str(note["Subject"])
    assert "Anna Lindqvist via Example Support" in str(note["From"])
    text = plain(note)
    assert "Kassan ger ett felmeddelande" in text
    assert "Pro" in text and "L4" in text
    assert "2 h" in text  # the time bank balance
    assert f"[ref:mb-{ticket.id}-" in text
    # The customer's own mail never reveals a token.
    ack = sent_to(smtp_sink, "anna@butiken.se")[0]
    assert "mb-" not in ack.as_string()
    assert ack["In-Reply-To"] == customer_id


@pytest.mark.parametrize("shape", ["outlook", "gmail", "apple"])
async def test_agent_reply_is_relayed_as_exactly_the_new_text_and_threaded(
    imap_server: Any,
    smtp_sink: Any,
    agent_rules: Path,
    agent_policy: Policy,
    database: str,
    shape: str,
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, customer_id, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    answer = "Hej Anna,\n\nVi har rättat kassan nu. Prova gärna igen!"
    clock.set(MONDAY_10 + timedelta(minutes=40))
    await append(
        imap_server,
        agent_reply(note, "Carla Neri <carla@example.com>", answer + "\n\n-- \nCarla", shape=shape),
    )
    smtp_sink.messages.clear()
    report = await daemon.run_once()
    assert report.sent == 1
    relay = sent_to(smtp_sink, "anna@butiken.se")
    assert len(relay) == 1, [m["To"] for m in smtp_sink.messages]
    out = relay[0]
    text = plain(out)
    assert text.startswith(answer + "\n\n-- \nCarla Neri\nExample Support")
    assert "Från:" not in text and "wrote:" not in text and "mb-" not in text
    assert out["In-Reply-To"] == customer_id
    assert out["Auto-Submitted"] is None  # a person's answer
    assert out["From"].addresses[0].addr_spec == "support@example.com"
    assert f"[#{ticket.id}]" in str(out["Subject"])
    html = out.get_body(preferencelist=("html",))
    assert html is not None and "Vi har rättat kassan nu." in html.get_content()
    clocks = {c.name: c for c in await TicketClock.filter(ticket_id=ticket.id)}
    assert clocks["first_response"].status is ClockStatus.MET
    refreshed = await Ticket.get(id=ticket.id)
    assert refreshed.status is TicketStatus.OPEN
    row = await MessageRow.filter(ticket_id=ticket.id, role="agent", direction="in").first()
    assert row is not None and row.text.startswith("Hej Anna")


async def test_time_and_wait_commands_are_executed_and_not_relayed(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    answer = "Kan du skicka en skärmbild av felet?"
    await append(
        imap_server,
        agent_reply(
            note,
            "Bo Ek <bo.ek@example.com>",
            f"#time 20m kollade loggarna\n#wait\n\n{answer}",
            shape="gmail",
        ),
    )
    smtp_sink.messages.clear()
    await daemon.run_once()
    relay = sent_to(smtp_sink, "anna@butiken.se")
    assert len(relay) == 1
    text = plain(relay[0])
    assert text.startswith(answer + "\n\n-- \nBo Ek")
    assert "#time" not in text and "#wait" not in text
    refreshed = await Ticket.get(id=ticket.id)
    assert refreshed.status is TicketStatus.WAITING
    entry = await TimeEntry.get(ticket_id=ticket.id)
    assert (entry.worked, entry.rounded, entry.agent) == (20, 30, "bo")
    assert Decimal(entry.billed) == Decimal(30)  # not urgent, in office hours
    assert entry.description == "kollade loggarna"
    clocks = {c.name: c for c in await TicketClock.filter(ticket_id=ticket.id)}
    assert clocks["first_response"].status is ClockStatus.MET


async def test_invalid_command_relays_nothing_and_explains(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    await append(
        imap_server,
        agent_reply(note, "carla@example.com", "#clsoe\n\nKlart!", shape="gmail"),
    )
    smtp_sink.messages.clear()
    await daemon.run_once()
    assert sent_to(smtp_sink, "anna@butiken.se") == []
    errors = sent_to(smtp_sink, "carla@example.com")
    assert len(errors) == 1
    text = plain(errors[0])
    assert "#clsoe" in text and "#close" in text
    refreshed = await Ticket.get(id=ticket.id)
    assert refreshed.status is TicketStatus.NEW


async def test_note_goes_to_the_other_agents_only(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    await append(
        imap_server,
        agent_reply(
            note, "carla@example.com", "#assign bo\n#note\n\nBo, kan du ta den här?", shape="gmail"
        ),
    )
    smtp_sink.messages.clear()
    await daemon.run_once()
    assert sent_to(smtp_sink, "anna@butiken.se") == []
    assert sent_to(smtp_sink, "carla@example.com") == []
    (to_bo,) = sent_to(smtp_sink, "bo@example.com")  # one mail: the note, not also a notice
    assert "Bo, kan du ta den här?" in plain(to_bo)
    assert "Carla Neri" in plain(to_bo)
    assert sent_to(smtp_sink, "dora@example.com") == []  # not an agent of this ticket
    assert (await Ticket.get(id=ticket.id)).assignee == "bo"


async def _nothing_relayed(smtp_sink: Any, ticket: Ticket) -> None:
    assert sent_to(smtp_sink, "anna@butiken.se") == []
    refreshed = await Ticket.get(id=ticket.id)
    assert refreshed.status is TicketStatus.NEW
    assert not await TimeEntry.filter(ticket_id=ticket.id).exists()
    clocks = {c.name: c for c in await TicketClock.filter(ticket_id=ticket.id)}
    assert clocks["first_response"].status is ClockStatus.RUNNING


async def test_security_cases_relay_and_execute_nothing(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, customer_id, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    # A second ticket, to steal a token from.
    _, other_raw = mail("Someone <someone@example.org>", "Another question", "Hello there.")
    await append(imap_server, other_raw)
    await daemon.run_once()
    other = await Ticket.get(customer="someone@example.org")
    other_note = sent_to(smtp_sink, "carla@example.com")[-1]
    assert f"[#{other.id}]" in str(other_note["Subject"])

    # 1. The customer forges an agent's From without any token, answering their own thread.
    _, forged = mail(
        "Carla Neri <carla@example.com>",
        f"Re: Kassan visar fel vid betalning [#{ticket.id}]",
        "#close\n#time 10h\n\nCase closed.",
        in_reply_to=customer_id,
    )
    # 2. A valid token, but from somebody who is not an agent (a forwarded notification).
    stranger = agent_reply(note, "Mallory <mallory@example.net>", "#close\n\nDone!", shape="gmail")
    # 3. A valid token for the other ticket, answering a message of this one.
    wrong = agent_reply(
        note,
        "carla@example.com",
        "#close\n\nDone!",
        shape="gmail",
        to=other_note["Reply-To"].addresses[0].addr_spec,
    )
    # 4. A command in the customer's own mail.
    _, customer_cmd = mail(
        "Anna Lindqvist <anna@butiken.se>",
        f"Re: Kassan visar fel vid betalning [#{ticket.id}]",
        "#close\n#severity 1\n\nHar ni tittat?",
        in_reply_to=customer_id,
    )
    # 5. The agent's out-of-office answering the notification.
    ooo = agent_reply(
        note,
        "carla@example.com",
        "I am out of office until Monday.",
        shape="gmail",
        headers={"Auto-Submitted": "auto-replied"},
    )
    await append(imap_server, forged, stranger, wrong, customer_cmd, ooo)
    smtp_sink.messages.clear()
    await daemon.run_once()

    relayed = sent_to(smtp_sink, "anna@butiken.se")
    assert relayed == [], [plain(m) for m in relayed]
    refreshed = await Ticket.get(id=ticket.id)
    assert refreshed.status is TicketStatus.NEW
    assert refreshed.severity == "L4"
    assert not await TimeEntry.filter(ticket_id=ticket.id).exists()
    assert (await Ticket.get(id=other.id)).status is TicketStatus.NEW
    clocks = {c.name: c for c in await TicketClock.filter(ticket_id=ticket.id)}
    assert clocks["first_response"].status is ClockStatus.RUNNING
    # The wrong-token mail is explained to the (real) agent; the OOO and strangers are not.
    explanations = [
        m for m in sent_to(smtp_sink, "carla@example.com") if "Not sent" in str(m["Subject"])
    ]
    assert len(explanations) == 1
    assert sent_to(smtp_sink, "mallory@example.net") == []
    # Everything is stored, nothing is lost.
    rows = await MessageRow.filter(ticket_id=ticket.id, direction="in").count()
    assert rows >= 5


async def test_urgent_evening_time_is_surcharged_and_reported(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    evening = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # 19:00 in Stockholm, a Monday
    clock = FixedClock(evening)
    daemon, ticket, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    await append(
        imap_server,
        agent_reply(note, "carla@example.com", "#urgent\n#time 20m\n\nFixat.", shape="gmail"),
    )
    smtp_sink.messages.clear()
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=ticket.id)
    assert (entry.rounded, entry.surcharge_percent) == (30, 150)
    assert Decimal(entry.billed) == Decimal(75)
    assert entry.outside_office_hours and entry.urgent
    # 120 - 75 = 45 min left: below the 90 min threshold -> the account manager is warned.
    warnings = [
        m for m in sent_to(smtp_sink, "carla@example.com") if "running low" in str(m["Subject"])
    ]
    assert len(warnings) == 1 and "45 min" in plain(warnings[0])


async def _close(daemon: Daemon, imap_server: Any, smtp_sink: Any, note: Message) -> None:
    await append(imap_server, agent_reply(note, "carla@example.com", "#close", shape="gmail"))
    await daemon.run_once()


async def test_reply_after_resolution_reopens_within_the_grace_then_opens_a_linked_ticket(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, customer_id, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    await _close(daemon, imap_server, smtp_sink, note)
    resolved = await Ticket.get(id=ticket.id)
    assert resolved.status is TicketStatus.RESOLVED and resolved.resolved_at == MONDAY_10
    assert sent_to(smtp_sink, "anna@butiken.se")[-1]["Subject"] is not None

    clock.set(MONDAY_10 + timedelta(days=3))
    _, again = mail(
        "Anna Lindqvist <anna@butiken.se>",
        f"Re: Kassan visar fel vid betalning [#{ticket.id}]",
        "Felet är tillbaka!",
        in_reply_to=customer_id,
    )
    await append(imap_server, again)
    smtp_sink.messages.clear()
    await daemon.run_once()
    reopened = await Ticket.get(id=ticket.id)
    assert reopened.status is TicketStatus.OPEN and reopened.resolved_at is None
    notes = sent_to(smtp_sink, "carla@example.com")
    assert len(notes) == 1 and "Felet är tillbaka!" in plain(notes[0])
    assert "reopened" in plain(notes[0]) or "öppnat" in plain(notes[0])

    await _close(daemon, imap_server, smtp_sink, notes[0])
    clock.set(MONDAY_10 + timedelta(days=3 + 15))  # beyond the 14 days
    _, late = mail(
        "Anna Lindqvist <anna@butiken.se>",
        f"Re: Kassan visar fel vid betalning [#{ticket.id}]",
        "Nu händer samma sak igen, en månad senare.",
        in_reply_to=customer_id,
    )
    await append(imap_server, late)
    await daemon.run_once()
    assert (await Ticket.get(id=ticket.id)).status is TicketStatus.RESOLVED
    newer = await Ticket.filter(customer="anna@butiken.se").order_by("-id").first()
    assert newer is not None and newer.id != ticket.id
    assert newer.linked_ticket_id == ticket.id


async def test_required_authentication_results_gate_agent_mail(
    imap_server: Any, smtp_sink: Any, tmp_path: Path, database: str
) -> None:
    rules = tmp_path / "auth-rules.yaml"
    rules.write_text(
        AGENT_RULES + "agent_mail:\n  require_auth: {authserv_id: mx.example.com}\n",
        encoding="utf-8",
    )
    policy_ = load_policy(rules, REPO / "templates")
    settings = make_settings(imap_server, smtp_sink, rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, ticket, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, policy_, clock
    )
    unsigned = agent_reply(note, "carla@example.com", "Svar utan DKIM.", shape="gmail")
    forged = agent_reply(
        note,
        "carla@example.com",
        "Svar med förfalskad header.",
        shape="gmail",
        headers={"Authentication-Results": "mx.evil.example; dkim=pass header.d=example.com"},
    )
    await append(imap_server, unsigned, forged)
    smtp_sink.messages.clear()
    await daemon.run_once()
    assert sent_to(smtp_sink, "anna@butiken.se") == []
    assert len(sent_to(smtp_sink, "carla@example.com")) == 2  # both explained
    signed = agent_reply(
        note,
        "carla@example.com",
        "Svar med DKIM.",
        shape="gmail",
        headers={
            "Authentication-Results": "mx.example.com; dkim=pass header.d=example.com "
            "header.s=sel; spf=pass smtp.mailfrom=carla@example.com"
        },
    )
    await append(imap_server, signed)
    smtp_sink.messages.clear()
    await daemon.run_once()
    relayed = sent_to(smtp_sink, "anna@butiken.se")
    assert len(relayed) == 1 and plain(relayed[0]).startswith("Svar med DKIM.")
    assert (await Ticket.get(id=ticket.id)).status is TicketStatus.OPEN


async def test_reports_show_the_month_of_a_time_bank_and_the_sla_by_plan(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    from mailbot.tickets.reports import parse_period, sla_report, timebank_report

    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, _, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    clock.set(MONDAY_10 + timedelta(minutes=40))
    await append(
        imap_server,
        agent_reply(note, "carla@example.com", "#time 20m\n#time 1h\n\nKlart nu.", shape="gmail"),
    )
    await daemon.run_once()
    rules = agent_policy.rules
    november = parse_period("2026-11", rules.tz)
    rows = {row.account: row for row in await timebank_report(rules, november)}
    row = rows["butiken"]
    assert (row.worked, row.billed, row.surcharged) == (80, Decimal(90), Decimal(0))
    assert (row.allotment, row.used, row.overage) == (Decimal(120), Decimal(90), Decimal(0))
    # The 30 minutes left expire when the cycle ends on 1 December: in November's report.
    assert (row.expired, row.balance) == (Decimal(30), Decimal(0))
    december = {
        r.account: r for r in await timebank_report(rules, parse_period("2026-12", rules.tz))
    }
    assert december["butiken"].used == 0 and december["butiken"].expired == 120

    sla = {r.plan: r for r in await sla_report(rules, november)}
    assert (sla["pro"].tickets, sla["pro"].met, sla["pro"].breached) == (1, 1, 0)
    assert sla["pro"].median_first_response == timedelta(minutes=40)
    assert await sla_report(rules, parse_period("2026-10", rules.tz)) == []


async def test_reminders_go_to_the_account_manager_and_the_escalation_to_the_assignee(
    imap_server: Any, smtp_sink: Any, tmp_path: Path, database: str
) -> None:
    rules = tmp_path / "roles.yaml"
    text = AGENT_RULES.replace(
        "    first_response: {working_hours: 8}\n",
        "    first_response: {working_hours: 8}\n"
        "    sla:\n"
        "      reminders: [{before: 30m}]\n"
        "      notify: account_manager\n"
        "      escalate_to: assignee\n",
    ).replace(
        "assignment:\n  default: support\n",
        "assignment:\n  account_manager: false\n  default: bo\n",
    )
    rules.write_text(text, encoding="utf-8")
    policy_ = load_policy(rules, REPO / "templates")
    settings = make_settings(imap_server, smtp_sink, rules, database)
    clock = FixedClock(MONDAY_10)
    daemon = Daemon(settings, policy_, clock)
    _, raw = mail("Anna <anna@butiken.se>", "Frågan", "Hej, en fråga om exporten.")
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna@butiken.se")
    assert ticket.assignee == "bo"
    # 8 working hours from Monday 10:00 (office 08-17): Tuesday 09:00; the warning at 08:30.
    smtp_sink.messages.clear()
    clock.set(MONDAY_10 + timedelta(hours=22, minutes=30))
    assert (await daemon.run_once()).sent == 1
    assert [m.rcpt_tos for m in smtp_sink.messages] == [("carla@example.com",)]
    clock.set(MONDAY_10 + timedelta(hours=23))
    assert (await daemon.run_once()).sent == 1
    assert smtp_sink.messages[-1].rcpt_tos == ("bo@example.com",)


async def test_files_attached_by_the_agent_reach_the_customer(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    clock = FixedClock(MONDAY_10)
    daemon, _, _, note = await _customer_ticket(
        imap_server, smtp_sink, settings, agent_policy, clock
    )
    reply = message_from_bytes(
        agent_reply(note, "carla@example.com", "Se bifogad manual.", shape="gmail"),
        policy=policy.default,
    )
    assert isinstance(reply, EmailMessage)
    manual = b"%PDF-1.7\n" + bytes(range(256)) * 64
    reply.add_attachment(
        manual, maintype="application", subtype="pdf", filename="../../Manual kassan.pdf"
    )
    await append(imap_server, reply.as_bytes())
    smtp_sink.messages.clear()
    await daemon.run_once()
    (relay,) = sent_to(smtp_sink, "anna@butiken.se")
    assert plain(relay).startswith("Se bifogad manual.")
    (attachment,) = list(relay.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_filename() == "Manual kassan.pdf"
    assert attachment.get_content() == manual


async def test_a_category_rule_routes_the_ticket_and_free_time_costs_nothing(
    imap_server: Any, smtp_sink: Any, tmp_path: Path, database: str
) -> None:
    rules = tmp_path / "category.yaml"
    rules.write_text(
        AGENT_RULES.replace(
            "  default: support\n", "  default: support\n  by_category: {bug: dora}\n"
        )
        + "classification:\n"
        "  rules:\n"
        "    - name: product-bug\n"
        "      when: {any_text: {all: [bug, felmeddelande]}}\n"
        "      set: {category: bug}\n",
        encoding="utf-8",
    )
    policy_ = load_policy(rules, REPO / "templates")
    settings = make_settings(imap_server, smtp_sink, rules, database)
    daemon = Daemon(settings, policy_, FixedClock(MONDAY_10))
    _, raw = mail("Anna <anna@butiken.se>", "Fel i exporten", "Exporten ger ett felmeddelande.")
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="anna@butiken.se")
    # The account manager comes first; by_category applies when she is not asked first.
    assert (ticket.category, ticket.assignee) == ("bug", "carla")
    (note,) = sent_to(smtp_sink, "carla@example.com")
    await append(imap_server, agent_reply(note, "carla@example.com", "#time 45m", shape="gmail"))
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=ticket.id)
    assert (entry.category, entry.chargeable, entry.rounded) == ("bug", False, 45)
    assert Decimal(entry.billed) == 0

    rules.write_text(
        rules.read_text(encoding="utf-8").replace(
            "assignment:\n", "assignment:\n  account_manager: false\n"
        ),
        encoding="utf-8",
    )
    daemon = Daemon(settings, load_policy(rules, REPO / "templates"), FixedClock(MONDAY_10))
    _, raw = mail("Bo Kund <kund@example.org>", "Bug", "En bug i kassan.")
    await append(imap_server, raw)
    await daemon.run_once()
    other = await Ticket.get(customer="kund@example.org")
    assert (other.category, other.assignee) == ("bug", "dora")


async def test_an_undeliverable_answer_is_reported_to_the_tickets_agent(
    imap_server: Any, smtp_sink: Any, agent_rules: Path, agent_policy: Policy, database: str
) -> None:
    settings = make_settings(imap_server, smtp_sink, agent_rules, database)
    daemon = Daemon(settings, agent_policy, FixedClock(MONDAY_10))
    _, raw = mail("Typo <reject@shop.example>", "Hjälp", "Kassan fungerar inte.")
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer="reject@shop.example")
    assert ticket.assignee is not None
    address = agent_policy.rules.agents[ticket.assignee].addresses[0]
    notes = [plain(m) for m in sent_to(smtp_sink, address)]
    assert len(notes) == 2  # the new ticket, then the failed acknowledgement
    assert "could not be delivered" in notes[1] and "550" in notes[1]
