"""Schema migrations: where the open database stands, creating an empty one, ``mailbot migrate``.

The migrations are tortoise-orm's own (``tortoise.migrations``: operations, not SQL text, so
one migration serves SQLite and PostgreSQL), kept in ``mailbot.tickets.migrations`` and
recorded in its table ``tortoise_migrations``. ``0001_initial`` is the schema that
``generate_schemas`` created before there were migrations, so a database from an earlier
build ("unversioned": our tables, no history) is *baselined*: columns 0001 has and it lacks
are added with their defaults, then 0001 is recorded as applied.

Creating or migrating happens under a lock (a PostgreSQL advisory lock, or ``flock`` on a file
beside a SQLite database) so that daemons starting together on an empty database create it
once. Two corrections to the framework live here (``_EditorFixes``): SQLite DDL is split into
statements by SQLite's own rule (tortoise splits on every ``;``, also inside the comments it
writes from the models' docstrings), and a column added to a table fills existing rows with
the field's default and gets the field's index, as ``generate_schemas`` would have made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.fields.base import DB_DEFAULT_NOT_SET, Field
from tortoise.fields.relational import RelationalField
from tortoise.migrations.executor import MigrationExecutor
from tortoise.migrations.graph import MigrationKey
from tortoise.migrations.loader import MigrationLoader
from tortoise.migrations.migration import Migration
from tortoise.migrations.operations import CreateModel, RunPython, TortoiseOperation
from tortoise.migrations.recorder import MigrationRecorder
from tortoise.migrations.schema_editor import (
    AsyncpgSchemaEditor,
    BaseSchemaEditor,
    PsycopgSchemaEditor,
    SqliteSchemaEditor,
)
from tortoise.migrations.schema_generator.state import State
from tortoise.migrations.schema_generator.state_apps import StateApps
from tortoise.models import Model
from tortoise.transactions import in_transaction
from tortoise.utils import get_schema_sql

from mailbot.errors import ConfigError
from mailbot.tickets.database import MODELS, redact

log = logging.getLogger(__name__)

APP = "models"  # the app label of mailbot.tickets.models (``models.Ticket``)
MIGRATIONS_MODULE = "mailbot.tickets.migrations"
APPS_CONFIG: dict[str, dict[str, Any]] = {
    APP: {"models": MODELS, "migrations": MIGRATIONS_MODULE, "default_connection": "default"}
}
HISTORY_TABLE = "tortoise_migrations"
BASELINE = "0001_initial"
#: pg_advisory_lock key: b"mailbot" as an integer. Advisory locks are per database.
PG_LOCK_KEY = int.from_bytes(b"mailbot", "big")

Say = Callable[[str], None]


@dataclass(frozen=True)
class SchemaState:
    """Where the open database stands against the migrations this mailbot ships."""

    known: tuple[str, ...]  # migrations on disk, in the order they apply
    applied: tuple[str, ...]  # recorded in the history table, in the order applied
    applied_at: dict[str, datetime]
    tables: frozenset[str]  # tables of our models that exist
    history: bool  # the history table exists

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(name for name in self.known if name not in self.applied)

    @property
    def unknown(self) -> tuple[str, ...]:
        """Applied migrations this mailbot does not have: the database is newer."""
        return tuple(name for name in self.applied if name not in self.known)

    @property
    def empty(self) -> bool:
        return not self.tables and not self.applied

    @property
    def unversioned(self) -> bool:
        """Tables from a mailbot before migrations (``generate_schemas``), no history."""
        return bool(self.tables) and not self.applied

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown and bool(self.applied)

    @property
    def level(self) -> str:
        """The last applied migration, or what stands in for it."""
        if self.applied:
            return self.applied[-1]
        return "no migration history" if self.tables else "empty"


def backup_hint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = parts.path or "mailbot.sqlite3"
        return f"sqlite3 {path} \".backup '{path}.bak'\""
    return f"pg_dump -Fc -f mailbot-before-migrate.dump {parts.path.lstrip('/') or 'DBNAME'}"


def behind_error(url: str, state: SchemaState) -> ConfigError | None:
    """The refusal for a database this mailbot cannot use as it is, else None."""
    where = redact(url)
    if state.unknown:
        return ConfigError(
            f"database {where} is at migration {state.level}, which this mailbot does not know"
            f" (it knows up to {state.known[-1]}): the database was migrated by a newer"
            " mailbot; run that version"
        )
    if state.current or state.empty:
        return None
    needs = state.known[-1]
    if state.unversioned:
        at = "has no migration history (created by a mailbot before migrations)"
    else:
        at = f"is at migration {state.level}"
    return ConfigError(
        f"database {where} {at}, this mailbot needs {needs}: run `mailbot migrate`"
        f" (back up first: {backup_hint(url)})"
    )


def _connection() -> BaseDBAsyncClient:
    return cast(BaseDBAsyncClient, connections.get("default"))


def _sqlite(conn: BaseDBAsyncClient) -> bool:
    return bool(conn.capabilities.dialect == "sqlite")


async def _existing_tables(conn: BaseDBAsyncClient) -> set[str]:
    if _sqlite(conn):
        rows = await conn.execute_query_dict("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await conn.execute_query_dict(
            "SELECT table_name AS name FROM information_schema.tables"
            " WHERE table_schema = current_schema()"
        )
    return {str(row["name"]) for row in rows}


def _model_tables() -> set[str]:
    from tortoise import Tortoise

    return {model._meta.db_table for model in Tortoise.apps[APP].values()}


def _loader() -> MigrationLoader:
    return MigrationLoader(APPS_CONFIG, _NoHistory(), load=False)


class _NoHistory(MigrationRecorder):
    """For reading the migrations on disk: no database involved."""

    def __init__(self) -> None:
        super().__init__(connection=None)

    async def applied_migrations(self) -> list[MigrationKey]:
        return []


async def known_migrations() -> list[Migration]:
    """The migrations this mailbot ships, in the order they apply."""
    loader = _loader()
    await loader.build_graph()
    ordered: list[Migration] = []
    for leaf in loader.graph.leaf_nodes(APP):
        for key in loader.graph.forwards_plan(leaf):
            migration = loader.graph.nodes[key]
            if migration is not None and migration not in ordered:
                ordered.append(migration)
    return ordered


async def read_state() -> SchemaState:
    conn = _connection()
    tables = await _existing_tables(conn)
    history = HISTORY_TABLE in tables
    applied: list[str] = []
    applied_at: dict[str, datetime] = {}
    if history:
        rows = await conn.execute_query_dict(
            f'SELECT "name", "applied_at" FROM "{HISTORY_TABLE}"'
            f' WHERE "app" = \'{APP}\' ORDER BY "applied_at", "name"'
        )
        for row in rows:
            name = str(row["name"])
            applied.append(name)
            stamp = row["applied_at"]
            if isinstance(stamp, str):
                stamp = datetime.fromisoformat(stamp)
            if isinstance(stamp, datetime):
                applied_at[name] = stamp
    known = tuple(m.name for m in await known_migrations())
    return SchemaState(
        known=known,
        applied=tuple(applied),
        applied_at=applied_at,
        tables=frozenset(tables & _model_tables()),
        history=history,
    )


# -- the lock ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def schema_lock(url: str) -> AsyncIterator[None]:
    """Held while the schema is created or migrated: one process at a time per database."""
    conn = _connection()
    if _sqlite(conn):
        path = urlsplit(url).path
        if not path or path in {"/", "/:memory:"} or url.startswith("sqlite://:memory:"):
            yield  # private to this process
            return
        async with _file_lock(Path(f"{path}.migrate-lock")):
            yield
        return
    async with conn.acquire_connection() as raw:
        # A session lock on one pooled connection; the migrations run on others.
        await raw.execute(f"SELECT pg_advisory_lock({PG_LOCK_KEY})")
        try:
            yield
        finally:
            await raw.execute(f"SELECT pg_advisory_unlock({PG_LOCK_KEY})")


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# -- corrections to the framework's schema editors ----------------------------------------------


def sqlite_statements(script: str) -> list[str]:
    """Split SQL into statements at the semicolons SQLite itself would end them at (not those
    inside comments or strings)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip().removesuffix(";").strip()
            if statement:
                statements.append(statement)
            buffer = ""
    rest = buffer.strip().removesuffix(";").strip()
    if rest:
        statements.append(rest)
    return statements


class _EditorFixes(BaseSchemaEditor):
    """A column added to an existing table: existing rows get the field's (static) default,
    as a NOT NULL column needs one, a ``db_index`` field gets its index, and on PostgreSQL
    the column gets its comment, as in a table generate_schemas created."""

    async def add_field(self, model: type[Model], field_name: str) -> None:
        field: Field[Any] = model._meta.fields_map[field_name]
        fill = (
            not field.null
            and not field.pk
            and not isinstance(field, RelationalField)
            and not field.has_db_default()
            and field.default is not None
            and not callable(field.default)
        )
        if fill:
            field.db_default = field.default
        try:
            await super().add_field(model, field_name)
        finally:
            if fill:
                field.db_default = DB_DEFAULT_NOT_SET
        table = self._qualify_table_name(model._meta.db_table, model._meta.schema)
        column = model._meta.fields_db_projection.get(field_name, field_name)
        comments: list[str] = getattr(self, "comments_array", [])
        if comments:  # PostgreSQL's COMMENT ON COLUMN, collected but not run by add_field
            await self._run_sql("\n".join(comments))
            comments.clear()
        if fill and self.DIALECT == "postgres":
            # The rows are filled; the model, not the database, supplies defaults from now on
            # (as in a table generate_schemas created). SQLite cannot drop a default.
            await self._run_sql(f'ALTER TABLE {table} ALTER COLUMN "{column}" DROP DEFAULT')
        if field.index and not field.pk and not isinstance(field, RelationalField):
            await self._run_sql(self._get_index_sql(model, [column]))


class _SqliteEditor(_EditorFixes, SqliteSchemaEditor):
    async def _run_sql(self, sql: str) -> None:
        if self.collect_sql or not self.atomic_migration:
            await super()._run_sql(sql)
            return
        for statement in sqlite_statements(sql):
            await self.client.execute_query(statement)


class _AsyncpgEditor(_EditorFixes, AsyncpgSchemaEditor):
    pass


class _PsycopgEditor(_EditorFixes, PsycopgSchemaEditor):
    pass


class _Executor(MigrationExecutor):
    def _schema_editor(self, atomic: bool = True, collect_sql: bool = False) -> BaseSchemaEditor:
        module = self.connection.__class__.__module__
        editor: type[BaseSchemaEditor] | None = None
        if "sqlite" in module:
            editor = _SqliteEditor
        elif "asyncpg" in module:
            editor = _AsyncpgEditor
        elif "psycopg" in module:
            editor = _PsycopgEditor
        if editor is None:
            return super()._schema_editor(atomic=atomic, collect_sql=collect_sql)
        return editor(self.connection, atomic=atomic, collect_sql=collect_sql)


def executor() -> MigrationExecutor:
    return _Executor(_connection(), APPS_CONFIG)


# -- creating, baselining, migrating ------------------------------------------------------------


async def prepare_schema(url: str) -> SchemaState:
    """At start-up: create an empty database by running every migration (under the lock);
    refuse (ConfigError) a database that is behind or ahead; leave a current one alone."""
    state = await read_state()
    if state.empty:
        async with schema_lock(url):
            state = await read_state()  # another process may have created it meanwhile
            if state.empty:
                how = await create_empty()
                state = await read_state()
                log.info("database created %s, at %s: %s", how, state.level, redact(url))
    error = behind_error(url, state)
    if error is not None:
        raise error
    return state


def _schema_only(migrations: list[Migration]) -> bool:
    return all(
        isinstance(op, TortoiseOperation) and not isinstance(op, RunPython)
        for migration in migrations
        for op in migration.operations
    )


async def create_empty() -> str:
    """Create the schema of an empty database, in one transaction. When every migration only
    changes the schema (no RunPython, no raw SQL), the models' own DDL (``generate_schemas``'s)
    is the same schema (tests/integration/test_migrate.py compares them column by column) and
    ~4x quicker to reach than replaying each migration's state; they are all recorded as
    applied. Otherwise the migrations run. Call under the lock."""
    migrations = await known_migrations()
    if not _schema_only(migrations):
        await executor().migrate()
        return "by running the migrations"
    conn = _connection()
    recorder = MigrationRecorder(conn)
    await recorder.ensure_schema(executor()._schema_editor(atomic=False))
    ddl = get_schema_sql(conn, safe=False)
    async with in_transaction(conn.connection_name) as tx:
        if _sqlite(conn):
            for statement in sqlite_statements(ddl):
                await tx.execute_query(statement)
        else:
            await tx.execute_script(ddl)
        recorder_tx = MigrationRecorder(tx)
        for migration in migrations:
            await recorder_tx.record_applied(APP, migration.name)
    return "from the models"


async def _baseline_state() -> tuple[Migration, State]:
    migrations = await known_migrations()
    baseline = next(m for m in migrations if m.name == BASELINE)
    state = State(models={}, apps=StateApps(default_connections={APP: "default"}))
    await baseline.apply(state, dry_run=True, schema_editor=None)
    return baseline, state


async def _columns(conn: BaseDBAsyncClient, table: str) -> set[str]:
    if _sqlite(conn):
        rows = await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
        return {str(row["name"]) for row in rows}
    rows = await conn.execute_query_dict(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1",
        [table],
    )
    return {str(row["column_name"]) for row in rows}


def _default_text(field: Field[Any]) -> str:
    if field.null:
        return "NULL"
    return repr(field.default.value if hasattr(field.default, "value") else field.default)


async def baseline(url: str, say: Say) -> None:
    """Make an unversioned database (tables from ``generate_schemas``) one at 0001: create the
    tables and columns of 0001 it lacks, then record 0001 as applied. Call under the lock."""
    conn = _connection()
    migration, state = await _baseline_state()
    existing = await _existing_tables(conn)
    ex = executor()
    editor = cast(Any, ex)._schema_editor(atomic=True)
    plan: list[tuple[str, type[Model], str | None]] = []  # (what, model, field name)
    for operation in migration.operations:
        if not isinstance(operation, CreateModel):
            continue
        model = state.apps.get_model(f"{APP}.{operation.name}")
        table = model._meta.db_table
        if table not in existing:
            plan.append((f"created table {table}", model, None))
            continue
        have = await _columns(conn, table)
        for name, field in model._meta.fields_map.items():
            column = model._meta.fields_db_projection.get(name)
            if column is None or column in have:
                continue  # a backward relation, or present
            default = _default_text(field)
            plan.append((f"added column {table}.{column} (existing rows: {default})", model, name))
    unmanaged = []
    for operation in migration.operations:
        if isinstance(operation, CreateModel):
            model = state.apps.get_model(f"{APP}.{operation.name}")
            table = model._meta.db_table
            if table in existing:
                extra = await _columns(conn, table) - set(model._meta.fields_db_projection.values())
                unmanaged += [f"{table}.{column}" for column in sorted(extra)]
    if plan:
        async with in_transaction(conn.connection_name) as tx:
            editor.client = tx
            for _what, model, field_name in plan:
                if field_name is None:
                    await editor.create_model(model)
                else:
                    await editor.add_field(model, field_name)
    for what, _model, _name in plan:
        say(f"  {what}")
    if unmanaged:
        say(f"  left alone: columns no migration knows: {', '.join(unmanaged)}")
    recorder = MigrationRecorder(conn)
    await recorder.ensure_schema(cast(Any, ex)._schema_editor(atomic=False))
    await recorder.record_applied(APP, BASELINE)
    say(f"  baselined {BASELINE}: recorded as applied (its tables were already there)")


async def migrate(url: str, say: Say) -> SchemaState:
    """``mailbot migrate``: baseline an unversioned database, then apply the pending
    migrations in order, each in its own transaction (SQLite and PostgreSQL both run DDL in
    transactions), recording each. Prints what it did through ``say``."""
    where = redact(url)
    async with schema_lock(url):
        state = await read_state()
        if state.unknown:
            error = behind_error(url, state)
            assert error is not None
            raise error
        if state.current:
            say(f"database {where} is at {state.level}: nothing to do")
            return state
        if state.empty:
            say(f"database {where} is empty: creating it")
        elif state.unversioned:
            say(f"database {where} has tables but no migration history (an earlier mailbot)")
            await baseline(url, say)
        else:
            say(f"database {where} is at {state.level}")

        def progress(event: str, _app: str, name: str) -> None:
            if event == "apply_done":
                say(f"  applied {name}")

        await executor().migrate(progress=progress)
        state = await read_state()
    say(f"database {where} is now at {state.level}")
    return state


def _say(line: str) -> None:
    print(line, flush=True)


def format_list(state: SchemaState) -> list[str]:
    lines = []
    for name in state.known:
        if name in state.applied:
            stamp = state.applied_at.get(name)
            when = f"applied {stamp.isoformat(timespec='seconds')}" if stamp else "applied"
            lines.append(f"[X] {name}  {when}")
        else:
            lines.append(f"[ ] {name}  pending")
    lines += [f"[?] {name}  applied, unknown to this mailbot" for name in state.unknown]
    if state.unversioned:
        lines.append("(no migration history: tables of an earlier mailbot; `mailbot migrate`")
        lines.append(f" checks them against {BASELINE} and records it)")
    return lines


async def migrate_command(url: str, *, check: bool = False, listing: bool = False) -> bool:
    """``mailbot migrate [--check | --list]``. False: ``--check`` found the database behind
    (or ahead). A database ahead of this mailbot, without ``--check``: ConfigError."""
    from mailbot.tickets.database import close_database, open_database

    path = urlsplit(url).path
    looking = (check or listing) and urlsplit(url).scheme == "sqlite" and path not in {"", "/"}
    if looking and not await asyncio.to_thread(Path(path).exists):  # look, do not create
        _say(f"no database at {redact(url)} yet: `mailbot migrate` or `mailbot run` creates it")
        return not check
    await open_database(url, create_schema=False)
    try:
        if not check and not listing:
            await migrate(url, _say)
            return True
        state = await read_state()
        if listing:
            _say(f"database {redact(url)}:")
            for line in format_list(state):
                _say(f"  {line}")
        if not check:
            return True
        error = behind_error(url, state)
        if state.empty:
            _say(f"database {redact(url)} is empty: pending {', '.join(state.pending)}")
            return False
        if error is not None:
            pending = ", ".join(state.pending) if not state.unknown else "none"
            _say(f"{error} (pending: {pending})")
            return False
        _say(f"database {redact(url)} is current: at {state.level}")
        return True
    finally:
        await close_database()
