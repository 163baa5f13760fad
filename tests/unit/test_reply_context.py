"""The greeting's name: the From header's display name, else the customer's rules.yaml name."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mailbot.domain import Address, AutoVerdict, ThreadMatch, TicketAction
from mailbot.outbound.reply import reply_context
from mailbot.policy import load_policy
from mailbot.rules.engine import MessageView, decide
from tests.e2e.conftest import REPO, RULES

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NEW = ThreadMatch(None, TicketAction.NEW, "new")


def _name(tmp_path: Path, sender: Address) -> object:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    policy = load_policy(path, REPO / "templates")
    view = MessageView(sender, "Kassan", "Kassan fungerar inte.")
    decision = decide(view, NEW, AutoVerdict(False), policy.rules, NOW)
    assert decision.reply is not None
    return reply_context(policy, decision, decision.reply, 1, "Kassan")["customer_name"]


def test_a_bare_address_is_greeted_with_the_rules_name(tmp_path: Path) -> None:
    assert _name(tmp_path, Address("anna@butiken.se", "")) == "Butiken AB"


def test_the_senders_own_name_comes_first(tmp_path: Path) -> None:
    assert _name(tmp_path, Address("anna@butiken.se", "Anna Lind")) == "Anna Lind"


def test_an_unknown_bare_sender_gets_no_name(tmp_path: Path) -> None:
    assert _name(tmp_path, Address("someone@else.example", "")) == ""


def test_the_plans_channels_reach_the_templates(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        RULES.replace(
            "    first_response: {working_hours: 8}\n",
            "    first_response: {working_hours: 8}\n    channels: [email, phone]\n",
        ),
        encoding="utf-8",
    )
    policy = load_policy(path, REPO / "templates")
    for sender, channels in (("anna@butiken.se", ["email", "phone"]), ("x@y.example", ["email"])):
        view = MessageView(Address(sender, ""), "Kassan", "Kassan fungerar inte.")
        decision = decide(view, NEW, AutoVerdict(False), policy.rules, NOW)
        assert decision.reply is not None
        context = reply_context(policy, decision, decision.reply, 1, "Kassan")
        assert context["channels"] == channels
