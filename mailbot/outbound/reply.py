"""Turn a Decision's Reply into a composed mail: render the template, then compose headers."""

from __future__ import annotations

from datetime import datetime

from mailbot.domain import Decision, Reply
from mailbot.ingest.correlate import format_token, ticket_ref
from mailbot.outbound.compose import (
    Outgoing,
    compose,
    new_message_id,
    reference_chain,
    subject_with_token,
)
from mailbot.outbound.render import Rendered
from mailbot.policy import Policy
from mailbot.rules.customers import resolve_customer
from mailbot.rules.deadline import format_deadline, promise_text
from mailbot.rules.schema import Rules

# Shown in place of a ticket number when nothing is stored (mailbot simulate).
UNSAVED_REF = "NEW"


def _rules_name(rules: Rules, customer: str) -> str:
    """The customer's ``name`` in rules.yaml: the greeting's name when the From header gives
    none (a bare address)."""
    match = resolve_customer(rules, customer) if customer else None
    return (match.customer_name or "") if match is not None else ""


def reply_context(
    policy: Policy, decision: Decision, reply: Reply, ticket_id: int | None, subject: str
) -> dict[str, object]:
    rules = policy.rules
    plan = rules.plans[decision.plan]
    number = str(ticket_id) if ticket_id is not None else UNSAVED_REF
    deadline_text = ""
    if decision.deadline is not None:
        deadline_text = format_deadline(decision.deadline, rules.tz, reply.language)
    return {
        "ticket_ref": ticket_ref(rules.identity.ticket_prefix, number),
        "ticket_token": format_token(rules.identity.ticket_prefix, number),
        "subject": subject,
        "customer_name": reply.to.name or _rules_name(rules, decision.customer),
        "plan_name": plan.name,
        "channels": list(plan.channels),
        "promise": promise_text(
            plan,
            reply.language,
            decision.sla.first_response_target if decision.sla is not None else None,
        ),
        "deadline_text": deadline_text,
        "support_name": rules.identity.name,
        "support_address": rules.identity.address,
        "articles": [{"title": a.title, "url": a.url} for a in reply.articles],
        "paid_option": reply.paid_option,
    }


def build_reply(
    policy: Policy,
    *,
    decision: Decision,
    reply: Reply,
    ticket_id: int | None,
    subject: str,
    parent_id: str | None,
    parent_references: tuple[str, ...],
    now: datetime,
) -> tuple[Outgoing, Rendered]:
    """Render the reply's template and compose the mail; both are returned (simulate shows
    the rendered text, intake queues the composed bytes)."""
    context = reply_context(policy, decision, reply, ticket_id, subject)
    rendered = policy.renderer.render(reply.template, reply.language, context)
    prefix = policy.rules.identity.ticket_prefix
    token = format_token(prefix, ticket_id if ticket_id is not None else UNSAVED_REF)
    out = compose(
        sender=policy.support,
        to=reply.to,
        subject=subject_with_token(rendered.subject, token),
        text=rendered.text,
        html=rendered.html,
        message_id=new_message_id(policy.domain, ticket_id),
        date=now,
        in_reply_to=parent_id,
        references=reference_chain(parent_id, parent_references),
        marker=policy.marker,
        ticket_ref=str(context["ticket_ref"]),
        language=reply.language,
    )
    return out, rendered
