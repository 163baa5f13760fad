"""Hostile input on the parse path: header blocks, recipients, nesting and part counts.

Each guard is shown from both sides: a message below the limit is read exactly as before,
one above it is read with the documented cut and a defect that names it, and nothing other
than ParseError escapes. Costs are not timed here (see bench/); what is asserted is the
bounded result.
"""

from __future__ import annotations

import pytest

from mailbot.errors import ParseError
from mailbot.ingest.mime_body import MAX_PARTS
from mailbot.ingest.parse import (
    MAX_ADDRESSES,
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    parse_message,
)


def _mail(headers: list[str], body: str = "Hello.\n") -> bytes:
    base = {
        "From": "Carla <carla@example.com>",
        "To": "support@example.com",
        "Subject": "Help",
        "Message-ID": "<hostile-1@example.com>",
    }
    names = {h.split(":", 1)[0].lower() for h in headers}
    fixed = [f"{k}: {v}" for k, v in base.items() if k.lower() not in names]
    return ("\r\n".join([*fixed, *headers]) + "\r\n\r\n" + body).encode()


def test_a_huge_subject_is_cut_and_named() -> None:
    subject = "Help " + "x" * (MAX_HEADER_FIELD_BYTES * 3)
    msg = parse_message(_mail([f"Subject: {subject}"]))
    assert msg.subject.startswith("Help xxx")
    assert len(msg.subject) < MAX_HEADER_FIELD_BYTES
    assert "header-truncated: subject" in msg.defects
    assert msg.from_ is not None and msg.from_.email == "carla@example.com"
    assert msg.text.strip() == "Hello."


def test_a_folded_huge_field_is_cut_too() -> None:
    folded = "\r\n\t".join(["word " * 20] * 2000)  # about 200 KB over 2,000 lines
    msg = parse_message(_mail([f"X-Junk: {folded}", "Subject: still read"]))
    assert msg.subject == "still read"
    assert "header-truncated: x-junk" in msg.defects


def test_a_header_block_below_the_limits_is_untouched() -> None:
    subject = "y" * (MAX_HEADER_FIELD_BYTES // 2)
    msg = parse_message(_mail([f"Subject: {subject}"]))
    assert msg.subject == subject
    assert not [d for d in msg.defects if d.startswith(("header-truncated", "too-many"))]


def test_thousands_of_fields_keep_the_ones_that_matter() -> None:
    junk = [f"X-Junk-{i}: {i}" for i in range(MAX_HEADER_FIELDS * 3)]
    late = [
        "Subject: late subject",
        "Auto-Submitted: auto-replied",
        "In-Reply-To: <t@x>",
        "X-Mailbot-Loop: support@example.com",
        "Precedence: bulk",
    ]
    msg = parse_message(
        ("\r\n".join([*junk, "From: late@example.com", *late]) + "\r\n\r\nbody\r\n").encode()
    )
    assert "too-many-header-fields" in msg.defects
    assert msg.from_ is not None and msg.from_.email == "late@example.com"
    assert msg.subject == "late subject"
    assert msg.in_reply_to == ("<t@x>",)
    # loop protection still sees the markers
    assert msg.header("auto-submitted") == "auto-replied"
    assert msg.header("x-mailbot-loop") == "support@example.com"
    assert msg.header("precedence") == "bulk"
    assert msg.text.strip() == "body"


def test_ten_thousand_recipients_are_bounded() -> None:
    to = ", ".join(f"User {i} <user{i}@example.com>" for i in range(10_000))
    msg = parse_message(_mail([f"To: {to}"]))
    assert len(msg.to) == MAX_ADDRESSES
    assert msg.to[0].email == "user0@example.com"
    assert msg.to[-1].email == f"user{MAX_ADDRESSES - 1}@example.com"
    assert "header-truncated: to" in msg.defects  # 10,000 entries are over 64 KiB
    assert msg.from_ is not None and msg.from_.email == "carla@example.com"


def test_many_short_addresses_skip_mail_parser() -> None:
    to = ",".join(f"u{i}@e.se" for i in range(4000))  # under 64 KiB, over 2,000 "@"
    msg = parse_message(_mail([f"To: {to}"]))
    assert "mailparser-skipped: too many addresses" in msg.defects
    assert not [d for d in msg.defects if d.startswith("header-truncated")]
    assert [a.email for a in msg.to[:2]] == ["u0@e.se", "u1@e.se"]
    assert len(msg.to) == MAX_ADDRESSES


def test_recipients_over_many_fields_share_one_budget() -> None:
    fields = [f"Cc: {', '.join(f'c{i}.{j}@example.com' for j in range(50))}" for i in range(200)]
    msg = parse_message(_mail(fields))
    assert len(msg.cc) == MAX_ADDRESSES
    assert [a.email for a in msg.cc[:2]] == ["c0.0@example.com", "c0.1@example.com"]


def test_a_quoted_comma_is_not_an_entry_boundary() -> None:
    names = ", ".join(f'"Last{i}, First" <p{i}@example.com>' for i in range(MAX_ADDRESSES + 5))
    msg = parse_message(_mail([f"To: {names}"]))
    assert len(msg.to) == MAX_ADDRESSES
    assert all(a.name and "," in a.name for a in msg.to)


def _nested(depth: int) -> bytes:
    lines = ["From: carla@example.com", "Subject: deep", "MIME-Version: 1.0"]
    for level in range(depth):
        lines += [f'Content-Type: multipart/mixed; boundary="b{level}"', "", f"--b{level}"]
    lines += ["Content-Type: text/plain", "", "the bottom"]
    for level in reversed(range(depth)):
        lines += [f"--b{level}--"]
    return "\r\n".join(lines).encode() + b"\r\n"


def test_deep_nesting_within_reason_parses() -> None:
    msg = parse_message(_nested(200))
    assert msg.text.strip() == "the bottom"


def test_nesting_beyond_the_parser_is_a_parse_error_not_a_crash() -> None:
    with pytest.raises(ParseError):
        parse_message(_nested(3000))


def test_too_many_parts_are_bounded() -> None:
    count = MAX_PARTS + 500
    part = (
        "--b\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="f{}.bin"\r\n\r\nx\r\n'
    )
    parts = [part.format(i) for i in range(count)]
    raw = (
        "From: carla@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n" + "".join(parts) + "--b--\r\n"
    ).encode()
    msg = parse_message(raw)
    assert msg.text.strip() == "first"
    assert len(msg.attachments) < MAX_PARTS
    assert "mailparser-skipped: too many parts" in msg.defects


def test_a_huge_part_header_is_cut() -> None:
    name = "n" * 500_000
    raw = (
        "From: carla@example.com\r\nSubject: part\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        f'--b\r\nContent-Type: application/pdf; name="{name}.pdf"\r\n\r\nx\r\n--b--\r\n'
    ).encode()
    msg = parse_message(raw)
    assert msg.text.strip() == "hello"
    assert "part-header-truncated" in msg.defects
    assert len(msg.attachments) == 1
