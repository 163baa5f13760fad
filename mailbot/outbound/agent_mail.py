"""Mail between mailbot and the agents: notifications, relayed answers, explanations. Pure.

* **Notifications** (template ``notify``) go to the ticket's agent or team. Every one has the
  same subject (the ticket's, with its token) and answers the previous notification of the
  ticket, so an agent's client shows one conversation per ticket. Each carries the signed
  token three ways: ``Reply-To: support+mb-<token>@...``, its Message-ID, and a footer line.
* **Relays** (template ``relay``, in the ticket's language) carry an agent's answer to the
  customer from the support address, signed with the agent's name, threaded on the
  customer's conversation. They are a person's answer: no ``Auto-Submitted`` header.
* **Explanations** (template ``agent_error``) tell an agent why their mail was not relayed:
  the command errors and the valid commands, or the failed check.
* **Low balance warnings** (template ``timebank_low``) go to the account manager and, if
  configured, to the customer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailbot.agents.tokens import (
    TokenSigner,
    footer_line,
    notification_message_id,
    reply_address,
)
from mailbot.domain import Address
from mailbot.ingest.correlate import format_token, ticket_ref
from mailbot.outbound.attachments import FileAttachment
from mailbot.outbound.compose import (
    Outgoing,
    compose,
    new_message_id,
    reference_chain,
    subject_with_token,
)
from mailbot.policy import Policy

NOTIFY = "notify"
RELAY = "relay"
AGENT_ERROR = "agent_error"
TIMEBANK_LOW = "timebank_low"


@dataclass(frozen=True, slots=True)
class Deadline:
    clock: str
    name: str
    due_text: str
    status: str


@dataclass(frozen=True, slots=True)
class TicketSummary:
    """What agents are shown about a ticket (read from the database by the caller)."""

    id: int
    subject: str
    customer: str
    customer_name: str
    plan: str
    plan_name: str
    severity: str
    urgent: bool
    status: str
    language: str
    category: str = ""
    assignee: str | None = None
    assignee_name: str = ""
    team: str | None = None
    account: str | None = None
    deadlines: tuple[Deadline, ...] = ()
    balance_text: str = ""


@dataclass(frozen=True, slots=True)
class Thread:
    """Message-IDs a new mail answers: the latest one and the chain before it."""

    parent: str | None = None
    references: tuple[str, ...] = field(default=())


def _ref(policy: Policy, ticket_id: int) -> str:
    return ticket_ref(policy.rules.identity.ticket_prefix, ticket_id)


def _token(policy: Policy, ticket_id: int) -> str:
    return format_token(policy.rules.identity.ticket_prefix, ticket_id)


def _summary_context(policy: Policy, ticket: TicketSummary) -> dict[str, object]:
    return {
        "ticket_ref": _ref(policy, ticket.id),
        "subject": ticket.subject,
        "customer": ticket.customer,
        "customer_name": ticket.customer_name,
        "plan_name": ticket.plan_name,
        "severity": ticket.severity,
        "urgent": ticket.urgent,
        "status": ticket.status,
        "category": ticket.category,
        "assignee": ticket.assignee or "",
        "assignee_name": ticket.assignee_name,
        "team": ticket.team or "",
        "account": ticket.account or "",
        "deadlines": [
            {"clock": d.clock, "name": d.name, "due_text": d.due_text, "status": d.status}
            for d in ticket.deadlines
        ],
        "balance_text": ticket.balance_text,
        "support_name": policy.rules.identity.name,
        "support_address": policy.rules.identity.address,
    }


def compose_notification(
    policy: Policy,
    signer: TokenSigner,
    *,
    ticket: TicketSummary,
    event: str,
    author: str,
    text: str,
    to: str,
    language: str,
    thread: Thread,
    now: datetime,
    commands_help: str,
) -> Outgoing:
    """One notification to one agent address (``event``: new, reply, reopened, note, ...)."""
    token = signer.sign(ticket.id)
    context = {
        **_summary_context(policy, ticket),
        "event": event,
        "author": author,
        "text": text,
        "footer": footer_line(token),
        "commands_help": commands_help,
    }
    rendered = policy.renderer.render(NOTIFY, language, context)
    support = policy.support
    shown = ticket.customer_name or ticket.customer
    sender = Address(support.email, f"{shown} via {support.name}" if shown else support.name)
    return compose(
        sender=sender,
        to=Address(to),
        subject=subject_with_token(rendered.subject, _token(policy, ticket.id)),
        text=rendered.text,
        html=rendered.html,
        message_id=notification_message_id(policy.domain, ticket.id, token),
        date=now,
        in_reply_to=thread.parent,
        references=reference_chain(thread.parent, thread.references),
        marker=policy.marker,
        ticket_ref=_ref(policy, ticket.id),
        language=language,
        auto_submitted="auto-generated",
        reply_to=Address(reply_address(policy.rules.identity.address, ticket.id, token)),
    )


def compose_relay(
    policy: Policy,
    *,
    ticket: TicketSummary,
    agent_name: str,
    text: str,
    to: Address,
    thread: Thread,
    now: datetime,
    files: tuple[FileAttachment, ...] = (),
) -> Outgoing:
    """An agent's answer (and the files they attached), to the customer, from the support
    address."""
    context = {
        **_summary_context(policy, ticket),
        "text": text,
        "agent_name": agent_name,
        "customer_name": to.name or ticket.customer_name,
    }
    rendered = policy.renderer.render(RELAY, ticket.language, context)
    return compose(
        sender=policy.support,
        to=to,
        subject=subject_with_token(rendered.subject, _token(policy, ticket.id)),
        text=rendered.text,
        html=rendered.html,
        message_id=new_message_id(policy.domain, ticket.id),
        date=now,
        in_reply_to=thread.parent,
        references=reference_chain(thread.parent, thread.references),
        marker=policy.marker,
        ticket_ref=_ref(policy, ticket.id),
        language=ticket.language,
        auto_submitted=None,
        files=files,
    )


def compose_agent_error(
    policy: Policy,
    *,
    ticket_id: int | None,
    to: str,
    language: str,
    subject: str,
    reason: str,
    errors: Sequence[str],
    commands_help: str,
    parent: str | None,
    now: datetime,
) -> Outgoing:
    """Why an agent's mail was not relayed, answered to that agent only."""
    context = {
        "ticket_ref": _ref(policy, ticket_id) if ticket_id is not None else "",
        "subject": subject,
        "reason": reason,
        "errors": list(errors),
        "commands_help": commands_help,
        "support_name": policy.rules.identity.name,
    }
    rendered = policy.renderer.render(AGENT_ERROR, language, context)
    title = rendered.subject
    if ticket_id is not None:
        title = subject_with_token(title, _token(policy, ticket_id))
    return compose(
        sender=policy.support,
        to=Address(to),
        subject=title,
        text=rendered.text,
        html=rendered.html,
        message_id=new_message_id(policy.domain, ticket_id),
        date=now,
        in_reply_to=parent,
        references=reference_chain(parent, ()),
        marker=policy.marker,
        ticket_ref=_ref(policy, ticket_id) if ticket_id is not None else "",
        language=language,
    )


def compose_low_balance(
    policy: Policy,
    *,
    ticket: TicketSummary,
    account_name: str,
    to: str,
    language: str,
    balance_text: str,
    threshold_text: str,
    now: datetime,
) -> Outgoing:
    context = {
        **_summary_context(policy, ticket),
        "account_name": account_name,
        "balance_text": balance_text,
        "threshold_text": threshold_text,
    }
    rendered = policy.renderer.render(TIMEBANK_LOW, language, context)
    return compose(
        sender=policy.support,
        to=Address(to),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=new_message_id(policy.domain, ticket.id),
        date=now,
        in_reply_to=None,
        references=(),
        marker=policy.marker,
        ticket_ref=_ref(policy, ticket.id),
        language=language,
        auto_submitted="auto-generated",
    )
