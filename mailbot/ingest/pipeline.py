"""accept(raw bytes) -> Outcome: parse, detect loops, thread, decide, store, queue the answer.

One message, one transaction; the caller acknowledges the UID on the server only after
``accept`` has returned (and advances the UID checkpoint after the batch). What cannot be
parsed, and what a bug makes us fail on, is stored raw and quarantined instead (and can be
replayed with ``mailbot quarantine retry``). Database trouble is *not* quarantined: it
propagates as ``DatabaseBusyError`` so the message stays unacknowledged and is fetched again.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from mailbot.agents.assign import escalation_recipients
from mailbot.agents.authres import AuthVerdict, authenticated
from mailbot.agents.commands import strip_agent_reply
from mailbot.agents.tokens import TokenSigner, find_ticket_token
from mailbot.agents.verdict import AgentVerdict, MailRole, agent_verdict
from mailbot.clock import Clock
from mailbot.domain import (
    Decision,
    Disposition,
    ParsedMessage,
    ReplyKind,
    TicketAction,
)
from mailbot.errors import DatabaseBusyError
from mailbot.ingest.autogen import classify_auto
from mailbot.ingest.bounces import returned_message_ids
from mailbot.ingest.correlate import Grace, clean_subject, correlate, find_token
from mailbot.ingest.parse import parse_message
from mailbot.ingest.parse_workers import (
    PARSE_IN_THREAD_BYTES,
    Parsed,
    Prepared,
    Unparsed,
    prepare_here,
)
from mailbot.ingest.quotes import new_text
from mailbot.outbound.compose import Outgoing
from mailbot.outbound.render import Rendered
from mailbot.outbound.reply import build_reply
from mailbot.policy import Policy
from mailbot.rules.engine import MessageView, decide
from mailbot.rules.schema import Rules
from mailbot.sla.clocks import EventKind
from mailbot.tickets.agent_actions import handle_internal
from mailbot.tickets.assignment import assign_new_ticket
from mailbot.tickets.clocks import record_event, store_sla
from mailbot.tickets.limits import auto_reply_refusal, lift, suppress
from mailbot.tickets.models import Ticket
from mailbot.tickets.notices import notify_agents
from mailbot.tickets.service import (
    Origin,
    apply_inbound,
    find_duplicate,
    queue_outgoing,
    sha256_hex,
    store_inbound,
    store_quarantined,
    thread_facts,
)
from mailbot.tickets.wiki_followup import customer_mail, start_waiting

log = logging.getLogger(__name__)

# The ruleset each Intake decides the message in hand under (a reload swaps only later ones).
_PINNED: ContextVar[tuple[Intake, Policy] | None] = ContextVar("intake_policy", default=None)


@dataclass(frozen=True, slots=True)
class Outcome:
    disposition: Disposition
    message_id: str | None
    ticket_id: int | None
    action: TicketAction
    reply: ReplyKind | None
    reason: str


@dataclass(frozen=True, slots=True)
class Analysis:
    """What intake made of a message before writing anything (shared with simulate)."""

    parsed: ParsedMessage
    subject: str
    text: str
    decision: Decision
    #: Whether it is an agent's mail, and whether we may act on it.
    agent: AgentVerdict


async def parse_off_loop(raw: bytes) -> ParsedMessage:
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parse_message, raw)
    return parse_message(raw)


def _token_carriers(parsed: ParsedMessage) -> tuple[list[str], list[tuple[str, str]]]:
    recipients = [a.email for a in (*parsed.to, *parsed.cc)]
    recipients += [*parsed.header_all("delivered-to"), *parsed.header_all("x-original-to")]
    ids = [("In-Reply-To", i) for i in parsed.in_reply_to]
    ids += [("References", i) for i in parsed.references]
    return recipients, ids


def _auth(parsed: ParsedMessage, policy: Policy) -> AuthVerdict | None:
    required = policy.rules.agent_mail.require_auth
    if required is None:
        return None
    return authenticated(
        parsed.header_all("authentication-results"),
        authserv_id=required.authserv_id,
        methods=required.methods,
        from_domain=parsed.from_.domain if parsed.from_ else None,
    )


async def howto_counts(
    conn: BaseDBAsyncClient, rules: Rules, customer: str, now: datetime
) -> dict[str, int]:
    """For each training_offer action: the customer's how-to tickets within its window."""
    counts: dict[str, int] = {}
    for action in rules.actions:
        if action.do == "training_offer":
            counts[action.name] = (
                await Ticket.filter(
                    customer=customer,
                    howto=True,
                    created_at__gte=now - timedelta(seconds=action.window),
                )
                .using_db(conn)
                .count()
            )
    return counts


async def analyse(
    conn: BaseDBAsyncClient,
    parsed: ParsedMessage,
    policy: Policy,
    now: datetime,
    signer: TokenSigner | None = None,
    raw: bytes | None = None,
    prepared: Prepared | None = None,
) -> Analysis:
    """Loop verdict, threading against the database (read only), the rules' decision, and
    whether it is an agent's answer (only with a ``signer``: tokens cannot be checked
    without one). ``raw`` lets a bounce be threaded by the message it returns;
    ``prepared`` brings the new text found with the parse, by a parse worker."""
    rules = policy.rules
    verdict_auto = classify_auto(
        parsed, own_addresses=policy.own_addresses, loop_marker=policy.marker
    )
    token = find_token(parsed.subject, rules.identity.ticket_prefix)
    # A bounce returns our mail rather than answering it: the returned Message-IDs thread it.
    returned = returned_message_ids(raw) if verdict_auto.bounce and raw is not None else ()
    references = (*parsed.references, *returned)
    ids = (*parsed.in_reply_to, *references)
    known, token_ticket = await thread_facts(conn, ids, token)
    sender = parsed.from_.key if parsed.from_ else None
    thread = correlate(
        in_reply_to=parsed.in_reply_to,
        references=references,
        subject=parsed.subject,
        sender=sender,
        auto_generated=verdict_auto.auto_generated,
        known_ids=known,
        token_ticket=token_ticket,
        token=token,
        grace=Grace(now, timedelta(days=rules.agent_mail.reopen_within_days)),
    )
    facts = next(
        (f for f in [*known.values(), token_ticket] if f and f.ticket_id == thread.ticket_id),
        None,
    )
    subject = clean_subject(parsed.subject, rules.identity.ticket_prefix)
    languages = tuple(rules.languages)
    if prepared is not None and prepared.parsed is parsed:
        text = prepared.text_for(languages)
    else:
        text = new_text(parsed.text, languages=languages)
    counts = (
        await howto_counts(conn, rules, sender, now)
        if thread.action is TicketAction.NEW and sender
        else {}
    )
    decision = decide(
        MessageView.of(parsed, text, subject),
        thread,
        verdict_auto,
        rules,
        now,
        ticket_language=facts.language if facts else None,
        ticket_plan=facts.plan if facts else None,
        howto_counts=counts,
    )
    agent = rules.agent_for(sender)
    if signer is None:
        verdict = AgentVerdict(
            MailRole.AGENT_DIRECT if agent else MailRole.CUSTOMER, agent, None, "no token key"
        )
    else:
        recipients, carried_ids = _token_carriers(parsed)
        # The ticket its In-Reply-To/References name (a resolved one too), if any.
        by_id = (thread.ticket_id or thread.linked_ticket_id) if thread.by_reference else None
        verdict = agent_verdict(
            agent=agent,
            finding=find_ticket_token(
                signer, recipients=recipients, ids=carried_ids, text=parsed.text
            ),
            auto_generated=verdict_auto.auto_generated,
            thread_ticket=by_id,
            auth=_auth(parsed, policy) if agent is not None else None,
        )
    if verdict.internal:
        text = strip_agent_reply(parsed.text, languages=tuple(rules.languages))
    return Analysis(parsed=parsed, subject=subject, text=text, decision=decision, agent=verdict)


def answer_for(
    policy: Policy, analysis: Analysis, ticket_id: int | None, now: datetime
) -> tuple[Outgoing, Rendered] | None:
    """The composed automatic answer the decision asks for (None when it asks for none)."""
    reply = analysis.decision.reply
    if reply is None:
        return None
    return build_reply(
        policy,
        decision=analysis.decision,
        reply=reply,
        ticket_id=ticket_id,
        subject=analysis.subject,
        parent_id=analysis.parsed.message_id,
        parent_references=analysis.parsed.references,
        now=now,
    )


class Intake:
    """The intake pipeline. ``policy`` is read once per message: one consistent ruleset."""

    def __init__(
        self,
        policy: Policy,
        clock: Clock,
        *,
        signer: TokenSigner,
        send_replies: bool = True,
    ) -> None:
        self._policy = policy
        self.clock = clock
        self.signer = signer
        self.send_replies = send_replies

    @property
    def policy(self) -> Policy:
        """The ruleset of the message in hand (pinned by ``accept``), else the current one."""
        pinned = _PINNED.get()
        return pinned[1] if pinned is not None and pinned[0] is self else self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._policy = policy  # a reload: messages already in hand keep their ruleset

    async def accept(self, raw: bytes, origin: Origin, parsed: Parsed | None = None) -> Outcome:
        """Take one message: ``parsed`` is ``raw`` parsed already (by a parse worker), else
        it is parsed here."""
        pin = _PINNED.set((self, self._policy))
        try:
            return await self._accept(raw, origin, parsed)
        finally:
            _PINNED.reset(pin)

    async def _accept(self, raw: bytes, origin: Origin, parsed: Parsed | None) -> Outcome:
        digest = sha256_hex(raw)
        if parsed is None:
            parsed = await prepare_here(raw, tuple(self.policy.rules.languages))
        if isinstance(parsed, Unparsed):
            if parsed.trace is not None:
                log.error("parser failed on %s:\n%s", origin.label, parsed.trace.rstrip())
            return await self._quarantine(raw, origin, digest, parsed.error, None)
        message = parsed.parsed
        try:
            return await self._store(raw, message, origin, digest, parsed)
        except (OperationalError, DBConnectionError) as exc:
            raise DatabaseBusyError(f"database refused {origin.label}: {exc}") from exc
        except IntegrityError as exc:
            # Usually another daemon stored it first; if not, keep it rather than lose it.
            return await self._after_conflict(raw, message, origin, digest, exc)
        except Exception as exc:
            log.exception("intake failed on %s message-id %s", origin.label, message.message_id)
            return await self._quarantine(
                raw, origin, digest, f"intake failed: {exc!r}", message.message_id
            )

    async def _store(
        self,
        raw: bytes,
        parsed: ParsedMessage,
        origin: Origin,
        digest: str,
        prepared: Prepared | None = None,
    ) -> Outcome:
        now = self.clock.now()
        policy = self.policy
        async with in_transaction() as conn:
            duplicate = await find_duplicate(conn, origin, parsed.message_id, digest)
            if duplicate is not None:
                log.info(
                    "duplicate %s message-id %s: %s", origin.label, parsed.message_id, duplicate
                )
                return Outcome(
                    Disposition.DUPLICATE,
                    parsed.message_id,
                    None,
                    TicketAction.NONE,
                    None,
                    duplicate,
                )
            analysis = await analyse(conn, parsed, policy, now, self.signer, raw, prepared)
            decision = analysis.decision
            if analysis.agent.internal or (
                analysis.agent.role is MailRole.AGENT_DIRECT
                and decision.thread.action in (TicketAction.APPEND, TicketAction.REOPEN)
            ):
                return await self._store_agent_mail(conn, raw, parsed, origin, digest, analysis)
            applied = await apply_inbound(
                conn,
                msg=parsed,
                raw=raw,
                origin=origin,
                content_hash=digest,
                decision=decision,
                subject=analysis.subject,
                new_text=analysis.text,
                now=now,
                priority=policy.rules.plans[decision.plan].priority,
                rules_version=policy.version,
            )
            ticket_id = applied.ticket_id
            if ticket_id is not None and decision.sla is not None:
                await store_sla(conn, ticket_id, decision.sla, new=True)
            elif ticket_id is not None and applied.resumed:
                await record_event(conn, policy.rules, ticket_id, EventKind.RESUMED, now)
            if applied.ticket is not None and applied.ticket.wiki_redirect is not None:
                await customer_mail(
                    conn,
                    applied.ticket,
                    decision.thread.action,
                    auto_generated=decision.auto.auto_generated,
                    now=now,
                )
            reply_kind = None
            refusal = await self._loop_guards(conn, analysis, ticket_id, now)
            answer = (
                answer_for(policy, analysis, ticket_id, now)
                if self.send_replies and refusal is None
                else None
            )
            if answer is not None and decision.reply is not None:
                await queue_outgoing(
                    conn,
                    ticket_id=ticket_id,
                    kind=decision.reply.kind.value,
                    out=answer[0],
                    now=now,
                )
                reply_kind = decision.reply.kind
            if reply_kind is ReplyKind.WIKI and applied.ticket is not None:
                # Redirected: the ticket waits on the customer (mailbot.tickets.wiki_followup);
                # the agents' notification shows it waiting, its clocks paused.
                waiting = await start_waiting(conn, policy.rules, applied.ticket, now)
                if waiting is not None:
                    analysis = replace(analysis, decision=replace(decision, sla=waiting))
            if applied.ticket is not None and not decision.auto.auto_generated:
                await self._tell_agents(conn, applied.ticket, analysis, now)
        log.info(
            "stored %s message-id %s ticket #%s action %s reply %s (%s)%s",
            origin.label,
            parsed.message_id,
            ticket_id,
            decision.thread.action.value,
            reply_kind.value if reply_kind else "none",
            decision.thread.reason,
            f"; no answer: {refusal}" if refusal else "",
        )
        return Outcome(
            Disposition.STORED,
            parsed.message_id,
            ticket_id,
            decision.thread.action,
            reply_kind,
            decision.thread.reason,
        )

    async def _loop_guards(
        self, conn: BaseDBAsyncClient, analysis: Analysis, ticket_id: int | None, now: datetime
    ) -> str | None:
        """Bounces suppress the addresses that failed (and tell the ticket's agents); mail
        from a suppressed address lifts it; returns why the decided automatic answer must
        not go (hard bounce, rate limit), or None."""
        decision = analysis.decision
        parsed = analysis.parsed
        if decision.auto.bounce:
            failed = decision.auto.failed_recipients
            if failed:
                await suppress(
                    conn,
                    failed,
                    reason=f"bounce {parsed.message_id}: {decision.auto.reason}",
                    now=now,
                    ticket_id=ticket_id,
                )
            if ticket_id is not None and self.send_replies:
                ticket = await Ticket.get(id=ticket_id, using_db=conn)
                await notify_agents(
                    conn,
                    self.policy,
                    self.signer,
                    ticket,
                    event="bounce",
                    author=", ".join(failed) or (parsed.from_.email if parsed.from_ else ""),
                    text=analysis.text,
                    now=now,
                )
        elif (
            not decision.auto.auto_generated
            and parsed.from_ is not None
            and decision.thread.by_reference
        ):
            # A person answered our mail from that address: it exists again. (A new message
            # "from" it proves nothing: forged senders are what made it bounce.)
            await lift(conn, parsed.from_.key)
        if decision.reply is None:
            return None
        return await auto_reply_refusal(conn, self.policy.rules, decision.reply.to.email, now)

    async def _tell_agents(
        self, conn: BaseDBAsyncClient, ticket: Ticket, analysis: Analysis, now: datetime
    ) -> None:
        """Assign a new ticket; notify its agent (or team) of it and of customer replies."""
        action = analysis.decision.thread.action
        if ticket.spam:
            return
        if action is TicketAction.NEW:
            await assign_new_ticket(conn, self.policy.rules, ticket)
        if not self.send_replies:
            return  # an import with --no-send: old mail must not page anybody
        event = {
            TicketAction.NEW: "new",
            TicketAction.APPEND: "reply",
            TicketAction.REOPEN: "reopened",
        }.get(action)
        if event is None:
            return
        sender = analysis.agent.agent
        await notify_agents(
            conn,
            self.policy,
            self.signer,
            ticket,
            event=event,
            author=analysis.parsed.from_.email if analysis.parsed.from_ else "",
            text=analysis.text,
            now=now,
            exclude=frozenset({sender}) if sender else frozenset(),
            new=analysis.decision.sla if action is TicketAction.NEW else None,
        )
        escalate_to = analysis.decision.escalate_to
        if action is TicketAction.NEW and escalate_to:
            await notify_agents(
                conn,
                self.policy,
                self.signer,
                ticket,
                event="escalated",
                author=analysis.decision.action or "",
                text=analysis.text,
                now=now,
                recipients=escalation_recipients(
                    self.policy.rules,
                    escalate_to,
                    assignee=ticket.assignee,
                    team=ticket.team,
                    account=ticket.account,
                ),
                new=analysis.decision.sla,
            )

    async def _store_agent_mail(
        self,
        conn: BaseDBAsyncClient,
        raw: bytes,
        parsed: ParsedMessage,
        origin: Origin,
        digest: str,
        analysis: Analysis,
    ) -> Outcome:
        """An agent's mail (or a reply to an agent notification): see mailbot.agents.verdict."""
        now = self.clock.now()
        verdict = analysis.agent
        decision = analysis.decision
        ticket_id = verdict.ticket_id if verdict.internal else decision.thread.ticket_id
        if ticket_id is not None and not await Ticket.filter(id=ticket_id).using_db(conn).exists():
            ticket_id = None
        row = await store_inbound(
            conn,
            msg=parsed,
            raw=raw,
            origin=origin,
            content_hash=digest,
            ticket_id=ticket_id,
            new_text=analysis.text,
            now=now,
            auto_generated=decision.auto.auto_generated,
            auto_reason=decision.auto.reason,
            bounce=decision.auto.bounce,
            role="agent"
            if verdict.role is MailRole.AGENT_REPLY
            else ("internal" if verdict.internal else "agent"),
            rules_version=self.policy.version,
        )
        reason = verdict.reason
        if verdict.internal and not self.send_replies:
            reason = f"{verdict.reason}: stored only (--no-send)"
        elif verdict.internal:
            result = await handle_internal(
                conn,
                self.policy,
                self.signer,
                verdict=verdict,
                sender=parsed.from_.email if parsed.from_ else "",
                subject=analysis.subject,
                text=analysis.text,
                message_id=parsed.message_id,
                message_row=row,
                now=now,
                raw=raw,
            )
            reason = f"{verdict.reason}: {', '.join(result.executed) or result.reason}"
        log.info(
            "stored %s message-id %s ticket #%s as %s (%s)",
            origin.label,
            parsed.message_id,
            ticket_id,
            verdict.role.value,
            reason,
        )
        return Outcome(
            Disposition.STORED, parsed.message_id, ticket_id, TicketAction.APPEND, None, reason
        )

    async def _after_conflict(
        self, raw: bytes, parsed: ParsedMessage, origin: Origin, digest: str, exc: Exception
    ) -> Outcome:
        async with in_transaction() as conn:
            duplicate = await find_duplicate(conn, origin, parsed.message_id, digest)
        if duplicate is not None:
            log.info("duplicate %s message-id %s: %s", origin.label, parsed.message_id, duplicate)
            return Outcome(
                Disposition.DUPLICATE, parsed.message_id, None, TicketAction.NONE, None, duplicate
            )
        log.error("integrity error on %s message-id %s: %s", origin.label, parsed.message_id, exc)
        return await self._quarantine(
            raw, origin, digest, f"intake failed: {exc!r}", parsed.message_id
        )

    async def _quarantine(
        self, raw: bytes, origin: Origin, digest: str, error: str, message_id: str | None
    ) -> Outcome:
        try:
            async with in_transaction() as conn:
                if await find_duplicate(conn, origin, None, digest) is not None:
                    return Outcome(
                        Disposition.DUPLICATE, message_id, None, TicketAction.NONE, None, error
                    )
                row_id = await store_quarantined(
                    conn,
                    raw=raw,
                    origin=origin,
                    content_hash=digest,
                    error=error,
                    now=self.clock.now(),
                    message_id=message_id,
                )
        except (OperationalError, DBConnectionError) as exc:
            raise DatabaseBusyError(
                f"database refused quarantine of {origin.label}: {exc}"
            ) from exc
        log.warning(
            "quarantined %s message-id %s as row %d: %s", origin.label, message_id, row_id, error
        )
        return Outcome(Disposition.QUARANTINED, message_id, None, TicketAction.NONE, None, error)
