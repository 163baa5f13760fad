"""Compose outbound mail: headers, threading, loop markers. Pure: bytes in the outbox row.

Every automatic mail carries ``Auto-Submitted: auto-replied`` (RFC 3834),
``X-Auto-Response-Suppress: All`` (asks Exchange not to answer it), and our loop marker
``X-Mailbot-Loop``, which intake recognises. Message-ID, In-Reply-To and References are plain
ASCII ``<id>`` lists, never RFC 2047-encoded; anything else offered as an id is dropped.
Values that came from a customer (subject, name, file name) have CR/LF, Unicode line
separators and other control characters collapsed, so they can never inject a header; text
that merely looks like an RFC 2047 encoded word is itself encoded, so no reader decodes it
into a line break. Every line ends in CRLF and stays within 998 octets (RFC 5322 §2.1.1):
names are cut, long words encoded and folded. An address with white space, a control
character or an angle bracket is refused (ValueError): it cannot be written safely.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import encode_rfc2231, format_datetime, quote

from mailbot.domain import Address
from mailbot.outbound.attachments import FileAttachment

# Headers are written here, not by the email package's header registry (3 ms a reply):
# RFC 2047 encoded words only for non-ASCII text, plain UTF-8 (RFC 6532) when an address is
# internationalised and the mail goes out with SMTPUTF8, folding at spaces to 78 columns.
_FOLD_AT = 78
_MAX_SUBJECT = 500
_MAX_NAME = 200
# Longer runs without a space (in UTF-8 octets) are encoded, so they can be folded.
_MAX_RAW_WORD = 400
# An encoded display name is folded beyond this: room is left for the field name and address.
_MAX_ENCODED_NAME = 600
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_UNSAFE_IN_ADDRESS = re.compile(r"[\s<>\x00-\x1f\x7f-\x9f]")
_ASCII_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
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
    chain = [ref for ref in parent_references if _ASCII_ID.fullmatch(ref)]
    if parent_id and _ASCII_ID.fullmatch(parent_id):
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


def subject_with_token(subject: str, token: str) -> str:
    """The subject with the ticket token, cut so that the token survives ``compose``'s cap."""
    clean = single_line(subject)[:_MAX_SUBJECT]
    if token.lower() in clean.lower():
        return clean
    clean = clean[: max(0, _MAX_SUBJECT - len(token) - 1)].rstrip()
    return f"{clean} {token}".strip()


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces so lines stay within 78 columns where possible."""
    line = f"{name}:"
    lines: list[str] = []
    for word in value.split(" "):
        if len(line) + 1 + len(word) > _FOLD_AT and line.strip() and not line.endswith(":"):
            lines.append(line)
            line = ""
        line += f" {word}"
    lines.append(line)
    return "\r\n".join(lines)


def _raw_ok(text: str, utf8: bool) -> bool:
    """Whether ``text`` may be written as it is: ASCII (or UTF-8 mail), nothing a reader
    would decode as an encoded word, no word too long to fold."""
    return (
        (text.isascii() or utf8)
        and "=?" not in text
        and all(len(word.encode("utf-8")) <= _MAX_RAW_WORD for word in text.split(" "))
    )


def _encoded(name: str, text: str, utf8: bool) -> str:
    """A header line for unstructured text (encoded words only when needed)."""
    if _raw_ok(text, utf8):
        return _fold(name, text)
    encoded = Header(text, "utf-8", header_name=name).encode(linesep="\r\n", maxlinelen=_FOLD_AT)
    return f"{name}: {encoded}"


def _phrase(name: str, utf8: bool) -> str:
    if not name:
        return ""
    if _raw_ok(name, utf8) and len(name.encode("utf-8")) <= _MAX_RAW_WORD:
        return f'"{quote(name)}" ' if _SPECIALS.search(name) else f"{name} "
    # One encoded word as long as it fits: readers differ on the space between two.
    return Header(name, "utf-8").encode(linesep="\r\n", maxlinelen=_MAX_ENCODED_NAME) + " "


def _address_line(header: str, address: Address, utf8: bool) -> str:
    if not address.email or _UNSAFE_IN_ADDRESS.search(address.email):
        raise ValueError(f"{header}: refusing to write the address {address.email!r}")
    name = single_line(address.name)[:_MAX_NAME].strip()
    return f"{header}: {_phrase(name, utf8)}<{address.email}>"


def _qp(text: str) -> bytes:
    """UTF-8 text as quoted-printable with CRLF line ends (binascii: C speed)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(data, istext=True)
    # A line that is only "." is harmless after SMTP dot-stuffing, and "From " needs no
    # mangling in transit; QP already escapes trailing white space and long lines.
    return encoded.replace(b"\n", b"\r\n")


def _boundary() -> bytes:
    # "=_" can never occur in quoted-printable or base64 output: no collision possible.
    return f"=_mb{uuid.uuid4().hex}".encode("ascii")


def _text_part(content: str, subtype: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii") + _qp(content)


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    boundary = _boundary()
    out = [
        b"Content-Type: multipart/" + subtype.encode("ascii") + b";\r\n",
        b' boundary="' + boundary + b'"\r\n\r\n',
    ]
    for part in parts:
        out += [b"--", boundary, b"\r\n", part, b"\r\n"]
    out += [b"--", boundary, b"--\r\n"]
    return b"".join(out)


def _file_part(file: FileAttachment) -> bytes:
    maintype, _, subtype = file.content_type.partition("/")
    content_type = f"{maintype or 'application'}/{subtype or 'octet-stream'}"
    if not re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+", content_type):
        content_type = "application/octet-stream"
    name = single_line(file.filename)[:_MAX_NAME]
    if name.isascii() and "=?" not in name:
        disposition = f'attachment; filename="{quote(name)}"'
    else:
        # Percent-encoded, at most 3 characters an octet: cut to keep the line within 998.
        name = name.encode("utf-8")[:_MAX_NAME].decode("utf-8", "ignore")
        disposition = f"attachment; filename*={encode_rfc2231(name, 'utf-8')}"
    head = (
        f"Content-Type: {content_type}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: {disposition}\r\n\r\n"
    ).encode()
    return head + base64.encodebytes(file.data).replace(b"\n", b"\r\n")


def _body(text: str, html: str | None, files: tuple[FileAttachment, ...]) -> bytes:
    """The MIME body with its Content-Type (and MIME-Version) header lines, CRLF."""
    body = _text_part(text, "plain")
    if html is not None:
        body = _multipart("alternative", [body, _text_part(html, "html")])
    if files:
        body = _multipart("mixed", [body, *(_file_part(f) for f in files)])
    return b"MIME-Version: 1.0\r\n" + body


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
    auto_submitted: str | None = "auto-replied",
    reply_to: Address | None = None,
    files: tuple[FileAttachment, ...] = (),
) -> Outgoing:
    """The mail's bytes. ``auto_submitted=None`` marks a human's answer (an agent's relayed
    reply): no ``Auto-Submitted``, so the customer's own auto-responder rules treat it as
    personal mail; the loop marker is kept all the same."""
    utf8 = not (
        sender.email.isascii()
        and to.email.isascii()
        and (reply_to is None or reply_to.email.isascii())
    )
    clean_subject = single_line(subject)[:_MAX_SUBJECT]
    lines = [
        _address_line("From", sender, utf8),
        _address_line("To", to, utf8),
        _encoded("Subject", clean_subject, utf8),
        f"Date: {format_datetime(date)}",
        f"Message-ID: {message_id}",
    ]
    if reply_to is not None:
        lines.append(_address_line("Reply-To", reply_to, utf8))
    if in_reply_to and _ASCII_ID.fullmatch(in_reply_to):
        lines.append(f"In-Reply-To: {in_reply_to}")
    references = tuple(ref for ref in references if _ASCII_ID.fullmatch(ref))
    if references:
        lines.append(_fold("References", " ".join(references)))
    if auto_submitted is not None:
        lines.append(f"Auto-Submitted: {single_line(auto_submitted)}")
    lines += [
        "X-Auto-Response-Suppress: All",
        f"X-Mailbot-Loop: {marker}",
        _encoded("X-Mailbot-Ticket", single_line(ticket_ref), utf8),
        f"Content-Language: {single_line(language)}",
    ]
    head = "\r\n".join(lines).encode("utf-8" if utf8 else "ascii") + b"\r\n"
    return Outgoing(
        message_id=message_id,
        mail_from=sender.email,
        rcpt_to=to.email,
        subject=clean_subject,
        raw=head + _body(text, html, files),
    )
