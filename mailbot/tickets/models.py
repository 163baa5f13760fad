"""Tortoise ORM rows. They never leave ``mailbot.tickets``: other packages get frozen values.

The database is the queue: an inbound message is a ``Message`` row, every mail to send is an
``OutboxRow`` (with its own outbound ``Message`` row so its Message-ID threads replies), and
the IMAP checkpoint lives in ``MailboxState`` in the same transaction as the messages it covers.
"""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.models import Model

from mailbot.domain import TicketStatus
from mailbot.sla.clocks import ClockStatus, EventKind


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class MessageState(enum.StrEnum):
    STORED = "stored"
    QUARANTINED = "quarantined"
    #: Quarantined, then let go by the operator (``mailbot quarantine release``): kept with
    #: its raw bytes, not processed; the same mail fetched again is a duplicate of it.
    RELEASED = "released"


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class WikiRedirect(enum.StrEnum):
    """What came of a new ticket answered with a wiki redirect (``Ticket.wiki_redirect``)."""

    PENDING = "pending"  # waiting on the customer, its clocks paused
    CAME_BACK = "came_back"  # the customer wrote again: a normal ticket for an agent
    RESOLVED_UNANSWERED = "resolved_unanswered"  # no reply within wiki_followup.resolve_after


class MailboxState(Model):
    """The IMAP checkpoint of one mailbox: its UIDVALIDITY and the last UID committed."""

    key = fields.CharField(max_length=512, primary_key=True)
    uidvalidity = fields.BigIntField(null=True)
    last_uid = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "mailbox_state"


class Ticket(Model):
    id = fields.IntField(primary_key=True)
    status = fields.CharEnumField(TicketStatus, max_length=16, default=TicketStatus.NEW)
    plan = fields.CharField(max_length=64)
    customer = fields.CharField(max_length=320, db_index=True)
    customer_name = fields.CharField(max_length=255, default="")
    language = fields.CharField(max_length=8)
    subject = fields.TextField()
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    deadline = fields.DatetimeField(null=True, db_index=True)
    severity = fields.CharField(max_length=4, default="L4")
    urgent = fields.BooleanField(default=False)
    priority = fields.IntField(default=0, db_index=True)
    #: The agent (an id from rules.yaml ``agents``) and team the ticket is assigned to.
    assignee = fields.CharField(max_length=64, null=True, db_index=True)
    team = fields.CharField(max_length=64, null=True)
    #: The customer's account (rules.yaml ``accounts``, or the customer entry's match).
    account = fields.CharField(max_length=320, null=True, db_index=True)
    category = fields.CharField(max_length=32, default="")
    #: The first message read as a how-to question (counted for training offers).
    howto = fields.BooleanField(default=False)
    #: Answered with a wiki redirect when new: whether the customer came back (None: not
    #: redirected). mailbot.tickets.wiki_followup. A new column (no migrations yet).
    wiki_redirect = fields.CharEnumField(
        WikiRedirect, max_length=24, null=True, default=None, db_index=True
    )
    resolved_at = fields.DatetimeField(null=True)
    spam = fields.BooleanField(default=False)
    #: The mailbox it came in by, when one daemon serves several (mailbot.tickets.scope);
    #: "" for the single or default one.
    mailbox = fields.CharField(max_length=64, default="", db_index=True)
    linked_ticket: fields.ForeignKeyNullableRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    linked_ticket_id: int | None

    class Meta:
        table = "ticket"
        #: Foreign keys are indexed (SQLite and PostgreSQL index none by themselves); the wiki
        #: follow-up sweep reads pending redirects only; open tickets (queues, metrics) are
        #: found without reading every ticket ever closed.
        indexes = (("linked_ticket_id",), ("wiki_redirect", "created_at"), ("status",))


class Participant(Model):
    """An address that took part in a ticket: it may thread by subject token."""

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="participants", on_delete=fields.CASCADE
    )
    ticket_id: int
    address = fields.CharField(max_length=320)
    role = fields.CharField(max_length=16, default="customer")

    class Meta:
        table = "participant"
        unique_together = (("ticket", "address"),)


class Message(Model):
    """Every message we received (raw bytes kept) and every one we queued for sending."""

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyNullableRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="messages", null=True, on_delete=fields.SET_NULL
    )
    ticket_id: int | None
    direction = fields.CharEnumField(Direction, max_length=8)
    state = fields.CharEnumField(MessageState, max_length=16, default=MessageState.STORED)
    message_id = fields.CharField(max_length=998, null=True, db_index=True)
    mailbox = fields.CharField(max_length=512, null=True)
    uidvalidity = fields.BigIntField(null=True)
    uid = fields.BigIntField(null=True)
    source = fields.CharField(max_length=1024, default="")
    content_hash = fields.CharField(max_length=80, db_index=True)
    raw_bytes = fields.BinaryField()
    from_addr = fields.CharField(max_length=320, default="")
    subject = fields.TextField(default="")
    text = fields.TextField(default="")
    sent_date = fields.DatetimeField(null=True)
    received_at = fields.DatetimeField()
    auto_generated = fields.BooleanField(default=False)
    auto_reason = fields.TextField(null=True)
    bounce = fields.BooleanField(default=False)
    error = fields.TextField(null=True)
    #: Who wrote it and who may see it: ``customer`` (customer-visible thread), ``agent``
    #: (an agent's mail to us), ``internal`` (notes, notifications, unauthorised replies to
    #: them), ``system`` (our automatic answers).
    role = fields.CharField(max_length=16, default="customer")
    #: The ruleset version (mailbot.policy) an inbound message was decided under. A new
    #: column: databases created before it lack it (no migrations yet).
    rules_version = fields.CharField(max_length=16, null=True)

    class Meta:
        table = "message"
        #: A ticket's messages (threading answers, views) and the quarantine without
        #: scanning all mail.
        indexes = (("ticket_id",), ("state",))
        unique_together = (("mailbox", "uidvalidity", "uid"),)


class OutboxRow(Model):
    """One mail to send. Composed in the same transaction as the ticket change."""

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyNullableRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="outbox", null=True, on_delete=fields.SET_NULL
    )
    ticket_id: int | None
    message: fields.ForeignKeyRelation[Message] = fields.ForeignKeyField(
        "models.Message", related_name="outbox", on_delete=fields.CASCADE
    )
    message_id: int
    kind = fields.CharField(max_length=32)
    mail_from = fields.CharField(max_length=320)
    rcpt_to = fields.CharField(max_length=320, db_index=True)
    status = fields.CharEnumField(OutboxStatus, max_length=16, default=OutboxStatus.QUEUED)
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField(db_index=True)
    claimed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(db_index=True)
    sent_at = fields.DatetimeField(null=True)
    last_error = fields.TextField(null=True)
    #: The mailbox whose SMTP server and address send it (mailbot.tickets.scope).
    mailbox = fields.CharField(max_length=64, default="", db_index=True)

    class Meta:
        table = "outbox"
        #: The storm brake's "answers in all within the window" count reads this index alone
        #: (mailbot.tickets.limits), not every outbox row of the window.
        #: (status, next_attempt_at): the sender's due rows and next wake-up read queued rows
        #: only, not every row ever sent.
        indexes = (
            ("kind", "created_at"),
            ("status", "next_attempt_at"),
            ("ticket_id",),
            ("message_id",),
        )


class TicketClock(Model):
    """One SLA clock of a ticket (first response, registered, action started, resolution)."""

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="clocks", on_delete=fields.CASCADE
    )
    ticket_id: int
    name = fields.CharField(max_length=32)
    status = fields.CharEnumField(ClockStatus, max_length=16, default=ClockStatus.RUNNING)
    started_at = fields.DatetimeField()
    due_at = fields.DatetimeField(null=True, db_index=True)
    breached_at = fields.DatetimeField(null=True)
    stopped_at = fields.DatetimeField(null=True)

    class Meta:
        table = "ticket_clock"
        unique_together = (("ticket", "name"),)


class ClockEventRow(Model):
    """What happened to a ticket's clocks; the clocks are recomputed from these rows."""

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="clock_events", on_delete=fields.CASCADE
    )
    ticket_id: int
    kind = fields.CharEnumField(EventKind, max_length=16)
    clock = fields.CharField(max_length=32, null=True)  # for "met"; None: every clock
    at = fields.DatetimeField()

    class Meta:
        table = "clock_event"
        indexes = (("ticket_id",),)


class ReminderStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"  # no longer relevant: clock met, paused, or ticket closed
    MISSED = "missed"  # fell due while no daemon ran, and a later one supersedes it


class Reminder(Model):
    """A notice due at ``due_at``: a warning before a deadline, or the escalation at breach.

    The row is the truth; the scheduler only wakes the sweep. It is claimed by a conditional
    UPDATE (pending -> sent) in the same transaction as its outbox row, so it goes out once
    across restarts and across several daemons on one database.
    """

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="reminders", on_delete=fields.CASCADE
    )
    ticket_id: int
    clock = fields.CharField(max_length=32)
    kind = fields.CharField(max_length=32)  # "percent:80", "before:30", "breach"
    recipient = fields.CharField(max_length=320)
    due_at = fields.DatetimeField(db_index=True)
    status = fields.CharEnumField(ReminderStatus, max_length=16, default=ReminderStatus.PENDING)
    decided_at = fields.DatetimeField(null=True)
    note = fields.TextField(null=True)

    class Meta:
        table = "reminder"
        unique_together = (("ticket", "clock", "kind"),)
        #: The sweep reads pending reminders only, not every one ever sent.
        indexes = (("status", "due_at"),)


class TimeEntry(Model):
    """Time an agent logged on a ticket (``#time``), rounded, surcharged and billed.

    ``billed`` is exact (minutes as a Decimal); the time bank's balance is computed from
    these rows and the top-ups, never stored.
    """

    id = fields.IntField(primary_key=True)
    ticket: fields.ForeignKeyRelation[Ticket] = fields.ForeignKeyField(
        "models.Ticket", related_name="time_entries", on_delete=fields.CASCADE
    )
    ticket_id: int
    account = fields.CharField(max_length=320, db_index=True)
    agent = fields.CharField(max_length=64)
    at = fields.DatetimeField(db_index=True)
    worked = fields.IntField()
    rounded = fields.IntField()
    surcharge_percent = fields.IntField(default=0)
    billed = fields.DecimalField(max_digits=14, decimal_places=4)
    chargeable = fields.BooleanField(default=True)
    category = fields.CharField(max_length=32)
    urgent = fields.BooleanField(default=False)
    outside_office_hours = fields.BooleanField(default=False)
    description = fields.TextField(default="")
    reasons = fields.TextField(default="")
    message: fields.ForeignKeyNullableRelation[Message] = fields.ForeignKeyField(
        "models.Message", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    message_id: int | None

    class Meta:
        table = "time_entry"
        indexes = (("ticket_id",), ("message_id",))


class TopUp(Model):
    """Hours bought for a prepaid service account (``mailbot timebank topup``)."""

    id = fields.IntField(primary_key=True)
    account = fields.CharField(max_length=320, db_index=True)
    minutes = fields.IntField()
    at = fields.DatetimeField()
    note = fields.TextField(default="")

    class Meta:
        table = "time_topup"


class AssignmentCursor(Model):
    """Round-robin state of a team: the agent who got its last ticket."""

    team = fields.CharField(max_length=64, primary_key=True)
    last_agent = fields.CharField(max_length=64)

    class Meta:
        table = "assignment_cursor"


class SuppressedAddress(Model):
    """An address that hard-bounced: it gets no more automatic mail (agents' answers still
    go, and fail visibly, so a human decides). A reply from it to our mail lifts the
    suppression: the mailbox exists again. New mail merely claiming to be from it does not
    (forged senders are how backscatter starts)."""

    address = fields.CharField(max_length=320, primary_key=True)
    reason = fields.TextField(default="")
    since = fields.DatetimeField()
    bounces = fields.IntField(default=1)
    last_ticket = fields.IntField(null=True)

    class Meta:
        table = "suppressed_address"


class MailboxLease(Model):
    """Which daemon fetches a mailbox (``mailbot.mailbox.lease``): one holder at a time,
    renewed well before ``expires_at``; another daemon takes over once it has passed (at
    once when the holder ran on the same host and its process is gone)."""

    key = fields.CharField(max_length=512, primary_key=True)  # as MailboxState.key
    holder = fields.CharField(max_length=255)  # "host pid token"
    acquired_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()

    class Meta:
        table = "mailbox_lease"
