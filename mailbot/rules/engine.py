"""Decide what to do with one message. Pure: (message, thread, verdict, rules, now) -> Decision.

The order of the checks is the policy, and every step that fires is named in
``Decision.rule_hits`` so ``mailbot simulate`` can show why:

1. no ticket action (auto-generated mail that threads nowhere)  -> store only
2. follow-up on an existing ticket                              -> no automatic answer
3. auto-generated mail                                          -> never answered
4. no valid sender address, or the sender is an agent           -> ticket, no answer
5. the action table (rules.yaml ``actions``, mailbot.rules.actions): the first row
   whose conditions match and whose own condition holds         -> its answer
6. plan says how-to questions go to the wiki, the message reads
   as a how-to question and articles match                      -> wiki redirect
7. otherwise                                                    -> acknowledgement
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    WikiHit,
)
from mailbot.rules.actions import Action, TicketFacts, matches, paid_option_text
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
    howto_counts: Mapping[str, int] | None = None,
) -> Decision:
    """``howto_counts``: for each training_offer action, the customer's earlier how-to
    tickets within its window (read by intake; absent: none)."""
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
    howto = looks_like_howto(view.subject, view.text, language)
    facts = TicketFacts(
        plan=plan_id,
        category=category,
        severity=severity,
        urgent=urgent,
        howto=howto,
        outside_hours=not calendar.is_open(now),
    )
    for action in rules.actions:
        if not matches(action.when, facts):
            continue
        chosen = _try_action(action, view, rules, language, hits, howto_counts or {})
        if chosen is None:
            continue
        return replace(
            result(chosen.reply, deadline),
            howto=howto,
            action=action.name,
            escalate_to=action.notify if action.do == "escalate" else (),
        )
    if plan.howto == "wiki" and howto:
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
            return replace(result(reply, deadline), howto=howto)
        hits.append(f"plan {plan_id}: how-to question but no wiki article matches")
    hits.append(f"plan {plan_id}: acknowledgement")
    reply = Reply(
        kind=ReplyKind.ACK, template=rules.templates.ack, language=language, to=view.sender
    )
    return replace(result(reply, deadline), howto=howto)


@dataclass(frozen=True, slots=True)
class _Chosen:
    reply: Reply | None


_KINDS = {
    "acknowledge": ReplyKind.ACK,
    "escalate": ReplyKind.ACK,
    "wiki": ReplyKind.WIKI,
    "out_of_scope": ReplyKind.OUT_OF_SCOPE,
    "training_offer": ReplyKind.TRAINING,
}


def _try_action(
    action: Action,
    view: MessageView,
    rules: Rules,
    language: str,
    hits: list[str],
    howto_counts: Mapping[str, int],
) -> _Chosen | None:
    """The answer ``action`` gives, or None when its own condition does not hold (the
    table goes on). Appends what happened to ``hits``."""
    label = f"action {action.name}"
    assert view.sender is not None  # decide returns earlier without a sender
    articles: tuple[WikiHit, ...] = ()
    if action.do in ("wiki", "training_offer"):
        articles = match_articles(rules, subject=view.subject, text=view.text, language=language)
    if action.do == "wiki" and not articles:
        hits.append(f"{label}: wiki, but no article matches")
        return None
    if action.do == "training_offer":
        assert action.after is not None  # the schema requires it
        number = howto_counts.get(action.name, 0) + 1
        if number < action.after:
            hits.append(
                f"{label}: how-to question {number} of {action.after} within {action.within},"
                " no training offer yet"
            )
            return None
        hits.append(
            f"{label}: how-to question {number} within {action.within}"
            f" (offer from the {action.after}.): training offer"
        )
    elif action.do == "escalate":
        hits.append(f"{label}: escalate to {', '.join(action.notify)}, acknowledgement")
    elif action.do == "wiki":
        hits.append(f"{label}: wiki redirect with {len(articles)} article(s)")
    else:
        hits.append(f"{label}: {action.do.replace('_', ' ')}")
    template = rules.action_template(action)
    if template is None:
        return _Chosen(None)
    return _Chosen(
        Reply(
            kind=_KINDS[action.do],
            template=template,
            language=language,
            to=view.sender,
            articles=articles,
            paid_option=paid_option_text(action, language, rules.default_language),
        )
    )
