"""Reminders and escalations: rows in the database, swept into the outbox exactly once.

APScheduler only wakes the sweep (at the next due row, plus a safety sweep); the rows are the
truth. A due reminder is decided in one transaction:

* **claimed** by a conditional UPDATE ``pending -> sent|skipped|missed``, after locking the row
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; a second daemon (or a second sweep) that lost the
  race skips the row or updates nothing and moves on, so a reminder is sent at most
  once, and the outbox row that carries it commits together with the claim, so at least once;
* **skipped** when it no longer matters: the ticket was resolved or closed, or the clock was met
  or paused in the meantime (a resumed clock gets fresh rows);
* **missed** when it fell due while no daemon ran and a later reminder of the same clock is
  also due: only the latest one goes out, the earlier ones are recorded as missed;
* otherwise **sent**: its notice is composed and queued as an outbox row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from mailbot.agents.assign import notice_recipients
from mailbot.clock import Clock
from mailbot.domain import Address, TicketStatus
from mailbot.ingest.correlate import ticket_ref
from mailbot.outbound.compose import compose, new_message_id, reference_chain
from mailbot.policy import Policy
from mailbot.rules.deadline import format_deadline
from mailbot.rules.schema import Rules
from mailbot.sla.clocks import ClockStatus
from mailbot.sla.plan import PlannedReminder
from mailbot.sla.schema import ROLE_RECIPIENTS
from mailbot.tickets.models import (
    Direction,
    Message,
    Reminder,
    ReminderStatus,
    Ticket,
    TicketClock,
)
from mailbot.tickets.raw_sql import insert_rows, lock_or_skip
from mailbot.tickets.service import queue_outgoing

log = logging.getLogger(__name__)

# A reminder handled later than this after its due time counts as late (daemon was down).
LATE_AFTER = timedelta(minutes=15)
BREACH = "breach"
CLOCK_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "first_response": "first response",
        "registered": "registration",
        "action_started": "start of work",
        "resolution": "resolution",
    },
    "sv": {
        "first_response": "första svar",
        "registered": "registrering",
        "action_started": "påbörjat arbete",
        "resolution": "lösning",
    },
    "it": {
        "first_response": "prima risposta",
        "registered": "registrazione",
        "action_started": "inizio lavori",
        "resolution": "risoluzione",
    },
}


@dataclass
class SweepReport:
    sent: int = 0
    skipped: int = 0
    missed: int = 0
    lost_races: int = 0


async def plan_reminders(
    conn: BaseDBAsyncClient, ticket_id: int, planned: Iterable[PlannedReminder]
) -> int:
    """Replace the ticket's pending reminders with ``planned`` (sent ones are never redone)."""
    await (
        Reminder.filter(ticket_id=ticket_id, status=ReminderStatus.PENDING).using_db(conn).delete()
    )
    done = {
        (row.clock, row.kind)
        for row in await Reminder.filter(ticket_id=ticket_id).using_db(conn).only("clock", "kind")
    }
    return await insert_reminders(
        conn, ticket_id, [p for p in planned if (p.clock, p.kind) not in done]
    )


async def insert_reminders(
    conn: BaseDBAsyncClient, ticket_id: int, planned: Iterable[PlannedReminder]
) -> int:
    """Insert reminder rows as they are (the caller knows none of them exists yet)."""
    rows: list[dict[str, object]] = [
        {
            "ticket_id": ticket_id,
            "clock": p.clock,
            "kind": p.kind,
            "due_at": p.due_at,
            "recipient": p.recipient,
        }
        for p in planned
    ]
    await insert_rows(conn, Reminder, rows)
    return len(rows)


class ReminderSweeper:
    def __init__(
        self,
        policy: Callable[[], Policy],
        clock: Clock,
        *,
        mailboxes: Sequence[str] | None = None,
        on_decided: Callable[[ReminderStatus], None] | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        #: Told each reminder this sweeper decided, once committed (the metrics' counter).
        self.on_decided = on_decided
        #: Reminders of these mailboxes' tickets only (mailbot.tickets.scope); None: all.
        self.mailboxes = mailboxes

    def _pending(self) -> QuerySet[Reminder]:
        query = Reminder.filter(status=ReminderStatus.PENDING)
        if self.mailboxes is not None:
            query = query.filter(ticket__mailbox__in=self.mailboxes)
        return query

    async def next_due(self) -> datetime | None:
        row = await self._pending().order_by("due_at").only("id", "due_at").first()
        return row.due_at if row else None

    async def run_once(self) -> SweepReport:
        now = self.clock.now()
        report = SweepReport()
        due = await self._pending().filter(due_at__lte=now).order_by("due_at", "id").limit(500)
        latest: dict[tuple[int, str], datetime] = {}
        for row in due:
            key = (row.ticket_id, row.clock)
            latest[key] = max(latest.get(key, row.due_at), row.due_at)
        for row in due:
            verdict = await self._decide(row, now, latest[(row.ticket_id, row.clock)])
            if verdict is None:
                report.lost_races += 1
            elif verdict == ReminderStatus.SENT:
                report.sent += 1
            elif verdict == ReminderStatus.MISSED:
                report.missed += 1
            else:
                report.skipped += 1
        return report

    async def _decide(
        self, row: Reminder, now: datetime, latest_due: datetime
    ) -> ReminderStatus | None:
        async with in_transaction() as conn:
            # PostgreSQL: lock the row or skip it at once when another daemon's sweep holds
            # it (SQLite ignores this; the conditional UPDATE below is the guard everywhere).
            if not await lock_or_skip(
                conn, Reminder.filter(id=row.id, status=ReminderStatus.PENDING)
            ):
                return None  # another sweep or daemon is deciding it, or has decided it
            ticket = await Ticket.get(id=row.ticket_id, using_db=conn)
            clock = (
                await TicketClock.filter(ticket_id=row.ticket_id, name=row.clock)
                .using_db(conn)
                .first()
            )
            status, note = _relevance(row, ticket, clock, now, latest_due)
            recipient = resolve_recipient(self.policy().rules, row.recipient, ticket)
            if status is ReminderStatus.SENT and recipient is None:
                status, note = ReminderStatus.SKIPPED, f"nobody is the ticket's {row.recipient}"
            claimed = (
                await Reminder.filter(id=row.id, status=ReminderStatus.PENDING)
                .using_db(conn)
                .update(status=status, decided_at=now, note=note)
            )
            if not claimed:
                return None  # another sweep or daemon decided it first
            if status is ReminderStatus.SENT and recipient is not None:
                await self._queue_notice(conn, row, ticket, now, recipient)
        if self.on_decided is not None:
            self.on_decided(status)
        log.info(
            "reminder %d ticket #%d clock %s %s due %s: %s%s",
            row.id,
            row.ticket_id,
            row.clock,
            row.kind,
            row.due_at.isoformat(),
            status.value,
            f" ({note})" if note else "",
        )
        return status

    async def _queue_notice(
        self, conn: BaseDBAsyncClient, row: Reminder, ticket: Ticket, now: datetime, to: str
    ) -> None:
        policy = self.policy()
        rules = policy.rules
        language = rules.default_language
        template = "escalation" if row.kind == BREACH else "reminder"
        first = (
            await Message.filter(ticket_id=ticket.id, direction=Direction.IN)
            .using_db(conn)
            .order_by("id")
            .only("message_id")
            .first()
        )
        parent = first.message_id if first else None
        # The clock's deadline (a reminder row's due_at is when the reminder goes out).
        clock = await TicketClock.filter(ticket_id=ticket.id, name=row.clock).using_db(conn).first()
        deadline = clock.due_at if clock is not None and clock.due_at is not None else row.due_at
        ref = ticket_ref(rules.identity.ticket_prefix, ticket.id)
        context: dict[str, object] = {
            "ticket_ref": ref,
            "subject": ticket.subject,
            "customer": ticket.customer,
            "customer_name": ticket.customer_name,
            "plan_name": rules.plans[ticket.plan].name
            if ticket.plan in rules.plans
            else ticket.plan,
            "severity": ticket.severity,
            "urgent": ticket.urgent,
            "clock": row.clock,
            "clock_name": CLOCK_NAMES.get(language, CLOCK_NAMES["en"]).get(row.clock, row.clock),
            "kind": row.kind,
            "due_text": format_deadline(deadline, rules.tz, language),
            "support_name": rules.identity.name,
        }
        rendered = policy.renderer.render(template, language, context)
        out = compose(
            sender=policy.support,
            to=Address(to),
            subject=f"{rendered.subject} [{ref}]",
            text=rendered.text,
            html=rendered.html,
            message_id=new_message_id(policy.domain, ticket.id),
            date=now,
            in_reply_to=parent,
            references=reference_chain(parent, ()),
            marker=policy.marker,
            ticket_ref=ref,
            language=language,
            auto_submitted="auto-generated",
        )
        await queue_outgoing(conn, ticket_id=ticket.id, kind=template, out=out, now=now)


_CLOSED = {TicketStatus.RESOLVED, TicketStatus.CLOSED}


def resolve_recipient(rules: Rules, recipient: str, ticket: Ticket) -> str | None:
    """A reminder's address: as planned, or, for ``assignee`` / ``account_manager``, that
    person's first address now (the ticket's team when it has no agent); failing that the
    plan's ``escalate_to`` address, else None."""
    if recipient not in ROLE_RECIPIENTS:
        return recipient
    if recipient == "assignee":
        found = notice_recipients(rules, agent=ticket.assignee, team=ticket.team)
        if found:
            return found[0]
    else:
        manager = rules.account_manager(ticket.account) if ticket.account else None
        if manager is not None and manager in rules.agents:
            return rules.agents[manager].addresses[0]
    plan = rules.plans.get(ticket.plan)
    fallback = plan.sla.escalate_to if plan is not None and plan.sla is not None else None
    return fallback if fallback is not None and fallback not in ROLE_RECIPIENTS else None


def _relevance(
    row: Reminder,
    ticket: Ticket,
    clock: TicketClock | None,
    now: datetime,
    latest_due: datetime,
) -> tuple[ReminderStatus, str | None]:
    """Pure: what to do with a due reminder, and why."""
    if ticket.status in _CLOSED:
        return ReminderStatus.SKIPPED, f"ticket {ticket.status.value}"
    if clock is None:
        return ReminderStatus.SKIPPED, "clock no longer exists"
    if clock.status is ClockStatus.MET:
        return ReminderStatus.SKIPPED, "clock met"
    if clock.status is ClockStatus.CLOSED:
        return ReminderStatus.SKIPPED, "clock stopped"
    if clock.status is ClockStatus.PAUSED:
        return ReminderStatus.SKIPPED, "clock paused (waiting on the customer)"
    late = now - row.due_at > LATE_AFTER
    if late and row.due_at < latest_due:
        return ReminderStatus.MISSED, "fell due while no daemon ran; a later reminder supersedes it"
    return ReminderStatus.SENT, None
