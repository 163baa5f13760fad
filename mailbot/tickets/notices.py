"""Queue mail to agents about a ticket, and find the conversations new mail must thread on.

Two conversations exist per ticket: the **customer's** (their messages, our automatic
answers, the agents' relayed answers) and the **agents'** (notifications, notes). A relay
answers the customer's latest message; a notification answers the previous notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.agents.assign import notice_recipients
from mailbot.agents.commands import help_text
from mailbot.agents.tokens import TokenSigner
from mailbot.billing.durations import format_minutes
from mailbot.outbound.agent_mail import (
    NOTIFY,
    Deadline,
    Thread,
    TicketSummary,
    compose_notification,
)
from mailbot.policy import Policy
from mailbot.reminders import CLOCK_NAMES
from mailbot.rules.deadline import format_deadline
from mailbot.sla.clocks import ClockStatus
from mailbot.sla.plan import SlaStatus
from mailbot.tickets.models import Direction, Message, Ticket, TicketClock
from mailbot.tickets.raw_sql import dialect_sql, python_value, table
from mailbot.tickets.service import queue_outgoing
from mailbot.tickets.timebank import account_balance

#: How many earlier Message-IDs a new mail's References keeps (RFC 5322 allows trimming).
_CHAIN = 20
_CUSTOMER_ROLES = ("customer", "system", "agent")


async def ticket_summary(
    conn: BaseDBAsyncClient,
    policy: Policy,
    ticket: Ticket,
    now: datetime,
    language: str,
    clocks: Sequence[tuple[str, ClockStatus, datetime | None]] | None = None,
) -> TicketSummary:
    """The facts agents are shown; ``clocks`` (name, status, due) when the caller has them."""
    rules = policy.rules
    names = CLOCK_NAMES.get(language, CLOCK_NAMES["en"])
    if clocks is None:
        rows = await conn.execute_query_dict(
            dialect_sql(
                conn,
                f"SELECT name, status, due_at FROM {table(TicketClock)} WHERE ticket_id = ?"
                " ORDER BY id",
            ),
            [ticket.id],
        )
        clocks = [
            (
                str(row["name"]),
                ClockStatus(row["status"]),
                python_value(TicketClock, "due_at", row["due_at"]),
            )
            for row in rows
        ]
    deadlines = tuple(
        Deadline(
            clock=name,
            name=names.get(name, name),
            due_text=format_deadline(due, rules.tz, language) if due else "—",
            status=status.value,
        )
        for name, status, due in clocks
        if status in (ClockStatus.RUNNING, ClockStatus.PAUSED, ClockStatus.BREACHED)
    )
    balance_text = ""
    account = ticket.account or ticket.customer
    balance = await account_balance(conn, rules, account, ticket.plan, now)
    if balance is not None:
        balance_text = format_minutes(balance)
    agent = rules.agents.get(ticket.assignee) if ticket.assignee else None
    plan = rules.plans.get(ticket.plan)
    return TicketSummary(
        id=ticket.id,
        subject=ticket.subject,
        customer=ticket.customer,
        customer_name=ticket.customer_name,
        plan=ticket.plan,
        plan_name=plan.name if plan is not None else ticket.plan,
        severity=ticket.severity,
        urgent=ticket.urgent,
        status=ticket.status.value,
        language=ticket.language,
        category=ticket.category,
        assignee=ticket.assignee,
        assignee_name=agent.name if agent is not None else "",
        team=ticket.team,
        account=account,
        deadlines=deadlines,
        balance_text=balance_text,
    )


async def _thread(conn: BaseDBAsyncClient, ticket_id: int, where: str, *values: str) -> Thread:
    """The ticket's latest ``_CHAIN`` Message-IDs of the messages that match ``where`` (a
    condition with ``?`` for ``values``): the last is the parent, the rest the references.
    Hand-written: it runs for every customer reply (the query builder cost ~0.5 ms)."""
    rows = await conn.execute_query_dict(
        dialect_sql(
            conn,
            f"SELECT message_id FROM {table(Message)} WHERE ticket_id = ? AND"
            f" message_id IS NOT NULL AND {where} ORDER BY id DESC LIMIT {_CHAIN}",
        ),
        [ticket_id, *values],
    )
    ids = [str(row["message_id"]) for row in rows if row["message_id"]]
    if not ids:
        return Thread()
    ids.reverse()
    return Thread(parent=ids[-1], references=tuple(ids[:-1]))


async def agents_thread(conn: BaseDBAsyncClient, ticket_id: int) -> Thread:
    """The ticket's notifications so far: the next one answers the latest."""
    return await _thread(conn, ticket_id, "source = ?", f"outbox:{NOTIFY}")


async def customer_thread(conn: BaseDBAsyncClient, ticket_id: int) -> Thread:
    """The customer's conversation: a relay answers the customer's latest message."""
    latest_in = (
        await Message.filter(ticket_id=ticket_id, direction=Direction.IN, role="customer")
        .using_db(conn)
        .order_by("-id")
        .only("id")
        .first()
    )
    marks = ", ".join("?" for _ in _CUSTOMER_ROLES)
    chain = await _thread(conn, ticket_id, f"role IN ({marks})", *_CUSTOMER_ROLES)
    if latest_in is None:
        return chain
    row = await Message.get(id=latest_in.id, using_db=conn)
    if row.message_id is None:
        return chain
    refs = tuple(r for r in (*chain.references, chain.parent) if r and r != row.message_id)
    return Thread(parent=row.message_id, references=refs[-(_CHAIN - 1) :])


def agent_language(policy: Policy, address: str) -> str:
    agent_id = policy.rules.agent_for(address)
    agent = policy.rules.agents.get(agent_id) if agent_id else None
    if agent is not None and agent.language:
        return agent.language
    return policy.rules.default_language


async def notify_agents(
    conn: BaseDBAsyncClient,
    policy: Policy,
    signer: TokenSigner,
    ticket: Ticket,
    *,
    event: str,
    author: str,
    text: str,
    now: datetime,
    exclude: frozenset[str] = frozenset(),
    recipients: tuple[str, ...] | None = None,
    new: SlaStatus | None = None,
) -> int:
    """Queue one notification per recipient (default: the ticket's agent or team).

    ``new``: the ticket was just opened with these clocks, so there is no earlier
    notification to answer and its clocks need no reading back."""
    rules = policy.rules
    if not rules.agent_mail.notify and recipients is None:
        return 0
    addresses = recipients
    if addresses is None:
        addresses = notice_recipients(
            rules, agent=ticket.assignee, team=ticket.team, exclude=exclude
        )
    excluded = {rules.agents[a].addresses[0] for a in exclude if a in rules.agents}
    addresses = tuple(a for a in dict.fromkeys(addresses) if a not in excluded)
    if not addresses:
        return 0
    thread = Thread() if new is not None else await agents_thread(conn, ticket.id)
    clocks = [(c.name, c.status, c.due_at) for c in new.clocks] if new is not None else None
    summaries: dict[str, TicketSummary] = {}
    queued = 0
    for address in addresses:
        language = agent_language(policy, address)
        summary = summaries.get(language)
        if summary is None:
            summary = await ticket_summary(conn, policy, ticket, now, language, clocks)
            summaries[language] = summary
        out = compose_notification(
            policy,
            signer,
            ticket=summary,
            event=event,
            author=author,
            text=text,
            to=address,
            language=language,
            thread=thread,
            now=now,
            commands_help=help_text(),
        )
        await queue_outgoing(
            conn, ticket_id=ticket.id, kind=NOTIFY, out=out, now=now, role="internal"
        )
        queued += 1
    return queued
