"""accept(raw bytes) -> Outcome: parse, detect loops, thread, decide, store, queue the answer.

One message, one transaction; the caller acknowledges the UID on the server only after
``accept`` has returned (and advances the UID checkpoint after the batch). What cannot be
parsed, and what a bug makes us fail on, is stored raw and quarantined instead (and can be
replayed with ``mailbot quarantine --retry``). Database trouble is *not* quarantined: it
propagates as ``DatabaseBusyError`` so the message stays unacknowledged and is fetched again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import DBConnectionError, IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from mailbot.clock import Clock
from mailbot.domain import (
    Decision,
    Disposition,
    ParsedMessage,
    ReplyKind,
    TicketAction,
)
from mailbot.errors import DatabaseBusyError, ParseError
from mailbot.ingest.autogen import classify_auto
from mailbot.ingest.correlate import clean_subject, correlate, find_token
from mailbot.ingest.parse import parse_message
from mailbot.ingest.quotes import new_text
from mailbot.outbound.compose import Outgoing
from mailbot.outbound.render import Rendered
from mailbot.outbound.reply import build_reply
from mailbot.policy import Policy
from mailbot.rules.engine import MessageView, decide
from mailbot.sla.clocks import EventKind
from mailbot.tickets.clocks import record_event, store_sla
from mailbot.tickets.service import (
    Origin,
    apply_inbound,
    find_duplicate,
    queue_outgoing,
    sha256_hex,
    store_quarantined,
    thread_facts,
)

log = logging.getLogger(__name__)

# Messages above this size are parsed in a worker thread so the event loop stays responsive.
PARSE_IN_THREAD_BYTES = 256 * 1024


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


async def parse_off_loop(raw: bytes) -> ParsedMessage:
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(parse_message, raw)
    return parse_message(raw)


async def analyse(
    conn: BaseDBAsyncClient, parsed: ParsedMessage, policy: Policy, now: datetime
) -> Analysis:
    """Loop verdict, threading against the database (read only), and the rules' decision."""
    rules = policy.rules
    verdict = classify_auto(parsed, own_addresses=policy.own_addresses, loop_marker=policy.marker)
    token = find_token(parsed.subject, rules.identity.ticket_prefix)
    ids = (*parsed.in_reply_to, *parsed.references)
    known, token_ticket = await thread_facts(conn, ids, token)
    sender = parsed.from_.key if parsed.from_ else None
    thread = correlate(
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        subject=parsed.subject,
        sender=sender,
        auto_generated=verdict.auto_generated,
        known_ids=known,
        token_ticket=token_ticket,
        token=token,
    )
    facts = next(
        (f for f in [*known.values(), token_ticket] if f and f.ticket_id == thread.ticket_id),
        None,
    )
    subject = clean_subject(parsed.subject, rules.identity.ticket_prefix)
    text = new_text(parsed.text, languages=tuple(rules.languages))
    decision = decide(
        MessageView.of(parsed, text, subject),
        thread,
        verdict,
        rules,
        now,
        ticket_language=facts.language if facts else None,
        ticket_plan=facts.plan if facts else None,
    )
    return Analysis(parsed=parsed, subject=subject, text=text, decision=decision)


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

    def __init__(self, policy: Policy, clock: Clock, *, send_replies: bool = True) -> None:
        self.policy = policy
        self.clock = clock
        self.send_replies = send_replies

    async def accept(self, raw: bytes, origin: Origin) -> Outcome:
        digest = sha256_hex(raw)
        try:
            parsed = await parse_off_loop(raw)
        except ParseError as exc:
            return await self._quarantine(raw, origin, digest, f"unparseable: {exc}", None)
        except Exception as exc:
            log.exception("parser failed on %s", origin.label)
            return await self._quarantine(raw, origin, digest, f"parser crashed: {exc!r}", None)
        try:
            return await self._store(raw, parsed, origin, digest)
        except (OperationalError, DBConnectionError) as exc:
            raise DatabaseBusyError(f"database refused {origin.label}: {exc}") from exc
        except IntegrityError as exc:
            # Usually another daemon stored it first; if not, keep it rather than lose it.
            return await self._after_conflict(raw, parsed, origin, digest, exc)
        except Exception as exc:
            log.exception("intake failed on %s message-id %s", origin.label, parsed.message_id)
            return await self._quarantine(
                raw, origin, digest, f"intake failed: {exc!r}", parsed.message_id
            )

    async def _store(
        self, raw: bytes, parsed: ParsedMessage, origin: Origin, digest: str
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
            analysis = await analyse(conn, parsed, policy, now)
            decision = analysis.decision
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
            )
            ticket_id = applied.ticket_id
            if ticket_id is not None and decision.sla is not None:
                await store_sla(conn, ticket_id, decision.sla, new=True)
            elif ticket_id is not None and applied.resumed:
                await record_event(conn, policy.rules, ticket_id, EventKind.RESUMED, now)
            reply_kind = None
            answer = answer_for(policy, analysis, ticket_id, now) if self.send_replies else None
            if answer is not None and decision.reply is not None:
                await queue_outgoing(
                    conn,
                    ticket_id=ticket_id,
                    kind=decision.reply.kind.value,
                    out=answer[0],
                    now=now,
                )
                reply_kind = decision.reply.kind
        log.info(
            "stored %s message-id %s ticket #%s action %s reply %s (%s)",
            origin.label,
            parsed.message_id,
            ticket_id,
            decision.thread.action.value,
            reply_kind.value if reply_kind else "none",
            decision.thread.reason,
        )
        return Outcome(
            Disposition.STORED,
            parsed.message_id,
            ticket_id,
            decision.thread.action,
            reply_kind,
            decision.thread.reason,
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
