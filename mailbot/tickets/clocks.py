"""A ticket's SLA clocks in the database: stored from the decision, recomputed on every event.

``store_sla`` writes what :func:`mailbot.sla.plan.sla_status` computed: one ``TicketClock``
row per clock (status, due time), the ticket's ``deadline`` (its earliest open clock), and the
reminder rows. ``record_event`` appends an event (paused, resumed, met, closed) and recomputes
everything from the ticket's whole event history, so a deadline is never patched by hand.
Call both inside the caller's transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime

from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.reminders import insert_reminders, plan_reminders
from mailbot.rules.schema import Rules
from mailbot.sla.clocks import ClockState, EventKind
from mailbot.sla.plan import SlaStatus, TicketEvent, sla_status
from mailbot.tickets.models import ClockEventRow, Ticket, TicketClock
from mailbot.tickets.raw_sql import insert_rows

log = logging.getLogger(__name__)


async def store_sla(
    conn: BaseDBAsyncClient, ticket_id: int, status: SlaStatus, *, new: bool = False
) -> None:
    """Write ``status``; ``new``: the ticket was just created, so nothing exists to replace."""
    if new:
        await insert_rows(
            conn,
            TicketClock,
            [
                {"ticket_id": ticket_id, "name": state.name, **_clock_fields(state)}
                for state in status.clocks
            ],
        )
        await insert_reminders(conn, ticket_id, status.reminders)
        return
    existing = {
        row.name: row for row in await TicketClock.filter(ticket_id=ticket_id).using_db(conn)
    }
    for state in status.clocks:
        row = existing.pop(state.name, None)
        if row is None:
            await TicketClock.create(
                using_db=conn, ticket_id=ticket_id, name=state.name, **_clock_fields(state)
            )
        else:
            await TicketClock.filter(id=row.id).using_db(conn).update(**_clock_fields(state))
    for stale in existing.values():
        await stale.delete(using_db=conn)
    await Ticket.filter(id=ticket_id).using_db(conn).update(deadline=status.next_deadline)
    await plan_reminders(conn, ticket_id, status.reminders)


def _clock_fields(state: ClockState) -> dict[str, object]:
    return {
        "status": state.status,
        "started_at": state.started_at,
        "due_at": state.due_at,
        "breached_at": state.breached_at,
        "stopped_at": state.stopped_at,
    }


async def recompute(
    conn: BaseDBAsyncClient, rules: Rules, ticket_id: int, now: datetime
) -> SlaStatus | None:
    """Re-derive the clocks from the ticket's events; None if its plan no longer exists."""
    ticket = await Ticket.get(id=ticket_id, using_db=conn)
    if ticket.plan not in rules.plans:
        log.warning(
            "ticket #%d: plan %r is not in the rules; clocks left as they are",
            ticket_id,
            ticket.plan,
        )
        return None
    events = [
        TicketEvent(row.kind, row.at, row.clock)
        for row in await ClockEventRow.filter(ticket_id=ticket_id)
        .using_db(conn)
        .order_by("at", "id")
    ]
    status = sla_status(
        rules,
        ticket.plan,
        severity=ticket.severity,
        urgent=ticket.urgent,
        arrival=ticket.created_at,
        events=events,
        now=now,
    )
    await store_sla(conn, ticket_id, status)
    return status


async def record_event(
    conn: BaseDBAsyncClient,
    rules: Rules,
    ticket_id: int,
    kind: EventKind,
    at: datetime,
    *,
    clock: str | None = None,
) -> SlaStatus | None:
    """Append an event (``met`` names its clock) and recompute the ticket's clocks."""
    await ClockEventRow.create(using_db=conn, ticket_id=ticket_id, kind=kind, clock=clock, at=at)
    log.info(
        "ticket #%d: clock event %s%s at %s",
        ticket_id,
        kind.value,
        f" ({clock})" if clock else "",
        at.isoformat(),
    )
    return await recompute(conn, rules, ticket_id, at)


async def set_severity(
    conn: BaseDBAsyncClient,
    rules: Rules,
    ticket_id: int,
    *,
    severity: str,
    urgent: bool,
    at: datetime,
) -> SlaStatus | None:
    """An agent re-classified the ticket: its targets may change, so everything is recomputed
    (from arrival, with the same events; reminders already sent stay sent)."""
    await Ticket.filter(id=ticket_id).using_db(conn).update(severity=severity, urgent=urgent)
    log.info("ticket #%d: severity set to %s%s", ticket_id, severity, " urgent" if urgent else "")
    return await recompute(conn, rules, ticket_id, at)
