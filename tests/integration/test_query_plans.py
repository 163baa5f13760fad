"""No statement of the per-message path or of the daemon's sweeps reads a whole table.

Every statement an intake of a new request and two replies sends, and those of the sender,
reminder and wiki follow-up sweeps, is captured (SQLite's trace callback, values expanded)
and explained: a ``SCAN`` of a real table is a statement whose cost grows with the database.
The notification threading did (``message`` had no index on ``ticket_id``: at 90,000
messages ingest had fallen from ~100 to ~8 messages/s), and so did every outbox drain (the
queued rows were found through ``next_attempt_at``, walking every row ever sent).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from tortoise import connections

from mailbot.agents.tokens import TokenSigner
from mailbot.clock import FixedClock
from mailbot.devservers.smtp_sink import SmtpSink
from mailbot.domain import Disposition, TicketAction
from mailbot.ingest.pipeline import Intake
from mailbot.metrics import database_figures
from mailbot.outbound.sender import OutboxSender, SmtpTransport
from mailbot.policy import Policy, load_policy
from mailbot.reminders import ReminderSweeper
from mailbot.tickets.queries import list_quarantine, list_tickets
from mailbot.tickets.service import Origin
from mailbot.tickets.wiki_followup import WikiFollowupSweeper
from tests.db import POSTGRES_ENV

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

POLICY = load_policy(REPO / "rules.yaml", REPO / "templates")

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


@asynccontextmanager
async def captured() -> AsyncIterator[list[str]]:
    """Every statement SQLite runs on the test's connection meanwhile, values expanded."""
    client = connections.get("default")
    await client.execute_query("SELECT 1")  # the connection exists from here on
    raw_connection = client._connection  # type: ignore[attr-defined]
    statements: list[str] = []
    await raw_connection._execute(raw_connection._conn.set_trace_callback, statements.append)
    try:
        yield statements
    finally:
        await raw_connection._execute(raw_connection._conn.set_trace_callback, None)


def table_scans(
    database: str, statements: list[str], *, covering: bool = False
) -> dict[str, list[str]]:
    """Each statement that reads a whole table, with the plan lines that say so
    (``covering``: a scan of an index holding every column the statement needs is allowed,
    for counts over every row by a column's value)."""
    path = database.removeprefix("sqlite://")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        explained = [
            s
            for s in dict.fromkeys(statements)
            if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT"))
        ]
        assert len(explained) > 5, statements
        found: dict[str, list[str]] = {}
        for statement in explained:
            plan = db.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            scans = [
                row[-1]
                for row in plan
                if row[-1].startswith("SCAN ")
                and row[-1].split()[1] in tables
                and not (covering and "USING COVERING INDEX" in row[-1])
            ]
            if scans:
                found[statement[:200]] = scans
    return found


async def _ingest(intake: Intake) -> list[TicketAction]:
    outcomes = [
        await intake.accept(_mail(1, "Checkout fails"), Origin(label="new")),
        await intake.accept(_mail(2, "Checkout fails", "<m1@shop.example>"), Origin(label="r1")),
        await intake.accept(_mail(3, "Checkout fails", "<m2@shop.example>"), Origin(label="r2")),
    ]
    assert [o.disposition for o in outcomes] == [Disposition.STORED] * 3
    return [o.action for o in outcomes]


async def test_the_intake_path_reads_no_table_whole(database: str) -> None:
    intake = Intake(POLICY, FixedClock(NOW), signer=TokenSigner(b"query-plan-test-key"))
    async with captured() as statements:
        actions = await _ingest(intake)
    assert actions == [TicketAction.NEW, TicketAction.APPEND, TicketAction.APPEND]
    assert table_scans(database, statements) == {}


@pytest.mark.parametrize("mailboxes", [None, ("support", "")])
async def test_the_sweeps_read_no_table_whole(
    database: str, smtp_sink: SmtpSink, mailboxes: tuple[str, ...] | None
) -> None:
    clock = FixedClock(NOW)
    await _ingest(Intake(POLICY, clock, signer=TokenSigner(b"query-plan-test-key")))
    policy: Policy = POLICY
    sender = OutboxSender(
        SmtpTransport(smtp_sink.endpoint(), timeout=10), clock, mailboxes=mailboxes
    )
    reminders = ReminderSweeper(lambda: policy, clock, mailboxes=mailboxes)
    wiki = WikiFollowupSweeper(lambda: policy, clock, mailboxes=mailboxes)
    async with captured() as statements:
        assert await sender.next_due() is not None
        sent = await sender.run_once()
        await reminders.next_due()
        await reminders.run_once()
        await wiki.next_due()
        await wiki.run_once()
    assert sent == len(smtp_sink.messages) > 0
    assert table_scans(database, statements) == {}


async def test_operator_views_and_the_scrape_read_no_table_whole(database: str) -> None:
    """``tickets --queue``, the quarantine list and /metrics' figures: open tickets,
    quarantined mail, outbox rows in play and undecided reminders are found by index, not
    among every ticket, message, sent mail and reminder ever stored (not even a whole index:
    the scrape's GROUP BY status over the outbox read every row ever sent)."""
    clock = FixedClock(NOW)
    await _ingest(Intake(POLICY, clock, signer=TokenSigner(b"query-plan-test-key")))
    async with captured() as statements:
        queue = await list_tickets("SUP", queue=True)
        assert await list_quarantine() == []
        figures = await database_figures(NOW)
    assert [t.id for t in queue] == [1] and figures.open_tickets["new"] == 1
    assert figures.outbox["queued"] == 4  # the acknowledgement, three agent notifications
    assert table_scans(database, statements) == {}
