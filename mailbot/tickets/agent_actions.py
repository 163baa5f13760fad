"""What an agent's mail does to a ticket: commands executed, the answer relayed, notes shared.

Called by intake inside the message's transaction, after :func:`mailbot.agents.verdict.
agent_verdict` decided the mail is internal. All or nothing: a command block with any error
executes nothing and relays nothing; the agent gets the errors and the valid commands back.

Order of effects for an accepted reply: ``registered`` is met (the first agent action),
reassignment, severity, urgency and category, logged time (with a low-balance warning when
it crosses the bank's threshold), then the relay to the customer (meets ``first_response``
and ``action_started``), then ``#wait`` / ``#close`` / ``#reopen``. ``#note`` and ``#spam``
relay nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.agents.assign import notice_recipients
from mailbot.agents.commands import CommandBlock, CommandKind, help_text, parse_commands
from mailbot.agents.tokens import TokenSigner
from mailbot.agents.verdict import AgentVerdict, MailRole
from mailbot.billing.durations import format_minutes
from mailbot.domain import Address, TicketStatus
from mailbot.outbound.agent_mail import (
    AGENT_ERROR,
    RELAY,
    TIMEBANK_LOW,
    compose_agent_error,
    compose_low_balance,
    compose_relay,
)
from mailbot.outbound.attachments import FileAttachment, relayable_attachments
from mailbot.policy import Policy
from mailbot.sla.clocks import ClockStatus, EventKind
from mailbot.tickets.assignment import assign_to
from mailbot.tickets.clocks import record_event, set_severity
from mailbot.tickets.models import Message, Ticket, TicketClock
from mailbot.tickets.notices import (
    agent_language,
    customer_thread,
    notify_agents,
    ticket_summary,
)
from mailbot.tickets.service import queue_outgoing
from mailbot.tickets.timebank import LoggedTime, log_time

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentResult:
    ticket_id: int | None
    relayed: bool
    executed: tuple[str, ...]
    reason: str


async def _meet(
    conn: BaseDBAsyncClient, policy: Policy, ticket_id: int, clock: str, now: datetime
) -> bool:
    """Meet ``clock`` if the ticket has it and it still runs (or is paused)."""
    row = await TicketClock.filter(ticket_id=ticket_id, name=clock).using_db(conn).first()
    if row is None or row.status not in (ClockStatus.RUNNING, ClockStatus.PAUSED):
        return False
    await record_event(conn, policy.rules, ticket_id, EventKind.MET, now, clock=clock)
    return True


async def explain(
    conn: BaseDBAsyncClient,
    policy: Policy,
    *,
    ticket_id: int | None,
    to: str,
    subject: str,
    reason: str,
    errors: tuple[str, ...],
    parent: str | None,
    now: datetime,
) -> None:
    """Tell an agent why their mail was not relayed (only ever to an agent's address)."""
    out = compose_agent_error(
        policy,
        ticket_id=ticket_id,
        to=to,
        language=agent_language(policy, to),
        subject=subject,
        reason=reason,
        errors=errors,
        commands_help=help_text(),
        parent=parent,
        now=now,
    )
    await queue_outgoing(
        conn, ticket_id=ticket_id, kind=AGENT_ERROR, out=out, now=now, role="internal"
    )


async def handle_internal(
    conn: BaseDBAsyncClient,
    policy: Policy,
    signer: TokenSigner,
    *,
    verdict: AgentVerdict,
    sender: str,
    subject: str,
    text: str,
    message_id: str | None,
    message_row: int,
    now: datetime,
    raw: bytes = b"",
) -> AgentResult:
    """Act on internal mail (``verdict.internal``) that was stored as ``message_row``;
    ``raw`` is the mail itself, for the files an agent attached to an answer."""
    ticket = None
    if verdict.ticket_id is not None:
        ticket = await Ticket.filter(id=verdict.ticket_id).using_db(conn).first()
    if verdict.role is MailRole.AGENT_AUTO:
        log.info("message-id %s: %s; kept internal", message_id, verdict.reason)
        return AgentResult(verdict.ticket_id, False, (), verdict.reason)
    if verdict.role is MailRole.REJECTED or ticket is None:
        reason = (
            verdict.reason
            if ticket is not None or verdict.role is MailRole.REJECTED
            else (f"ticket {verdict.ticket_id} does not exist")
        )
        log.warning(
            "message-id %s from %s ticket #%s not relayed: %s",
            message_id,
            sender,
            verdict.ticket_id,
            reason,
        )
        if verdict.agent is not None and (verdict.tell_agent or ticket is None):
            await explain(
                conn,
                policy,
                ticket_id=ticket.id if ticket else None,
                to=sender,
                subject=subject,
                reason=reason,
                errors=(),
                parent=message_id,
                now=now,
            )
        elif verdict.agent is None and ticket is not None:
            # Somebody who is not an agent answered a notification (it was forwarded?):
            # nothing is relayed or executed, but the agents see what was written.
            await notify_agents(
                conn,
                policy,
                signer,
                ticket,
                event="unauthorised",
                author=sender,
                text=text,
                now=now,
            )
        return AgentResult(verdict.ticket_id, False, (), reason)
    assert verdict.agent is not None
    return await _agent_reply(
        conn,
        policy,
        signer,
        ticket=ticket,
        agent=verdict.agent,
        sender=sender,
        subject=subject,
        text=text,
        message_id=message_id,
        message_row=message_row,
        now=now,
        raw=raw,
    )


async def _agent_reply(
    conn: BaseDBAsyncClient,
    policy: Policy,
    signer: TokenSigner,
    *,
    ticket: Ticket,
    agent: str,
    sender: str,
    subject: str,
    text: str,
    message_id: str | None,
    message_row: int,
    now: datetime,
    raw: bytes,
) -> AgentResult:
    rules = policy.rules
    block = parse_commands(
        text,
        agents=tuple(rules.agents),
        teams=tuple(rules.teams),
        categories=tuple(rules.billing.categories),
    )
    if block.errors:
        errors = tuple(f"line {e.line}: {e.text.strip()}: {e.message}" for e in block.errors)
        log.warning(
            "message-id %s ticket #%d: agent %s sent invalid commands: %s",
            message_id,
            ticket.id,
            agent,
            "; ".join(errors),
        )
        await explain(
            conn,
            policy,
            ticket_id=ticket.id,
            to=sender,
            subject=subject,
            reason="the commands could not be understood",
            errors=errors,
            parent=message_id,
            now=now,
        )
        return AgentResult(ticket.id, False, (), "invalid commands")
    executed = await _execute(conn, policy, signer, ticket, agent, block, message_row, now)
    relayed = False
    body = block.body.strip()
    if body and not block.has(CommandKind.NOTE) and not block.has(CommandKind.SPAM):
        files, skipped = relayable_attachments(raw) if raw else ((), ())
        for reason in skipped:
            log.warning(
                "message-id %s ticket #%d: attachment not relayed: %s",
                message_id,
                ticket.id,
                reason,
            )
        await _relay(conn, policy, ticket, agent, body, now, files)
        relayed = True
        executed.append(f"relay with {len(files)} file(s)" if files else "relay")
    elif block.has(CommandKind.NOTE) and body:
        author = rules.agents[agent].name
        await notify_agents(
            conn,
            policy,
            signer,
            ticket,
            event="note",
            author=author,
            text=body,
            now=now,
            exclude=frozenset({agent}),
            recipients=await _ticket_agents(conn, policy, ticket, exclude=agent),
        )
        executed.append("note")
    executed += await _status_changes(conn, policy, ticket, block, now)
    log.info(
        "message-id %s ticket #%d: agent %s: %s",
        message_id,
        ticket.id,
        agent,
        ", ".join(executed) or "nothing to do",
    )
    return AgentResult(ticket.id, relayed, tuple(executed), "agent reply")


async def _ticket_agents(
    conn: BaseDBAsyncClient, policy: Policy, ticket: Ticket, *, exclude: str
) -> tuple[str, ...]:
    """The other agents of a ticket: its assignee (or team) and every agent who wrote on it."""
    rules = policy.rules
    writers = await (
        Message.filter(ticket_id=ticket.id, role="agent", direction="in")
        .using_db(conn)
        .distinct()
        .values_list("from_addr", flat=True)
    )
    ids = {rules.agent_for(str(a)) for a in writers} - {None, exclude}
    addresses = [rules.agents[i].addresses[0] for i in sorted(i for i in ids if i)]
    addresses += notice_recipients(
        rules, agent=ticket.assignee, team=ticket.team, exclude=frozenset({exclude})
    )
    own = set(rules.agents[exclude].addresses)
    return tuple(a for a in dict.fromkeys(addresses) if a not in own)


async def _execute(
    conn: BaseDBAsyncClient,
    policy: Policy,
    signer: TokenSigner,
    ticket: Ticket,
    agent: str,
    block: CommandBlock,
    message_row: int,
    now: datetime,
) -> list[str]:
    rules = policy.rules
    done: list[str] = []
    if await _meet(conn, policy, ticket.id, "registered", now):
        done.append("registered met")
    assign = block.first(CommandKind.ASSIGN)
    if assign is not None and assign.arg is not None:
        target = await assign_to(conn, rules, ticket, assign.arg)
        done.append(f"assigned to {target.agent or target.team}")
        if target.agent != agent and not block.has(CommandKind.NOTE):  # a note tells them
            await notify_agents(
                conn,
                policy,
                signer,
                ticket,
                event="assigned",
                author=rules.agents[agent].name,
                text=block.body,
                now=now,
            )
    severity = block.first(CommandKind.SEVERITY)
    urgent = ticket.urgent
    if block.has(CommandKind.URGENT):
        urgent = True
    if block.has(CommandKind.NORMAL):
        urgent = False
    new_severity = severity.arg if severity is not None and severity.arg else ticket.severity
    if new_severity != ticket.severity or urgent != ticket.urgent:
        await set_severity(conn, rules, ticket.id, severity=new_severity, urgent=urgent, at=now)
        ticket.severity, ticket.urgent = new_severity, urgent
        done.append(f"severity {new_severity}{' urgent' if urgent else ''}")
    category = block.first(CommandKind.CATEGORY)
    if category is not None and category.arg:
        ticket.category = category.arg
        await Ticket.filter(id=ticket.id).using_db(conn).update(category=category.arg)
        done.append(f"category {category.arg}")
    for command in block.commands:
        if command.kind is CommandKind.TIME and command.minutes:
            logged = await log_time(
                conn,
                rules,
                ticket=ticket,
                agent=agent,
                minutes=command.minutes,
                description=command.description,
                at=now,
                message_row=message_row,
            )
            done.append(f"time {command.minutes} min billed {logged.charge.billed}")
            if await _meet(conn, policy, ticket.id, "action_started", now):
                done.append("action started met")
            if logged.crossed_warning:
                await _warn_low_balance(conn, policy, ticket, logged, now)
    return done


async def _warn_low_balance(
    conn: BaseDBAsyncClient, policy: Policy, ticket: Ticket, logged: LoggedTime, now: datetime
) -> None:
    rules = policy.rules
    account_id = ticket.account or ticket.customer
    account = rules.accounts.get(account_id)
    recipients: list[tuple[str, str]] = []  # (address, language)
    manager = account.account_manager if account is not None else None
    if manager is not None and manager in rules.agents:
        address = rules.agents[manager].addresses[0]
        recipients.append((address, agent_language(policy, address)))
    elif ticket.assignee in rules.agents:
        address = rules.agents[str(ticket.assignee)].addresses[0]
        recipients.append((address, agent_language(policy, address)))
    if logged.bank is not None and logged.bank.warn_customer:
        recipients.append((ticket.customer, ticket.language))
        recipients += [(a, ticket.language) for a in (account.billing_contacts if account else ())]
    assert logged.balance_after is not None and logged.bank is not None
    assert logged.bank.warn_below is not None
    for address, language in dict.fromkeys(recipients):
        summary = await ticket_summary(conn, policy, ticket, now, language)
        out = compose_low_balance(
            policy,
            ticket=summary,
            account_name=account.name if account is not None else account_id,
            to=address,
            language=language,
            balance_text=format_minutes(logged.balance_after),
            threshold_text=format_minutes(logged.bank.warn_below),
            now=now,
        )
        await queue_outgoing(
            conn, ticket_id=ticket.id, kind=TIMEBANK_LOW, out=out, now=now, role="internal"
        )
    log.info(
        "ticket #%d: account %s balance %s min is below %s min: warned %s",
        ticket.id,
        account_id,
        logged.balance_after,
        logged.bank.warn_below,
        ", ".join(a for a, _ in recipients) or "nobody (no account manager)",
    )


async def _relay(
    conn: BaseDBAsyncClient,
    policy: Policy,
    ticket: Ticket,
    agent: str,
    body: str,
    now: datetime,
    files: tuple[FileAttachment, ...],
) -> None:
    summary = await ticket_summary(conn, policy, ticket, now, ticket.language)
    thread = await customer_thread(conn, ticket.id)
    out = compose_relay(
        policy,
        ticket=summary,
        agent_name=policy.rules.agents[agent].name,
        text=body,
        to=Address(ticket.customer, ticket.customer_name),
        thread=thread,
        now=now,
        files=files,
    )
    await queue_outgoing(conn, ticket_id=ticket.id, kind=RELAY, out=out, now=now, role="agent")
    await _meet(conn, policy, ticket.id, "first_response", now)
    await _meet(conn, policy, ticket.id, "action_started", now)
    if ticket.status is TicketStatus.NEW:
        ticket.status = TicketStatus.OPEN
        await (
            Ticket.filter(id=ticket.id)
            .using_db(conn)
            .update(status=TicketStatus.OPEN, updated_at=now)
        )


async def _status_changes(
    conn: BaseDBAsyncClient, policy: Policy, ticket: Ticket, block: CommandBlock, now: datetime
) -> list[str]:
    rules = policy.rules
    done: list[str] = []
    if block.has(CommandKind.SPAM):
        await (
            Ticket.filter(id=ticket.id)
            .using_db(conn)
            .update(status=TicketStatus.CLOSED, spam=True, resolved_at=now, updated_at=now)
        )
        await record_event(conn, rules, ticket.id, EventKind.CLOSED, now)
        done.append("closed as spam")
        return done
    if block.has(CommandKind.REOPEN) and ticket.status in (
        TicketStatus.RESOLVED,
        TicketStatus.CLOSED,
    ):
        await (
            Ticket.filter(id=ticket.id)
            .using_db(conn)
            .update(status=TicketStatus.OPEN, resolved_at=None, spam=False, updated_at=now)
        )
        done.append("reopened")
    if block.has(CommandKind.WAIT):
        await (
            Ticket.filter(id=ticket.id)
            .using_db(conn)
            .update(status=TicketStatus.WAITING, updated_at=now)
        )
        await record_event(conn, rules, ticket.id, EventKind.PAUSED, now)
        done.append("waiting on the customer")
    if block.has(CommandKind.CLOSE):
        await (
            Ticket.filter(id=ticket.id)
            .using_db(conn)
            .update(status=TicketStatus.RESOLVED, resolved_at=now, updated_at=now)
        )
        await _meet(conn, policy, ticket.id, "resolution", now)
        await record_event(conn, rules, ticket.id, EventKind.CLOSED, now)
        done.append("resolved")
    return done
