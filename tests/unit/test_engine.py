"""The decision: which answer for which message, and the rule hits that explain it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailbot.domain import Address, AutoVerdict, ReplyKind, ThreadMatch, TicketAction
from mailbot.rules.engine import MessageView, decide
from mailbot.rules.loader import parse_rules
from mailbot.rules.schema import Rules
from tests.e2e.conftest import RULES

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Stockholm
NEW = ThreadMatch(None, TicketAction.NEW, "no known reference or token")
HUMAN = AutoVerdict(False)


@pytest.fixture(scope="module")
def rules() -> Rules:
    return parse_rules(RULES, "test-rules.yaml")


def view(sender: str | None, subject: str, text: str) -> MessageView:
    return MessageView(Address(sender, "Name") if sender else None, subject, text)


def test_known_customer_gets_ack_in_their_language(rules: Rules) -> None:
    d = decide(view("anna@butiken.se", "Kassan", "Kassan fungerar inte."), NEW, HUMAN, rules, NOW)
    assert (d.plan, d.language) == ("pro", "sv")
    assert d.reply is not None and d.reply.kind is ReplyKind.ACK and d.reply.language == "sv"
    assert d.deadline is not None and d.deadline > NOW
    assert any("acknowledgement" in hit for hit in d.rule_hits)


def test_domain_customer_and_deadline_of_plan(rules: Rules) -> None:
    d = decide(view("mario@negozio.it", "Errore", "Non funziona."), NEW, HUMAN, rules, NOW)
    assert d.plan == "ultimate"
    assert d.deadline is not None and (d.deadline - NOW).total_seconds() == 4 * 3600


def test_core_howto_with_matching_article_gets_wiki_redirect(rules: Rules) -> None:
    d = decide(
        view("john@example.org", "How do I reset my password?", "How do I reset my password?"),
        NEW,
        HUMAN,
        rules,
        NOW,
    )
    assert d.plan == "core" and d.language == "en"
    assert d.reply is not None and d.reply.kind is ReplyKind.WIKI
    assert d.reply.articles[0].url == "https://wiki.example.com/password"


def test_core_howto_without_article_gets_ack(rules: Rules) -> None:
    d = decide(
        view("john@example.org", "How do I change the logo colour?", "How do I change it?"),
        NEW,
        HUMAN,
        rules,
        NOW,
    )
    assert d.reply is not None and d.reply.kind is ReplyKind.ACK


def test_pro_plan_acknowledges_howto_questions(rules: Rules) -> None:
    d = decide(
        view("anna@butiken.se", "Hur återställer jag lösenordet?", "Hur gör jag?"),
        NEW,
        HUMAN,
        rules,
        NOW,
    )
    assert d.reply is not None and d.reply.kind is ReplyKind.ACK


def test_no_answer_for_follow_ups_auto_mail_or_missing_sender(rules: Rules) -> None:
    follow = ThreadMatch(3, TicketAction.APPEND, "replies to <x@y>")
    msg = view("anna@butiken.se", "Re: Kassan", "Tack!")
    assert decide(msg, follow, HUMAN, rules, NOW).reply is None
    auto = AutoVerdict(True, "Auto-Submitted: auto-replied")
    d = decide(msg, NEW, auto, rules, NOW)
    assert d.reply is None and any("auto-generated" in hit for hit in d.rule_hits)
    assert decide(view(None, "x", "y"), NEW, HUMAN, rules, NOW).reply is None
    none = ThreadMatch(None, TicketAction.NONE, "auto-generated and not part of a ticket")
    assert decide(msg, none, auto, rules, NOW).deadline is None


def test_follow_up_keeps_the_ticket_plan_and_language(rules: Rules) -> None:
    follow = ThreadMatch(3, TicketAction.APPEND, "replies to <x@y>")
    d = decide(
        view("colleague@other.example", "Re: x", "Hello"),
        follow,
        HUMAN,
        rules,
        NOW,
        ticket_language="it",
        ticket_plan="ultimate",
    )
    assert (d.plan, d.language) == ("ultimate", "it")
