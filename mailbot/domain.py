"""Frozen values passed between the pipeline's stages.

Nothing here touches I/O. ORM rows never leave ``mailbot.tickets``; these values do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailbot.sla.plan import SlaStatus


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox address, strictly parsed. ``email`` keeps the local part's case."""

    email: str
    name: str = ""

    @property
    def key(self) -> str:
        """The form used for comparisons and lookups: lower-cased."""
        return self.email.lower()

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    #: A TNEF part (winmail.dat) that was unpacked: the files in it follow it in the list.
    container: bool = False
    #: A file unpacked from a TNEF part: that part's file name (``winmail.dat`` if unnamed).
    unpacked_from: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What intake knows about one message after parsing.

    Message ids (``message_id``, ``in_reply_to``, ``references``) are normalised to the
    ``<local@domain>`` form with angle brackets and no surrounding whitespace.
    ``headers`` holds the headers that matter for loop and bounce detection, names
    lower-cased, in message order (a name may repeat).
    """

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_: Address | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    date: datetime | None
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]
    content_type: str
    size: int
    defects: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of a loop-relevant header, or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key == wanted)


@dataclass(frozen=True, slots=True)
class AutoVerdict:
    """Whether a message was generated automatically, and why (for logs and simulate)."""

    auto_generated: bool
    reason: str | None = None
    bounce: bool = False
    # Addresses the bounce says failed, when it is a delivery report that names them.
    failed_recipients: tuple[str, ...] = ()


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


class TicketAction(enum.StrEnum):
    NEW = "new"
    APPEND = "append"
    REOPEN = "reopen"
    NONE = "none"


class ReplyKind(enum.StrEnum):
    ACK = "ack"
    WIKI = "wiki"
    OUT_OF_SCOPE = "out_of_scope"
    TRAINING = "training"


class Disposition(enum.StrEnum):
    """What intake did with one message, for logs, metrics and the demo's account."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class WikiHit:
    title: str
    url: str
    score: float


@dataclass(frozen=True, slots=True)
class Reply:
    """An automatic answer chosen by the rules; rendered and composed later."""

    kind: ReplyKind
    template: str
    language: str
    to: Address
    articles: tuple[WikiHit, ...] = ()
    #: out_of_scope / training: the paid option in the reply's language (rules.yaml).
    paid_option: str = ""


@dataclass(frozen=True, slots=True)
class ThreadMatch:
    """How a message relates to existing tickets (result of the pure correlation)."""

    ticket_id: int | None
    action: TicketAction
    reason: str
    linked_ticket_id: int | None = None
    #: Found through In-Reply-To/References (not the subject token).
    by_reference: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything the rules decided about one message; applied in one transaction."""

    thread: ThreadMatch
    plan: str
    customer: str
    language: str
    auto: AutoVerdict
    reply: Reply | None
    deadline: datetime | None
    rule_hits: tuple[str, ...] = field(default=())
    severity: str = "L4"
    urgent: bool = False
    #: The new ticket's clocks and reminders (None for follow-ups and stored-only mail).
    sla: SlaStatus | None = None
    #: The customer's account (time bank, account manager); None without a sender.
    account: str | None = None
    #: A new ticket's category (a classification rule's, else billing.default_category).
    category: str = ""
    #: A new ticket that reads as a how-to question (counted for training offers).
    howto: bool = False
    #: The action-table row that decided, if one did.
    action: str | None = None
    #: escalate: who is told at once (agent ids, leads, account_manager, team, assignee).
    escalate_to: tuple[str, ...] = ()


class Severity(enum.StrEnum):
    """How bad a ticket is, seed 003's four levels: L1 is the worst."""

    L1 = "L1"  # emergency: site down, orders or payments impossible, security breach
    L2 = "L2"  # partial outage: products missing, transactional mails not sent
    L3 = "L3"  # high priority, not an emergency: corrupted pages, search or filters broken
    L4 = "L4"  # regular: small bugs, design changes, configuration, new features


@dataclass(frozen=True, slots=True)
class ClassificationResult:
    """Severity and urgency of a message, and which rules decided them (for simulate)."""

    severity: Severity
    urgent: bool
    hits: tuple[str, ...] = ()
    #: Set by a rule; None: the ticket gets ``billing.default_category``.
    category: str | None = None
