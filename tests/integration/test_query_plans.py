"""No statement of the per-message path reads a whole table (SQLite's query plans).

Every statement an intake of a new request and two replies sends is captured (SQLite's
trace callback, values expanded) and explained: a ``SCAN`` of a real table is a statement
whose cost grows with the database, as the notification threading did (``message`` had no
index on ``ticket_id``: at 90,000 messages ingest fell from ~100 to ~8 messages/s).
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from tortoise import connections

from mailbot.agents.tokens import TokenSigner
from mailbot.clock import FixedClock
from mailbot.domain import Disposition, TicketAction
from mailbot.ingest.pipeline import Intake
from mailbot.policy import load_policy
from mailbot.tickets.service import Origin
from tests.db import POSTGRES_ENV

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get(POSTGRES_ENV)), reason="SQLite's query plans (EXPLAIN QUERY PLAN)"
)


def _mail(index: int, subject: str, parent: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann Customer <ann@shop.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject if parent is None else f"Re: {subject}"
    msg["Message-ID"] = f"<m{index}@shop.example>"
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    if parent is not None:
        msg["In-Reply-To"] = parent
        msg["References"] = parent
    msg.set_content("The checkout fails with error 502 since this morning.\n")
    return msg.as_bytes()


def _scanned_tables(db: sqlite3.Connection, statement: str, tables: set[str]) -> list[str]:
    plan = db.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
    return [row[-1] for row in plan if row[-1].startswith("SCAN ") and row[-1].split()[1] in tables]


async def test_the_intake_path_reads_no_table_whole(database: str) -> None:
    policy = load_policy(REPO / "rules.yaml", REPO / "templates")
    intake = Intake(policy, FixedClock(NOW), signer=TokenSigner(b"query-plan-test-key"))
    client = connections.get("default")
    await client.execute_query("SELECT 1")  # the connection exists from here on
    raw_connection = client._connection  # type: ignore[attr-defined]
    statements: list[str] = []
    await raw_connection._execute(raw_connection._conn.set_trace_callback, statements.append)
    try:
        outcomes = [
            await intake.accept(_mail(1, "Checkout fails"), Origin(label="new")),
            await intake.accept(
                _mail(2, "Checkout fails", "<m1@shop.example>"), Origin(label="r1")
            ),
            await intake.accept(
                _mail(3, "Checkout fails", "<m2@shop.example>"), Origin(label="r2")
            ),
        ]
    finally:
        await raw_connection._execute(raw_connection._conn.set_trace_callback, None)
    assert [o.disposition for o in outcomes] == [Disposition.STORED] * 3
    assert [o.action for o in outcomes] == [
        TicketAction.NEW,
        TicketAction.APPEND,
        TicketAction.APPEND,
    ]
    path = database.removeprefix("sqlite://")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        explained = [
            s
            for s in dict.fromkeys(statements)
            if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT"))
        ]
        assert len(explained) > 10, statements
        scans = {s[:160]: _scanned_tables(db, s, tables) for s in explained}
    assert {s: found for s, found in scans.items() if found} == {}
