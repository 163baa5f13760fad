"""The people side of rules.yaml: agents, teams, assignment, accounts, time banks.

Problems are loaded through ``load_rules`` and must name ``file:line:col: field.path:``
with a clear message; the helpers on ``Rules`` answer who, which bank and which calendar.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mailbot.errors import ConfigError
from mailbot.rules.loader import load_rules
from mailbot.rules.schema import Rules

PEOPLE = textwrap.dedent(
    """\
    version: 1
    identity:
      address: Support@Example.COM
      name: Example Support
      extra_addresses: [helpdesk@example.com]
    timezone: Europe/Stockholm
    calendars:
      nights:
        weekdays: "18:00-23:00"
    plans:
      core:
        name: Core
        first_response: {working_days: 3}
      pro:
        name: Pro
        first_response: {working_hours: 8}
        time_bank: {monthly: 2h}
        sla:
          calendar: nights
      ultimate:
        name: Ultimate
        first_response: {hours: 4}
        sla:
          calendar: 24x7
    default_plan: core
    customers:
      - match: "@nordic.se"
        plan: pro
        account: nordic-decor
      - match: "@small.se"
        plan: pro
        account: small-shop
    agents:
      anna:
        name: Anna Lind
        addresses: [Anna.Lind@Example.com, anna@home.se]
        team: support
        role: account_manager
      bert:
        name: Bert
        addresses: [bert@example.com]
        team: developers
    teams:
      support:
        name: Support
        address: support-team@example.com
      developers:
        name: Developers
    assignment:
      account_manager: true
      by_plan: {ultimate: developers}
      by_category: {bug: developers}
      default: support
    accounts:
      nordic-decor:
        name: Nordic Decor
        account_manager: anna
        time_bank: {monthly: 4h}
      small-shop:
        name: Small Shop
    """
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str = PEOPLE) -> Rules:
    return load_rules(_write(tmp_path, text))


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    lines = str(info.value).splitlines()
    assert lines, "a ConfigError must say what is wrong"
    return lines


def _where(text: str, needle: str, *, offset: int = 0) -> str:
    """``line:col`` (1-based) of the first ``needle``, plus ``offset`` columns."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return f"{number}:{line.index(needle) + 1 + offset}"
    raise AssertionError(f"{needle!r} not in text")


def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur exactly once"
    return text.replace(old, new)


# -- a good file ----------------------------------------------------------------------------


def test_people_sections_load(tmp_path: Path) -> None:
    rules = _load(tmp_path)
    assert set(rules.agents) == {"anna", "bert"}
    assert rules.agents["anna"].team == "support"
    assert rules.agents["anna"].role == "account_manager"
    assert rules.teams["support"].address == "support-team@example.com"
    assert rules.assignment.default == "support"
    assert rules.customers[0].account == "nordic-decor"


def test_time_bank_on_a_plan_and_on_an_account_is_accepted(tmp_path: Path) -> None:
    rules = _load(tmp_path)
    plan_bank = rules.plans["pro"].time_bank
    account_bank = rules.accounts["nordic-decor"].time_bank
    assert plan_bank is not None and plan_bank.monthly == 2 * 60
    assert account_bank is not None and account_bank.monthly == 4 * 60


# -- problems -------------------------------------------------------------------------------


def test_agents_unknown_team_with_did_you_mean(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "    team: developers\n", "    team: develpers\n")
    col = _where(text, "develpers")
    assert _problems(tmp_path, text) == [
        f"{tmp_path / 'rules.yaml'}:{col}: agents.bert.team: unknown team 'develpers'"
        " — did you mean 'developers'?"
    ]


def test_agents_unknown_team_without_a_close_match_lists_the_teams(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "    team: developers\n", "    team: marketing\n")
    (problem,) = _problems(tmp_path, text)
    assert f":{_where(text, 'marketing')}: agents.bert.team: unknown team 'marketing'" in problem
    assert "support" in problem and "developers" in problem


def test_an_address_used_by_two_agents(tmp_path: Path) -> None:
    # Addresses compare case-blind: this is anna's address in other letters.
    text = _swap(PEOPLE, "[bert@example.com]", "[bert@example.com, anna.lind@EXAMPLE.com]")
    (problem,) = _problems(tmp_path, text)
    assert f":{_where(text, 'anna.lind@EXAMPLE')}: agents.bert.addresses[1]:" in problem
    assert "anna.lind@example.com" in problem
    assert "'anna'" in problem  # names the agent who already has it


def test_an_agent_address_that_is_identitys_own(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "[bert@example.com]", "[support@example.com]")
    (problem,) = _problems(tmp_path, text)
    assert ": agents.bert.addresses: " in problem
    assert "support@example.com" in problem
    assert "identity" in problem


def test_an_agent_address_that_is_one_of_identitys_extra_addresses(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "[bert@example.com]", "[HelpDesk@example.com]")
    (problem,) = _problems(tmp_path, text)
    assert ": agents.bert.addresses: " in problem
    assert "helpdesk@example.com" in problem


def test_assignment_default_unknown(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "default: support", "default: suport")
    col = _where(text, "suport")
    assert _problems(tmp_path, text) == [
        f"{tmp_path / 'rules.yaml'}:{col}: assignment.default: unknown team or agent 'suport'"
        " — did you mean 'support'?"
    ]


def test_assignment_default_may_be_an_agent(tmp_path: Path) -> None:
    rules = _load(tmp_path, _swap(PEOPLE, "default: support", "default: bert"))
    assert rules.assignment.default == "bert"


def test_by_plan_target_unknown(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "by_plan: {ultimate: developers}", "by_plan: {ultimate: platinum}")
    (problem,) = _problems(tmp_path, text)
    assert f":{_where(text, 'platinum')}: assignment.by_plan.ultimate: " in problem
    assert "unknown team or agent 'platinum'" in problem


def test_by_plan_naming_an_unknown_plan(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "by_plan: {ultimate: developers}", "by_plan: {ultimat: developers}")
    (problem,) = _problems(tmp_path, text)
    assert ": assignment.by_plan.ultimat: unknown plan 'ultimat'" in problem
    assert "did you mean 'ultimate'?" in problem


def test_by_category_naming_a_category_not_in_billing(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "by_category: {bug: developers}", "by_category: {bugs: developers}")
    (problem,) = _problems(tmp_path, text)
    assert ": assignment.by_category.bugs: unknown category 'bugs'" in problem
    assert "did you mean 'bug'?" in problem


def test_by_category_checks_the_declared_billing_categories(tmp_path: Path) -> None:
    # Naming categories replaces the defaults: 'bug' then no longer exists.
    billing = "billing:\n  categories:\n    support: {}\n    defect: {chargeable: false}\n"
    text = PEOPLE + billing + "  default_category: support\n"
    (problem,) = _problems(tmp_path, text)
    assert ": assignment.by_category.bug: unknown category 'bug'" in problem
    ok = _swap(text, "by_category: {bug: developers}", "by_category: {defect: developers}")
    assert _load(tmp_path, ok).assignment.by_category == {"defect": "developers"}


def test_accounts_unknown_account_manager(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "account_manager: anna", "account_manager: ana")
    col = _where(text, "account_manager: ana", offset=len("account_manager: "))
    assert _problems(tmp_path, text) == [
        f"{tmp_path / 'rules.yaml'}:{col}: accounts.nordic-decor.account_manager:"
        " unknown agent 'ana' — did you mean 'anna'?"
    ]


def test_account_manager_must_be_an_agent_not_a_team(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "account_manager: anna", "account_manager: support")
    (problem,) = _problems(tmp_path, text)
    assert ": accounts.nordic-decor.account_manager: unknown agent 'support'" in problem


def test_customers_unknown_account(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "account: small-shop", "account: smal-shop")
    col = _where(text, "account: smal-shop", offset=len("account: "))
    assert _problems(tmp_path, text) == [
        f"{tmp_path / 'rules.yaml'}:{col}: customers[1].account: unknown account 'smal-shop'"
        " — did you mean 'small-shop'?"
    ]


def test_an_id_that_is_both_agent_and_team(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "  developers:\n    name: Developers\n", "  bert:\n    name: Bert's\n")
    text = _swap(text, "    team: developers\n", "    team: bert\n")
    text = text.replace("ultimate: developers", "ultimate: support")
    text = text.replace("bug: developers", "bug: support")
    (problem,) = _problems(tmp_path, text)
    assert ": teams.bert: 'bert' is both an agent and a team" in problem


@pytest.mark.parametrize("bad", ["Anna", "ANNA", "9anna", "anna lind"])
def test_account_ids_must_be_lower_case(tmp_path: Path, bad: str) -> None:
    text = _swap(PEOPLE, "  small-shop:\n", f"  {bad!r}:\n")
    text = _swap(text, "account: small-shop", f"account: {bad!r}")
    problems = _problems(tmp_path, text)
    assert any("lower-case" in problem for problem in problems)


def test_agent_ids_must_be_lower_case(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "  bert:\n    name: Bert\n", "  Bert:\n    name: Bert\n")
    problems = _problems(tmp_path, text)
    assert any("agents.Bert" in problem for problem in problems)


@pytest.mark.parametrize("bad", ["Support", "sup port"])
def test_agents_team_reference_must_be_an_id(tmp_path: Path, bad: str) -> None:
    text = _swap(PEOPLE, "    team: developers\n", f"    team: {bad!r}\n")
    problems = _problems(tmp_path, text)
    assert any(": agents.bert.team: " in problem for problem in problems)


def test_agent_needs_an_address(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "[bert@example.com]", "[]")
    (problem,) = _problems(tmp_path, text)
    assert ": agents.bert.addresses: needs at least 1 item" in problem


def test_agent_address_must_be_an_address(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "[bert@example.com]", "[bert-at-example.com]")
    col = _where(text, "bert-at-example.com")
    problems = _problems(tmp_path, text)
    assert (
        f"{tmp_path / 'rules.yaml'}:{col}: agents.bert.addresses[0]:"
        " 'bert-at-example.com' is not a valid e-mail address"
    ) in problems


def test_an_invalid_agent_address_is_reported_once(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "[bert@example.com]", "[bert-at-example.com]")
    problems = _problems(tmp_path, text)
    assert [p for p in problems if "needs at least" in p] == []


def test_agent_role_typo_gets_a_suggestion(tmp_path: Path) -> None:
    text = _swap(PEOPLE, "role: account_manager", "role: leed")
    (problem,) = _problems(tmp_path, text)
    assert ": agents.anna.role: " in problem
    assert "did you mean 'lead'?" in problem


# -- Rules helpers ---------------------------------------------------------------------------


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    return _load(tmp_path)


@pytest.mark.parametrize(
    "address",
    ["anna.lind@example.com", "ANNA.LIND@EXAMPLE.COM", "  Anna.Lind@Example.com ", "anna@HOME.se"],
)
def test_agent_for_is_case_insensitive(rules: Rules, address: str) -> None:
    assert rules.agent_for(address) == "anna"


@pytest.mark.parametrize("address", [None, "", "stranger@example.com", "support@example.com"])
def test_agent_for_unknown_is_none(rules: Rules, address: str | None) -> None:
    assert rules.agent_for(address) is None


def test_agent_addresses_map_every_address(rules: Rules) -> None:
    assert rules.agent_addresses == {
        "anna.lind@example.com": "anna",
        "anna@home.se": "anna",
        "bert@example.com": "bert",
    }


def test_account_manager(rules: Rules) -> None:
    assert rules.account_manager("nordic-decor") == "anna"
    assert rules.account_manager("small-shop") is None
    assert rules.account_manager("no-such-account") is None


def test_time_bank_prefers_the_accounts_own(rules: Rules) -> None:
    assert rules.time_bank("nordic-decor", "pro") == rules.accounts["nordic-decor"].time_bank
    assert rules.time_bank("nordic-decor", "core") == rules.accounts["nordic-decor"].time_bank


def test_time_bank_falls_back_to_the_plans(rules: Rules) -> None:
    plan_bank = rules.plans["pro"].time_bank
    assert plan_bank is not None
    assert rules.time_bank("small-shop", "pro") == plan_bank  # the account has none
    assert rules.time_bank(None, "pro") == plan_bank
    assert rules.time_bank("no-such-account", "pro") == plan_bank


def test_time_bank_none_when_neither_has_one(rules: Rules) -> None:
    assert rules.time_bank("small-shop", "core") is None
    assert rules.time_bank(None, "core") is None
    assert rules.time_bank(None, "no-such-plan") is None


def test_plan_calendar(rules: Rules) -> None:
    assert rules.plan_calendar("pro") is rules.calendar("nights")
    assert rules.plan_calendar("ultimate") is rules.calendar("24x7")
    assert rules.plan_calendar("core") is rules.calendar()  # no sla block: office
    assert rules.plan_calendar("no-such-plan") is rules.calendar("office")
    assert rules.plan_calendar("pro") is not rules.plan_calendar("core")
