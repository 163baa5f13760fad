"""examples/woo-agency (seed 001, a Swedish WordPress/WooCommerce agency) end to end over real
IMAP and SMTP: the seed's response table as customers and agents receive it.

* Normal tickets inside the monthly budget: office hours 08:00-17:00 on the Swedish calendar
  (midsommarafton closed), "registreras och tilldelas 4-12 tim" and "åtgärd påbörjad 24-48
  tim" as two clocks, met by the agent's reply with #time.
* Urgent tickets in office hours ("omgående", +75 %) and outside office hours ("1-2 tim",
  "2-4 tim", +150 %), evenings and holidays alike; the lead on call is told at once.
* Time per started quarter hour: #time 20m on an urgent ticket at 19:00 bills 30 x 2.5 = 75
  minutes, deducted from the monthly time bank; project management +25 %; the month in
  ``mailbot report timebank --period``.
* Without a time bank ("vid första lucka"), guides for how-to questions, the takeover notice
  for non-customers, a written request for an estimate.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.policy import Policy, load_policy
from mailbot.sla.clocks import ClockStatus
from mailbot.tickets.models import OutboxRow, Ticket, TicketClock, TimeEntry
from mailbot.tickets.reports import parse_period, timebank_report
from tests.e2e.conftest import REPO, make_settings
from tests.e2e.test_agents import agent_reply, plain, sent_to
from tests.e2e.test_spine import append, mail

EXAMPLE = REPO / "examples" / "woo-agency"
RULES = EXAMPLE / "rules.yaml"
TEMPLATES = EXAMPLE / "templates"
STOCKHOLM = ZoneInfo("Europe/Stockholm")

KARIN = "karin@fjallkaffe.se"  # Fjällkaffe AB: Support med tidsbank, 8 h a month
EVA = "eva@stickatochvirkat.se"  # Stickat & Virkat: Support utan tidsbank
LINNEA = "linnea.ek@webbverkstaden.se"  # account manager of Fjällkaffe
JOHAN = "johan.berg@webbverkstaden.se"  # the lead, on call
AMIRA = "amira.haddad@webbverkstaden.se"  # account manager of Stickat & Virkat


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Stockholm wall-clock time, as UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=STOCKHOLM).astimezone(UTC)


@pytest.fixture
def woo(tmp_path: Path, imap_server: Any, smtp_sink: Any, database: str) -> tuple[Policy, Any, str]:
    policy = load_policy(RULES, TEMPLATES)
    settings = make_settings(
        imap_server,
        smtp_sink,
        RULES,
        database,
        MAILBOT_TEMPLATES=str(TEMPLATES),
        MAILBOT_STATE_DIR=str(tmp_path / "state"),
    )

    def build(clock: FixedClock) -> Daemon:
        return Daemon(settings, policy, clock)

    return policy, build, database


def only(messages: list[Message]) -> Message:
    assert len(messages) == 1, [str(m["Subject"]) for m in messages]
    return messages[0]


def about(messages: list[Message], ticket: Ticket) -> list[Message]:
    """The mails whose subject carries the ticket's token, [WV#n]."""
    return [m for m in messages if f"[WV#{ticket.id}]" in str(m["Subject"])]


async def clocks_of(ticket: Ticket) -> dict[str, TicketClock]:
    return {c.name: c for c in await TicketClock.filter(ticket_id=ticket.id)}


async def new_ticket(
    imap_server: Any, daemon: Daemon, sender: str, subject: str, body: str
) -> Ticket:
    _, raw = mail(sender, subject, body)
    await append(imap_server, raw)
    await daemon.run_once()
    address = sender.rpartition("<")[2].rstrip(">")
    ticket = await Ticket.filter(customer=address).order_by("-id").first()
    assert ticket is not None
    return ticket


async def test_a_normal_ticket_is_registered_in_12_and_started_in_48_office_hours(
    imap_server: Any, smtp_sink: Any, woo: tuple[Policy, Any, str]
) -> None:
    _, daemon_for, _ = woo
    clock = FixedClock(local(2026, 11, 23, 10))  # Monday 10:00
    daemon = daemon_for(clock)
    ticket = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "Fält för organisationsnummer i kassan",
        "Hej! Vi vill ha ett fält för organisationsnummer i kassan. Det är inte akut.",
    )
    assert (ticket.plan, ticket.severity, ticket.urgent) == ("tidsbank", "L4", False)
    assert (ticket.category, ticket.account, ticket.assignee) == (
        "utveckling",
        "fjallkaffe",
        "linnea",
    )
    # "4 – 12 tim": 12 office hours from Monday 10:00 = Tuesday 13:00 (7 h + 5 h);
    # "24 – 48 tim": two working days = Wednesday 10:00.
    clocks = await clocks_of(ticket)
    assert clocks["registered"].due_at == local(2026, 11, 24, 13)
    assert clocks["action_started"].due_at == local(2026, 11, 25, 10)
    assert clocks["first_response"].due_at == local(2026, 11, 24, 13)
    assert ticket.deadline == local(2026, 11, 24, 13)

    ack = only(sent_to(smtp_sink, KARIN))
    assert str(ack["Subject"]) == f"Re: Fält för organisationsnummer i kassan [WV#{ticket.id}]"
    text = plain(ack)
    assert "Hej Karin Fjäll!" in text
    assert (
        "Ärendet registreras och tilldelas en utvecklare inom 4–12 arbetstimmar, "
        "senast tisdag 24 november 2026 kl. 13:00." in text
    )
    assert "Arbetet påbörjas inom 24–48 timmar." in text
    assert "per påbörjad kvart till standardpris och dras av från er tidsbank" in text
    assert (await OutboxRow.get(ticket_id=ticket.id, rcpt_to=KARIN)).kind == "ack"

    # The account manager gets the ticket with both deadlines, written the Swedish way.
    note = only(sent_to(smtp_sink, LINNEA))
    note_text = plain(note)
    assert f"Nytt ärende WV#{ticket.id}" in note_text
    assert "registrering: tisdag 24 november 2026 kl. 13:00" in note_text
    assert "påbörjat arbete: onsdag 25 november 2026 kl. 10:00" in note_text
    assert "Timbank:    8 h" in note_text

    # She answers at 11:00 with 20 minutes of work: billed per started quarter, 30 minutes.
    clock.set(local(2026, 11, 23, 11))
    await append(
        imap_server,
        agent_reply(
            note,
            LINNEA,
            "#time 20m\n\nHej Karin! Fältet är på plats i kassan nu.",
            shape="outlook",
        ),
    )
    smtp_sink.messages.clear()
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=ticket.id)
    assert (entry.agent, entry.worked, entry.rounded, entry.surcharge_percent) == (
        "linnea",
        20,
        30,
        0,
    )
    assert Decimal(entry.billed) == 30 and not entry.outside_office_hours
    clocks = await clocks_of(ticket)
    assert {name: c.status for name, c in clocks.items()} == {
        "first_response": ClockStatus.MET,
        "registered": ClockStatus.MET,
        "action_started": ClockStatus.MET,
    }
    relay = only(sent_to(smtp_sink, KARIN))
    assert plain(relay).startswith("Hej Karin! Fältet är på plats i kassan nu.")
    assert f"[WV#{ticket.id}]" in str(relay["Subject"])


async def test_the_office_calendar_is_swedish_midsommarafton_and_julafton_are_closed(
    imap_server: Any, smtp_sink: Any, woo: tuple[Policy, Any, str]
) -> None:
    _, daemon_for, _ = woo
    # Thursday before midsommar, 16:00: one office hour that day, Friday 19 June is
    # midsommarafton, then the weekend: 12 office hours end Tuesday 10:00, and two working
    # days (Thursday -> Monday -> Tuesday) Tuesday 16:00.
    clock = FixedClock(local(2026, 6, 18, 16))
    daemon = daemon_for(clock)
    ticket = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "Ny text på sidan Om oss",
        "Hej! Kan ni byta texten på sidan Om oss till den bifogade versionen.",
    )
    clocks = await clocks_of(ticket)
    assert clocks["registered"].due_at == local(2026, 6, 23, 10)
    assert clocks["action_started"].due_at == local(2026, 6, 23, 16)
    ack = only(sent_to(smtp_sink, KARIN))
    assert "senast tisdag 23 juni 2026 kl. 10:00." in plain(ack)

    # Julafton (a Thursday) is closed too: an urgent ticket at 10:00 that day is outside
    # office hours -> 2 h to register, 4 h to start, and the lead on call is alerted.
    smtp_sink.messages.clear()
    clock.set(local(2026, 12, 24, 10))
    urgent = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "Kassan fungerar inte!",
        "Hej, kassan fungerar inte, ingen kan betala sina julklappar.",
    )
    assert (urgent.severity, urgent.urgent) == ("L1", True)
    clocks = await clocks_of(urgent)
    assert clocks["registered"].due_at == local(2026, 12, 24, 12)
    assert clocks["action_started"].due_at == local(2026, 12, 24, 14)
    ack = only(sent_to(smtp_sink, KARIN))
    text = plain(ack)
    assert "utanför kontorstid" in text
    assert "senast torsdag 24 december 2026 kl. 12:00" in text
    assert "+150 %" in text
    alarm = [m for m in about(sent_to(smtp_sink, JOHAN), urgent) if "ESKALERAT" in plain(m)]
    assert len(alarm) == 1 and "akut-utanfor-kontorstid" in plain(alarm[0])


async def test_a_month_of_urgent_and_project_work_is_surcharged_and_deducted_from_the_bank(
    imap_server: Any, smtp_sink: Any, woo: tuple[Policy, Any, str], tmp_path: Path
) -> None:
    policy, daemon_for, database = woo

    # 1. Monday 19:00, outside office hours: the shop is down.
    clock = FixedClock(local(2026, 11, 23, 19))
    daemon = daemon_for(clock)
    evening = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "AKUT: butiken ligger nere",
        "Hej! Hela butiken ligger nere, kunderna får ett kritiskt fel. Hjälp!",
    )
    assert (evening.severity, evening.urgent, evening.assignee) == ("L1", True, "linnea")
    # "Akuta ärenden, utanför kontorstid: 1 – 2 tim / 2 – 4 tim", around the clock.
    clocks = await clocks_of(evening)
    assert clocks["registered"].due_at == local(2026, 11, 23, 21)
    assert clocks["action_started"].due_at == local(2026, 11, 23, 23)
    ack = only(sent_to(smtp_sink, KARIN))
    assert str(ack["Subject"]) == (
        f"Akut ärende mottaget: AKUT: butiken ligger nere [WV#{evening.id}]"
    )
    text = plain(ack)
    assert "Vi har tagit emot ditt akuta ärende WV#" in text and "utanför kontorstid" in text
    assert (
        "Ärendet registreras och tilldelas inom 2 timmar, "
        "senast måndag 23 november 2026 kl. 21:00." in text
    )
    assert "Arbetet påbörjas inom 2–4 timmar." in text
    assert "debiteras med +150 % och mäts per påbörjad kvart" in text
    # The lead on call is alerted at once, with both deadlines.
    (alarm,) = [m for m in about(sent_to(smtp_sink, JOHAN), evening) if "ESKALERAT" in plain(m)]
    assert "registrering: måndag 23 november 2026 kl. 21:00" in plain(alarm)
    assert "påbörjat arbete: måndag 23 november 2026 kl. 23:00" in plain(alarm)

    # Johan answers the alert at 19:10 with 20 minutes: 30 x 2.5 = 75 minutes.
    clock.set(local(2026, 11, 23, 19, 10))
    await append(
        imap_server,
        agent_reply(
            alarm,
            JOHAN,
            "#time 20m\n\nHej Karin! Butiken är uppe igen, ett tillägg krockade med temat.",
            shape="gmail",
        ),
    )
    smtp_sink.messages.clear()
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=evening.id)
    assert (entry.agent, entry.rounded, entry.surcharge_percent) == ("johan", 30, 150)
    assert Decimal(entry.billed) == 75
    assert entry.urgent and entry.outside_office_hours
    assert {c.name: c.status for c in (await clocks_of(evening)).values()} == {
        "first_response": ClockStatus.MET,
        "registered": ClockStatus.MET,
        "action_started": ClockStatus.MET,
    }
    relay = only(sent_to(smtp_sink, KARIN))
    assert plain(relay).startswith("Hej Karin! Butiken är uppe igen")

    # 2. Tuesday 10:00, in office hours: the checkout is broken. "Omgående", +75 %.
    clock.set(local(2026, 11, 24, 10))
    smtp_sink.messages.clear()
    office = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "Kassan fungerar inte",
        "Hej! Kunderna kan inte betala, kassan fungerar inte sedan i morse.",
    )
    assert (office.severity, office.urgent) == ("L1", True)
    clocks = await clocks_of(office)
    assert clocks["registered"].due_at == local(2026, 11, 24, 10, 30)
    assert clocks["action_started"].due_at == local(2026, 11, 24, 11)
    text = plain(only(sent_to(smtp_sink, KARIN)))
    assert "Vi påbörjar arbetet omgående och hör av oss inom 1 timme" in text
    assert "senast tisdag 24 november 2026 kl. 11:00" in text
    assert "debiteras med +75 %" in text and "utanför kontorstid" not in text
    escalated = [m for m in about(sent_to(smtp_sink, JOHAN), office) if "ESKALERAT" in plain(m)]
    assert len(escalated) == 1 and "akut-kontorstid" in plain(escalated[0])
    note = about(sent_to(smtp_sink, LINNEA), office)[0]
    clock.set(local(2026, 11, 24, 10, 20))
    await append(
        imap_server,
        agent_reply(
            note, LINNEA, "#time 20m\n\nVi har hittat felet i betalmodulen.", shape="gmail"
        ),
    )
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=office.id)
    assert (entry.rounded, entry.surcharge_percent, entry.outside_office_hours) == (30, 75, False)
    assert Decimal(entry.billed) == Decimal("52.5")

    # 3. Wednesday: sprint planning is project management, "tillkommer med 25 %".
    clock.set(local(2026, 11, 25, 9))
    smtp_sink.messages.clear()
    planning = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "Planera nästa sprint",
        "Hej! Vi vill planera nästa sprint för januari, boka gärna ett statusmöte.",
    )
    assert (planning.category, planning.urgent) == ("projektledning", False)
    note = only(sent_to(smtp_sink, LINNEA))
    assert "Kategori:   projektledning" in plain(note)
    # 75 + 52.5 = 127.5 of 480 minutes used: 352.5 left.
    assert "Timbank:    5 h 52.5 min" in plain(note)
    clock.set(local(2026, 11, 25, 9, 30))
    await append(
        imap_server,
        agent_reply(
            note, LINNEA, "#time 1h\n\nJag har bokat statusmötet på fredag.", shape="apple"
        ),
    )
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=planning.id)
    assert (entry.category, entry.rounded, entry.surcharge_percent) == ("projektledning", 60, 25)
    assert Decimal(entry.billed) == 75

    # 4. The month, as the operator reads it: mailbot report timebank --period 2026-11.
    env = {
        **os.environ,
        "MAILBOT_TEMPLATES": str(TEMPLATES),
        "MAILBOT_STATE_DIR": str(tmp_path / "state"),
    }
    argv = [sys.executable, "-m", "mailbot.cli", "--rules", str(RULES), "--db", database]
    argv += ["report", "timebank", "--period", "2026-11", "--json"]
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    rows = {row["account"]: row for row in json.loads(out)}
    month = rows["fjallkaffe"]
    assert (month["name"], month["bank"], month["worked_minutes"], month["free_minutes"]) == (
        "Fjällkaffe AB",
        "monthly 480 min",
        100,  # 20 + 20 + 60 as logged
        0,
    )
    minutes = {key: Decimal(value) for key, value in month.items() if key.endswith("_minutes")}
    assert minutes == {
        "worked_minutes": 100,
        "billed_minutes": Decimal("202.5"),  # 75 + 52.5 + 75
        "surcharge_minutes": Decimal("82.5"),  # 45 + 22.5 + 15 on 120 rounded minutes
        "free_minutes": 0,
        "allotment_minutes": 480,
        "used_minutes": Decimal("202.5"),  # deducted from the bank
        "expired_minutes": Decimal("277.5"),  # unused hours expire with the month
        "overage_minutes": 0,
        "balance_minutes": 0,
    }
    # The same figures from the report function, for December nothing is used yet.
    december = {
        r.account: r
        for r in await timebank_report(policy.rules, parse_period("2026-12", STOCKHOLM))
    }
    assert december["fjallkaffe"].used == 0 and december["fjallkaffe"].allotment == 480


async def test_without_a_bank_guides_takeover_and_estimates(
    imap_server: Any, smtp_sink: Any, woo: tuple[Policy, Any, str]
) -> None:
    policy, daemon_for, _ = woo
    clock = FixedClock(local(2026, 11, 23, 10))
    daemon = daemon_for(clock)

    # Support utan tidsbank: "vid första lucka", no date promised, standard price.
    banner = await new_ticket(
        imap_server,
        daemon,
        "Eva Maska <eva@stickatochvirkat.se>",
        "Ny banner på startsidan",
        "Hej, vi vill byta bannern på startsidan till vinterrean.",
    )
    assert (banner.plan, banner.assignee) == ("utan-tidsbank", "amira")
    text = plain(only(sent_to(smtp_sink, EVA)))
    assert "tar vi oss an ärendet vid första lediga lucka, i den prioritet du önskar" in text
    assert "senast" not in text
    assert set((await clocks_of(banner)).keys()) == {"first_response"}
    note = only(sent_to(smtp_sink, AMIRA))
    await append(
        imap_server, agent_reply(note, AMIRA, "#time 40m\n\nNu är bannern bytt.", shape="gmail")
    )
    await daemon.run_once()
    rows = {
        r.account: r
        for r in await timebank_report(policy.rules, parse_period("2026-11", STOCKHOLM))
    }
    # No time bank: the 45 started-quarter minutes are billed separately at standard price.
    assert (rows["stickat"].bank, rows["stickat"].billed, rows["stickat"].overage) == (
        "none",
        Decimal(45),
        Decimal(45),
    )

    # A how-to question gets the guide at once.
    smtp_sink.messages.clear()
    howto = await new_ticket(
        imap_server,
        daemon,
        "Eva Maska <eva@stickatochvirkat.se>",
        "Rabattkod till julen",
        "Hur skapar jag en rabattkod för julen?",
    )
    answer = only(sent_to(smtp_sink, EVA))
    assert (await OutboxRow.get(ticket_id=howto.id, rcpt_to=EVA)).kind == "wiki"
    assert "https://webbverkstaden.se/guider/woocommerce-rabattkod" in plain(answer)

    # Not a customer: support needs a takeover first.
    smtp_sink.messages.clear()
    stranger = await new_ticket(
        imap_server,
        daemon,
        "Per Persson <per@mittforetag.example>",
        "Hjälp med WooCommerce",
        "Hej, vår WooCommerce-butik behöver hjälp med ett tillägg.",
    )
    assert (stranger.plan, stranger.assignee) == ("ej-kund", "johan")
    text = plain(only(sent_to(smtp_sink, "per@mittforetag.example")))
    assert "måste vi först genomföra ett övertagande" in text
    assert "Svara på det här mejlet så berättar vi hur ett övertagande går till" in text
    assert (
        await OutboxRow.get(ticket_id=stranger.id, rcpt_to="per@mittforetag.example")
    ).kind == "out_of_scope"

    # A written request for an estimate: no work before it is approved.
    smtp_sink.messages.clear()
    estimate = await new_ticket(
        imap_server,
        daemon,
        "Karin Fjäll <karin@fjallkaffe.se>",
        "Nytt sidhuvud",
        "Hej! Vi vill ha ett nytt sidhuvud med meny. Skicka ett kostnadsförslag innan ni börjar.",
    )
    assert estimate.category == "estimat"
    text = plain(only(sent_to(smtp_sink, KARIN)))
    assert "vi påbörjar inget arbete innan du har fått den och godkänt den" in text
