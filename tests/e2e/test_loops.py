"""Loops and storms over real IMAP and SMTP: bounces, two helpdesks, a naive autoresponder.

Every test counts the mails exchanged until nothing more happens, and asserts the storm
stops after a small bounded number.
"""

from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from mailbot.clock import FixedClock
from mailbot.daemon import Daemon
from mailbot.devservers.pymap_server import running_pymap
from mailbot.devservers.smtp_sink import running_smtp_sink
from mailbot.endpoints import parse_endpoint
from mailbot.mailbox.imap import append_messages
from mailbot.policy import load_policy
from mailbot.settings import load_settings
from mailbot.tickets.database import close_database, open_database, sqlite_url
from mailbot.tickets.models import Message as MessageRow
from mailbot.tickets.models import OutboxRow, SuppressedAddress, Ticket
from tests.e2e.conftest import REPO, RULES, make_settings
from tests.e2e.test_agents import MONDAY_10
from tests.e2e.test_spine import append, mail


def bounce_of(original: bytes, failed: str) -> bytes:
    """A Postfix-style delivery status notification returning ``original``."""
    returned = original.replace(b"\r\n", b"\n").decode("utf-8", "replace")
    return (
        "Return-Path: <>\n"
        "From: MAILER-DAEMON@mx.customer.example (Mail Delivery System)\n"
        "To: support@example.com\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"Date: {format_datetime(MONDAY_10)}\n"
        f"Message-ID: {make_msgid(domain='mx.customer.example')}\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\n'
        "\n"
        "--B1\n"
        "Content-Type: text/plain\n"
        "\n"
        "I'm sorry to have to inform you that your message could not\n"
        f"be delivered to one or more recipients.\n\n<{failed}>: user unknown\n"
        "\n"
        "--B1\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.customer.example\n"
        "\n"
        f"Final-Recipient: rfc822; {failed}\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
        "\n"
        "--B1\n"
        "Content-Type: message/rfc822\n"
        "\n"
        f"{returned}\n"
        "--B1--\n"
    ).encode()


async def test_a_bounce_joins_its_ticket_and_stops_automatic_mail_to_the_address(
    imap_server: Any, smtp_sink: Any, rules_file: Path, database: str
) -> None:
    policy_ = load_policy(rules_file, REPO / "templates")
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    daemon = Daemon(settings, policy_, FixedClock(MONDAY_10))
    forged = "nobody@customer.example"
    _, raw = mail(f"Forged <{forged}>", "Cheap watches", "Buy now")
    await append(imap_server, raw)
    await daemon.run_once()
    ticket = await Ticket.get(customer=forged)
    (ack,) = smtp_sink.messages
    await append(imap_server, bounce_of(ack.raw, forged))
    await daemon.run_once()
    bounce = await MessageRow.get(subject="Undelivered Mail Returned to Sender")
    assert bounce.ticket_id == ticket.id and bounce.bounce  # attached to its ticket
    suppressed = await SuppressedAddress.get(address=forged)
    assert suppressed.last_ticket == ticket.id
    # More mail "from" the address: stored, ticket opened, but no automatic answer.
    smtp_sink.messages.clear()
    _, again = mail(f"Forged <{forged}>", "Cheap watches again", "Buy more")
    await append(imap_server, again)
    await daemon.run_once()
    assert await Ticket.filter(customer=forged).count() == 2
    assert smtp_sink.messages == []
    # A real reply to our mail from it proves it exists: automatic mail may go again.
    _, reply = mail(
        f"Real <{forged}>",
        "Re: Cheap watches",
        "Sorry, wrong address.",
        in_reply_to=message_from_bytes(ack.raw)["Message-ID"],
    )
    await append(imap_server, reply)
    await daemon.run_once()
    assert not await SuppressedAddress.filter(address=forged).exists()


async def test_a_naive_autoresponder_is_stopped_by_the_rate_limit(
    imap_server: Any, smtp_sink: Any, rules_file: Path, database: str
) -> None:
    policy_ = load_policy(rules_file, REPO / "templates")
    limit = policy_.rules.auto_reply_limits.per_address.count
    settings = make_settings(imap_server, smtp_sink, rules_file, database)
    daemon = Daemon(settings, policy_, FixedClock(MONDAY_10))
    robot = "robot@naive.example"
    _, first = mail(f"Robot <{robot}>", "Hello", "I have a question about my order.")
    await append(imap_server, first)
    exchanged = 1
    for _round in range(20):
        smtp_sink.messages.clear()
        await daemon.run_once()
        to_robot = [m for m in smtp_sink.messages if m.rcpt_tos == (robot,)]
        if not to_robot:
            break
        exchanged += len(to_robot)
        # It answers every mail with a new one: no headers, no references, a fresh subject.
        for index, _ in enumerate(to_robot):
            _, answer = mail(f"Robot <{robot}>", f"Away notice {exchanged}-{index}", "I am away.")
            await append(imap_server, answer)
            exchanged += 1
    else:
        raise AssertionError("the storm never stopped")
    # The first mail, `limit` acknowledgements, `limit` robot answers; the last one unanswered.
    assert exchanged == 2 * limit + 1, exchanged
    acks = await OutboxRow.filter(rcpt_to=robot).count()
    assert acks == limit
    assert await Ticket.filter(customer=robot).count() == limit + 1  # nothing lost


def _stripping(raw: bytes) -> bytes:
    """A relay that drops every loop marker: Auto-Submitted, X-* and Precedence headers."""
    msg = message_from_bytes(raw, policy=policy.default)
    for name in list(msg.keys()):
        if name.lower().startswith("x-") or name.lower() in {"auto-submitted", "precedence"}:
            del msg[name]
    return msg.as_bytes()


async def _two_helpdesks(tmp_path: Path, transport: Callable[[bytes], bytes]) -> int:
    """support@a.example and support@b.example, each a mailbot with its own mailbox and
    database, deliver to each other through ``transport``. Returns the mails exchanged."""
    a_rules = tmp_path / "a.yaml"
    b_rules = tmp_path / "b.yaml"
    a_rules.write_text(RULES.replace("support@example.com", "support@a.example"), "utf-8")
    b_rules.write_text(RULES.replace("support@example.com", "support@b.example"), "utf-8")
    async with (
        running_pymap("a", "pw-a") as imap_a,
        running_pymap("b", "pw-b") as imap_b,
        running_smtp_sink() as sink,
    ):
        helpdesks = {}
        for name, imap, rules in (("a", imap_a, a_rules), ("b", imap_b, b_rules)):
            settings = load_settings(
                {
                    "MAILBOT_IMAP_PASSWORD": f"pw-{name}",
                    "MAILBOT_TEMPLATES": str(REPO / "templates"),
                    "MAILBOT_SECRET": "loop-test-token-key-0123456789",
                },
                imap_url=f"imap+plain://{name}@{imap.host}:{imap.port}/INBOX",
                smtp_url=f"smtp+plain://{sink.host}:{sink.port}",
                db_url=sqlite_url(tmp_path / f"{name}.sqlite3"),
                rules=str(rules),
            )
            endpoint = parse_endpoint(
                settings_url(imap, name), protocol="imap", password=f"pw-{name}"
            )
            helpdesks[f"support@{name}.example"] = (
                settings,
                load_policy(rules, REPO / "templates"),
                endpoint,
            )
        # Somebody set up a forward: a's support address writes to b's.
        first = EmailMessage()
        first["From"] = "Support A <support@a.example>"
        first["To"] = "support@b.example"
        first["Subject"] = "Forwarded: order 1234"
        first["Message-ID"] = make_msgid(domain="a.example")
        first["Date"] = format_datetime(MONDAY_10)
        first.set_content("Please have a look at order 1234.")
        await append_messages(helpdesks["support@b.example"][2], [first.as_bytes()])
        exchanged = 1
        for _round in range(20):
            moved = 0
            for settings, policy_, _ in helpdesks.values():
                await open_database(settings.db_url)
                try:
                    await Daemon(settings, policy_, FixedClock(MONDAY_10)).run_once()
                finally:
                    await close_database()
            for received in list(sink.messages):
                for rcpt in received.rcpt_tos:
                    if rcpt in helpdesks:
                        await append_messages(helpdesks[rcpt][2], [transport(received.raw)])
                        moved += 1
            sink.messages.clear()
            exchanged += moved
            if moved == 0:
                return exchanged
        raise AssertionError("the two helpdesks never stopped answering each other")


def settings_url(imap: Any, user: str) -> str:
    return f"imap+plain://{user}@{imap.host}:{imap.port}/INBOX"


async def test_two_helpdesks_answering_each_other_stop_at_once(tmp_path: Path) -> None:
    # b acknowledges a's mail; a sees Auto-Submitted and the other installation's loop
    # marker on it and stores it without answering.
    assert await _two_helpdesks(tmp_path, lambda raw: raw) == 2


async def test_two_helpdesks_behind_a_header_stripping_relay_still_stop(tmp_path: Path) -> None:
    # Without any marks, threading ends it: a's answer to b's acknowledgement is a reply to
    # b's own mail, a follow-up that b never answers automatically.
    # The forward, b's acknowledgement (unmarked, so a opens a ticket and acknowledges it),
    # then a's acknowledgement answers b's own mail: a follow-up, never answered.
    assert await _two_helpdesks(tmp_path, _stripping) == 3
