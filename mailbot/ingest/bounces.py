"""Which of our messages a bounce returns. Pure: raw bytes in, Message-IDs out.

A delivery report rarely answers our mail with In-Reply-To; it *returns* it: as a
``message/rfc822`` part (or ``message/global``), as its headers only (``text/rfc822-headers``,
``message/global-headers``), or, from older and odder MTAs, pasted into the text. The
Message-IDs found there thread the bounce onto the ticket whose mail bounced, exactly like a
reply's References would.

Read with the standard library's lenient parser, at most ``MAX_PARTS`` parts and
``MAX_IDS`` ids; never raises (a bounce we cannot read is still stored as auto-generated mail).
"""

from __future__ import annotations

import logging
import re
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser

from mailbot.ingest.mime_headers import normalise_ids

log = logging.getLogger(__name__)

MAX_PARTS = 200
MAX_IDS = 10
_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_PASTED_ID = re.compile(
    r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]{3,250}>)", re.IGNORECASE | re.MULTILINE
)


def returned_message_ids(raw: bytes) -> tuple[str, ...]:
    """The Message-IDs of the message(s) a bounce returns, in the order found."""
    try:
        return _returned(raw)
    except Exception:  # a bounce we cannot read is still stored; log why
        log.warning("could not read the returned message of a bounce", exc_info=True)
        return ()


def _returned(raw: bytes) -> tuple[str, ...]:
    message = message_from_bytes(raw)
    found: list[str] = []
    texts: list[str] = []
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            break
        ctype = part.get_content_type()
        if ctype in _MESSAGE_TYPES:
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                found += _ids(inner.get("Message-ID"))
            elif isinstance(payload, str):
                found += _ids(HeaderParser().parsestr(payload).get("Message-ID"))
        elif ctype in _HEADER_TYPES:
            found += _ids(HeaderParser().parsestr(_text(part)).get("Message-ID"))
        elif part.get_content_maintype() == "text":
            texts.append(_text(part))
    if not found:
        for text in texts:
            found += [m.group(1) for m in _PASTED_ID.finditer(text)]
    return tuple(dict.fromkeys(found))[:MAX_IDS]


def _ids(value: object) -> list[str]:
    return list(normalise_ids(str(value))) if value else []


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        try:
            return payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # an unknown charset: the ids are ASCII anyway
            return payload.decode("latin-1")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""
