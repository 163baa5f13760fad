"""Files an agent attached: which are relayed, under which names, within which limits."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot.outbound.attachments import (
    MAX_BYTES,
    MAX_FILES,
    MAX_NAME,
    MIN_INLINE_IMAGE,
    relayable_attachments,
    safe_filename,
)
from mailbot.outbound.compose import compose
from tests.corpus import message_params, need


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\anna\\bild.png", "bild.png"),
        (".htaccess", "htaccess"),
        ("a\r\nBcc: x@evil.example.pdf", "a_Bcc_ x@evil.example.pdf"),
        ("räkning maj.pdf", "räkning maj.pdf"),
        ("", "attachment-3"),
        (None, "attachment-3"),
        ("...", "attachment-3"),
        ("/", "attachment-3"),
    ],
)
def test_safe_filename(name: str | None, expected: str) -> None:
    assert safe_filename(name, 3) == expected


def test_long_names_keep_their_extension() -> None:
    name = safe_filename("x" * 500 + ".pdf", 1)
    assert len(name) == MAX_NAME and name.endswith(".pdf")


def _reply(*parts: tuple[bytes, str, str | None, str]) -> bytes:
    """A reply with text and the given (data, type, filename, disposition) parts."""
    msg = EmailMessage()
    msg["From"] = "carla@example.com"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Re: x"
    msg.set_content("Here is the file.")
    for data, content_type, filename, disposition in parts:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=filename, disposition=disposition
        )
    return msg.as_bytes()


def test_attachments_are_kept_and_small_inline_logos_are_not() -> None:
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 10
    logo = b"\x89PNG" + b"\0" * 500
    screenshot = b"\x89PNG" + b"\1" * MIN_INLINE_IMAGE
    raw = _reply(
        (pdf, "application/pdf", "../invoice.pdf", "attachment"),
        (logo, "image/png", "logo.png", "inline"),
        (screenshot, "image/png", "screen.png", "inline"),
    )
    files, skipped = relayable_attachments(raw)
    assert [(f.filename, f.content_type, f.data) for f in files] == [
        ("invoice.pdf", "application/pdf", pdf),
        ("screen.png", "image/png", screenshot),
    ]
    assert skipped == ()


def test_a_quoted_mail_is_not_a_file() -> None:
    inner = EmailMessage()
    inner["Subject"] = "the notification"
    inner.set_content("quoted")
    msg = EmailMessage()
    msg["From"] = "carla@example.com"
    msg.set_content("Answer")
    msg.add_attachment(inner)
    files, _ = relayable_attachments(msg.as_bytes())
    assert files == ()


def test_limits_on_count_and_size() -> None:
    many = [(b"x", "application/octet-stream", f"f{i}.bin", "attachment") for i in range(25)]
    files, skipped = relayable_attachments(_reply(*many))
    assert len(files) == MAX_FILES and len(skipped) == 25 - MAX_FILES
    big = b"\0" * (MAX_BYTES // 2 + 1)
    files, skipped = relayable_attachments(
        _reply(
            (big, "application/zip", "a.zip", "attachment"),
            (big, "application/zip", "b.zip", "attachment"),
        )
    )
    assert [f.filename for f in files] == ["a.zip"]
    assert len(skipped) == 1 and "b.zip" in skipped[0]


def test_files_survive_composition_byte_for_byte() -> None:
    from datetime import UTC, datetime

    from mailbot.domain import Address

    data = bytes(range(256)) * 40
    files, _ = relayable_attachments(_reply((data, "image/jpeg", "foto ö.jpg", "attachment")))
    out = compose(
        sender=Address("support@example.com", "Support"),
        to=Address("anna@example.org"),
        subject="Re: x",
        text="Here.",
        html="<p>Here.</p>",
        message_id="<r1@example.com>",
        date=datetime(2026, 11, 23, tzinfo=UTC),
        in_reply_to=None,
        references=(),
        marker="m",
        ticket_ref="#1",
        language="en",
        auto_submitted=None,
        files=files,
    )
    parsed = message_from_bytes(out.raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "foto ö.jpg"
    assert attachment.get_content() == data
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "Here."
    assert parsed["Auto-Submitted"] is None


@pytest.mark.parametrize("path", message_params())
def test_corpus_messages_never_crash_and_names_are_safe(path: Path | None) -> None:
    raw = need(path).read_bytes()
    files, _ = relayable_attachments(raw)
    total = 0
    for file in files:
        assert file.filename and "/" not in file.filename and "\\" not in file.filename
        assert not file.filename.startswith(".")
        assert all(ord(ch) >= 32 for ch in file.filename)
        total += len(file.data)
    assert len(files) <= MAX_FILES and total <= MAX_BYTES


def test_names_are_unique_within_a_mail() -> None:
    files, _ = relayable_attachments(
        _reply(
            (b"1", "application/pdf", "a.pdf", "attachment"),
            (b"2", "application/pdf", "../x/A.pdf", "attachment"),
            (b"3", "application/pdf", "a.pdf", "attachment"),
            (b"4", "text/plain", "README", "attachment"),
            (b"5", "text/plain", "README", "attachment"),
        )
    )
    assert [(f.filename, f.data) for f in files] == [
        ("a.pdf", b"1"),
        ("A (2).pdf", b"2"),
        ("a (3).pdf", b"3"),
        ("README", b"4"),
        ("README (2)", b"5"),
    ]
