"""The action table: its schema and errors, and the decisions it makes (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot.agents.assign import escalation_recipients
from mailbot.domain import Address, AutoVerdict, ReplyKind, ThreadMatch, TicketAction
from mailbot.rules.engine import MessageView, decide
from mailbot.rules.loader import RulesError, parse_rules
from mailbot.rules.schema import Rules
from tests.e2e.conftest import RULES as BASE_RULES

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Stockholm
NEW = ThreadMatch(None, TicketAction.NEW, "no known reference or token")
HUMAN = AutoVerdict(False)
# Negozio's customer entry belongs to an account with an account manager.
RULES = BASE_RULES.replace(
    '{match: "@negozio.it", plan: ultimate, language: it}',
    '{match: "@negozio.it", plan: ultimate, language: it, account: negozio}',
)
assert RULES != BASE_RULES

PEOPLE = """\
agents:
  lena: {name: Lena Lead, addresses: [lena@example.com], team: support, role: lead}
  olle: {name: Olle, addresses: [olle@example.com], team: support}
  mona: {name: Mona Manager, addresses: [mona@example.com], role: account_manager}
teams:
  support: {name: Support}
accounts:
  negozio: {name: Negozio SRL, account_manager: mona}
classification:
  rules:
    - name: hosting
      when:
        any_text:
          en: [hosting, database connection]
          it: [hosting, connessione al database]
      set: {category: configuration}
    - name: outage
      when:
        any_text:
          en: [site is down]
      set: {severity: L1, urgent: true}
"""

ACTIONS = """\
actions:
  - name: hosting-is-paid
    when: {plans: [core, ultimate], categories: [configuration]}
    do: out_of_scope
    paid_option:
      en: "Paid support: 60 EUR an hour."
      it: "Assistenza a pagamento: 60 EUR l'ora."
  - name: core-howto-wiki
    when: {plans: [core], howto: true}
    do: wiki
  - name: training-from-the-third
    when: {plans: [core], howto: true}
    do: training_offer
    after: 3
    within: 30d
    paid_option: {en: "A two-hour session costs 150 EUR."}
  - name: ultimate-outage
    when: {plans: [ultimate], severities: [L1]}
    do: escalate
    notify: [leads, account_manager]
  - name: pro-newsletters
    when: {plans: [pro], howto: false, urgent: false}
    do: silence
"""


@pytest.fixture(scope="module")
def rules() -> Rules:
    return parse_rules(RULES + PEOPLE + ACTIONS, "rules.yaml")


def view(sender: str, subject: str, text: str) -> MessageView:
    return MessageView(Address(sender, "Name"), subject, text)


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(RULES + PEOPLE + text, "rules.yaml")
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    lines = (RULES + PEOPLE + text).splitlines()
    return next(n for n, line in enumerate(lines, start=1) if needle in line)


# --- the schema -----------------------------------------------------------------------------


def test_unknown_names_are_reported_with_line_and_a_suggestion() -> None:
    text = """\
actions:
  - name: a
    when: {plans: [cor], categories: [confguration]}
    do: out_of_scope
  - name: a
    do: escalate
    notify: [leeds]
"""
    found = problems(text)
    assert f"rules.yaml:{line_of(text, 'cor]')}:" in found[0]
    assert "actions[0].when.plans[0]: unknown plan 'cor' — did you mean 'core'?" in found[0]
    assert "actions[0].when.categories[0]: unknown category 'confguration'" in found[1]
    assert "did you mean 'configuration'?" in found[1]
    assert "actions[1].name: action 'a' is already actions[0]" in found[2]
    assert "actions[1].notify[0]: unknown agent or role 'leeds' — did you mean 'leads'?" in found[3]
    assert len(found) == 4


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("{name: t, do: training_offer}", "a training_offer needs `after`"),
        ("{name: t, do: wiki, after: 2}", "`after` is only for training_offer, not wiki"),
        ("{name: t, do: escalate}", "an escalate action needs `notify`"),
        ("{name: t, do: silence, notify: [leads]}", "`notify` is only for escalate, not silence"),
        ("{name: t, do: acknowledge, paid_option: {en: x}}", "`paid_option` is only for"),
        ("{name: t, do: silence, template: ack}", "a silence action sends nothing"),
        ("{name: t, do: reply}", "actions[0].do: "),
        ("{name: t, do: training_offer, after: 2, within: soon}", "actions[0].within"),
        ("{name: 'a b', do: silence}", "actions[0].name"),
    ],
)
def test_an_action_that_cannot_work_is_an_error(action: str, message: str) -> None:
    found = problems(f"actions:\n  - {action}\n")
    assert len(found) == 1 and message in found[0], found


def test_only_templates_in_use_are_required(rules: Rules) -> None:
    assert rules.reply_template_names() == ("ack", "wiki", "out_of_scope", "training")
    plain = parse_rules(BASE_RULES, "rules.yaml")
    assert plain.reply_template_names() == ("ack", "wiki")


# --- decisions ------------------------------------------------------------------------------


def test_out_of_scope_names_the_paid_option_in_the_customers_language(rules: Rules) -> None:
    d = decide(
        view("mario@negozio.it", "Hosting", "Problema di connessione al database sul hosting"),
        NEW,
        HUMAN,
        rules,
        NOW,
    )
    assert d.action == "hosting-is-paid" and d.category == "configuration"
    assert d.reply is not None and d.reply.kind is ReplyKind.OUT_OF_SCOPE
    assert d.reply.template == "out_of_scope" and d.reply.language == "it"
    assert d.reply.paid_option == "Assistenza a pagamento: 60 EUR l'ora."
    assert "action hosting-is-paid: out of scope" in d.rule_hits


def test_wiki_without_an_article_falls_through_to_the_next_row(rules: Rules) -> None:
    question = view("john@example.org", "How do I change the logo colour?", "How do I?")
    d = decide(question, NEW, HUMAN, rules, NOW)
    assert "action core-howto-wiki: wiki, but no article matches" in d.rule_hits
    # The training row: this is the first how-to question, the offer comes with the third.
    assert any("how-to question 1 of 3 within 30d" in hit for hit in d.rule_hits)
    assert d.action is None and d.howto
    assert d.reply is not None and d.reply.kind is ReplyKind.ACK


def test_the_third_howto_question_gets_the_training_offer(rules: Rules) -> None:
    question = view("john@example.org", "How do I change the logo colour?", "How do I?")
    second = decide(question, NEW, HUMAN, rules, NOW, howto_counts={"training-from-the-third": 1})
    assert second.reply is not None and second.reply.kind is ReplyKind.ACK
    third = decide(question, NEW, HUMAN, rules, NOW, howto_counts={"training-from-the-third": 2})
    assert third.action == "training-from-the-third"
    assert third.reply is not None and third.reply.kind is ReplyKind.TRAINING
    assert third.reply.paid_option == "A two-hour session costs 150 EUR."


def test_a_matching_article_wins_over_the_training_row_below_it(rules: Rules) -> None:
    question = view("john@example.org", "How do I reset my password?", "Reset password?")
    d = decide(question, NEW, HUMAN, rules, NOW, howto_counts={"training-from-the-third": 5})
    assert d.action == "core-howto-wiki"
    assert d.reply is not None and d.reply.kind is ReplyKind.WIKI


def test_escalation_acknowledges_and_names_who_is_told(rules: Rules) -> None:
    d = decide(view("mario@negozio.it", "Help", "Our site is down!"), NEW, HUMAN, rules, NOW)
    assert d.severity == "L1" and d.action == "ultimate-outage"
    assert d.escalate_to == ("leads", "account_manager")
    assert d.reply is not None and d.reply.kind is ReplyKind.ACK


def test_silence_opens_the_ticket_without_an_answer(rules: Rules) -> None:
    d = decide(view("anna@butiken.se", "Nyhetsbrev", "Vårt nyhetsbrev."), NEW, HUMAN, rules, NOW)
    assert d.action == "pro-newsletters" and d.reply is None
    assert d.deadline is not None  # the ticket still has its clocks
    assert "action pro-newsletters: silence" in d.rule_hits


def test_follow_ups_auto_mail_and_agents_never_reach_the_table(rules: Rules) -> None:
    hosting = view("mario@negozio.it", "Hosting", "hosting")
    follow = ThreadMatch(3, TicketAction.APPEND, "replies to <x@y>")
    assert decide(hosting, follow, HUMAN, rules, NOW).action is None
    auto = AutoVerdict(True, "Auto-Submitted: auto-replied")
    assert decide(hosting, NEW, auto, rules, NOW).action is None
    agent = view("olle@example.com", "Hosting", "hosting")
    assert decide(agent, NEW, HUMAN, rules, NOW).action is None


def test_no_table_keeps_the_plans_behaviour() -> None:
    plain = parse_rules(RULES + PEOPLE, "rules.yaml")
    d = decide(view("mario@negozio.it", "Hosting", "hosting"), NEW, HUMAN, plain, NOW)
    assert d.action is None and d.reply is not None and d.reply.kind is ReplyKind.ACK


# --- escalation recipients -------------------------------------------------------------------


def test_escalation_recipients_resolve_roles(rules: Rules) -> None:
    def who(*entries: str, **ticket: str | None) -> tuple[str, ...]:
        facts = {"assignee": None, "team": None, "account": None, **ticket}
        return escalation_recipients(rules, entries, **facts)

    assert who("leads", "account_manager", account="negozio") == (
        "lena@example.com",
        "mona@example.com",
    )
    assert who("account_manager") == ()  # no account, nobody
    assert who("team", assignee="olle") == ("lena@example.com", "olle@example.com")
    assert who("assignee", "olle", assignee="olle") == ("olle@example.com",)
    assert who("mona", "leads", team="support") == ("mona@example.com", "lena@example.com")


def test_a_template_an_action_names_must_exist_in_every_language(tmp_path: Path) -> None:
    from mailbot.errors import ConfigError
    from mailbot.policy import load_policy
    from tests.e2e.conftest import REPO

    path = tmp_path / "rules.yaml"
    text = "actions:\n  - {name: x, do: out_of_scope, template: hosting_notice}\n"
    path.write_text(RULES + PEOPLE + text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(path, REPO / "templates")
    assert "hosting_notice" in str(info.value)
