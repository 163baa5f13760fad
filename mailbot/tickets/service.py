"""The write side: everything one message changes, inside the caller's transaction.

Callers open ``in_transaction()`` and call these functions with its connection, so the
message row, the ticket, its participants, the outbound reply with its outbox row and the IMAP
checkpoint commit together or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.domain import Decision, ParsedMessage, TicketAction, TicketStatus
from mailbot.ingest.correlate import TicketFacts
from mailbot.outbound.compose import Outgoing
from mailbot.tickets.models import (
    Direction,
    MailboxState,
    Message,
    MessageState,
    OutboxRow,
    Participant,
    Ticket,
)
from mailbot.tickets.raw_sql import dialect_sql, insert_row, python_value, table
from mailbot.tickets.scope import current_mailbox

# Column widths of the models; hostile input is clipped to them rather than refused.
_ID_MAX, _ADDRESS_MAX, _NAME_MAX, _SOURCE_MAX = 998, 320, 255, 1024


def _storable_id(message_id: str | None) -> str | None:
    """A Message-ID longer than a header line may be is invalid: it is not kept as a key."""
    return message_id if message_id is not None and len(message_id) <= _ID_MAX else None


@dataclass(frozen=True, slots=True)
class Applied:
    ticket_id: int | None
    message_row: int
    resumed: bool  # a waiting ticket got the customer's answer: its clocks resume
    ticket: Ticket | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where raw bytes came from: an IMAP UID (checkpointed) or an import path."""

    label: str
    mailbox: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None


def _placeholders(conn: BaseDBAsyncClient) -> Callable[[int], str]:
    """The n-th (from 1) query parameter's placeholder in the connection's dialect."""
    if conn.capabilities.dialect == "sqlite":
        return lambda _: "?"
    return lambda n: f"${n}"


async def find_duplicate(
    conn: BaseDBAsyncClient, origin: Origin, message_id: str | None, content_hash: str
) -> str | None:
    """Why this message is already stored, or None. Keys: UID, Message-ID, content hash.

    One query per message, written out rather than built with the ORM's query builder
    (Q objects, pypika): that builder is CPU spent on the event loop for every message."""
    mark = _placeholders(conn)
    terms = ["content_hash = {}"]
    values: list[object] = [content_hash]
    if _storable_id(message_id) is not None:
        terms.append("message_id = {}")
        values.append(message_id)
    if origin.uid is not None:
        key = {"mailbox": origin.mailbox, "uidvalidity": origin.uidvalidity, "uid": origin.uid}
        terms.append(
            "("
            + " AND ".join(f"{c} IS NULL" if v is None else f"{c} = {{}}" for c, v in key.items())
            + ")"
        )
        values += [v for v in key.values() if v is not None]
    where = " OR ".join(terms).format(*(mark(i) for i in range(1, len(values) + 1)))
    rows = await conn.execute_query_dict(
        f"SELECT direction, message_id, uid, mailbox, uidvalidity, content_hash "
        f'FROM "{Message._meta.db_table}" WHERE {where} LIMIT 5',
        values,
    )
    if not rows:
        return None
    for row in rows:
        if origin.uid is not None and (row["mailbox"], row["uidvalidity"], row["uid"]) == (
            origin.mailbox,
            origin.uidvalidity,
            origin.uid,
        ):
            return f"UID {origin.uid} of {origin.mailbox} already stored"
    for row in rows:
        if message_id is not None and row["message_id"] == message_id:
            if row["direction"] == Direction.OUT:
                return f"Message-ID {message_id} is one we sent"
            return f"Message-ID {message_id} already stored"
    return "identical content already stored"


async def _participants(
    conn: BaseDBAsyncClient, ticket_ids: list[int]
) -> dict[int, frozenset[str]]:
    """The participants of each ticket, in one query."""
    if not ticket_ids:
        return {}
    marks = ", ".join("?" for _ in ticket_ids)
    rows = await conn.execute_query_dict(
        dialect_sql(
            conn,
            f"SELECT ticket_id, address FROM {table(Participant)} WHERE ticket_id IN ({marks})",
        ),
        ticket_ids,
    )
    found: dict[int, set[str]] = {ticket_id: set() for ticket_id in ticket_ids}
    for row in rows:
        found[int(row["ticket_id"])].add(str(row["address"]))
    return {ticket_id: frozenset(addresses) for ticket_id, addresses in found.items()}


_FACT_COLUMNS = "t.id, t.status, t.plan, t.language, t.resolved_at, t.spam"


def _ticket_facts(row: dict[str, Any], participants: frozenset[str]) -> TicketFacts:
    return TicketFacts(
        int(row["id"]),
        python_value(Ticket, "status", row["status"]),
        participants,
        plan=row["plan"],
        language=row["language"],
        resolved_at=python_value(Ticket, "resolved_at", row["resolved_at"]),
        spam=bool(python_value(Ticket, "spam", row["spam"])),
    )


async def thread_facts(
    conn: BaseDBAsyncClient, ids: tuple[str, ...], token: int | None
) -> tuple[dict[str, TicketFacts], TicketFacts | None]:
    """The tickets that the message's ids and subject token point at (written out: every
    message asks, so one query for the ids' tickets, one for the token's, one for all their
    participants)."""
    by_id: list[dict[str, Any]] = []
    if ids:
        marks = ", ".join("?" for _ in ids)
        by_id = await conn.execute_query_dict(
            dialect_sql(
                conn,
                f"SELECT m.message_id, {_FACT_COLUMNS} FROM {table(Message)} AS m "
                f"JOIN {table(Ticket)} AS t ON t.id = m.ticket_id "
                f"WHERE m.message_id IN ({marks}) ORDER BY m.id",
            ),
            list(ids),
        )
    by_token: list[dict[str, Any]] = []
    if token is not None:
        by_token = await conn.execute_query_dict(
            dialect_sql(conn, f"SELECT {_FACT_COLUMNS} FROM {table(Ticket)} AS t WHERE t.id = ?"),
            [token],
        )
    if not by_id and not by_token:
        return {}, None
    participants = await _participants(
        conn, list(dict.fromkeys(int(row["id"]) for row in (*by_id, *by_token)))
    )
    cache: dict[int, TicketFacts] = {}

    def facts(row: dict[str, Any]) -> TicketFacts:
        ticket_id = int(row["id"])
        if ticket_id not in cache:
            cache[ticket_id] = _ticket_facts(row, participants[ticket_id])
        return cache[ticket_id]

    known = {str(row["message_id"]): facts(row) for row in by_id if row["message_id"]}
    return known, facts(by_token[0]) if by_token else None


async def advance_checkpoint(key: str, uidvalidity: int, uid: int) -> None:
    """Record that every UID up to ``uid`` is processed (monotonic: never moves backwards).

    Called by the poller inside the batch's transaction. Even without it, the
    (mailbox, UIDVALIDITY, UID) key would make every re-fetched message a duplicate.
    """
    await MailboxState.filter(key=key, uidvalidity=uidvalidity, last_uid__lt=uid).update(
        last_uid=uid
    )


async def store_quarantined(
    conn: BaseDBAsyncClient,
    *,
    raw: bytes,
    origin: Origin,
    content_hash: str,
    error: str,
    now: datetime,
    message_id: str | None = None,
) -> int:
    row = await Message.create(
        using_db=conn,
        direction=Direction.IN,
        state=MessageState.QUARANTINED,
        message_id=_storable_id(message_id),
        mailbox=origin.mailbox,
        uidvalidity=origin.uidvalidity,
        uid=origin.uid,
        source=origin.label[:_SOURCE_MAX],
        content_hash=content_hash,
        raw_bytes=raw,
        received_at=now,
        error=error,
    )
    return row.id


async def _open_ticket(
    conn: BaseDBAsyncClient,
    decision: Decision,
    subject: str,
    customer_name: str,
    now: datetime,
    priority: int,
) -> Ticket:
    values: dict[str, Any] = dict(
        status=TicketStatus.NEW,
        plan=decision.plan,
        customer=decision.customer[:_ADDRESS_MAX],
        customer_name=customer_name[:_NAME_MAX],
        language=decision.language,
        subject=subject,
        created_at=now,
        updated_at=now,
        deadline=decision.sla.next_deadline if decision.sla else decision.deadline,
        linked_ticket_id=decision.thread.linked_ticket_id,
        severity=decision.severity,
        urgent=decision.urgent,
        priority=priority,
        account=decision.account[:_ADDRESS_MAX] if decision.account else None,
        category=decision.category,
        howto=decision.howto,
        mailbox=current_mailbox(),
    )
    # Inserted without the ORM's query building (it runs for every new request); the
    # instance is the one Ticket.create would return.
    ticket_id = await insert_row(conn, Ticket, **values)
    return Ticket.construct(_saved_in_db=True, id=ticket_id, **values)


async def _add_participant(
    conn: BaseDBAsyncClient, ticket_id: int, address: str, *, new: bool = False
) -> None:
    """Add ``address`` unless it already takes part (``new``: the ticket was just opened, so
    nobody does yet). One statement, written out: it runs for nearly every message."""
    if not address:
        return
    participant = table(Participant)
    sql = f"INSERT INTO {participant} (ticket_id, address, role) "
    values: list[object] = [ticket_id, address[:_ADDRESS_MAX], "customer"]
    if new:
        sql += "VALUES (?, ?, ?)"
    else:
        sql += (
            f"SELECT CAST(? AS INTEGER), ?, ? WHERE NOT EXISTS "
            f"(SELECT 1 FROM {participant} WHERE ticket_id = ? AND address = ?)"
        )
        values += [ticket_id, address]
    await conn.execute_query(dialect_sql(conn, sql), values)


async def apply_inbound(
    conn: BaseDBAsyncClient,
    *,
    msg: ParsedMessage,
    raw: bytes,
    origin: Origin,
    content_hash: str,
    decision: Decision,
    subject: str,
    new_text: str,
    now: datetime,
    priority: int = 0,
    rules_version: str | None = None,
) -> Applied:
    """Store the message and apply the ticket action (``rules_version``: the ruleset that
    decided it)."""
    action = decision.thread.action
    ticket: Ticket | None = None
    resumed = False
    if action is TicketAction.NEW:
        name = msg.from_.name if msg.from_ else ""
        ticket = await _open_ticket(conn, decision, subject, name, now, priority)
    elif decision.thread.ticket_id is not None:
        ticket = await Ticket.get(id=decision.thread.ticket_id, using_db=conn)
        ticket.updated_at = now
        if action is TicketAction.REOPEN:
            ticket.status = TicketStatus.OPEN
            ticket.resolved_at = None
        elif ticket.status is TicketStatus.WAITING and not decision.auto.auto_generated:
            # The customer answered what we waited for: the clocks run again.
            ticket.status = TicketStatus.OPEN
            resumed = True
        await ticket.save(using_db=conn, update_fields=["updated_at", "status", "resolved_at"])
    if ticket is not None and decision.customer and not decision.auto.auto_generated:
        await _add_participant(conn, ticket.id, decision.customer, new=action is TicketAction.NEW)
    row_id = await store_inbound(
        conn,
        msg=msg,
        raw=raw,
        origin=origin,
        content_hash=content_hash,
        ticket_id=ticket.id if ticket else None,
        new_text=new_text,
        now=now,
        auto_generated=decision.auto.auto_generated,
        auto_reason=decision.auto.reason,
        bounce=decision.auto.bounce,
        role="customer",
        rules_version=rules_version,
    )
    return Applied(ticket.id if ticket else None, row_id, resumed, ticket)


async def store_inbound(
    conn: BaseDBAsyncClient,
    *,
    msg: ParsedMessage,
    raw: bytes,
    origin: Origin,
    content_hash: str,
    ticket_id: int | None,
    new_text: str,
    now: datetime,
    auto_generated: bool,
    auto_reason: str | None,
    bounce: bool = False,
    role: str = "customer",
    rules_version: str | None = None,
) -> int:
    """One received message row (raw bytes kept); ``role`` says who may see it,
    ``rules_version`` which ruleset decided it."""
    return await insert_row(
        conn,
        Message,
        ticket_id=ticket_id,
        direction=Direction.IN,
        message_id=_storable_id(msg.message_id),
        mailbox=origin.mailbox,
        uidvalidity=origin.uidvalidity,
        uid=origin.uid,
        source=origin.label[:_SOURCE_MAX],
        content_hash=content_hash,
        raw_bytes=raw,
        from_addr=msg.from_.key[:_ADDRESS_MAX] if msg.from_ else "",
        subject=msg.subject,
        text=new_text,
        sent_date=msg.date,
        received_at=now,
        auto_generated=auto_generated,
        auto_reason=auto_reason,
        bounce=bounce,
        role=role,
        rules_version=rules_version,
    )


async def queue_outgoing(
    conn: BaseDBAsyncClient | None,
    *,
    ticket_id: int | None,
    kind: str,
    out: Outgoing,
    now: datetime,
    role: str = "system",
) -> int:
    """An outbound Message row (its id threads replies) and the outbox row that sends it.

    ``role``: ``system`` (automatic answers to the customer), ``agent`` (a relayed agent
    answer), ``internal`` (notifications and other mail to agents)."""
    message_row = await insert_row(
        conn if conn is not None else Message._meta.db,
        Message,
        ticket_id=ticket_id,
        direction=Direction.OUT,
        message_id=out.message_id,
        source=f"outbox:{kind}",
        content_hash=sha256_hex(out.raw),
        raw_bytes=out.raw,
        from_addr=out.mail_from.lower(),
        subject=out.subject,
        received_at=now,
        auto_generated=role != "agent",
        role=role,
    )
    return await insert_row(
        conn if conn is not None else OutboxRow._meta.db,
        OutboxRow,
        ticket_id=ticket_id,
        message_id=message_row,
        kind=kind,
        mail_from=out.mail_from,
        rcpt_to=out.rcpt_to,
        next_attempt_at=now,
        created_at=now,
        mailbox=current_mailbox(),
    )


async def ensure_mailbox_state(conn: BaseDBAsyncClient, key: str, uidvalidity: int) -> int:
    """The UID to resume after. A new UIDVALIDITY restarts at 0 (dedup keeps it exact)."""
    state = await MailboxState.filter(key=key).using_db(conn).first()
    if state is None:
        await MailboxState.create(using_db=conn, key=key, uidvalidity=uidvalidity, last_uid=0)
        return 0
    if state.uidvalidity != uidvalidity:
        await (
            MailboxState.filter(key=key).using_db(conn).update(uidvalidity=uidvalidity, last_uid=0)
        )
        return 0
    return int(state.last_uid)


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
