"""Assigning tickets: the rules' choice (``mailbot.agents.assign``) plus round-robin state.

The round-robin cursor of a team is a row (team -> the agent who got its last ticket),
advanced by a conditional UPDATE, so two daemons on one database never hand the same turn
out twice: the loser re-reads the cursor and takes the next turn.
"""

from __future__ import annotations

import logging

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from mailbot.agents.assign import Target, assignment_target, next_in_turn, team_members
from mailbot.rules.schema import Rules
from mailbot.tickets.models import AssignmentCursor, Ticket
from mailbot.tickets.raw_sql import dialect_sql, table

log = logging.getLogger(__name__)

_ATTEMPTS = 8


async def _advance(conn: BaseDBAsyncClient, team: str, members: tuple[str, ...]) -> str | None:
    """Move the team's cursor to the next member in one statement (atomic, so two daemons
    never hand out the same turn); the member chosen, or None when the team has no cursor.
    The CASE is :func:`next_in_turn` spelled in SQL: the member after the last one, the
    first when the last one is gone."""
    order = tuple(dict.fromkeys(members))  # the first place of a member counts, as index()
    cases = " ".join("WHEN ? THEN ?" for _ in order)
    sql = (
        f"UPDATE {table(AssignmentCursor)} SET last_agent = CASE last_agent {cases} ELSE ? END "
        f"WHERE team = ? RETURNING last_agent"
    )
    values: list[object] = []
    for member in order:
        values += [member, next_in_turn(members, member)]
    values += [members[0], team]
    rows = await conn.execute_query_dict(dialect_sql(conn, sql), values)
    return str(rows[0]["last_agent"]) if rows else None


async def _take_turn(conn: BaseDBAsyncClient, team: str, members: tuple[str, ...]) -> str:
    for _ in range(_ATTEMPTS):
        chosen = await _advance(conn, team, members)
        if chosen is not None:
            return chosen
        chosen = members[0]
        try:
            async with in_transaction() as savepoint:  # nested: a SAVEPOINT
                await AssignmentCursor.create(using_db=savepoint, team=team, last_agent=chosen)
        except IntegrityError:
            continue  # another daemon created it: advance it instead
        return chosen
    log.warning("team %s: round-robin cursor kept changing; giving the turn to %s", team, members)
    return members[0]


async def resolve_target(conn: BaseDBAsyncClient, rules: Rules, target: Target) -> Target:
    """A team target becomes one of its agents in turn when round-robin is on."""
    if target.agent is not None or target.team is None or not rules.assignment.round_robin:
        return target
    members = team_members(rules, target.team)
    if not members:
        return target
    agent = await _take_turn(conn, target.team, members)
    return Target(agent, target.team, f"{target.reason}, round-robin: {agent}")


async def assign_new_ticket(conn: BaseDBAsyncClient, rules: Rules, ticket: Ticket) -> Target:
    """Assign a ticket that was just opened, and store the choice on its row."""
    target = assignment_target(
        rules,
        plan=ticket.plan,
        category=ticket.category,
        account=ticket.account,
    )
    target = await resolve_target(conn, rules, target)
    await _store(conn, ticket, target)
    return target


async def assign_to(conn: BaseDBAsyncClient, rules: Rules, ticket: Ticket, name: str) -> Target:
    """``#assign NAME``: an agent, or a team (then round-robin picks one of its agents)."""
    if name in rules.agents:
        target = Target(name, rules.agents[name].team, f"#assign {name}")
    else:
        target = await resolve_target(conn, rules, Target(None, name, f"#assign {name}"))
    await _store(conn, ticket, target)
    return target


async def _store(conn: BaseDBAsyncClient, ticket: Ticket, target: Target) -> None:
    ticket.assignee = target.agent
    ticket.team = target.team
    await conn.execute_query(
        dialect_sql(conn, f"UPDATE {table(Ticket)} SET assignee = ?, team = ? WHERE id = ?"),
        [target.agent, target.team, ticket.id],
    )
    log.info("ticket #%d: assigned (%s)", ticket.id, target.reason)
