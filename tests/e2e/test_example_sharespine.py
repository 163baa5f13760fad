"""examples/sharespine end to end over real IMAP and SMTP (seed 002, Swedish).

Sharespine's promises, as its customers and agents see them:

* a prepaid service account ("servicekonto") whose hours never expire: they are still there
  after New Year, and the account can be topped up (``mailbot timebank topup``);
* what the monthly fee covers (bugs in Sharespine's own product, simple guidance to the
  manuals, account administration, a partner's API change) costs nothing when an agent logs
  ``#time`` on it, while installation, training, configuration, bugs caused by the
  customer's own changes, projects, project management and advice are drawn from the
  account, minute by minute ("den exakta tiden");
* the category comes from the customer's own Swedish words, and the customer is told before
  any work is done when it will be charged;
* a low balance warns the account manager (and the customer, who may want more hours);
* a how-to question gets the matching manual pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from mailbot.cli import main
from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.policy import Policy, load_policy
from mailbot.settings import Settings
from mailbot.tickets.models import OutboxRow, Ticket, TimeEntry
from mailbot.tickets.reports import TimebankRow, parse_period, timebank_report
from mailbot.tickets.timebank import account_balance, top_up
from tests.e2e.conftest import REPO, make_settings
from tests.e2e.test_agents import agent_reply, plain, sent_to
from tests.e2e.test_spine import append, mail

EXAMPLE = REPO / "examples" / "sharespine"
RULES = EXAMPLE / "rules.yaml"
TEMPLATES = EXAMPLE / "templates"

JOHANNA = "johanna.ek@example.se"  # Cykelboden's account manager
PONTUS = "pontus.alm@example.se"  # Trädgårdsgrossen's and Kaffekompaniet's
KARIN = "karin@cykelboden.example"

# Stockholm is UTC+1 in winter: 09:00 UTC is 10:00 local.
TUE_15_DEC = datetime(2026, 12, 15, 9, 0, tzinfo=UTC)
WED_16_DEC = datetime(2026, 12, 16, 9, 0, tzinfo=UTC)
WED_30_DEC_15 = datetime(2026, 12, 30, 14, 0, tzinfo=UTC)  # 15:00, the last open day of 2026
TUE_12_JAN = datetime(2027, 1, 12, 9, 0, tzinfo=UTC)
THU_14_JAN = datetime(2027, 1, 14, 9, 0, tzinfo=UTC)
MON_23_NOV = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sharespine:
    """The example loaded as the daemon runs it: its policy, and daemons at chosen times."""

    policy: Policy
    settings: Settings

    def daemon(self, clock: FixedClock) -> Daemon:
        return Daemon(self.settings, self.policy, clock)


@pytest.fixture
def sharespine(imap_server: Any, smtp_sink: Any, database: str) -> Sharespine:
    return Sharespine(
        load_policy(RULES, TEMPLATES),
        make_settings(imap_server, smtp_sink, RULES, database, MAILBOT_TEMPLATES=str(TEMPLATES)),
    )


def only(messages: list[Message]) -> Message:
    assert len(messages) == 1, [str(m["Subject"]) for m in messages]
    return messages[0]


def about(messages: list[Message], ticket: Ticket) -> list[Message]:
    """The mails whose subject carries ``ticket``'s token."""
    return [m for m in messages if f"[SSP#{ticket.id}]" in str(m["Subject"])]


async def newest_ticket(customer: str) -> Ticket:
    ticket = await Ticket.filter(customer=customer).order_by("-id").first()
    assert ticket is not None
    return ticket


async def kind_to(ticket: Ticket, address: str) -> str:
    row = await OutboxRow.get(ticket_id=ticket.id, rcpt_to=address)
    return str(row.kind)


async def balance(policy: Policy, account: str, at: datetime) -> Decimal | None:
    return await account_balance(None, policy.rules, account, "avtal", at)


async def statement(policy: Policy, month: str) -> dict[str, TimebankRow]:
    """``mailbot report timebank --period MONTH``, by account."""
    rules = policy.rules
    return {r.account: r for r in await timebank_report(rules, parse_period(month, rules.tz))}


async def test_the_service_account_keeps_its_hours_over_new_year_and_is_topped_up(
    imap_server: Any, smtp_sink: Any, sharespine: Sharespine
) -> None:
    policy = sharespine.policy
    clock = FixedClock(TUE_15_DEC)
    daemon = sharespine.daemon(clock)

    # 1. Installation is charged: the customer is told so before any work is done.
    _, raw = mail(
        "Karin Lund <karin@cykelboden.example>",
        "Installation av Sharespine för vår nya webbutik",
        "Hej! Vi vill ha hjälp med installationen av kopplingen mellan vår Shopify-butik "
        "och Fortnox.\n\nMvh Karin",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    install = await newest_ticket(KARIN)
    assert (install.category, install.account, install.assignee) == (
        "installation",
        "cykelboden",
        "johanna",
    )
    assert install.plan == "avtal" and install.language == "sv"
    answer = only(sent_to(smtp_sink, KARIN))
    assert f"[SSP#{install.id}]" in str(answer["Subject"])
    assert await kind_to(install, KARIN) == "out_of_scope"
    text = plain(answer)
    assert text.startswith("Hej Karin Lund!")
    assert "inte ingår i månadsavgiften för ert Integrationsavtal" in text
    assert "Arbetet debiteras ert servicekonto med den exakta tid vi lägger ner." in text
    assert "inom en arbetsdag, senast onsdag 16 december 2026 kl. 10:00" in text
    note = only(about(sent_to(smtp_sink, JOHANNA), install))
    assert "Timbank:    10 h\n" in plain(note)
    assert "Kategori:   installation" in plain(note)

    clock.set(TUE_15_DEC + timedelta(hours=3))
    await append(
        imap_server,
        agent_reply(
            note,
            "Johanna Ek <johanna.ek@example.se>",
            "#time 3h installerade kopplingen\n\nHej Karin! Nu är kopplingen installerad.",
            shape="outlook",
        ),
    )
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=install.id)
    assert (entry.category, entry.chargeable, entry.rounded) == ("installation", True, 180)
    assert Decimal(entry.billed) == 180
    relayed = sent_to(smtp_sink, KARIN)[-1]
    assert plain(relayed).startswith("Hej Karin! Nu är kopplingen installerad.")
    assert await balance(policy, "cykelboden", clock.now()) == 420

    # 2. A bug in Sharespine's own product: troubleshooting is free.
    clock.set(WED_16_DEC)
    _, raw = mail(
        "Karin Lund <karin@cykelboden.example>",
        "Ordrar synkas inte till Fortnox",
        "Sedan i morse kommer inga ordrar över till Fortnox, vi får ett felmeddelande.",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    bug = await newest_ticket(KARIN)
    assert (bug.category, bug.assignee) == ("bugg", "johanna")
    assert await kind_to(bug, KARIN) == "ack"
    bug_answer = plain(only(about(sent_to(smtp_sink, KARIN), bug)))
    assert "Tack för din felanmälan." in bug_answer
    assert "Felsökning och buggfixar ingår i månadsavgiften" in bug_answer
    assert "debiteras tiden vi lagt på felsökningen ert servicekonto" in bug_answer
    bug_note = only(about(sent_to(smtp_sink, JOHANNA), bug))
    assert "Timbank:    7 h\n" in plain(bug_note)
    await append(
        imap_server,
        agent_reply(
            bug_note,
            JOHANNA,
            "#time 2h felet låg i vår Fortnox-modul\n\nFelet låg hos oss och är nu rättat.",
            shape="gmail",
        ),
    )
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=bug.id)
    assert (entry.category, entry.chargeable, entry.rounded) == ("bugg", False, 120)
    assert Decimal(entry.billed) == 0
    assert await balance(policy, "cykelboden", clock.now()) == 420

    # 3. Training asked for on the last open afternoon of the year: the deadline skips New
    # Year's Eve, New Year's Day and the weekend, written the Swedish way.
    clock.set(WED_30_DEC_15)
    _, raw = mail(
        "Karin Lund <karin@cykelboden.example>",
        "Utbildning för vår nya lagerpersonal",
        "Hej! Vi har anställt två personer på lagret och vill boka en utbildning i "
        "Sharespine i januari.",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    training = await newest_ticket(KARIN)
    assert training.category == "utbildning"
    assert training.deadline == datetime(2027, 1, 4, 14, 0, tzinfo=UTC)
    training_answer = plain(only(about(sent_to(smtp_sink, KARIN), training)))
    assert "senast måndag 4 januari 2027 kl. 15:00" in training_answer
    assert "debiteras ert servicekonto" in training_answer
    training_note = only(about(sent_to(smtp_sink, JOHANNA), training))
    assert "Timbank:    7 h\n" in plain(training_note)

    # 4. A new year: nothing expired. December's statement shows 3 h used, 2 h free.
    clock.set(TUE_12_JAN)
    assert await balance(policy, "cykelboden", clock.now()) == 420
    dec = (await statement(policy, "2026-12"))["cykelboden"]
    assert (dec.bank, dec.used, dec.free, dec.expired, dec.balance) == (
        "prepaid",
        Decimal(180),
        120,
        Decimal(0),
        Decimal(420),
    )

    # The training day takes the account below its 2 h warning line: the account manager
    # and the customer hear of it.
    await append(
        imap_server,
        agent_reply(
            training_note,
            JOHANNA,
            "#time 5h30 utbildning på plats\n\nTack för i dag, Karin!",
            shape="gmail",
        ),
    )
    await daemon.run_once()
    assert await balance(policy, "cykelboden", clock.now()) == 90
    for reader in (JOHANNA, KARIN):
        warning = only([m for m in sent_to(smtp_sink, reader) if "kvar" in str(m["Subject"])])
        subject = "Servicekontot för Cykelboden i Göteborg AB: 1 h 30 min kvar"
        assert str(warning["Subject"]) == subject
        text = plain(warning)
        assert "har nu 1 h 30 min kvar, under varningsgränsen 2 h" in text
        assert f"ärende SSP#{training.id} (Utbildning för vår nya lagerpersonal)" in text
        assert "Servicetimmarna gäller så länge ni är kund hos oss" in text
        assert warning["Auto-Submitted"] == "auto-generated"

    # 5. Karin buys ten more hours (what `mailbot timebank topup cykelboden 10h` does).
    await top_up(None, "cykelboden", 600, TUE_12_JAN + timedelta(hours=2), "order 2027-014")
    clock.set(THU_14_JAN)
    assert await balance(policy, "cykelboden", clock.now()) == 690
    _, raw = mail(
        "Karin Lund <karin@cykelboden.example>",
        "Rådgivning kring våra flöden",
        "Vi vill ha rådgivning för att förbättra våra orderflöden nu när vi växer.",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    advice = await newest_ticket(KARIN)
    assert advice.category == "radgivning"
    assert await kind_to(advice, KARIN) == "out_of_scope"
    advice_note = only(about(sent_to(smtp_sink, JOHANNA), advice))
    assert "Timbank:    11 h 30 min\n" in plain(advice_note)
    await append(imap_server, agent_reply(advice_note, JOHANNA, "#time 37m", shape="gmail"))
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=advice.id)
    assert (entry.worked, entry.rounded, entry.chargeable) == (37, 37, True)  # exact minutes
    assert await balance(policy, "cykelboden", clock.now()) == 653
    jan = (await statement(policy, "2027-01"))["cykelboden"]
    assert (jan.allotment, jan.used, jan.expired, jan.overage, jan.balance) == (
        Decimal(600),
        Decimal(330 + 37),
        Decimal(0),
        Decimal(0),
        Decimal(653),
    )
    # Above the line again: no second warning.
    assert len([m for m in sent_to(smtp_sink, JOHANNA) if "kvar" in str(m["Subject"])]) == 1


@dataclass(frozen=True)
class Case:
    local: str  # the sender at tradgardsgrossen.example
    subject: str
    body: str
    category: str
    chargeable: bool
    answer: str  # the outbox kind of the customer's answer
    says: str  # a sentence of that answer


CASES = [
    # Included in the monthly fee.
    Case(
        "eva",
        "Fel i artikelsynken",
        "Hej, artiklarna synkas inte längre från Visma till WooCommerce, vi får ett felmeddelande.",
        "bugg",
        False,
        "ack",
        "Felsökning och buggfixar ingår i månadsavgiften",
    ),
    Case(
        "olof",
        "Klarna har ändrat sitt API",
        "Klarna har ändrat sitt API och nu kommer betalningarna inte över till Fortnox.",
        "partneruppdatering",
        False,
        "ack",
        "Felsökning och buggfixar ingår i månadsavgiften",
    ),
    Case(
        "ekonomi",
        "Byte av juridisk person",
        "Vi har bildat ett nytt aktiebolag och behöver byta juridisk person på vårt "
        "kundkonto från 1 februari.",
        "kundkonto",
        False,
        "ack",
        "I månadsavgiften för ert Integrationsavtal ingår vägledning till våra manualer",
    ),
    Case(
        "sara",
        "Hur ofta uppdateras lagersaldot?",
        "Hej! Hur ofta uppdateras lagersaldot mellan Fortnox och butiken?",
        "vagledning",
        False,
        "wiki",
        "https://wiki.example.se/manual/lagersaldo",
    ),
    # Drawn from the service account.
    Case(
        "lager",
        "Installera Sharespine mot Amazon",
        "Vi vill installera Sharespine mot vår nya Amazon-kanal.",
        "installation",
        True,
        "out_of_scope",
        "Arbetet debiteras ert servicekonto",
    ),
    Case(
        "hr",
        "Utbildning för nyanställda",
        "Vi vill boka en utbildning i Sharespine för två nya medarbetare.",
        "utbildning",
        True,
        "out_of_scope",
        "Arbetet debiteras ert servicekonto",
    ),
    Case(
        "per",
        "Nya momskoder",
        "Vi behöver konfigurera nya momskoder i kopplingen mot Fortnox.",
        "konfiguration",
        True,
        "out_of_scope",
        "Arbetet debiteras ert servicekonto",
    ),
    Case(
        "webb",
        "Kopplingen slutade fungera",
        "Efter att vår konsult uppdaterade WooCommerce i helgen slutade ordrarna komma "
        "över till Visma.",
        "kundorsakad-bugg",
        True,
        "ack",
        "debiteras tiden vi lagt på felsökningen ert servicekonto",
    ),
    Case(
        "vd",
        "Förstudie för nytt plugin",
        "Vi vill beställa en förstudie för ett nytt plugin till vårt lagersystem.",
        "projekt",
        True,
        "out_of_scope",
        "Arbetet debiteras ert servicekonto",
    ),
    Case(
        "it",
        "Projektledning vid systembytet",
        "Vi önskar att ni tar projektledningen mellan oss, vår webbyrå och Visma under bytet.",
        "projektledning",
        True,
        "out_of_scope",
        "Arbetet debiteras ert servicekonto",
    ),
    Case(
        "ledning",
        "Rådgivning kring orderflöden",
        "Vi vill ha rådgivning för att förbättra våra orderflöden nu när vi växer.",
        "radgivning",
        True,
        "out_of_scope",
        "Arbetet debiteras ert servicekonto",
    ),
]


async def test_free_and_charged_work_is_told_apart_by_the_customers_own_words(
    imap_server: Any, smtp_sink: Any, sharespine: Sharespine
) -> None:
    policy = sharespine.policy
    clock = FixedClock(MON_23_NOV)
    daemon = sharespine.daemon(clock)
    await append(
        imap_server,
        *(mail(f"{c.local}@tradgardsgrossen.example", c.subject, c.body)[1] for c in CASES),
        # No prepaid hours: charged work is billed by the exact time afterwards.
        mail(
            "Nils <nils@kaffekompaniet.example>",
            "Ändra mappningen av betalsätt",
            "Vi behöver ändra mappningen av våra betalsätt mot Fortnox.",
        )[1],
    )
    await daemon.run_once()

    tickets = {}
    for case in CASES:
        customer = f"{case.local}@tradgardsgrossen.example"
        ticket = await Ticket.get(customer=customer)
        tickets[case.local] = ticket
        assert (ticket.category, ticket.account, ticket.assignee) == (
            case.category,
            "tradgardsgrossen",
            "pontus",
        ), case.subject
        assert await kind_to(ticket, customer) == case.answer, case.subject
        answer = only(sent_to(smtp_sink, customer))
        assert f"[SSP#{ticket.id}]" in str(answer["Subject"])
        assert case.says in plain(answer), case.subject

    # The how-to question got the manual page, and the promise that guidance is free.
    howto = tickets["sara"]
    assert howto.howto
    guide = plain(only(sent_to(smtp_sink, "sara@tradgardsgrossen.example")))
    assert "Lagersaldo – så synkas lagret mellan butik och affärssystem" in guide
    assert "Vägledning till manualerna ingår i månadsavgiften" in guide
    assert "vi återkommer inom en arbetsdag" in guide

    # Pontus logs half an hour on every ticket.
    notes = sent_to(smtp_sink, PONTUS)
    replies = [
        agent_reply(only(about(notes, ticket)), PONTUS, "#time 30m", shape="gmail")
        for ticket in tickets.values()
    ]
    coffee = await Ticket.get(customer="nils@kaffekompaniet.example")
    assert (coffee.category, coffee.account, coffee.assignee) == (
        "konfiguration",
        "kaffekompaniet",
        "pontus",
    )
    coffee_note = only(about(notes, coffee))
    assert "Timbank" not in plain(coffee_note)
    replies.append(agent_reply(coffee_note, PONTUS, "#time 37m", shape="gmail"))
    clock.set(MON_23_NOV + timedelta(hours=2))
    await append(imap_server, *replies)
    await daemon.run_once()

    for case in CASES:
        entry = await TimeEntry.get(ticket_id=tickets[case.local].id)
        assert (entry.category, entry.chargeable) == (case.category, case.chargeable)
        assert Decimal(entry.billed) == (30 if case.chargeable else 0), case.subject
    charged = sum(case.chargeable for case in CASES)
    assert charged == 7
    assert await balance(policy, "tradgardsgrossen", clock.now()) == 1200 - 30 * charged
    # Still above the 3 h line: nobody is warned.
    assert not [m for m in smtp_sink.messages if b"Servicekontot f" in m.raw]

    november = await statement(policy, "2026-11")
    assert (november["tradgardsgrossen"].used, november["tradgardsgrossen"].free) == (
        Decimal(210),
        120,
    )
    coffee_row = november["kaffekompaniet"]
    assert (coffee_row.bank, coffee_row.billed, coffee_row.overage, coffee_row.balance) == (
        "none",
        Decimal(37),
        Decimal(37),
        None,
    )


def test_topup_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(RULES))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(TEMPLATES))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    capsys.readouterr()
    assert main(["timebank", "topup", "cykelboden", "10h", "--note", "order 2027-014"]) == 0
    assert capsys.readouterr().out.strip() == "cykelboden: +10 h, balance 20 h"
    assert main(["timebank", "balance", "cykelboden"]) == 0
    assert capsys.readouterr().out.strip() == "cykelboden: 20 h left"
    # Kaffekompaniet pays by the exact time: it has no service account to top up.
    assert main(["timebank", "topup", "kaffekompaniet", "5h"]) == 2
    assert "prepaid accounts: cykelboden, tradgardsgrossen" in capsys.readouterr().err
