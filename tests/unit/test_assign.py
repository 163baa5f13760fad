"""Who gets a ticket, and who is told: assignment order, round robin, notice recipients."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mailbot.agents.assign import (
    assignment_target,
    next_in_turn,
    notice_recipients,
    team_members,
)
from mailbot.rules.schema import Rules

BASE: dict[str, Any] = {
    "version": 1,
    "identity": {"address": "support@example.com", "name": "Example Support"},
    "timezone": "Europe/Stockholm",
    "plans": {
        "core": {"name": "Core", "first_response": {"working_days": 3}},
        "ultimate": {"name": "Ultimate", "first_response": {"hours": 4}},
    },
    "default_plan": "core",
    "customers": [
        {"match": "@nordic.se", "plan": "core", "account": "nordic"},
        {"match": "@lonely.se", "plan": "core", "account": "lonely"},
    ],
    "agents": {
        "anna": {"name": "Anna", "addresses": ["anna@example.com", "anna@home.se"]},
        "bert": {"name": "Bert", "addresses": ["bert@example.com"], "team": "support"},
        "cecilia": {"name": "Cecilia", "addresses": ["cecilia@example.com"], "team": "devs"},
        "david": {"name": "David", "addresses": ["david@example.com"], "team": "support"},
        "erik": {"name": "Erik", "addresses": ["erik@example.com"], "team": "platinum"},
    },
    "teams": {
        "support": {"name": "Support"},
        "devs": {"name": "Developers"},
        "platinum": {"name": "Platinum", "address": "platinum-team@example.com"},
    },
    "assignment": {
        "account_manager": True,
        "by_plan": {"ultimate": "platinum"},
        "by_category": {"bug": "devs"},
        "default": "support",
    },
    "accounts": {
        "nordic": {"name": "Nordic Decor", "account_manager": "anna"},
        "lonely": {"name": "Lonely AB"},
    },
}


def _rules(**changes: Any) -> Rules:
    """The base rules with top-level sections replaced (``None`` removes one)."""
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return Rules.model_validate(data)


def _assignment(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {**copy.deepcopy(BASE["assignment"]), **changes}
    return {key: value for key, value in spec.items() if value is not None}


@pytest.fixture(scope="module")
def rules() -> Rules:
    return _rules()


# -- assignment_target ----------------------------------------------------------------------


def test_account_manager_comes_first(rules: Rules) -> None:
    # Even a plan and a category that have their own targets lose to the account manager.
    target = assignment_target(rules, plan="ultimate", category="bug", account="nordic")
    assert (target.agent, target.team) == ("anna", None)  # anna is in no team
    assert "nordic" in target.reason


def test_account_manager_keeps_their_team() -> None:
    accounts = copy.deepcopy(BASE["accounts"])
    accounts["nordic"]["account_manager"] = "bert"
    target = assignment_target(
        _rules(accounts=accounts), plan="core", category="", account="nordic"
    )
    assert (target.agent, target.team) == ("bert", "support")


def test_account_without_a_manager_falls_through_to_the_plan(rules: Rules) -> None:
    target = assignment_target(rules, plan="ultimate", category="", account="lonely")
    assert (target.agent, target.team) == (None, "platinum")


def test_unknown_account_falls_through(rules: Rules) -> None:
    target = assignment_target(rules, plan="core", category="", account="nobody-knows")
    assert (target.agent, target.team) == (None, "support")


def test_account_manager_off_skips_the_manager() -> None:
    rules = _rules(assignment=_assignment(account_manager=False))
    target = assignment_target(rules, plan="ultimate", category="bug", account="nordic")
    assert (target.agent, target.team) == (None, "platinum")


def test_by_plan_comes_before_by_category(rules: Rules) -> None:
    target = assignment_target(rules, plan="ultimate", category="bug", account=None)
    assert (target.agent, target.team) == (None, "platinum")
    assert "ultimate" in target.reason


def test_by_category_when_the_plan_has_no_rule(rules: Rules) -> None:
    target = assignment_target(rules, plan="core", category="bug", account=None)
    assert (target.agent, target.team) == (None, "devs")
    assert "bug" in target.reason


def test_by_plan_may_name_an_agent() -> None:
    rules = _rules(assignment=_assignment(by_plan={"ultimate": "cecilia"}))
    target = assignment_target(rules, plan="ultimate", category="", account=None)
    assert (target.agent, target.team) == ("cecilia", "devs")


def test_default_team(rules: Rules) -> None:
    target = assignment_target(rules, plan="core", category="support", account=None)
    assert (target.agent, target.team) == (None, "support")


def test_default_agent_carries_their_team() -> None:
    rules = _rules(assignment=_assignment(default="david"))
    target = assignment_target(rules, plan="core", category="", account=None)
    assert (target.agent, target.team) == ("david", "support")


def test_first_declared_team_without_a_default() -> None:
    teams = {
        "devs": BASE["teams"]["devs"],
        "support": BASE["teams"]["support"],
        "platinum": BASE["teams"]["platinum"],
    }
    rules = _rules(teams=teams, assignment=_assignment(default=None))
    target = assignment_target(rules, plan="core", category="", account=None)
    assert (target.agent, target.team) == (None, "devs")


def test_nobody_without_agents_or_teams() -> None:
    rules = _rules(agents=None, teams=None, accounts=None, assignment={}, customers=None)
    target = assignment_target(rules, plan="core", category="bug", account=None)
    assert (target.agent, target.team) == (None, None)


# -- team_members and round robin -----------------------------------------------------------


def test_team_members_in_declared_order(rules: Rules) -> None:
    assert team_members(rules, "support") == ("bert", "david")
    assert team_members(rules, "platinum") == ("erik",)
    assert team_members(rules, "nonexistent") == ()


def test_round_robin_goes_round() -> None:
    members = ("bert", "david", "frida")
    turns: list[str] = []
    last: str | None = None
    for _ in range(7):
        last = next_in_turn(members, last)
        turns.append(last)
    assert turns == ["bert", "david", "frida", "bert", "david", "frida", "bert"]


def test_round_robin_wraps_after_the_last_member() -> None:
    assert next_in_turn(["bert", "david"], "david") == "bert"


def test_round_robin_starts_over_when_last_left_the_team() -> None:
    assert next_in_turn(("bert", "david"), "gustav") == "bert"


def test_round_robin_with_one_member() -> None:
    assert next_in_turn(("erik",), "erik") == "erik"
    assert next_in_turn(("erik",), None) == "erik"


def test_round_robin_needs_members() -> None:
    with pytest.raises(ValueError, match="without agents"):
        next_in_turn((), None)


# -- notice_recipients ----------------------------------------------------------------------


def test_agent_gets_notices_at_their_first_address(rules: Rules) -> None:
    assert notice_recipients(rules, agent="anna", team=None) == ("anna@example.com",)


def test_an_agent_wins_over_their_team(rules: Rules) -> None:
    assert notice_recipients(rules, agent="bert", team="support") == ("bert@example.com",)


def test_an_excluded_agent_gets_nothing(rules: Rules) -> None:
    # e.g. the agent who just wrote: nobody else is told instead.
    assert notice_recipients(rules, agent="bert", team="support", exclude=frozenset({"bert"})) == ()


def test_team_with_a_box_gets_notices_there(rules: Rules) -> None:
    assert notice_recipients(rules, agent=None, team="platinum") == ("platinum-team@example.com",)


def test_team_without_a_box_tells_every_member(rules: Rules) -> None:
    assert notice_recipients(rules, agent=None, team="support") == (
        "bert@example.com",
        "david@example.com",
    )


def test_team_members_minus_the_excluded(rules: Rules) -> None:
    got = notice_recipients(rules, agent=None, team="support", exclude=frozenset({"david"}))
    assert got == ("bert@example.com",)


def test_agent_no_longer_configured_falls_back_to_the_team(rules: Rules) -> None:
    assert notice_recipients(rules, agent="removed", team="support") == (
        "bert@example.com",
        "david@example.com",
    )


@pytest.mark.parametrize(("agent", "team"), [(None, None), (None, "gone"), ("gone", None)])
def test_nobody_to_tell(rules: Rules, agent: str | None, team: str | None) -> None:
    assert notice_recipients(rules, agent=agent, team=team) == ()
