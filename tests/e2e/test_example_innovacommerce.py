"""examples/innovacommerce end to end over real IMAP and SMTP: the promises of seed 004.

InnovaCommerce (Italian apps for PrestaShop shops) includes free basic support by e-mail for
problems *of the application*; doubts go to the wiki, and a customer with many doubts is
offered paid training (minimum 2 hours, via Skype); hosting and database connections,
slowness, failed updates and the shop itself are not covered (paid hourly support); there
is no phone support with the free plan: write an e-mail first.

The example is loaded exactly as shipped: examples/innovacommerce/rules.yaml with its own
Italian templates (and the shipped ones for what it does not customise).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.policy import load_policy
from mailbot.tickets.models import OutboxRow, Ticket, TimeEntry
from tests.e2e.conftest import REPO, make_settings
from tests.e2e.test_agents import agent_reply, plain, sent_to
from tests.e2e.test_spine import append

EXAMPLE = REPO / "examples" / "innovacommerce"
SUPPORT = "supporto@innovacommerce.example"
MARCO = "marco.gallo@innovacommerce.example"  # lead, account manager of TecnoShop
SARA = "sara.fontana@innovacommerce.example"
TECNICI = (MARCO, SARA)

# Monday 7 December 2026, 10:00 in Rome. Tuesday 8 December (Immacolata) is a holiday.
MON_7_DEC_10 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def daemon_for(imap_server: Any, smtp_sink: Any, database: str) -> Any:
    policy = load_policy(EXAMPLE / "rules.yaml", EXAMPLE / "templates")
    settings = make_settings(
        imap_server,
        smtp_sink,
        EXAMPLE / "rules.yaml",
        database,
        MAILBOT_TEMPLATES=str(EXAMPLE / "templates"),
    )

    def build(clock: FixedClock) -> Daemon:
        return Daemon(settings, policy, clock)

    return build


def scrivi(
    sender: str, subject: str, body: str, *, in_reply_to: str | None = None
) -> tuple[str, bytes]:
    """A customer's mail to InnovaCommerce's support address."""
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = sender
    msg["To"] = f"Supporto InnovaCommerce <{SUPPORT}>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg_id = make_msgid(domain="cliente.example")
    msg["Message-ID"] = msg_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg_id, msg.as_bytes()


def only(messages: list[Message]) -> Message:
    assert len(messages) == 1, [str(m["Subject"]) for m in messages]
    return messages[0]


def one_line(text: str) -> str:
    """The text with its line breaks folded, for phrases a template may wrap."""
    return " ".join(text.split())


async def kind_of_answer(ticket: Ticket, customer: str) -> str:
    row = await OutboxRow.get(ticket_id=ticket.id, rcpt_to=customer)
    return row.kind


def team_notes(smtp_sink: Any) -> list[Message]:
    return [m for agent in TECNICI for m in sent_to(smtp_sink, agent)]


async def test_a_problem_of_the_application_is_acknowledged_with_the_italian_deadline(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    # Monday 10:00: 2 working days, Tuesday 8 December is a holiday -> Thursday 10:00.
    daemon = daemon_for(FixedClock(MON_7_DEC_10))
    paolo = "paolo@calzaturebianchi.example"
    msg_id, raw = scrivi(
        f"Paolo Bianchi <{paolo}>",
        "Errore quando salvo un prodotto",
        "Buongiorno,\nda ieri, quando salvo un prodotto con combinazioni, InnovaCommerce "
        'mostra l\'errore "Index was outside the bounds of the array" e il prodotto non '
        "viene salvato.\nPaolo",
    )
    await append(imap_server, raw)
    await daemon.run_once()

    ticket = await Ticket.get(customer=paolo)
    assert (ticket.plan, ticket.category, ticket.language) == ("base", "applicazione", "it")
    assert ticket.deadline == datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    assert ticket.team == "tecnici" and ticket.assignee in ("marco", "sara")
    assert await kind_of_answer(ticket, paolo) == "ack"
    ack = only(sent_to(smtp_sink, paolo))
    assert f"[IC#{ticket.id}]" in str(ack["Subject"])
    assert str(ack["Subject"]).startswith("Re: Errore quando salvo un prodotto")
    assert ack["From"].addresses[0].addr_spec == SUPPORT
    assert ack["In-Reply-To"] == msg_id
    text = one_line(plain(ack))
    assert text.startswith("Gentile Paolo Bianchi,")
    assert f"numero IC#{ticket.id} (Supporto di base)" in text
    assert (
        "Un tecnico le risponderà per e-mail entro 2 giorni lavorativi, al più tardi "
        "giovedì 10 dicembre 2026, 10:00." in text
    )
    assert "Ammyy Admin o TeamViewer" in text
    # The technicians hear of it, in Italian.
    note = only(team_notes(smtp_sink))
    assert f"Nuovo ticket IC#{ticket.id} da Paolo Bianchi <{paolo}>." in plain(note)
    assert f"[IC#{ticket.id}]" in str(note["Subject"])
    assert "Supporto di base" in plain(note)

    # The free support is free: a technician's time on a problem of the application is
    # logged but not chargeable.
    agent = MARCO if ticket.assignee == "marco" else SARA
    await append(
        imap_server,
        agent_reply(
            note,
            agent,
            "#time 20m\n\nBuongiorno Paolo, l'errore è corretto nella versione 4.2.1.",
            shape="gmail",
        ),
    )
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=ticket.id)
    assert (entry.worked, entry.category, entry.chargeable) == (20, "applicazione", False)
    assert "versione 4.2.1" in plain(sent_to(smtp_sink, paolo)[-1])

    # Saturday evening: the clock starts on Monday; the deadline is the close of the
    # second working day, written the Italian way.
    saturday_evening = datetime(2026, 12, 12, 20, 30, tzinfo=UTC)  # 21:30 in Rome
    daemon = daemon_for(FixedClock(saturday_evening))
    giulia = "giulia.ferri@arredoferri.example"
    _, raw = scrivi(
        f"Giulia Ferri <{giulia}>",
        "Le fatture escono senza numero",
        "Da questa mattina le fatture generate dal programma escono senza numero progressivo.",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer=giulia)
    assert ticket.deadline == datetime(2026, 12, 15, 17, 0, tzinfo=UTC)
    text = one_line(plain(only(sent_to(smtp_sink, giulia))))
    assert text.startswith("Gentile Giulia Ferri,")
    assert "al più tardi martedì 15 dicembre 2026, 18:00." in text


async def test_doubts_get_the_wiki_and_the_third_in_a_month_the_training_offer(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    paolo = "paolo@calzaturebianchi.example"
    questions = [
        (0, "Etichette", "Come posso stampare le etichette con il codice a barre dei prodotti?"),
        (2, "Fatture", "Come faccio a creare una fattura da un ordine di PrestaShop?"),
        (4, "Giacenze", "Come si sincronizzano le giacenze di magazzino con il negozio?"),
    ]
    kinds = []
    for day, subject, body in questions:
        daemon = daemon_for(FixedClock(MON_7_DEC_10 + timedelta(days=day)))
        _, raw = scrivi(f"Paolo Bianchi <{paolo}>", subject, f"Buongiorno,\n{body}\nGrazie")
        await append(imap_server, raw)
        await daemon.run_once()
        ticket = await Ticket.filter(customer=paolo).order_by("-id").first()
        assert ticket is not None and ticket.howto and ticket.category == "applicazione"
        kinds.append(await kind_of_answer(ticket, paolo))
    assert kinds == ["wiki", "wiki", "training"]

    first, second, offer = sent_to(smtp_sink, paolo)
    text = one_line(plain(first))
    assert "Per i dubbi sull'uso delle applicazioni InnovaCommerce" in text
    assert "Stampare etichette e codici a barre" in text
    assert "https://wiki.innovacommerce.example/it/catalogo/etichette-codici-a-barre" in text
    assert "un tecnico le risponderà entro 2 giorni lavorativi" in text
    assert "https://wiki.innovacommerce.example/it/ordini/fatture-e-ddt" in plain(second)

    # The third doubt within 30 days: the paid training offer, with the article too.
    assert "proposta di formazione" in str(offer["Subject"])
    assert "[IC#" in str(offer["Subject"])
    text = one_line(plain(offer))
    assert "Sincronizzare prodotti, combinazioni e stock con PrestaShop" in text
    assert "diversi dubbi sull'uso delle applicazioni InnovaCommerce" in text
    assert "formazione personalizzata a distanza via Skype" in text
    assert "con un minimo di 2 ore" in text
    assert "la webcam non è necessaria" in text
    assert "Non offriamo formazione in azienda." in text
    assert "al più tardi martedì 15 dicembre 2026, 10:00" in text  # Friday 11 + 2 days
    html = offer.get_body(preferencelist=("html",))
    assert html is not None and "minimo di 2 ore" in html.get_content()

    # Six weeks later the count starts again: a doubt gets the wiki, not the offer.
    daemon = daemon_for(FixedClock(datetime(2027, 1, 18, 9, 0, tzinfo=UTC)))
    _, raw = scrivi(paolo, "Utenti", "Come posso aggiungere un utente per un dipendente?")
    await append(imap_server, raw)
    await daemon.run_once()
    latest = await Ticket.filter(customer=paolo).order_by("-id").first()
    assert latest is not None and await kind_of_answer(latest, paolo) == "wiki"
    assert "Utenti, permessi e password" in plain(sent_to(smtp_sink, paolo)[-1])


OUT_OF_SCOPE = [
    # sender, subject, body, category, a sentence of the paid option for that category
    (
        "Paolo Bianchi <paolo@calzaturebianchi.example>",
        "Il programma non si connette più",
        "Da stamattina InnovaCommerce non si connette al database del negozio. "
        "Ieri funzionava tutto.",
        "hosting",
        "I problemi di connessione tra il programma e il database dipendono dal vostro "
        "hosting, non dall'applicazione",
    ),
    (
        "Giulia Ferri <giulia.ferri@arredoferri.example>",
        "Programma lentissimo",
        "Da qualche giorno il programma è lentissimo, ci mette minuti ad aprire gli ordini.",
        "ambiente",
        "Lentezza e blocchi temporanei del programma dipendono quasi sempre dall'ambiente "
        "di lavoro",
    ),
    (
        "Mario Rossi <mario@ferramentarossi.example>",
        "Nuova versione",
        "Ho provato a installare la nuova versione ma l'aggiornamento è fallito a metà.",
        "aggiornamento",
        "potete sempre tornare alla versione precedente",
    ),
    (
        "Laura Verdi <laura@otticaverdi.example>",
        "Carrello",
        "Il carrello del nostro sito non funziona da stamattina, i clienti non riescono a "
        "completare l'ordine.",
        "negozio",
        "non il negozio online in sé (tema, moduli, carrello e pagamenti di PrestaShop)",
    ),
]


async def test_hosting_slowness_updates_and_the_shop_get_the_paid_hourly_support_notice(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    daemon = daemon_for(FixedClock(MON_7_DEC_10))
    await append(imap_server, *(scrivi(s, subj, body)[1] for s, subj, body, _, _ in OUT_OF_SCOPE))
    await daemon.run_once()
    for sender, subject, _, category, paid_option in OUT_OF_SCOPE:
        name, address = sender.removesuffix(">").split(" <")
        ticket = await Ticket.get(customer=address)
        assert (ticket.plan, ticket.category) == ("base", category), address
        assert await kind_of_answer(ticket, address) == "out_of_scope"
        answer = only(sent_to(smtp_sink, address))
        assert f"[IC#{ticket.id}]" in str(answer["Subject"])
        assert subject in str(answer["Subject"])
        assert answer["Auto-Submitted"] == "auto-replied"
        text = one_line(plain(answer))
        assert text.startswith(f"Gentile {name},"), text[:40]
        assert "quindi NON rientra nel supporto di base: è un servizio a pagamento." in text
        assert paid_option in text, category
        assert "Come funziona il supporto tecnico avanzato a ore:" in text
        assert "si paga ogni ora di lavoro del tecnico, per tutto il tempo necessario" in text
        assert "Senza controllo remoto non possiamo aiutarla" in text
        assert "al più tardi giovedì 10 dicembre 2026, 10:00." in text
    hosting = one_line(plain(sent_to(smtp_sink, "paolo@calzaturebianchi.example")[0]))
    assert "https://wiki.innovacommerce.example/it/installazione/collegamento-database" in hosting
    # The technicians still get every ticket.
    assert len(team_notes(smtp_sink)) == len(OUT_OF_SCOPE)


async def test_a_customer_with_hourly_support_is_helped_and_the_time_is_charged(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    # The same hosting problem from TecnoShop, who bought hours: acknowledged with priority,
    # for its account manager; the technician's time goes on its prepaid hours.
    daemon = daemon_for(FixedClock(MON_7_DEC_10))
    luca = "luca@tecnoshop.example"
    _, raw = scrivi(
        f"Luca Moretti <{luca}>",
        "Il programma non si connette più",
        "Da stamattina InnovaCommerce non si connette al database del negozio.",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer=luca)
    assert (ticket.plan, ticket.category, ticket.account) == ("ore", "hosting", "tecnoshop")
    assert ticket.assignee == "marco"
    assert await kind_of_answer(ticket, luca) == "ack"
    # 8 working hours: Monday 10-13 and 14-18 (7 h), Tuesday is a holiday, Wednesday 9-10.
    assert ticket.deadline == datetime(2026, 12, 9, 9, 0, tzinfo=UTC)
    text = one_line(plain(only(sent_to(smtp_sink, luca))))
    assert text.startswith("Gentile Luca Moretti,")
    assert "(Assistenza a ore)" in text
    assert (
        "con priorità, entro 8 ore lavorative, al più tardi mercoledì 9 dicembre 2026, 10:00."
        in text
    )
    assert "NON rientra" not in text

    note = only(sent_to(smtp_sink, MARCO))
    await append(
        imap_server,
        agent_reply(
            note,
            f"Marco Gallo <{MARCO}>",
            "#time 40m\n\nBuongiorno Luca, il vostro hosting aveva chiuso la porta 3306: "
            "l'abbiamo riaperta insieme al provider.",
            shape="gmail",
        ),
    )
    await daemon.run_once()
    entry = await TimeEntry.get(ticket_id=ticket.id)
    assert (entry.worked, entry.rounded, entry.chargeable) == (40, 60, True)
    assert (entry.account, entry.category, entry.surcharge_percent) == ("tecnoshop", "hosting", 0)
    relay = sent_to(smtp_sink, luca)[-1]
    assert "porta 3306" in plain(relay) and "Marco Gallo" in plain(relay)


async def test_a_call_request_is_answered_by_email_and_the_explanation_follows_by_email(
    imap_server: Any, smtp_sink: Any, daemon_for: Any
) -> None:
    # Thursday 10 December, 19:30 in Rome: after closing, so the clock starts on Friday.
    clock = FixedClock(datetime(2026, 12, 10, 18, 30, tzinfo=UTC))
    daemon = daemon_for(clock)
    paolo = "paolo@calzaturebianchi.example"
    msg_id, raw = scrivi(
        f"Paolo Bianchi <{paolo}>",
        "Richiesta di assistenza",
        "Buongiorno, ho un problema con l'applicazione. Potete chiamarmi al 333 1234567 "
        "domattina? Grazie",
    )
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer=paolo)
    assert (ticket.plan, ticket.category) == ("base", "telefono")
    # Registered like any request (an acknowledgement), with the telephone explanation.
    assert await kind_of_answer(ticket, paolo) == "ack"
    answer = only(sent_to(smtp_sink, paolo))
    assert f"[IC#{ticket.id}]" in str(answer["Subject"])
    assert answer["In-Reply-To"] == msg_id
    text = one_line(plain(answer))
    assert (
        "Con il supporto di base gratuito incluso nell'abbonamento non offriamo assistenza "
        "telefonica, e i nostri tecnici non rispondono a chiamate dirette." in text
    )
    assert f"risponda a questo messaggio lasciando [IC#{ticket.id}] nell'oggetto" in text
    assert (
        "Un tecnico le risponderà per e-mail entro 2 giorni lavorativi, al più tardi "
        "lunedì 14 dicembre 2026, 18:00." in text
    )
    assert "Solo con il supporto tecnico avanzato a ore" in text
    assert len(team_notes(smtp_sink)) == 1

    # The customer writes the explanation by e-mail: it joins the same ticket, the
    # technicians hear of it, and no second automatic answer goes out.
    clock.set(datetime(2026, 12, 11, 8, 15, tzinfo=UTC))
    _, raw = scrivi(
        f"Paolo Bianchi <{paolo}>",
        f"Re: Richiesta di assistenza [IC#{ticket.id}]",
        "Ecco la spiegazione: quando stampo il DDT di un ordine il programma mostra "
        '"Errore 17: modello non trovato".',
        in_reply_to=answer["Message-ID"],
    )
    await append(imap_server, raw)
    smtp_sink.messages.clear()
    await daemon.run_once()
    assert await Ticket.filter(customer=paolo).count() == 1
    assert sent_to(smtp_sink, paolo) == []
    note = only(team_notes(smtp_sink))
    assert "Errore 17: modello non trovato" in plain(note)
    assert f"ha risposto su IC#{ticket.id}" in plain(note)


def test_the_example_is_checked_clean() -> None:
    """The shipped example loads with its own templates and has no warnings."""
    from mailbot.rules.lint import lint_file

    policy = load_policy(EXAMPLE / "rules.yaml", EXAMPLE / "templates")
    rules_path: Path = EXAMPLE / "rules.yaml"
    assert lint_file(policy.rules, rules_path, EXAMPLE / "templates") == []
