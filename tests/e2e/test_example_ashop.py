"""examples/ashop end to end over real IMAP and SMTP: seed 000, Ashop's "Fri support i Ashop".

The key promises, each proved by what customers and agents actually receive:

* Core (free, "Upp till 3 arbetsdagar"): a how-to question gets links to Ashop's help
  centre and "inom 3 arbetsdagar"; any other request a receipt with the last moment written
  the Swedish way, counted in Swedish working days (Midsommarafton is closed).
* Core does not cover "kundspecifika lösningar eller tredjepartstjänster": such a request
  is answered as out of scope, naming Support Pro as the paid option.
* Pro ("Prioriterad support", "ni går före i kön") and Ultimate ("Högsta prioritet") come
  before Core in the agents' queue, whatever the deadlines.
* Ultimate ("Max 4 timmar", Premium SLA): an outage gets a 4-hour deadline, the team lead
  is alerted at once, the account manager is reminded before the deadline and the lead gets
  the escalation when it passes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

import pytest

from mailbot import commands
from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.policy import load_policy
from mailbot.tickets.models import OutboxRow, Reminder, Ticket
from mailbot.tickets.queries import list_tickets
from tests.e2e.conftest import REPO, make_settings
from tests.e2e.test_agents import plain, sent_to
from tests.e2e.test_spine import append, mail

EXAMPLE = REPO / "examples" / "ashop"
RULES = EXAMPLE / "rules.yaml"
TEMPLATES = EXAMPLE / "templates"

# Moments in Stockholm (CET, UTC+1 in November; CEST, UTC+2 in June).
SUNDAY_EVENING = datetime(2026, 11, 22, 19, 0, tzinfo=UTC)  # Sunday 20:00
MONDAY_10 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # Monday 10:00
MONDAY_EVENING = datetime(2026, 11, 23, 18, 30, tzinfo=UTC)  # Monday 19:30, office closed
WEDNESDAY_15 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # Wednesday 15:00
BEFORE_MIDSUMMER = datetime(2026, 6, 18, 8, 0, tzinfo=UTC)  # Thursday 18 June 10:00

# The people of examples/ashop/rules.yaml.
LEAD = "johanna.ek@ashop.example.se"  # the team lead
SARA = "sara.nilsson@ashop.example.se"  # account manager of Fjällsport and Nordhemmet
TEAM = {LEAD, SARA, "oskar.lind@ashop.example.se", "amir.haddad@ashop.example.se"}

CORE_LISA = "lisa@tradgardsgladje.example.se"  # not a customer entry: the default, Core
CORE_PER = "per@cykelverkstan.example.se"
PRO_KARIN = "karin@fjallsport.example.se"
ULTIMATE_ERIK = "erik@nordhemmet.example.se"


@pytest.fixture
def daemon_for(imap_server: Any, smtp_sink: Any, database: str) -> Any:
    policy = load_policy(RULES, TEMPLATES)
    settings = make_settings(
        imap_server, smtp_sink, RULES, database, MAILBOT_TEMPLATES=str(TEMPLATES)
    )

    def build(clock: FixedClock) -> Daemon:
        return Daemon(settings, policy, clock)

    return build


def only(messages: list[Message]) -> Message:
    assert len(messages) == 1, [str(m["Subject"]) for m in messages]
    return messages[0]


async def arrive(imap_server: Any, daemon: Any, sender: str, subject: str, body: str) -> Ticket:
    """One customer mail in through IMAP, one daemon pass; its new ticket."""
    _, raw = mail(sender, subject, body)
    await append(imap_server, raw)
    await daemon.run_once()
    address = sender.rpartition("<")[2].rstrip(">")
    ticket = await Ticket.filter(customer=address).order_by("-id").first()
    assert ticket is not None
    return ticket


async def kind_of_answer(ticket: Ticket) -> str:
    row = await OutboxRow.get(ticket_id=ticket.id, rcpt_to=ticket.customer)
    return str(row.kind)


async def test_core_howto_question_gets_help_centre_links_and_three_working_days(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    # Sunday evening: nobody is at work, the help centre answers at once.
    daemon = daemon_for(FixedClock(SUNDAY_EVENING))
    ticket = await arrive(
        imap_server,
        daemon,
        f"Lisa Berg <{CORE_LISA}>",
        "Hur ändrar jag fraktkostnaden?",
        "Hej!\n\nHur gör jag för att ändra fraktkostnaden för leveranser till Norge? "
        "Vi vill också erbjuda fraktfritt över 500 kr.\n\nMvh Lisa",
    )
    assert (ticket.plan, ticket.language, ticket.howto) == ("core", "sv", True)
    assert (ticket.priority, ticket.category) == (10, "fraga")
    # A wiki redirect: the ticket waits on Lisa, its clocks paused until she replies.
    assert (ticket.status, ticket.deadline) == ("waiting", None)
    assert await kind_of_answer(ticket) == "wiki"

    answer = only(sent_to(smtp_sink, CORE_LISA))
    assert str(answer["Subject"]) == f"Re: Hur ändrar jag fraktkostnaden? [ASHOP#{ticket.id}]"
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["From"].addresses[0].addr_spec == "support@ashop.example.se"
    text = plain(answer)
    assert text.startswith("Hej Lisa Berg!")
    assert "Svaret finns förmodligen redan i Ashops hjälpcenter" in text
    assert "- Fraktinställningar och leveranssätt\n" in text
    assert "https://hjalp.ashop.example.se/sv/installningar/frakt" in text
    assert "help.ashop.example.se/en/" not in text  # Swedish articles for a Swedish question
    assert "inom fri support (Core) får du svar från oss inom 3 arbetsdagar." in text
    html = answer.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    assert html is not None
    assert 'href="https://hjalp.ashop.example.se/sv/installningar/frakt"' in html.get_content()
    # The team still has the ticket, should Lisa answer that the article did not help.
    assert any(sent_to(smtp_sink, agent) for agent in TEAM)


async def test_core_receipt_counts_swedish_working_days_and_says_what_free_support_is(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    # Thursday before Midsummer: Midsommarafton (Friday) is not a working day.
    daemon = daemon_for(FixedClock(BEFORE_MIDSUMMER))
    ticket = await arrive(
        imap_server,
        daemon,
        f"Per Ek <{CORE_PER}>",
        "Felmeddelande i adminpanelen",
        "Hej, när jag sparar en produkt får jag ett felmeddelande: 'Något gick fel'.\n\nPer",
    )
    assert (ticket.plan, ticket.category, ticket.severity) == ("core", "felanmalan", "L4")
    # Thursday 10:00 + 3 working days, skipping Midsommarafton and the weekend.
    assert ticket.deadline == datetime(2026, 6, 24, 8, 0, tzinfo=UTC)  # Wednesday 10:00
    assert await kind_of_answer(ticket) == "ack"
    text = plain(only(sent_to(smtp_sink, CORE_PER)))
    assert "Vi har registrerat det som ärende ASHOP#" in text
    assert "Du får svar från oss inom 3 arbetsdagar, senast onsdag 24 juni 2026 kl. 10:00." in text
    assert "Ditt ärende hanteras inom fri support (Core)" in text
    assert "grundläggande felsökning (vi identifierar problemet, men åtgärdar det inte)" in text
    assert "Support Pro, som ingår i alla våra månadsavtal" in text


async def test_core_third_party_and_customer_specific_requests_are_not_covered(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    daemon = daemon_for(FixedClock(MONDAY_10))
    # A how-to question, but about a third-party service: not the help centre, out of scope.
    fortnox = await arrive(
        imap_server,
        daemon,
        f"Lisa Berg <{CORE_LISA}>",
        "Koppla Fortnox till butiken",
        "Hej! Hur kopplar vi ihop vår Fortnox med Ashop så att ordrarna bokförs "
        "automatiskt?\n\nMvh Lisa",
    )
    custom = await arrive(
        imap_server,
        daemon,
        f"Per Ek <{CORE_PER}>",
        "Specialanpassad produktsida",
        "Hej, vi vill ha en specialanpassad produktsida med egen kod som räknar ut priset "
        "på en cykel utifrån valda delar. Kan ni bygga det?\n\nPer",
    )
    assert (fortnox.plan, fortnox.category, fortnox.howto) == ("core", "tredjepart", True)
    assert (custom.plan, custom.category) == ("core", "kundanpassning")
    assert await kind_of_answer(fortnox) == "out_of_scope"
    assert await kind_of_answer(custom) == "out_of_scope"

    for ticket, customer, paid_option in (
        (
            fortnox,
            CORE_LISA,
            "Support för tredjepartstjänster (betalning, frakt, bokföring, marknadsföring med"
            " mera) ingår i Support Pro, som ingår i alla våra månadsavtal. Utan avtal hjälper"
            " vi gärna till mot timkostnad.",
        ),
        (
            custom,
            CORE_PER,
            "Kundspecifika lösningar tar vi oss an inom Support Pro, som ingår i alla våra"
            " månadsavtal:",
        ),
    ):
        answer = only(sent_to(smtp_sink, customer))
        assert f"[ASHOP#{ticket.id}]" in str(answer["Subject"])
        text = plain(answer)
        assert f"Vi har registrerat det som ärende ASHOP#{ticket.id}." in text
        assert "Det här ingår tyvärr inte i fri support (Core)." in text
        assert paid_option in text
        assert "hjalp.ashop.example.se" not in text  # no help-centre links
        # The ticket stays open: paid help is one reply away, within the Core promise.
        assert "återkommer vi inom 3 arbetsdagar, senast torsdag 26 november 2026 kl. 10:00" in text
        assert "https://www.ashop.example.se/manadsavtal" in text


async def test_pro_and_ultimate_go_before_core_in_the_queue(
    imap_server: Any,
    smtp_sink: Any,
    daemon_for: Any,
    database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Core asks on Monday morning (due Thursday 10:00) ...
    core = await arrive(
        imap_server,
        daemon_for(FixedClock(MONDAY_10)),
        f"Lisa Berg <{CORE_LISA}>",
        "Felmeddelande i kassan",
        "Hej, kassan visar ett felmeddelande om fel postnummer fast det är rätt.",
    )
    # ... Pro asks the Fortnox question Core does not get, on Wednesday (due Thursday 15:00).
    clock = FixedClock(WEDNESDAY_15)
    pro = await arrive(
        imap_server,
        daemon_for(clock),
        f"Karin Fjäll <{PRO_KARIN}>",
        "Koppla Fortnox till butiken",
        "Hej! Hur kopplar vi ihop vår Fortnox med Ashop så att ordrarna bokförs "
        "automatiskt?\n\nMvh Karin",
    )
    clock.set(WEDNESDAY_15 + timedelta(minutes=30))
    ultimate = await arrive(
        imap_server,
        daemon_for(clock),
        f"Erik Nord <{ULTIMATE_ERIK}>",
        "Rabattkod för Black Friday",
        "Hej! Hur lägger jag upp en rabattkod som bara gäller på fredag?\n\nErik",
    )
    assert [(t.plan, t.priority) for t in (core, pro, ultimate)] == [
        ("core", 10),
        ("pro", 20),
        ("ultimate", 30),
    ]
    # Third-party services are covered by Pro: a receipt with priority, no refusal.
    assert pro.category == "tredjepart" and await kind_of_answer(pro) == "ack"
    assert pro.deadline == datetime(2026, 11, 26, 14, 0, tzinfo=UTC)  # Thursday 15:00
    assert (pro.assignee, ultimate.assignee) == ("sara", "sara")  # their account manager
    text = plain(only(sent_to(smtp_sink, PRO_KARIN)))
    assert "Med Support Pro har du prioriterad support" in text
    assert "med förtur, inom 1 arbetsdag, senast torsdag 26 november 2026 kl. 15:00." in text
    assert "loggar in i butiken och hjälper till direkt" in text
    # Ultimate how-to questions are answered by a person, within 4 hours.
    assert await kind_of_answer(ultimate) == "ack"
    text = plain(only(sent_to(smtp_sink, ULTIMATE_ERIK)))
    assert (
        "med högsta prioritet, inom högst 4 timmar, senast onsdag 25 november 2026 kl. 19:30."
        in text
    )
    # Core's deadline is the earlier of the two, but Pro "går före i kön".
    assert core.deadline is not None and pro.deadline is not None
    assert core.deadline < pro.deadline
    queue = await list_tickets("ASHOP", queue=True)
    assert [(t.ref, t.plan) for t in queue] == [
        (f"ASHOP#{ultimate.id}", "ultimate"),
        (f"ASHOP#{pro.id}", "pro"),
        (f"ASHOP#{core.id}", "core"),
    ]

    # The same order as the operator sees it: `mailbot tickets --queue --json` (its command,
    # awaited here: this test already runs in an event loop).
    settings = make_settings(
        imap_server, smtp_sink, RULES, database, MAILBOT_TEMPLATES=str(TEMPLATES)
    )
    capsys.readouterr()
    assert await commands.tickets(settings, as_json=True, limit=None, queue=True) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["ref"], row["plan"], row["priority"]) for row in rows] == [
        (f"ASHOP#{ultimate.id}", "ultimate", 30),
        (f"ASHOP#{pro.id}", "pro", 20),
        (f"ASHOP#{core.id}", "core", 10),
    ]


async def test_ultimate_outage_four_hours_lead_alerted_reminded_then_escalated(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    # Monday 19:30, the office is closed: the Premium SLA's 4 hours run all the same.
    clock = FixedClock(MONDAY_EVENING)
    daemon = daemon_for(clock)
    ticket = await arrive(
        imap_server,
        daemon,
        f"Erik Nord <{ULTIMATE_ERIK}>",
        "Butiken ligger nere!",
        "Hej, hela butiken ligger nere sedan 19:15 och ingen kan handla. Kunderna får "
        "502 Bad Gateway. Hjälp!\n\nErik",
    )
    assert (ticket.plan, ticket.severity, ticket.urgent) == ("ultimate", "L1", True)
    assert ticket.priority == 30
    assert ticket.deadline == MONDAY_EVENING + timedelta(hours=4)  # 23:30 in Stockholm
    assert ticket.assignee == "sara"  # Nordhemmet's account manager

    # The customer: one receipt, the outage wording, 4 hours and the last moment.
    receipt = only(sent_to(smtp_sink, ULTIMATE_ERIK))
    assert await kind_of_answer(ticket) == "ack"
    assert str(receipt["Subject"]) == (
        f"Re: Butiken ligger nere! – vi är på det [ASHOP#{ticket.id}]"
    )
    text = plain(receipt)
    assert "Din butik har Support Ultimate (Premium SLA), så vår teamledare är redan larmad." in (
        text
    )
    assert (
        "Du får svar från oss med högsta prioritet, inom högst 4 timmar, "
        "senast måndag 23 november 2026 kl. 23:30." in text
    )
    # The team lead is alerted at once, in Swedish, naming the rule; Sara gets the ticket.
    alert = only(sent_to(smtp_sink, LEAD))
    alert_text = plain(alert)
    assert f"ESKALERAT: ASHOP#{ticket.id} från" in alert_text
    assert "(regel ultimate-driftstopp)" in alert_text
    assert "hela butiken ligger nere sedan 19:15" in alert_text
    new = only(sent_to(smtp_sink, SARA))
    assert f"Nytt ärende ASHOP#{ticket.id}" in plain(new)

    rows = await Reminder.filter(ticket_id=ticket.id, clock="first_response").order_by(
        "due_at", "kind"
    )
    assert [(r.kind, r.due_at - MONDAY_EVENING) for r in rows] == [
        ("at_percent:50", timedelta(hours=2)),
        ("before:30m", timedelta(hours=3, minutes=30)),
        ("breach", timedelta(hours=4)),
    ]

    # 21:30: halfway, Sara is reminded; nobody else hears anything.
    clock.set(MONDAY_EVENING + timedelta(hours=2))
    assert (await daemon.run_once()).sent == 1
    halfway = sent_to(smtp_sink, SARA)[-1]
    assert str(halfway["Subject"]).startswith("Påminnelse: första svar")
    assert f"[ASHOP#{ticket.id}]" in str(halfway["Subject"])
    assert halfway["Auto-Submitted"] == "auto-generated"
    assert f"Ärende ASHOP#{ticket.id}" in plain(halfway)
    # 23:00: half an hour left, Sara again.
    clock.set(MONDAY_EVENING + timedelta(hours=3, minutes=30))
    assert (await daemon.run_once()).sent == 1
    assert len(sent_to(smtp_sink, SARA)) == 3
    assert len(sent_to(smtp_sink, LEAD)) == 1
    # 23:31: the 4 hours have passed without an answer: the team lead gets the escalation.
    clock.set(MONDAY_EVENING + timedelta(hours=4, minutes=1))
    assert (await daemon.run_once()).sent == 1
    breach = sent_to(smtp_sink, LEAD)[-1]
    assert str(breach["Subject"]).startswith("SLA BRUTET")
    assert f"ASHOP#{ticket.id}" in str(breach["Subject"])
    assert breach["Auto-Submitted"] == "auto-generated"
    assert "har passerat (måndag 23 november 2026 kl. 23:30)" in plain(breach)
    assert (await daemon.run_once()).sent == 0  # nothing twice
    assert len(sent_to(smtp_sink, ULTIMATE_ERIK)) == 1  # the customer got one mail, no storm
