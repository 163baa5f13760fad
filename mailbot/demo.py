"""``mailbot demo``: the whole path on real local servers, explained as it goes.

Starts pymap (IMAP) and aiosmtpd (SMTP) on loopback, a SQLite file in a temporary state
directory, appends customer mail over IMAP (Swedish, English, Italian; a new request, a how-to
question, then a follow-up and an out-of-office reply to our answers, then an agent's answer
to a notification with commands), runs the daemon's ``run_once`` three times and prints the
tickets, their messages and the mail that reached the SMTP server.
"""

from __future__ import annotations

import sys
import tempfile
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from mailbot.clock import SystemClock
from mailbot.daemon import Daemon
from mailbot.devservers.pymap_server import running_pymap
from mailbot.devservers.smtp_sink import SmtpSink, running_smtp_sink
from mailbot.endpoints import parse_endpoint
from mailbot.mailbox.imap import append_messages
from mailbot.policy import load_policy
from mailbot.settings import load_settings
from mailbot.tickets.database import close_database, open_database, sqlite_url
from mailbot.tickets.models import Reminder, ReminderStatus
from mailbot.tickets.queries import list_tickets

USER, PASSWORD = "support", "demo-password"


def _mail(
    sender: str,
    subject: str,
    body: str,
    *,
    in_reply_to: str | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = "Support <support@example.com>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(SystemClock().now())
    msg["Message-ID"] = make_msgid(domain="demo.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for key, value in (extra or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes()


FIRST_ROUND = [
    _mail(
        "Anna Berg <anna.berg@nordicdecor.se>",
        "Kassan visar fel vid betalning",
        "Hej!\n\nKunderna kan inte betala i kassan sedan i morse, de får ett felmeddelande. "
        "Det gäller både kort och Swish. Kan ni titta på det så snart som möjligt?\n\n"
        "Tack på förhand,\nAnna\n",
    ),
    _mail(
        "John Carter <john@example.org>",
        "How do I reset my password?",
        "Hi,\n\nHow do I reset the password for my shop admin account? I can't find the "
        "option anywhere.\n\nThanks,\nJohn\n",
    ),
    _mail(
        "Giulia Rossi <giulia@modacasa.it>",
        "Errore durante l'importazione dei prodotti",
        "Buongiorno,\n\nda ieri l'importazione dei prodotti si blocca al 50% con un errore "
        "di connessione al database. Potete aiutarci?\n\nGrazie,\nGiulia Rossi\n",
    ),
]


def _second_round(sink: SmtpSink) -> list[bytes]:
    """A customer follow-up and an out-of-office reply, both answering our first replies."""
    sent = {m.rcpt_tos[0]: message_from_bytes(m.raw) for m in sink.messages}
    anna_ack = str(sent["anna.berg@nordicdecor.se"]["Message-ID"])
    giulia_ack = str(sent["giulia@modacasa.it"]["Message-ID"])
    return [
        _mail(
            "Anna Berg <anna.berg@nordicdecor.se>",
            "Re: " + str(sent["anna.berg@nordicdecor.se"]["Subject"]),
            "Hej igen, felet kommer bara med Firefox. Skärmdump bifogas inte, men "
            "felkoden är 502.\n\n/Anna\n",
            in_reply_to=anna_ack,
        ),
        _mail(
            "Giulia Rossi <giulia@modacasa.it>",
            "Risposta automatica: " + str(sent["giulia@modacasa.it"]["Subject"]),
            "Sono fuori ufficio fino a lunedì. Per urgenze chiamare il centralino.\n",
            in_reply_to=giulia_ack,
            extra={"Auto-Submitted": "auto-replied"},
        ),
    ]


def _third_round(sink: SmtpSink) -> list[bytes]:
    """The account manager answers the latest notification from her own mail client, with
    two commands on the first lines; her answer goes to the customer, the commands do not."""
    notes = [
        message_from_bytes(m.raw, policy=policy.default)
        for m in sink.messages
        if m.rcpt_tos[0] == "maria@example.com"
    ]
    if not notes:
        return []
    note = notes[-1]
    body = note.get_body(preferencelist=("plain",))
    quoted = "\n".join(f"> {line}" for line in str(body.get_content() if body else "").splitlines())
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "Maria Holm <maria@example.com>"
    msg["To"] = note["Reply-To"]
    msg["Subject"] = f"Re: {note['Subject']}"
    msg["Date"] = format_datetime(SystemClock().now())
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg["In-Reply-To"] = note["Message-ID"]
    msg["References"] = note["Message-ID"]
    msg.set_content(
        "#time 20m checked the payment gateway logs\n#wait\n\n"
        "Hej Anna!\n\nFelet 502 kom från betalleverantören och är åtgärdat nu. "
        "Fungerar det i Firefox igen?\n\n-- \nMaria\n\n"
        f"On {note['Date']}, {note['From']} wrote:\n{quoted}\n"
    )
    return [msg.as_bytes()]


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


async def run_demo(rules: Path | None = None, state_dir: Path | None = None) -> int:
    state = state_dir or Path(tempfile.mkdtemp(prefix="mailbot-demo-"))
    async with running_pymap(USER, PASSWORD) as imap, running_smtp_sink() as sink:
        imap_url = f"imap+plain://{USER}@{imap.host}:{imap.port}/INBOX"
        smtp_url = f"smtp+plain://{sink.host}:{sink.port}"
        settings = load_settings(
            {"MAILBOT_STATE_DIR": str(state), "MAILBOT_IMAP_PASSWORD": PASSWORD},
            imap_url=imap_url,
            smtp_url=smtp_url,
            rules=str(rules) if rules else None,
        )
        policy = load_policy(settings.rules_path, settings.templates_dir)
        _say(f"IMAP server (pymap):   {imap_url}")
        _say(f"SMTP server (aiosmtpd): {smtp_url}")
        _say(f"database:              {state / 'mailbot.sqlite3'}")
        _say(f"rules:                 {settings.rules_path}")
        await open_database(sqlite_url(state / "mailbot.sqlite3"))
        try:
            daemon = Daemon(settings, policy)
            appender = parse_endpoint(imap_url, protocol="imap", password=PASSWORD)
            await append_messages(appender, FIRST_ROUND)
            _say(f"\n-- round 1: {len(FIRST_ROUND)} customer mails appended over IMAP")
            report = await daemon.run_once()
            _say(f"   daemon: {_counts(report.ingested)}; mails sent {report.sent}")
            second = _second_round(sink)
            await append_messages(appender, second)
            _say(f"\n-- round 2: a follow-up and an out-of-office reply ({len(second)} mails)")
            report = await daemon.run_once()
            _say(f"   daemon: {_counts(report.ingested)}; mails sent {report.sent}")
            third = _third_round(sink)
            await append_messages(appender, third)
            _say(
                "\n-- round 3: the account manager answers the notification from her mail "
                "client, with #time 20m and #wait on the first lines"
            )
            report = await daemon.run_once()
            _say(f"   daemon: {_counts(report.ingested)}; mails sent {report.sent}")
            await _account(policy.rules.identity.ticket_prefix, sink)
        finally:
            await close_database()
    return 0


def _counts(counts: object) -> str:
    assert isinstance(counts, dict)
    return ", ".join(f"{k.value} {v}" for k, v in counts.items()) or "nothing"


async def _account(prefix: str, sink: SmtpSink) -> None:
    _say("\n== tickets ==")
    for ticket in reversed(await list_tickets(prefix)):
        _say(
            f"\n{ticket.ref}  [{ticket.status}] plan {ticket.plan}, language {ticket.language}, "
            f"customer {ticket.customer}"
        )
        _say(f"   subject:  {ticket.subject}")
        urgent = ", urgent" if ticket.urgent else ""
        _say(f"   severity: {ticket.severity}{urgent}")
        for clock in ticket.clocks:
            due = clock.due_at.isoformat(timespec="minutes") if clock.due_at else "-"
            _say(f"   clock:    {clock.name:<15} due {due} ({clock.status})")
        pending = await Reminder.filter(ticket_id=ticket.id, status=ReminderStatus.PENDING)
        for reminder in sorted(pending, key=lambda r: r.due_at)[:3]:
            _say(
                f"   reminder: {reminder.due_at.isoformat(timespec='minutes')} "
                f"{reminder.clock} {reminder.kind} -> {reminder.recipient}"
            )
        for msg in ticket.messages:
            arrow = "<-" if msg.direction == "in" else "->"
            tag = (
                f" (auto-generated: {msg.auto_reason})"
                if msg.auto_generated and msg.direction == "in"
                else ""
            )
            status = f" [{msg.outbox_status}]" if msg.outbox_status else ""
            _say(f"   {arrow} {msg.from_addr}: {msg.subject}{tag}{status}")
    _say(f"\n== mail received by the SMTP server: {len(sink.messages)} ==")
    for received in sink.messages:
        mail = message_from_bytes(received.raw, policy=policy.default)
        _say(f"\nTo: {mail['To']}\nSubject: {mail['Subject']}")
        _say(f"In-Reply-To: {mail['In-Reply-To']}  Auto-Submitted: {mail['Auto-Submitted']}")
        body = mail.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        _say("   | " + "\n   | ".join(str(text).strip().splitlines()))
