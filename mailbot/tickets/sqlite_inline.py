"""SQLite without a thread hop where no lock can be waited for (a tortoise-orm engine).

tortoise-orm reaches SQLite through aiosqlite, which runs every call in a worker thread: a
queue hand-off and a wake-up of the event loop per statement, ~85 µs, of which about half is
event-loop CPU. An intake runs about fourteen statements a message, each a few microseconds
of SQLite work; the hops were a fifth of the ingest's time, and more of its latency.

This engine runs a call **on the event loop's thread** when it cannot wait for a lock:

* a ``SELECT``: in WAL mode a reader never waits for a writer;
* any statement of a transaction that has already written (its ``total_changes`` moved
  since it began): it holds the database's write lock until it ends, so nothing it runs
  waits for another connection (savepoints, inserts, updates of the rest of a batch).

Everything else goes through aiosqlite's thread as before: the first write of a transaction
(it may wait up to ``busy_timeout`` for another process's write lock), ``COMMIT`` (an fsync
with ``synchronous=FULL``), ``ROLLBACK``, ``BEGIN``, ``PRAGMA`` and DDL. So a wait for another
process never blocks the event loop (IDLE, health, the systemd watchdog go on), while the
statements of a batch run without a hop. tortoise serialises every use of the connection
with its lock, so the two threads never use it at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
from tortoise.backends.sqlite.client import SqliteClient

#: Statements that must not run inline even in a transaction that has written: they end it
#: (COMMIT syncs to disk) or change the connection.
_THREADED = ("COMMIT", "END", "ROLLBACK", "PRAGMA", "VACUUM", "ATTACH", "DETACH")


class InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection, running lock-free calls on the caller's thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        #: ``total_changes`` when the current transaction began.
        self._changes_at_begin = 0
        #: Calls run inline and through the thread (for tests and benchmarks).
        self.inline_calls = 0
        self.threaded_calls = 0

    def _execute_insert(self, sql: str, parameters: Any) -> tuple[int | None]:  # type: ignore[override]
        """aiosqlite's, without its second statement (``SELECT last_insert_rowid()``): the
        cursor has the row id already. A tuple where aiosqlite returns a ``Row``: its callers
        (tortoise's ``execute_insert``) read ``[0]`` only."""
        cursor = self._conn.execute(sql, parameters)
        try:
            return (cursor.lastrowid,)
        finally:
            cursor.close()

    def _written(self, conn: sqlite3.Connection) -> bool:
        return conn.in_transaction and conn.total_changes > self._changes_at_begin

    def _may_run_inline(self, conn: sqlite3.Connection, sql: str | None) -> bool:
        if sql is None:  # a cursor's fetch or close
            return self._written(conn)
        head = sql.lstrip()[:12].upper()
        if head.startswith("SELECT"):
            return True
        if head.startswith(_THREADED) and not head.startswith("ROLLBACK TO"):
            return False
        return self._written(conn)

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        conn = self._connection
        threaded = (conn.commit, conn.rollback, conn.close, conn.executescript) if conn else ()
        if conn is None or not self._running or fn in threaded:
            # commit() and rollback() end the transaction (COMMIT syncs to disk), and
            # executescript() commits first: DDL and migrations, not the hot path.
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        sql = args[0] if args and isinstance(args[0], str) else None
        in_transaction, changes = conn.in_transaction, conn.total_changes
        if self._may_run_inline(conn, sql):
            self.inline_calls += 1
            result = fn(*args, **kwargs)
        else:
            self.threaded_calls += 1
            result = await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        if not in_transaction and conn.in_transaction:
            self._changes_at_begin = changes
        return result


class InlineSqliteClient(SqliteClient):
    """tortoise-orm's SQLite client on an :class:`InlineConnection`."""

    async def create_connection(self, with_db: bool) -> None:
        if self._connection:
            return
        filename = self.filename

        def connector() -> sqlite3.Connection:
            # Used from the event loop's thread and aiosqlite's, never at once (see above).
            return sqlite3.connect(filename, isolation_level=None, check_same_thread=False)

        connection = InlineConnection(connector, 64)
        self._connection = await connection
        connection._conn.row_factory = sqlite3.Row
        for pragma, value in self.pragmas.items():
            cursor = await connection.execute(f"PRAGMA {pragma}={value}")
            await cursor.close()
        await self._post_connect()


#: What tortoise-orm looks up in an engine module.
client_class = InlineSqliteClient
