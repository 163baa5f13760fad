"""The read side: ticket listings and quarantine, as plain values for the CLI and the demo."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from email.parser import HeaderParser
from email.policy import compat32

from tortoise.expressions import RawSQL

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

log = logging.getLogger(__name__)


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
    customers come before on-demand ones), then the earliest deadline; tickets without one
    (waiting on the customer, clocks paused) last, on SQLite as on PostgreSQL.
    """
    if queue:
        open_states = [TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.WAITING]
        query = (
            Ticket.filter(status__in=open_states)
            .annotate(no_deadline=RawSQL('"deadline" IS NULL'))  # false (0) first
            .order_by("-priority", "no_deadline", "deadline", "id")
        )
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


#: The headers ``quarantine show`` prints (and ``list`` takes From from), in this order.
QUARANTINE_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")
#: Only this much of a quarantined message is searched for its header block.
_HEADER_SCAN_BYTES = 64 * 1024
_MAX_HEADER_CHARS = 2000
_REASON_LINE_CHARS = 200
# Control characters (and bidi overrides) a terminal would act on: shown as escapes instead.
_UNSAFE_CHARS = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (but tab and newline) escaped."""
    return _UNSAFE_CHARS.sub(_escape_char, text)


def one_line(text: str, limit: int = _REASON_LINE_CHARS) -> str:
    """White space runs (newlines too) as one space, escaped, cut to ``limit`` characters."""
    line = printable(" ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _header_block(raw: bytes) -> bytes:
    head = raw[:_HEADER_SCAN_BYTES]
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    return head[: min(ends)] if ends else head


def _line_text(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _decoded(value: str) -> str:
    try:
        text = str(make_header(decode_header(value)))
    except Exception:  # an undecodable encoded word: show the header as it is
        log.debug("header value kept undecoded: %r", value[:200], exc_info=True)
        text = value
    return one_line(text, _MAX_HEADER_CHARS)


def read_headers(raw: bytes) -> tuple[tuple[str, str], ...]:
    """The :data:`QUARANTINE_HEADERS` present in ``raw``, read leniently; never raises.

    Best effort for mail the intake could not take: only the standard library, each line
    read as UTF-8 (else Latin-1), RFC 2047 words decoded where they can be (else shown as
    they are), values unfolded onto one line with control characters escaped.
    """
    text = "\n".join(_line_text(line) for line in _header_block(raw).split(b"\n"))
    try:
        parsed = HeaderParser(policy=compat32).parsestr(text, headersonly=True)
        values = [(name, parsed.get(name)) for name in QUARANTINE_HEADERS]
    except Exception:  # the stdlib parser is lenient; this is a last resort
        log.debug("headers of a quarantined message not read", exc_info=True)
        return ()
    return tuple((name, _decoded(str(value))) for name, value in values if value is not None)


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A quarantined message (or, with ``state`` "released", one the operator let go)."""

    id: int
    source: str
    message_id: str | None
    size: int
    error: str
    received_at: datetime
    state: str = MessageState.QUARANTINED.value
    #: :data:`QUARANTINE_HEADERS` read leniently from the stored bytes (see read_headers).
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    @property
    def from_(self) -> str | None:
        return self.header("From")

    @property
    def shown_message_id(self) -> str | None:
        """The stored Message-ID, else the header's (unparseable mail has none stored)."""
        return printable(self.message_id) if self.message_id else self.header("Message-ID")

    @property
    def reason_line(self) -> str:
        return one_line(self.error) or "-"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state,
            "received": self.received_at.isoformat(),
            "size": self.size,
            "source": self.source,
            "message_id": self.message_id or self.header("Message-ID"),
            "from": self.from_,
            "reason": self.error,
        }


def _entry(row: Message) -> QuarantineEntry:
    return QuarantineEntry(
        id=row.id,
        source=row.source,
        message_id=row.message_id,
        size=len(row.raw_bytes),
        error=row.error or "",
        received_at=row.received_at,
        state=MessageState(row.state).value,
        headers=read_headers(row.raw_bytes),
    )


async def list_quarantine(*, released: bool = False) -> list[QuarantineEntry]:
    """The quarantined messages, oldest first; with ``released``, the released ones instead."""
    state = MessageState.RELEASED if released else MessageState.QUARANTINED
    rows = await Message.filter(state=state).order_by("id")
    return [_entry(row) for row in rows]


_QUARANTINE_STATES = (MessageState.QUARANTINED, MessageState.RELEASED)


async def quarantine_entry(row_id: int) -> QuarantineEntry | None:
    """One quarantined or released message, or None if there is no such row."""
    row = await Message.filter(id=row_id, state__in=_QUARANTINE_STATES).first()
    return _entry(row) if row is not None else None


async def quarantine_raw(row_id: int) -> bytes | None:
    """The exact stored bytes of a quarantined or released message (None: no such row)."""
    rows = (
        await Message.filter(id=row_id, state__in=_QUARANTINE_STATES)
        .limit(1)
        .values_list("raw_bytes", flat=True)
    )
    return bytes(rows[0]) if rows else None
