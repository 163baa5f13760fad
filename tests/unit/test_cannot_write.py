"""A database that refuses every write is told apart from a busy one (it is logged loudly)."""

from __future__ import annotations

import sqlite3

import pytest

from mailbot.errors import DatabaseBusyError
from mailbot.mailbox.poller import cannot_write


@pytest.mark.parametrize(
    "text",
    [
        "attempt to write a readonly database",
        "database or disk is full",
        "disk I/O error",
        'could not extend file "base/16384/2619": No space left on device',
        "cannot execute INSERT in a read-only transaction",
    ],
)
def test_refusals_to_write(text: str) -> None:
    try:
        try:
            raise sqlite3.OperationalError(text)
        except sqlite3.OperationalError as exc:
            raise DatabaseBusyError("database refused INBOX uid 3") from exc
    except DatabaseBusyError as wrapped:
        assert cannot_write(wrapped)


@pytest.mark.parametrize("text", ["database is locked", "deadlock detected", "timeout"])
def test_busy_is_not_a_refusal(text: str) -> None:
    assert not cannot_write(sqlite3.OperationalError(text))
