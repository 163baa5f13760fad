"""Which message a bounce returns: read from real delivery reports of many MTAs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.ingest.bounces import MAX_IDS, returned_message_ids
from tests.corpus import message_params, need, require_corpus

DSN = b"""\
From: MAILER-DAEMON@mx.example.org
To: support@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

could not be delivered
--b
Content-Type: message/delivery-status

Final-Recipient: rfc822; gone@customer.example
Action: failed
Status: 5.1.1

--b
Content-Type: text/rfc822-headers

From: Support <support@example.com>
To: gone@customer.example
Subject: Re: Help [#7]
Message-ID: <abc.t7@example.com>

--b--
"""


def test_returned_headers_give_the_message_id() -> None:
    assert returned_message_ids(DSN) == ("<abc.t7@example.com>",)


def test_a_pasted_original_is_read_when_nothing_is_attached() -> None:
    raw = (
        b"From: postmaster@old.example\nSubject: failure notice\n\n"
        b"Sorry, I couldn't deliver.\n\n--- Below this line is a copy of the message.\n\n"
        b"Message-ID: <pasted.t3@example.com>\nSubject: Re: x\n"
    )
    assert returned_message_ids(raw) == ("<pasted.t3@example.com>",)


def test_garbage_gives_nothing() -> None:
    assert returned_message_ids(b"\x00\xff not a mail") == ()
    assert returned_message_ids(b"") == ()


def test_most_real_bounces_name_the_returned_message() -> None:
    root = require_corpus() / "sisimai" / "messages" / "maildir" / "bsd"
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    found = sum(1 for p in files if returned_message_ids(p.read_bytes()))
    # Measured: 353 of the first 400 (the rest return no original or only a summary).
    assert len(files) > 100 and found / len(files) > 0.8, (found, len(files))


@pytest.mark.parametrize("path", message_params())
def test_never_raises_on_the_corpus(path: Path | None) -> None:
    ids = returned_message_ids(need(path).read_bytes())
    assert len(ids) <= MAX_IDS
    assert all(i.startswith("<") and i.endswith(">") for i in ids)
