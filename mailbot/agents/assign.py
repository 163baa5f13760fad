"""Who gets a ticket, and who is told. Pure: rules and facts in, a choice out.

Order (``assignment`` in rules.yaml):

1. the account manager of the customer's account (``assignment.account_manager: true``);
2. a team or agent by the ticket's plan (``by_plan``), then by its category (``by_category``);
3. ``assignment.default``, else the first team declared, else nobody.

A team with agents is resolved to one of them in turn when ``round_robin`` is on (the
database keeps the cursor); otherwise the ticket belongs to the team and its notices go to
the team's shared address, or to every member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailbot.rules.schema import Rules


@dataclass(frozen=True, slots=True)
class Target:
    """An assignment: an agent (with their team), a team alone, or nobody."""

    agent: str | None
    team: str | None
    reason: str


def assignment_target(rules: Rules, *, plan: str, category: str, account: str | None) -> Target:
    """The assignment rules' choice, before round-robin picks a team member."""
    spec = rules.assignment
    if spec.account_manager and account is not None:
        manager = rules.account_manager(account)
        if manager is not None:
            return _target(rules, manager, f"account manager of {account}")
    if plan in spec.by_plan:
        return _target(rules, spec.by_plan[plan], f"plan {plan}")
    if category and category in spec.by_category:
        return _target(rules, spec.by_category[category], f"category {category}")
    if spec.default is not None:
        return _target(rules, spec.default, "default")
    if rules.teams:
        first = next(iter(rules.teams))
        return _target(rules, first, "first team")
    return Target(None, None, "no agents or teams configured")


def _target(rules: Rules, name: str, why: str) -> Target:
    if name in rules.agents:
        return Target(name, rules.agents[name].team, f"{why}: agent {name}")
    return Target(None, name, f"{why}: team {name}")


def team_members(rules: Rules, team: str) -> tuple[str, ...]:
    """The team's agents in the order rules.yaml lists them."""
    return tuple(agent_id for agent_id, agent in rules.agents.items() if agent.team == team)


def next_in_turn(members: Sequence[str], last: str | None) -> str:
    """Round robin: the member after ``last`` (the first one if ``last`` is gone)."""
    if not members:
        raise ValueError("a team without agents has no turn")
    if last is not None and last in members:
        return members[(list(members).index(last) + 1) % len(members)]
    return members[0]


def notice_recipients(
    rules: Rules, *, agent: str | None, team: str | None, exclude: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """Addresses that get a ticket's notices: its agent, else its team's box or members."""
    if agent is not None and agent in rules.agents:
        if agent in exclude:
            return ()
        return (rules.agents[agent].addresses[0],)
    if team is not None and team in rules.teams:
        box = rules.teams[team].address
        if box is not None:
            return (box,)
        return tuple(
            rules.agents[member].addresses[0]
            for member in team_members(rules, team)
            if member not in exclude
        )
    return ()


def escalation_recipients(
    rules: Rules,
    who: tuple[str, ...],
    *,
    assignee: str | None,
    team: str | None,
    account: str | None,
) -> tuple[str, ...]:
    """Addresses an escalation goes to: agent ids as they are, and the roles ``assignee``
    (the ticket's agent or team), ``team`` (the ticket's team, else its agent's), ``leads``
    (the leads of that team, else every lead) and ``account_manager`` (the account's)."""
    ids: list[str] = []
    addresses: list[str] = []
    team = team or (rules.agents[assignee].team if assignee in rules.agents else None)
    for entry in who:
        if entry in rules.agents:
            ids.append(entry)
        elif entry == "assignee":
            addresses += notice_recipients(rules, agent=assignee, team=team)
        elif entry == "team" and team is not None:
            addresses += notice_recipients(rules, agent=None, team=team)
        elif entry == "leads":
            leads = [a for a, agent in rules.agents.items() if agent.role == "lead"]
            in_team = [a for a in leads if team is not None and rules.agents[a].team == team]
            ids += in_team or leads
        elif entry == "account_manager" and account in rules.accounts:
            manager = rules.accounts[account].account_manager
            if manager is not None:
                ids.append(manager)
    addresses += [rules.agents[a].addresses[0] for a in ids if a in rules.agents]
    return tuple(dict.fromkeys(addresses))
