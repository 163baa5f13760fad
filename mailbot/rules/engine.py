"""Decide what to do with one message. Pure: (message, thread, verdict, rules, now) -> Decision.

The order of the checks is the policy, and every step that fires is named in
``Decision.rule_hits`` so ``mailbot simulate`` can show why:

1. no ticket action (auto-generated mail that threads nowhere)  -> store only
2. follow-up on an existing ticket                              -> no automatic answer
3. auto-generated mail                                          -> never answered
4. no valid sender address, or the sender is an agent           -> ticket, no answer
5. plan says how-to questions go to the wiki, the message reads
   as a how-to question and articles match                      -> wiki redirect
6. otherwise                                                    -> acknowledgement
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailbot.domain import (
    Address,
    AutoVerdict,
    Decision,
    ParsedMessage,
    Reply,
    ReplyKind,
    ThreadMatch,
    TicketAction,
)
from mailbot.rules.classify import classify
from mailbot.rules.customers import resolve_customer
from mailbot.rules.language import detect_language
from mailbot.rules.schema import Rules
from mailbot.rules.wiki import looks_like_howto, match_articles
from mailbot.sla.plan import SlaStatus, sla_status
from mailbot.sla.schema import OFFICE


@dataclass(frozen=True, slots=True)
class MessageView:
    """The parts of a message the rules look at (the new text, not the quoted history)."""

    sender: Address | None
    subject: str
    text: str
    headers: tuple[tuple[str, str], ...] = ()
    has_attachment: bool = False

    @classmethod
    def of(cls, msg: ParsedMessage, new_text: str, subject: str) -> MessageView:
        return cls(
            sender=msg.from_,
            subject=subject,
            text=new_text,
            headers=msg.headers,
            has_attachment=bool(msg.attachments),
        )


def decide(
    view: MessageView,
    thread: ThreadMatch,
    auto: AutoVerdict,
    rules: Rules,
    now: datetime,
    *,
    ticket_language: str | None = None,
    ticket_plan: str | None = None,
) -> Decision:
    hits: list[str] = []
    sender_key = view.sender.key if view.sender else ""
    customer = resolve_customer(rules, sender_key) if view.sender else None
    plan_id = ticket_plan or (customer.plan_id if customer else rules.default_plan)
    if customer is not None:
        hits.append(f"customer: {customer.matched_by}")
    language = ticket_language or (customer.language if customer else None)
    if language is None:
        language = detect_language(
            f"{view.subject}\n{view.text}", rules.languages, rules.default_language
        )
        hits.append(f"language: detected {language}")
    else:
        hits.append(f"language: {language} (customer or ticket)")

    sla: SlaStatus | None = None
    severity, urgent, category = "L4", False, ""

    def result(reply: Reply | None, deadline: datetime | None) -> Decision:
        return Decision(
            thread=thread,
            plan=plan_id,
            customer=sender_key,
            language=language,
            auto=auto,
            reply=reply,
            deadline=deadline,
            rule_hits=tuple(hits),
            severity=severity,
            urgent=urgent,
            sla=sla,
            account=customer.account if customer is not None else None,
            category=category,
        )

    if thread.action is TicketAction.NONE:
        hits.append("store only: " + thread.reason)
        return result(None, None)
    if thread.action is not TicketAction.NEW:
        hits.append("follow-up: no automatic answer")
        return result(None, None)
    plan = rules.plans[plan_id]
    calendar = rules.calendar(plan.sla.calendar if plan.sla is not None else OFFICE)
    classified = classify(
        rules,
        subject=view.subject,
        text=view.text,
        sender=sender_key,
        language=language,
        plan=plan_id,
        headers=view.headers,
        has_attachment=view.has_attachment,
        outside_hours=lambda: not calendar.is_open(now),
    )
    severity, urgent = classified.severity.value, classified.urgent
    category = classified.category or rules.billing.default_category
    hits.extend(classified.hits)
    sla = sla_status(rules, plan_id, severity=severity, urgent=urgent, arrival=now, now=now)
    deadline = sla.due_of("first_response")
    if auto.auto_generated:
        hits.append(f"auto-generated ({auto.reason}): no automatic answer")
        return result(None, deadline)
    if view.sender is None:
        hits.append("no valid sender address: no automatic answer")
        return result(None, deadline)
    agent = rules.agent_for(sender_key)
    if agent is not None:
        hits.append(f"sender is agent {agent}: no automatic answer")
        return result(None, deadline)
    if plan.howto == "wiki" and looks_like_howto(view.subject, view.text, language):
        articles = match_articles(rules, subject=view.subject, text=view.text, language=language)
        if articles:
            hits.append(f"plan {plan_id}: how-to question matches {len(articles)} wiki article(s)")
            reply = Reply(
                kind=ReplyKind.WIKI,
                template=rules.templates.wiki,
                language=language,
                to=view.sender,
                articles=articles,
            )
            return result(reply, deadline)
        hits.append(f"plan {plan_id}: how-to question but no wiki article matches")
    hits.append(f"plan {plan_id}: acknowledgement")
    reply = Reply(
        kind=ReplyKind.ACK, template=rules.templates.ack, language=language, to=view.sender
    )
    return result(reply, deadline)
