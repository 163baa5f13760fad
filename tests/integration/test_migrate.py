"""Schema migrations (mailbot.tickets.schema_migrate) and `mailbot migrate`, on SQLite files and,
with MAILBOT_TEST_DB_URL, on PostgreSQL: the baseline equals the models' schema, an empty
database is created at the latest migration, a database from before migrations is baselined
(missing columns added, rows kept), a database behind refuses to start until migrated, and
daemons starting together on an empty database create it once (the lock)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tortoise import Tortoise, connections
from tortoise.migrations.executor import MigrationTarget

from mailbot.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from mailbot.daemon import require_schema
from mailbot.errors import ConfigError
from mailbot.tickets import schema_migrate
from mailbot.tickets.database import (
    close_database,
    open_database,
    sqlite_path,
    sqlite_url,
)
from mailbot.tickets.models import Message, Ticket
from mailbot.tickets.schema_make import pending_changes
from mailbot.tickets.schema_migrate import (
    BASELINE,
    HISTORY_TABLE,
    PG_LOCK_KEY,
    executor,
    read_state,
    sqlite_statements,
)
from tests.db import POSTGRES_ENV, empty_postgres

PG_URL = os.environ.get(POSTGRES_ENV)


@pytest.fixture
async def empty_url(tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a new SQLite file, or the test PostgreSQL database emptied."""
    if PG_URL:
        await _empty_postgres(PG_URL)
        url = PG_URL
    else:
        url = sqlite_url(tmp_path / "state" / "mailbot.sqlite3")
    try:
        yield url
    finally:
        await close_database()


async def _empty_postgres(url: str) -> None:
    try:
        await empty_postgres(url)
    finally:
        await close_database()


async def _recreate_empty(url: str) -> None:
    if PG_URL:
        await _empty_postgres(url)
    else:
        path = sqlite_path(url)
        assert path is not None
        for file in path.parent.glob(path.name + "*"):
            file.unlink()


async def cli(*argv: str) -> int:
    """``mailbot ARGV`` in this process (main runs its own event loop: in a thread)."""
    return await asyncio.to_thread(main, list(argv))


def _conn() -> Any:
    return connections.get("default")


def _sqlite() -> bool:
    return bool(_conn().capabilities.dialect == "sqlite")


async def describe_schema() -> dict[str, dict[str, Any]]:
    """Per table (the history table aside): columns in order with type, NOT NULL, default,
    primary key and comment; indexes and unique constraints by name with their columns;
    foreign keys."""
    conn = _conn()
    schema: dict[str, dict[str, Any]] = {}
    if _sqlite():
        tables = await conn.execute_query_dict(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        for row in tables:
            table = row["name"]
            if table == HISTORY_TABLE:
                continue
            columns = [
                (c["name"], c["type"], c["notnull"], c["dflt_value"], c["pk"])
                for c in await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
            ]
            indexes = {}
            for index in await conn.execute_query_dict(f'PRAGMA index_list("{table}")'):
                cols = await conn.execute_query_dict(f'PRAGMA index_info("{index["name"]}")')
                name = index["name"] if index["origin"] == "c" else f"auto:{index['origin']}"
                key = (name, tuple(c["name"] for c in cols))
                indexes[key] = (index["unique"], index["partial"])
            fks = sorted(
                (f["from"], f["table"], f["to"], f["on_delete"])
                for f in await conn.execute_query_dict(f'PRAGMA foreign_key_list("{table}")')
            )
            schema[table] = {"columns": columns, "indexes": indexes, "fks": fks}
        return schema
    tables = await conn.execute_query_dict(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() ORDER BY table_name"
    )
    for row in tables:
        table = row["table_name"]
        if table == HISTORY_TABLE:
            continue
        columns = [
            tuple(c.values())
            for c in await conn.execute_query_dict(
                "SELECT column_name, data_type, character_maximum_length, numeric_precision,"
                " numeric_scale, is_nullable, column_default,"
                " col_description(($1)::regclass, ordinal_position) AS comment"
                " FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = $2"
                " ORDER BY ordinal_position",
                [f'"{table}"', table],
            )
        ]
        indexes = {
            r["indexname"]: r["indexdef"]
            for r in await conn.execute_query_dict(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema() AND tablename = $1",
                [table],
            )
        }
        constraints = {
            r["conname"]: r["def"]
            for r in await conn.execute_query_dict(
                "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
                " WHERE conrelid = ($1)::regclass",
                [f'"{table}"'],
            )
        }
        comment = await conn.execute_query_dict(
            "SELECT obj_description(($1)::regclass, 'pg_class') AS c", [f'"{table}"']
        )
        schema[table] = {
            "columns": columns,
            "indexes": indexes,
            "constraints": constraints,
            "comment": comment[0]["c"],
        }
    return schema


def _fill_defaults_dropped(
    migrated: dict[str, dict[str, Any]], generated: dict[str, dict[str, Any]], sqlite: bool
) -> list[str]:
    """On SQLite a NOT NULL column added to an existing table keeps the DEFAULT that filled
    the rows already there (SQLite cannot drop it); generate_schemas' has none. Drop those
    from ``migrated`` (columns by name) and name them; PostgreSQL drops them itself."""
    if not sqlite:
        return []
    dropped = []
    for table, desc in migrated.items():
        for name, column in desc["columns"].items():
            wanted = generated.get(table, {}).get("columns", {}).get(name)
            if wanted and column[1] == 1 and column[2] is not None and wanted[2] is None:
                desc["columns"][name] = (column[0], column[1], None, *column[3:])
                dropped.append(f"{table}.{name}")
    return dropped


def _by_name(schema: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The same, columns keyed by name: a column a migration added comes last in its table."""
    return {
        table: {**desc, "columns": {c[0]: c[1:] for c in desc["columns"]}}
        for table, desc in schema.items()
    }


async def _generated_schema(url: str) -> dict[str, dict[str, Any]]:
    """What generate_schemas (the models, as before migrations) makes of an empty database."""
    await _recreate_empty(url)
    await open_database(url, create_schema=False)
    try:
        await Tortoise.generate_schemas(safe=False)
        return await describe_schema()
    finally:
        await close_database()


async def test_migrations_are_in_step_with_models() -> None:
    """models.py changed without `scripts/makemigration NAME`: this fails."""
    writers = await pending_changes()
    assert [(w.name, [op.describe() for op in w.operations]) for w in writers] == []


async def test_baseline_migration_builds_the_models_schema(empty_url: str) -> None:
    """0001 run operation by operation = generate_schemas, column by column, on this dialect."""
    await open_database(empty_url, create_schema=False)
    await executor().migrate()
    state = await read_state()
    assert state.applied == state.known and state.known[0] == BASELINE
    migrated = await describe_schema()
    sqlite = _sqlite()
    await close_database()
    generated = await _generated_schema(empty_url)
    assert sorted(migrated) == sorted(generated)
    assert "ticket" in migrated and "mailbox_lease" in migrated
    # 0001 alone builds the tables in the models' column order; later migrations add
    # columns at the end of their table.
    in_order = len(state.known) == 1
    if not in_order:
        migrated, generated = _by_name(migrated), _by_name(generated)
        _fill_defaults_dropped(migrated, generated, sqlite)
    for table in generated:
        assert migrated[table] == generated[table], table


async def test_a_new_database_is_created_at_the_latest_migration(empty_url: str) -> None:
    await open_database(empty_url)  # what run, demo, import ... do
    state = await read_state()
    assert state.current and state.applied == state.known
    created = await describe_schema()
    await require_schema(empty_url)
    await close_database()
    assert created == await _generated_schema(empty_url)

    await _recreate_empty(empty_url)
    assert await cli("migrate", "--db", empty_url, "--check") == EXIT_FAILURE  # empty: behind
    assert await cli("migrate", "--db", empty_url) == EXIT_OK
    assert await cli("migrate", "--db", empty_url, "--check") == EXIT_OK


def test_sqlite_statements_end_where_sqlite_ends_them() -> None:
    script = (
        'CREATE TABLE "a" ("x" INT /* one; two */) /* it\'s; here */;\n'
        'CREATE INDEX "i" ON "a" (\'x;y\');\nSELECT 1'
    )
    assert sqlite_statements(script) == [
        'CREATE TABLE "a" ("x" INT /* one; two */) /* it\'s; here */',
        'CREATE INDEX "i" ON "a" (\'x;y\')',
        "SELECT 1",
    ]


async def _old_database(url: str) -> int:
    """A database as an earlier mailbot left it: the tables of 0001 (what generate_schemas
    made then), no history, a ticket and a message, then without ticket.howto,
    ticket.wiki_redirect (and its index), message.rules_version and the table mailbox_lease,
    which came later."""
    await _recreate_empty(url)
    await open_database(url, create_schema=False)
    try:
        await executor().migrate([MigrationTarget(app_label="models", name=BASELINE)])
        conn = _conn()
        await conn.execute_script(f'DROP TABLE "{HISTORY_TABLE}"')
        p = (lambda i: "?") if _sqlite() else (lambda i: f"${i}")
        now = datetime.now(UTC)
        ticket_columns = [
            "status", "plan", "customer", "customer_name", "language", "subject",
            "created_at", "updated_at", "severity", "urgent", "priority", "category", "howto",
            "spam",
        ]  # fmt: skip
        ticket_values = [
            "new", "pro", "a@example.com", "", "en", "old", now, now, "L4", True, 0, "", True,
            False,
        ]  # fmt: skip
        await conn.execute_insert(
            f'INSERT INTO "ticket" ({", ".join(ticket_columns)})'
            f" VALUES ({', '.join(p(i + 1) for i in range(len(ticket_columns)))})",
            ticket_values,
        )
        ticket_id = int(
            (await conn.execute_query_dict('SELECT max("id") AS i FROM "ticket"'))[0]["i"]
        )
        message_columns = [
            "ticket_id", "direction", "state", "source", "content_hash", "raw_bytes",
            "from_addr", "subject", "text", "received_at", "auto_generated", "bounce", "role",
            "rules_version",
        ]  # fmt: skip
        message_values = [
            ticket_id, "in", "stored", "", "h", b"x", "", "", "", now, False, False,
            "customer", "v1",
        ]  # fmt: skip
        await conn.execute_insert(
            f'INSERT INTO "message" ({", ".join(message_columns)})'
            f" VALUES ({', '.join(p(i + 1) for i in range(len(message_columns)))})",
            message_values,
        )
        index = await _index_on(conn, "ticket", "wiki_redirect")
        assert index is not None
        await conn.execute_script(f'DROP INDEX "{index}"')
        for table, column in [
            ("ticket", "howto"),
            ("ticket", "wiki_redirect"),
            ("message", "rules_version"),
        ]:
            await conn.execute_script(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
        await conn.execute_script('DROP TABLE "mailbox_lease"')
        return ticket_id
    finally:
        await close_database()


async def _index_on(conn: Any, table: str, column: str) -> str | None:
    if conn.capabilities.dialect == "sqlite":
        for index in await conn.execute_query_dict(f'PRAGMA index_list("{table}")'):
            cols = await conn.execute_query_dict(f'PRAGMA index_info("{index["name"]}")')
            if [c["name"] for c in cols] == [column]:
                return str(index["name"])
        return None
    rows = await conn.execute_query_dict(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename = $1 AND indexdef LIKE $2",
        [table, f'%("{column}")%'],
    )
    if not rows:
        rows = await conn.execute_query_dict(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = $1 AND indexdef LIKE $2",
            [table, f"%({column})%"],
        )
    return str(rows[0]["indexname"]) if rows else None


async def test_a_database_from_before_migrations_is_baselined(
    empty_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = empty_url
    generated = _by_name(await _generated_schema(url))
    ticket_id = await _old_database(url)

    # Nothing starts on it until it is migrated, and the refusal says what to do.
    with pytest.raises(ConfigError) as refused:
        await open_database(url)
    assert "no migration history" in str(refused.value)
    assert "run `mailbot migrate` (back up first: " in str(refused.value)
    assert await cli("migrate", "--db", url, "--check") == EXIT_FAILURE
    assert await cli("migrate", "--db", url, "--list") == EXIT_OK
    capsys.readouterr()

    assert await cli("migrate", "--db", url) == EXIT_OK
    out = capsys.readouterr().out
    assert "has tables but no migration history" in out
    assert "created table mailbox_lease" in out
    assert "added column ticket.howto (existing rows: False)" in out
    assert "added column ticket.wiki_redirect (existing rows: NULL)" in out
    assert "added column message.rules_version (existing rows: NULL)" in out
    assert f"baselined {BASELINE}" in out
    assert f"is now at {BASELINE}" in out or "is now at 0" in out

    await open_database(url)  # current now: no refusal
    try:
        await require_schema(url)
        ticket = await Ticket.get(id=ticket_id)
        assert ticket.howto is False and ticket.wiki_redirect is None
        assert ticket.subject == "old"
        message = await Message.get(ticket_id=ticket_id)
        assert message.rules_version is None and message.raw_bytes == b"x"
        assert await _index_on(_conn(), "ticket", "wiki_redirect") is not None
        repaired = _by_name(await describe_schema())
        sqlite = _sqlite()
    finally:
        await close_database()
    dropped = _fill_defaults_dropped(repaired, generated, sqlite)
    assert ("ticket.howto" in dropped) is sqlite
    assert repaired == generated

    assert await cli("migrate", "--db", url, "--check") == EXIT_OK
    assert await cli("migrate", "--db", url) == EXIT_OK
    assert "nothing to do" in capsys.readouterr().out


PROBE_MIGRATION = """\
from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "{last}")]

    operations = [
        ops.AddField(
            model_name="Ticket",
            name="probe",
            field=fields.CharField(max_length=16, default="filled", db_index=True),
        ),
    ]
"""


@pytest.fixture
def next_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The committed migrations plus the next one, adding a NOT NULL column with a default and an
    index, as the next model change will (a copy of the package, on sys.path)."""
    package = tmp_path / "probe_migrations"
    package.mkdir()
    source = Path(schema_migrate.__file__).parent / "migrations"
    for file in source.glob("*.py"):
        (package / file.name).write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
    last = max(file.stem for file in source.glob("[0-9]*.py"))
    name = f"{int(last[:4]) + 1:04d}_probe"
    (package / f"{name}.py").write_text(PROBE_MIGRATION.format(last=last), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(schema_migrate.APPS_CONFIG["models"], "migrations", "probe_migrations")
    return name


async def test_a_database_behind_is_refused_then_migrated(
    database: str, next_migration: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    ticket = await Ticket.create(
        plan="pro", customer="b@example.com", language="en", subject="s", created_at=now,
        updated_at=now,
    )  # fmt: skip
    at = (await read_state()).applied[-1]
    with pytest.raises(ConfigError) as refused:
        await require_schema(database)
    assert re.search(
        rf"database .* is at migration {at}, this mailbot needs {next_migration}:"
        r" run `mailbot migrate` \(back up first: (sqlite3 .*\.backup|pg_dump )",
        str(refused.value),
    ), str(refused.value)
    await close_database()

    capsys.readouterr()
    assert await cli("migrate", "--db", database, "--check") == EXIT_FAILURE
    assert f"pending: {next_migration}" in capsys.readouterr().out
    assert await cli("migrate", "--db", database, "--list") == EXIT_OK
    listing = capsys.readouterr().out
    assert re.search(rf"\[X\] {BASELINE}  applied \d{{4}}-", listing)
    assert f"[ ] {next_migration}  pending" in listing

    assert await cli("migrate", "--db", database) == EXIT_OK
    out = capsys.readouterr().out
    assert f"is at {at}" in out and f"applied {next_migration}" in out
    assert f"is now at {next_migration}" in out
    assert await cli("migrate", "--db", database, "--check") == EXIT_OK

    await open_database(database, create_schema=False)
    conn = _conn()
    rows = await conn.execute_query_dict(
        'SELECT "probe" FROM "ticket" WHERE "id" = ' + str(ticket.id)
    )
    assert rows == [{"probe": "filled"}]  # the existing row got the default
    assert await _index_on(conn, "ticket", "probe") is not None
    applied = await conn.execute_query_dict(f'SELECT "name" FROM "{HISTORY_TABLE}"')
    known = (await read_state()).known
    assert sorted(r["name"] for r in applied) == sorted(known)
    assert known[-1] == next_migration


async def test_a_database_ahead_is_refused(database: str) -> None:
    recorder = schema_migrate.MigrationRecorder(_conn())
    await recorder.record_applied("models", "0099_from_the_future")
    with pytest.raises(ConfigError, match="0099_from_the_future, which this mailbot does not"):
        await require_schema(database)
    await close_database()
    assert await cli("migrate", "--db", database, "--check") == EXIT_FAILURE
    assert await cli("migrate", "--db", database) == EXIT_CONFIG


# -- several processes at once ------------------------------------------------------------------

OPEN = (
    "import asyncio, sys\n"
    "from mailbot.tickets.database import open_database, close_database\n"
    "async def go():\n"
    "    await open_database(sys.argv[1])\n"
    "    await close_database()\n"
    "asyncio.run(go())\n"
)


async def _waiters(url: str, lock_file: Path) -> int:
    """Processes blocked on the schema lock."""
    if PG_URL:
        rows = await _conn().execute_query_dict(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(rows[0]["n"])
    inode = (await asyncio.to_thread(lock_file.stat)).st_ino
    text = await asyncio.to_thread(Path("/proc/locks").read_text)
    return sum(1 for line in text.splitlines() if "->" in line and f":{inode} " in line)


async def test_two_daemons_starting_on_an_empty_database_create_it_once(
    empty_url: str,
) -> None:
    url = empty_url
    lock_file = Path(f"{sqlite_path(url)}.migrate-lock")
    await open_database(url, create_schema=False)
    try:
        async with schema_migrate.schema_lock(url):  # held here until both wait for it
            children = [
                await asyncio.create_subprocess_exec(
                    sys.executable, "-c", OPEN, url, stderr=asyncio.subprocess.PIPE
                )
                for _ in range(2)
            ]
            async with asyncio.timeout(60):
                # Nothing to await: the children are other processes, seen only in the lock table.
                while await _waiters(url, lock_file) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            if PG_URL:
                rows = await _conn().execute_query_dict(
                    "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
                assert {int(r["objid"]) for r in rows} == {PG_LOCK_KEY & 0xFFFFFFFF}
        results = [await child.communicate() for child in children]
        for child, (_, err) in zip(children, results, strict=True):
            assert child.returncode == 0, err.decode()
        state = await read_state()
        assert state.current
        rows = await _conn().execute_query_dict(f'SELECT "name" FROM "{HISTORY_TABLE}"')
        assert [r["name"] for r in rows] == list(state.known)  # recorded once each
    finally:
        # Closed in this task: tortoise's connections are per context, and the fixture's
        # close_database() would not reach one opened here (its aiosqlite thread would keep
        # the interpreter from exiting).
        await close_database()


async def test_migrate_check_as_a_command(empty_url: str) -> None:
    script = Path(sys.executable).parent / "mailbot"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "mailbot.cli"]
    env = {**os.environ, "MAILBOT_DB_URL": empty_url}
    env.pop("MAILBOT_IMAP_URL", None)
    env.pop("MAILBOT_SMTP_URL", None)

    async def run(*args: str) -> tuple[int, str]:
        child = await asyncio.create_subprocess_exec(
            *command, *args, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await child.communicate()
        assert child.returncode is not None
        return child.returncode, out.decode()

    code, out = await run("migrate", "--check")
    assert code == EXIT_FAILURE
    assert ("no database at" if not PG_URL else f"pending {BASELINE}") in out  # SQLite: no file
    code, out = await run("migrate")
    assert code == EXIT_OK and "is now at" in out
    code, out = await run("migrate", "--check")
    assert code == EXIT_OK and "is current" in out
