"""mailbot.tickets.sqlite_inline against a real SQLite file: which statements skip the thread
hop, and that a wait for another process's write lock never blocks the event loop."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from tortoise import connections
from tortoise.transactions import in_transaction

from mailbot.agents.tokens import TokenSigner
from mailbot.clock import FixedClock
from mailbot.domain import Disposition
from mailbot.ingest.pipeline import Intake
from mailbot.policy import load_policy
from mailbot.tickets.models import MailboxState, Message
from mailbot.tickets.service import Origin
from mailbot.tickets.sqlite_inline import InlineConnection
from tests.db import POSTGRES_ENV
from tests.loop_ticks import loop_ticks

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get(POSTGRES_ENV)), reason="the SQLite engine (mailbot.tickets.sqlite_inline)"
)


def _mail(index: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {index} <c{index}@shop.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"Checkout fails {index}"
    msg["Message-ID"] = f"<m{index}@shop.example>"
    msg.set_content("The checkout fails with error 502 since this morning.\n")
    return msg.as_bytes()


def _connection() -> InlineConnection:
    raw = connections.get("default")._connection  # type: ignore[attr-defined]
    assert isinstance(raw, InlineConnection)
    return raw


async def test_a_batch_runs_inline_once_it_has_written(database: str) -> None:
    policy = load_policy(REPO / "rules.yaml", REPO / "templates")
    intake = Intake(policy, FixedClock(NOW), signer=TokenSigner(b"inline-engine-test-key"))
    await Message.exists(id=1)  # connected
    raw = _connection()
    loop_thread = threading.get_ident()
    ran: list[tuple[str, bool]] = []  # (statement, on the event loop's thread)

    def trace(statement: str) -> None:
        ran.append((statement.split()[0].upper(), threading.get_ident() == loop_thread))
        statements.append(statement)

    statements: list[str] = []

    await raw._execute(raw._conn.set_trace_callback, trace)
    try:
        async with in_transaction():  # as the poller's batch
            outcomes = [await intake.accept(_mail(i), Origin(label=f"uid {i}")) for i in range(3)]
    finally:
        await raw._execute(raw._conn.set_trace_callback, None)
    assert [o.disposition for o in outcomes] == [Disposition.STORED] * 3
    kinds = [kind for kind, _ in ran]
    first_write = next(i for i, kind in enumerate(kinds) if kind in ("INSERT", "UPDATE"))
    # BEGIN, the first write (it may wait for another writer) and COMMIT go to the thread.
    assert ran[0] == ("BEGIN", False)
    assert ran[first_write][1] is False
    assert ran[-1] == ("COMMIT", False)
    # Reads never wait in WAL mode: inline, before the first write too.
    assert all(inline for kind, inline in ran[:first_write] if kind == "SELECT")
    # After it, the transaction holds the write lock: the rest of the batch runs inline.
    after = ran[first_write + 1 : -1]
    assert len(after) > 20 and all(inline for _, inline in after), after
    # An INSERT's row id comes from its cursor, not from a second statement.
    assert "SELECT last_insert_rowid()" not in statements
    rows = await Message.filter(direction="in").order_by("id").values_list("id", "message_id")
    assert [message_id for _, message_id in rows] == [f"<m{i}@shop.example>" for i in range(3)]


async def test_an_insert_returns_the_new_row_id(database: str) -> None:
    await Message.exists(id=1)  # connected
    conn = connections.get("default")
    await conn.execute_script("CREATE TABLE scratch (id INTEGER PRIMARY KEY, name TEXT)")
    insert = "INSERT INTO scratch (name) VALUES (?)"
    async with in_transaction() as tx:
        ids = [await tx.execute_insert(insert, [name]) for name in ("a", "b", "c")]
    await conn.execute_insert("INSERT INTO scratch (id, name) VALUES (?, ?)", [100, "d"])
    ids.append(await conn.execute_insert(insert, ["e"]))  # outside a transaction: threaded
    rows = await conn.execute_query_dict("SELECT id, name FROM scratch ORDER BY id")
    assert [(r["id"], r["name"]) for r in rows] == [
        (ids[0], "a"),
        (ids[1], "b"),
        (ids[2], "c"),
        (100, "d"),
        (ids[3], "e"),
    ]
    assert ids == [1, 2, 3, 101]


async def test_waiting_for_another_writer_never_blocks_the_event_loop(database: str) -> None:
    await Message.exists(id=1)  # connected, schema in place
    path = database.removeprefix("sqlite://")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
        release = threading.Timer(0.6, lambda: other.execute("COMMIT"))
        release.start()  # ... for 0.6 s, released from its own thread
        async with loop_ticks(0.01) as ticks:
            started = time.perf_counter()
            async with in_transaction() as conn:  # its first write waits for the lock
                await MailboxState.create(using_db=conn, key="k", uidvalidity=1, last_uid=0)
        waited = time.perf_counter() - started
        release.join()
    finally:
        other.close()
    assert waited >= 0.5
    # The loop went on while the write waited (a blocked loop would not tick at all).
    assert ticks.count >= 20, (ticks.count, waited)
    assert await MailboxState.filter(key="k").count() == 1
