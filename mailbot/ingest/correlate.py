"""Threading: which ticket does a message belong to? Pure functions only.

Order of evidence, strongest first:

1. In-Reply-To, then References (newest first): any id we stored (received or sent) names the
   ticket. Clients that drop References (Outlook) still keep In-Reply-To; a forwarded message
   that kept neither falls through to 2.
2. The ticket token in the subject (``[#1042]``, or ``[ASHOP#1042]`` with a prefix), but only
   when the sender is already a participant of that ticket. A stranger who quotes a token gets
   a new ticket linked to the old one: nobody can attach mail to somebody else's ticket by
   guessing a number.
3. Otherwise a new ticket, unless the message is auto-generated (then it is stored without a
   ticket: newsletters and stray bounces do not open tickets).

A reply from a customer to a resolved or closed ticket reopens it when it comes within the
grace period after resolution (``reopen_within``); a later one opens a new ticket linked to
the old one. Auto-generated mail never reopens anything, and a ticket closed as spam takes
replies without reopening.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.domain import ThreadMatch, TicketAction, TicketStatus

# Reply and forward prefixes of common clients and of the seeds' languages (sv, en, it) and
# their neighbours: Re, Fwd/Fw, AW/WG (de), SV/VS/VB (sv, da, no, fi), R/RIF/I (it, Outlook),
# Odp/PD (pl), TR (fr), Antw/Doorst (nl), RES/ENC (pt), RV (es), YNT/İLT (tr), Vá (hu).
_PREFIX = re.compile(
    r"""^\s*
        (?:re|fwd?|aw|wg|sv|vs|vb|vl|r|rif|i|inoltro|odp|pd|tr|antw|antwort|doorst|res|enc|rv|
           ynt|ilt|v[aá]|ref|réf|rép|fs|atb|rsp|svar|videre)
        (?:\s*\[\d+\]|\s*\(\d+\))?      # Re[2]: / Re(3):
        \s*[:：]\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_SPACES = re.compile(r"\s+")


def token_pattern(prefix: str) -> re.Pattern[str]:
    """The subject token, e.g. ``[#1042]`` or ``[ASHOP#1042]`` (prefix matched case-blind)."""
    return re.compile(r"\[" + re.escape(prefix) + r"#(\d{1,12})\]", re.IGNORECASE)


def ticket_ref(prefix: str, ticket: int | str) -> str:
    """The ticket reference people read: ``#1042`` or ``ASHOP#1042``."""
    return f"{prefix}#{ticket}"


def format_token(prefix: str, ticket: int | str) -> str:
    """The token put in subjects: ``[#1042]`` or ``[ASHOP#1042]``."""
    return f"[{ticket_ref(prefix, ticket)}]"


def find_token(subject: str, prefix: str) -> int | None:
    match = token_pattern(prefix).search(subject)
    return int(match.group(1)) if match else None


def strip_prefixes(subject: str) -> str:
    """Remove every leading reply/forward prefix: ``AW: Re[2]: SV: Hello`` -> ``Hello``."""
    previous = None
    text = _SPACES.sub(" ", subject).strip()
    while previous != text:
        previous = text
        text = _PREFIX.sub("", text, count=1).strip()
    return text


def clean_subject(subject: str, prefix: str) -> str:
    """The subject as a ticket shows it: no prefixes, no token, single spaces."""
    without_token = token_pattern(prefix).sub(" ", subject)
    return strip_prefixes(_SPACES.sub(" ", without_token).strip())


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What correlation needs to know about a candidate ticket (read from the database)."""

    ticket_id: int
    status: TicketStatus
    participants: frozenset[str]
    plan: str = ""
    language: str = ""
    resolved_at: datetime | None = None
    spam: bool = False


_CLOSED = {TicketStatus.RESOLVED, TicketStatus.CLOSED}


@dataclass(frozen=True, slots=True)
class Grace:
    """When a reply to a resolved ticket still reopens it."""

    now: datetime
    reopen_within: timedelta

    def expired(self, resolved_at: datetime | None) -> bool:
        return resolved_at is not None and self.now - resolved_at > self.reopen_within


def _join(
    facts: TicketFacts,
    *,
    auto: bool,
    reason: str,
    grace: Grace | None,
    by_reference: bool = False,
) -> ThreadMatch:
    if facts.status in _CLOSED and not auto and not facts.spam:
        if grace is not None and grace.expired(facts.resolved_at):
            return ThreadMatch(
                None,
                TicketAction.NEW,
                f"{reason}; ticket was resolved more than "
                f"{grace.reopen_within.days} days ago: new ticket, linked",
                linked_ticket_id=facts.ticket_id,
                by_reference=by_reference,
            )
        return ThreadMatch(
            facts.ticket_id,
            TicketAction.REOPEN,
            reason + "; ticket was closed",
            by_reference=by_reference,
        )
    return ThreadMatch(facts.ticket_id, TicketAction.APPEND, reason, by_reference=by_reference)


def correlate(
    *,
    in_reply_to: tuple[str, ...],
    references: tuple[str, ...],
    subject: str,
    sender: str | None,
    auto_generated: bool,
    known_ids: Mapping[str, TicketFacts],
    token_ticket: TicketFacts | None,
    token: int | None,
    grace: Grace | None = None,
) -> ThreadMatch:
    """Decide new/append/reopen/none from the message's ids, its token and what we know.

    ``known_ids`` maps Message-IDs we have stored to their ticket; ``token_ticket`` is the
    ticket named by the subject token ``token`` if it exists.
    """
    for msg_id in (*in_reply_to, *reversed(references)):
        facts = known_ids.get(msg_id)
        if facts is not None:
            return _join(
                facts,
                auto=auto_generated,
                reason=f"replies to {msg_id}",
                grace=grace,
                by_reference=True,
            )
    linked: int | None = None
    if token is not None and token_ticket is not None:
        if sender is not None and sender.lower() in token_ticket.participants:
            return _join(
                token_ticket,
                auto=auto_generated,
                reason=f"subject token #{token} from a participant",
                grace=grace,
            )
        linked = token_ticket.ticket_id
    if auto_generated:
        return ThreadMatch(None, TicketAction.NONE, "auto-generated and not part of a ticket")
    if linked is not None:
        return ThreadMatch(
            None,
            TicketAction.NEW,
            f"subject token #{token} from a non-participant: new ticket, linked",
            linked_ticket_id=linked,
        )
    return ThreadMatch(None, TicketAction.NEW, "no known reference or token")
