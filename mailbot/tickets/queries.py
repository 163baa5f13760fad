"""The read side: ticket listings and quarantine, as plain values for the CLI and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailbot.domain import TicketStatus
from mailbot.ingest.correlate import ticket_ref
from mailbot.tickets.models import (
    Direction,
    Message,
    MessageState,
    OutboxRow,
    Ticket,
    TicketClock,
)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    direction: str
    message_id: str | None
    from_addr: str
    subject: str
    text: str
    auto_generated: bool
    auto_reason: str | None
    received_at: datetime
    outbox_status: str | None


@dataclass(frozen=True, slots=True)
class ClockSummary:
    name: str
    status: str
    due_at: datetime | None
    breached_at: datetime | None

    def breached(self, now: datetime) -> bool:
        if self.breached_at is not None or self.status == "breached":
            return True
        return self.status == "running" and self.due_at is not None and self.due_at < now


@dataclass(frozen=True, slots=True)
class TicketSummary:
    id: int
    ref: str
    status: str
    plan: str
    customer: str
    customer_name: str
    language: str
    subject: str
    created: datetime
    updated: datetime
    deadline: datetime | None
    linked_ref: str | None
    messages: tuple[MessageSummary, ...]
    severity: str = "L4"
    urgent: bool = False
    priority: int = 0
    assignee: str | None = None
    team: str | None = None
    category: str = ""
    account: str | None = None
    clocks: tuple[ClockSummary, ...] = ()

    def sla_state(self, now: datetime) -> str:
        """``breached`` if a clock broke its deadline, ``due`` if one still runs, else ``-``."""
        if any(c.breached(now) for c in self.clocks):
            return "breached"
        return "due" if self.deadline is not None else "-"

    @property
    def message_ids(self) -> list[str]:
        return [m.message_id for m in self.messages if m.message_id]

    def as_json(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "id": self.id,
            "status": self.status,
            "plan": self.plan,
            "customer": self.customer,
            "customer_name": self.customer_name,
            "language": self.language,
            "subject": self.subject,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "linked": self.linked_ref,
            "message_ids": self.message_ids,
            "severity": self.severity,
            "urgent": self.urgent,
            "priority": self.priority,
            "assignee": self.assignee,
            "team": self.team,
            "category": self.category,
            "account": self.account,
            "clocks": [
                {
                    "name": c.name,
                    "status": c.status,
                    "due": c.due_at.isoformat() if c.due_at else None,
                    "breached_at": c.breached_at.isoformat() if c.breached_at else None,
                }
                for c in self.clocks
            ],
            "messages": [
                {
                    "direction": m.direction,
                    "message_id": m.message_id,
                    "from": m.from_addr,
                    "subject": m.subject,
                    "auto_generated": m.auto_generated,
                    "outbox": m.outbox_status,
                }
                for m in self.messages
            ],
        }


async def list_tickets(
    prefix: str, limit: int | None = None, *, queue: bool = False
) -> list[TicketSummary]:
    """Tickets newest first, each with its messages in arrival order.

    ``queue``: the open tickets in work order instead — plan priority first (so package
    customers come before on-demand ones), then the earliest deadline.
    """
    if queue:
        open_states = [TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.WAITING]
        query = Ticket.filter(status__in=open_states).order_by("-priority", "deadline", "id")
    else:
        query = Ticket.all().order_by("-created_at", "-id")
    if limit is not None:
        query = query.limit(limit)
    tickets = await query
    result = []
    for ticket in tickets:
        rows = await Message.filter(ticket_id=ticket.id).order_by("id")
        outbox = {
            row.message_id: row.status.value
            for row in await OutboxRow.filter(ticket_id=ticket.id).only("message_id", "status")
        }
        messages = tuple(
            MessageSummary(
                direction=row.direction.value,
                message_id=row.message_id,
                from_addr=row.from_addr,
                subject=row.subject,
                text=row.text,
                auto_generated=row.auto_generated,
                auto_reason=row.auto_reason,
                received_at=row.received_at,
                outbox_status=outbox.get(row.id) if row.direction is Direction.OUT else None,
            )
            for row in rows
        )
        linked_id = ticket.linked_ticket_id
        clocks = tuple(
            ClockSummary(c.name, c.status.value, c.due_at, c.breached_at)
            for c in await TicketClock.filter(ticket_id=ticket.id).order_by("id")
        )
        result.append(
            TicketSummary(
                id=ticket.id,
                ref=ticket_ref(prefix, ticket.id),
                status=ticket.status.value,
                plan=ticket.plan,
                customer=ticket.customer,
                customer_name=ticket.customer_name,
                language=ticket.language,
                subject=ticket.subject,
                created=ticket.created_at,
                updated=ticket.updated_at,
                deadline=ticket.deadline,
                linked_ref=ticket_ref(prefix, linked_id) if linked_id else None,
                messages=messages,
                severity=ticket.severity,
                urgent=ticket.urgent,
                priority=ticket.priority,
                assignee=ticket.assignee,
                team=ticket.team,
                category=ticket.category,
                account=ticket.account,
                clocks=clocks,
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    id: int
    source: str
    message_id: str | None
    size: int
    error: str
    received_at: datetime


async def list_quarantine() -> list[QuarantineEntry]:
    rows = await Message.filter(state=MessageState.QUARANTINED).order_by("id")
    return [
        QuarantineEntry(
            id=row.id,
            source=row.source,
            message_id=row.message_id,
            size=len(row.raw_bytes),
            error=row.error or "",
            received_at=row.received_at,
        )
        for row in rows
    ]
