"""Compose outbound mail: headers, threading, loop markers. Pure: bytes in the outbox row.

Every automatic mail carries ``Auto-Submitted: auto-replied`` (RFC 3834),
``X-Auto-Response-Suppress: All`` (asks Exchange not to answer it), and our loop marker
``X-Mailbot-Loop``, which intake recognises. Message-ID, In-Reply-To and References are plain
ASCII ``<id>`` lists, never RFC 2047-encoded. Values that came from a customer (subject, name)
have CR/LF and other control characters collapsed, so they can never inject a header.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

from mailbot.domain import Address

# Lines up to 998 octets (RFC 5322); folding happens at whitespace only, never encoding ids.
_POLICY = policy.SMTP.clone(max_line_length=998)
# For an internationalised address (RFC 6532): UTF-8 headers, sent with SMTPUTF8 (RFC 6531).
_POLICY_UTF8 = policy.SMTPUTF8.clone(max_line_length=998)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_ASCII_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>$")
# RFC 5322 §3.6.4 allows trimming References; keep the root and the most recent ones.
MAX_REFERENCES = 20


def loop_marker(support_address: str) -> str:
    """A stable marker for this installation, derived from its support address."""
    digest = hashlib.sha256(support_address.lower().encode()).hexdigest()[:16]
    return f"mailbot-{digest}"


def single_line(value: str) -> str:
    """Collapse CR, LF, tabs and other control characters to single spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())


def new_message_id(domain: str, ticket_id: int | None) -> str:
    tag = f".t{ticket_id}" if ticket_id is not None else ""
    return f"<{uuid.uuid4().hex}{tag}@{domain}>"


def reference_chain(parent_id: str | None, parent_references: tuple[str, ...]) -> tuple[str, ...]:
    """References for a reply: the parent's chain plus the parent, trimmed, ASCII ids only."""
    chain = [ref for ref in parent_references if _ASCII_ID.match(ref)]
    if parent_id and _ASCII_ID.match(parent_id):
        chain.append(parent_id)
    unique = list(dict.fromkeys(chain))
    if len(unique) > MAX_REFERENCES:
        unique = [unique[0], *unique[-(MAX_REFERENCES - 1) :]]
    return tuple(unique)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A composed mail: the envelope and the exact bytes to send."""

    message_id: str
    mail_from: str
    rcpt_to: str
    subject: str
    raw: bytes

    @property
    def needs_smtputf8(self) -> bool:
        return not (self.mail_from.isascii() and self.rcpt_to.isascii())


def _header_address(address: Address) -> HeaderAddress:
    # username/domain, not addr_spec: addr_spec refuses an RFC 6532 (UTF-8) local part.
    local, _, domain = address.email.rpartition("@")
    return HeaderAddress(display_name=single_line(address.name), username=local, domain=domain)


def subject_with_token(subject: str, token: str) -> str:
    clean = single_line(subject)
    if token.lower() in clean.lower():
        return clean
    return f"{clean} {token}".strip()


def compose(
    *,
    sender: Address,
    to: Address,
    subject: str,
    text: str,
    html: str | None,
    message_id: str,
    date: datetime,
    in_reply_to: str | None,
    references: tuple[str, ...],
    marker: str,
    ticket_ref: str,
    language: str,
    auto_submitted: str = "auto-replied",
) -> Outgoing:
    chosen = _POLICY if sender.email.isascii() and to.email.isascii() else _POLICY_UTF8
    msg = EmailMessage(policy=chosen)
    msg["From"] = _header_address(sender)
    msg["To"] = _header_address(to)
    msg["Subject"] = single_line(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    if in_reply_to and _ASCII_ID.match(in_reply_to):
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg["Auto-Submitted"] = auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Mailbot-Loop"] = marker
    msg["X-Mailbot-Ticket"] = single_line(ticket_ref)
    msg["Content-Language"] = language
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return Outgoing(
        message_id=message_id,
        mail_from=sender.email,
        rcpt_to=to.email,
        subject=msg["Subject"],
        raw=msg.as_bytes(policy=chosen),
    )
