"""The people side of rules.yaml: agents, teams, assignment, accounts and agent mail.

::

    agents:
      anna:                              # the id used by #assign and in reports
        name: Anna Lind                  # signs the answers relayed to customers
        addresses: [anna.lind@example.com]
        team: support
        role: agent                      # agent | lead | account_manager
    teams:
      support:
        name: Support
        address: support-team@example.com  # optional: team notices go here, not to each member
    assignment:
      account_manager: true              # the customer's account manager first
      by_plan: {ultimate: platinum}      # then a team by plan,
      by_category: {bug: developers}     # or by category,
      default: support                   # else this team (or agent)
      round_robin: true                  # a team's tickets go to its agents in turn
    accounts:                            # organisations: a name, an account manager, a time bank
      nordic-decor:
        name: Nordic Decor
        account_manager: anna
        time_bank: {monthly: 4h}
    agent_mail:
      require_auth: {authserv_id: mx.example.com}  # agent mail must show DKIM or SPF pass
      reopen_within_days: 14             # a customer's reply after resolution reopens ...

Cross-references (a team, an account manager, a plan that exist) are checked by
:func:`people_reference_problems` on the raw YAML so errors carry file, line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mailbot.billing.schema import TimeBankSpec

Loc = tuple[str | int, ...]

#: Agent, team and account ids (checked with a readable message by the reference checks).
ID_PATTERN = r"^[a-z][a-z0-9._-]{0,31}$"
_ID = re.compile(ID_PATTERN)
Role = Literal["agent", "lead", "account_manager"]


def _address(value: str) -> str:
    from mailbot.rules.schema import check_address  # here: an import cycle

    return check_address(value).lower()


Address = Annotated[str, AfterValidator(_address)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Agent(_Model):
    """A person who answers tickets from their own mail client."""

    name: str = Field(min_length=1, max_length=120)
    addresses: tuple[Address, ...] = Field(min_length=1)
    team: str | None = None
    role: Role = "agent"
    #: The language of this agent's notifications (default: the rules' default_language).
    language: str | None = None


class Team(_Model):
    name: str = Field(min_length=1, max_length=120)
    #: A shared box that gets the team's notifications instead of each member.
    address: Address | None = None


class Assignment(_Model):
    """Who a new ticket goes to, tried in this order; ``#assign`` changes it later."""

    account_manager: bool = True
    by_plan: dict[str, str] = Field(default_factory=dict)
    by_category: dict[str, str] = Field(default_factory=dict)
    #: A team or an agent; None: the first team, else nobody (tickets stay unassigned).
    default: str | None = None
    round_robin: bool = True


class Account(_Model):
    """An organisation (one or many customer entries): its name, manager and time bank."""

    name: str = Field(min_length=1, max_length=255)
    account_manager: str | None = None
    time_bank: TimeBankSpec | None = None
    #: Extra addresses that get this account's low-balance warnings (e.g. its buyer).
    billing_contacts: tuple[Address, ...] = ()


class RequireAuth(_Model):
    """Agent mail must show a pass by our own mail server (RFC 8601 Authentication-Results)."""

    authserv_id: str = Field(min_length=1, max_length=255)
    methods: tuple[Literal["dkim", "spf"], ...] = ("dkim", "spf")


class AgentMail(_Model):
    require_auth: RequireAuth | None = None
    #: A customer's reply within this many days of resolution reopens the ticket; later
    #: it opens a new ticket linked to the old one.
    reopen_within_days: int = Field(default=14, ge=0, le=3650)
    #: Notify agents of new tickets and customer replies.
    notify: bool = True


def people_reference_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Cross-field problems of the people sections, as (field path, message) pairs."""
    from mailbot.rules.schema import did_you_mean  # here: an import cycle

    problems: list[tuple[Loc, str]] = []
    agents = data.get("agents") if isinstance(data.get("agents"), Mapping) else {}
    teams = data.get("teams") if isinstance(data.get("teams"), Mapping) else {}
    accounts = data.get("accounts") if isinstance(data.get("accounts"), Mapping) else {}
    plans = data.get("plans") if isinstance(data.get("plans"), Mapping) else {}
    assert isinstance(agents, Mapping) and isinstance(teams, Mapping)
    assert isinstance(accounts, Mapping) and isinstance(plans, Mapping)
    agent_ids = [str(k) for k in agents]
    team_ids = [str(k) for k in teams]

    def check(loc: Loc, value: object, options: list[str], what: str) -> None:
        if isinstance(value, str) and value not in options:
            hint = did_you_mean(value, options)
            known = f" (known: {', '.join(options)})" if options and not hint else ""
            problems.append((loc, f"unknown {what} {value!r}{hint}{known}"))

    for section, ids in (("agents", agent_ids), ("teams", team_ids)):
        for name in ids:
            if not _ID.match(name):
                problems.append(
                    (
                        (section, name),
                        f"{name!r}: ids are lower-case letters, digits, '.', '_' or '-' "
                        f"(e.g. {name.lower()!r}), as #assign and reports use them",
                    )
                )
    for name in set(agent_ids) & set(team_ids):
        problems.append((("teams", name), f"{name!r} is both an agent and a team"))
    seen: dict[str, str] = {}
    for agent_id, agent in agents.items():
        if not isinstance(agent, Mapping):
            continue
        check(("agents", agent_id, "team"), agent.get("team"), team_ids, "team")
        addresses = agent.get("addresses")
        if isinstance(addresses, (list, tuple)):
            for i, address in enumerate(addresses):
                if not isinstance(address, str):
                    continue
                key = address.strip().lower()
                if key in seen and seen[key] != agent_id:
                    problems.append(
                        (
                            ("agents", agent_id, "addresses", i),
                            f"{key!r} is already an address of agent {seen[key]!r}",
                        )
                    )
                seen.setdefault(key, str(agent_id))
    identity = data.get("identity")
    if isinstance(identity, Mapping):
        ours = {
            str(a).strip().lower()
            for a in (identity.get("address"), *(identity.get("extra_addresses") or ()))
            if isinstance(a, str)
        }
        for key, agent_id in seen.items():
            if key in ours:
                problems.append(
                    (
                        ("agents", agent_id, "addresses"),
                        f"{key!r} is one of identity's own addresses, not an agent's",
                    )
                )
    targets = [*team_ids, *agent_ids]
    assignment = data.get("assignment")
    if isinstance(assignment, Mapping):
        check(("assignment", "default"), assignment.get("default"), targets, "team or agent")
        by_plan = assignment.get("by_plan")
        if isinstance(by_plan, Mapping):
            for plan, target in by_plan.items():
                check(("assignment", "by_plan", plan), str(plan), [str(p) for p in plans], "plan")
                check(("assignment", "by_plan", plan), target, targets, "team or agent")
        by_category = assignment.get("by_category")
        if isinstance(by_category, Mapping):
            for category, target in by_category.items():
                check(("assignment", "by_category", category), target, targets, "team or agent")
    for account_id, account in accounts.items():
        if not isinstance(account_id, str) or not _ID.match(account_id):
            problems.append(
                (("accounts", str(account_id)), "account ids are lower-case, e.g. 'nordic-decor'")
            )
        if isinstance(account, Mapping):
            check(
                ("accounts", account_id, "account_manager"),
                account.get("account_manager"),
                agent_ids,
                "agent",
            )
    customers = data.get("customers")
    if isinstance(customers, (list, tuple)):
        for i, customer in enumerate(customers):
            if isinstance(customer, Mapping):
                check(
                    ("customers", i, "account"),
                    customer.get("account"),
                    [str(a) for a in accounts],
                    "account",
                )
    return problems
