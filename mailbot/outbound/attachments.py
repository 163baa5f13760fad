"""Files an agent attached to an answer, taken from the raw mail to go on to the customer. Pure.

What is relayed: parts with ``Content-Disposition: attachment``, parts that are not text
and not inline (a file some clients mark neither way), and inline images of at least
``MIN_INLINE_IMAGE`` bytes (screenshots pasted into the body: the relay is plain text plus
escaped HTML, so they go along as files). What is not: the text bodies, small inline images
(signature logos), the notification quoted back as
``message/rfc822``, anything beyond ``MAX_FILES`` files or ``MAX_BYTES`` in total (the agent
is told in the log and the relay still goes out). Names are made safe: no directories, no
control characters, no leading dots, at most ``MAX_NAME`` characters, never empty, and
unique within the mail (a second ``a.pdf`` becomes ``a (2).pdf``: no file overwrites another
when the customer saves them all).

A TNEF part (``winmail.dat`` from Outlook, which no other client opens) is replaced by the
files inside it when every one of them can be read; otherwise it is relayed as it is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage

from mailbot.ingest.tnef import TNEF_NAME, TNEF_TYPES, TnefError, read_tnef

log = logging.getLogger(__name__)

MAX_FILES = 20
MAX_BYTES = 15 * 1024 * 1024
MAX_NAME = 120
MIN_INLINE_IMAGE = 32 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


@dataclass(frozen=True, slots=True)
class FileAttachment:
    filename: str
    content_type: str
    data: bytes


def safe_filename(name: str | None, index: int) -> str:
    """A file name that is safe anywhere: the last path component, cleaned, never empty."""
    text = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = _UNSAFE.sub("_", text).strip().lstrip(".").strip()
    if len(text) > MAX_NAME:
        stem, dot, ext = text.rpartition(".")
        text = (stem[: MAX_NAME - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else text
        text = text[:MAX_NAME]
    return text or f"attachment-{index}"


def relayable_attachments(raw: bytes) -> tuple[tuple[FileAttachment, ...], tuple[str, ...]]:
    """The files to relay and, for the log, what was left out and why."""
    try:
        message = message_from_bytes(raw, policy=email_policy.default)
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        log.warning("attachments could not be read", exc_info=True)
        return (), (f"attachments not read: {exc!r}",)
    assert isinstance(message, EmailMessage)
    files: list[FileAttachment] = []
    skipped: list[str] = []
    total = 0
    for index, part in enumerate(message.walk(), start=1):
        if part.is_multipart() or not _maybe_file(part):
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception as exc:  # a broken transfer encoding must not stop the relay
            log.warning("attachment part %d could not be decoded", index, exc_info=True)
            skipped.append(f"part {index}: undecodable ({exc!r})")
            continue
        data = payload if isinstance(payload, bytes) else b""
        if _inline(part) and len(data) < MIN_INLINE_IMAGE:
            continue  # a logo in a signature
        found = _tnef_files(part, data) or [(part.get_filename(), part.get_content_type(), data)]
        for name, content_type, content in found:
            safe = _unique_name(safe_filename(name, index), files)
            if len(files) >= MAX_FILES:
                skipped.append(f"{safe}: more than {MAX_FILES} files")
                continue
            if total + len(content) > MAX_BYTES:
                skipped.append(f"{safe}: over the {MAX_BYTES // (1024 * 1024)} MiB total")
                continue
            total += len(content)
            files.append(FileAttachment(safe, content_type, content))
    return tuple(files), tuple(skipped)


def _unique_name(name: str, files: list[FileAttachment]) -> str:
    taken = {f.filename.casefold() for f in files}
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, dot, ext = name, "", ""
    candidate, number = name, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{stem} ({number}){dot}{ext}"
    return candidate


def _tnef_files(part: EmailMessage, data: bytes) -> list[tuple[str | None, str, bytes]]:
    """The files inside a TNEF part, or [] when it is none or one of them cannot be read."""
    name = (part.get_filename() or "").lower()
    if part.get_content_type() not in TNEF_TYPES and name != TNEF_NAME:
        return []
    try:
        tnef = read_tnef(data)
    except TnefError:
        return []
    found = [(f.name(), f.content_type(), f.data) for f in tnef.files if f.data is not None]
    return found if found and len(found) == len(tnef.files) else []


def _inline(part: EmailMessage) -> bool:
    return part.get_content_disposition() != "attachment" and (
        part.get_content_disposition() == "inline" or part.get("Content-ID") is not None
    )


def _maybe_file(part: EmailMessage) -> bool:
    maintype = part.get_content_maintype()
    if maintype == "message":
        return False  # a forwarded or quoted mail (often our own notification)
    if part.get_content_disposition() == "attachment":
        return True
    if _inline(part):
        return maintype == "image"  # kept only when big enough to be a screenshot
    return maintype not in ("text", "multipart")
