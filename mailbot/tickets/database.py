"""Opening and closing the database: SQLite (file, WAL, synchronous=FULL) or PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise import Tortoise, connections
from tortoise.backends.base import executor
from tortoise.backends.base.config_generator import expand_db_url

from mailbot.errors import ConfigError

log = logging.getLogger(__name__)

MODELS = ["mailbot.tickets.models"]

# Durability first: a message is acknowledged on IMAP only after its commit, so a commit must
# survive power loss (FULL), and a second process must wait rather than fail (busy_timeout).
_SQLITE_DEFAULTS = {"journal_mode": "WAL", "synchronous": "FULL", "busy_timeout": "10000"}


def sqlite_url(path: Path) -> str:
    return f"sqlite://{path.resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite://`` URL names (its pragmas dropped); None for PostgreSQL."""
    if not url.startswith("sqlite://"):
        return None
    return Path(url.removeprefix("sqlite://").split("?")[0])


async def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet (False for PostgreSQL):
    the read-only commands must not create it by opening it."""
    path = sqlite_path(url)
    return path is not None and not await asyncio.to_thread(path.exists)


def normalise_db_url(url: str) -> str:
    """Add mailbot's SQLite pragmas unless the URL sets them; accept postgresql:// too."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"postgresql", "postgres"}:
        return urlunsplit(("asyncpg", *parts[1:]))
    if scheme in {"asyncpg", "psycopg"}:
        return url
    if scheme != "sqlite":
        raise ConfigError(f"MAILBOT_DB_URL {url!r}: use sqlite:///path or postgresql://...")
    if parts.path not in {"", "/"} and parts.path != "/:memory:":
        Path(parts.path).parent.mkdir(parents=True, exist_ok=True)
    query = dict(parse_qsl(parts.query))
    for key, value in _SQLITE_DEFAULTS.items():
        query.setdefault(key, value)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def forget_compiled_queries() -> None:
    """Empty tortoise-orm's cache of compiled INSERT/UPDATE SQL (see ``open_database``);
    call it before any ``Tortoise.init`` that may use another dialect than the last one."""
    executor.EXECUTOR_CACHE.clear()


#: The engine SQLite databases are opened with (mailbot.tickets.sqlite_inline).
SQLITE_ENGINE = "mailbot.tickets.sqlite_inline"


def tortoise_config(url: str) -> dict[str, Any]:
    """tortoise-orm's configuration for ``url``: SQLite through mailbot's inline engine,
    PostgreSQL through asyncpg."""
    connection = expand_db_url(normalise_db_url(url))
    if connection["engine"] == "tortoise.backends.sqlite":
        connection["engine"] = SQLITE_ENGINE
    return {
        "connections": {"default": connection},
        "apps": {"models": {"models": MODELS, "default_connection": "default"}},
    }


async def open_database(url: str, *, create_schema: bool = True) -> None:
    """Connect; with ``create_schema`` (the default) an empty database is created by running
    the migrations (``mailbot.tickets.schema_migrate``, under a lock so that daemons starting
    together create it once), and a database that is behind the migrations (or ahead of them)
    is refused with a ConfigError that says to run ``mailbot migrate``. Without it, nothing
    is checked or written.

    tortoise-orm caches each table's compiled INSERT/UPDATE SQL by connection name and table,
    not by dialect: a process that opened SQLite before (a test run, ``simulate --corpus``'s
    throw-away database) would send SQLite's ``?`` placeholders to PostgreSQL. The cache is
    emptied here, so every database opened starts from its own dialect."""
    from mailbot.tickets.schema_migrate import prepare_schema  # it imports this module

    forget_compiled_queries()
    await Tortoise.init(config=tortoise_config(url))
    if create_schema:
        try:
            await prepare_schema(url)
        except BaseException:
            await Tortoise.close_connections()
            raise
    log.info("database open: %s", redact(url))


async def missing_columns() -> list[str]:
    """``table.column`` of every model column the open database lacks: a database whose
    migration history does not match its tables (edited by hand, or restored partly)."""
    conn = connections.get("default")
    sqlite = conn.capabilities.dialect == "sqlite"
    missing: list[str] = []
    for model in Tortoise.apps["models"].values():
        meta = model._meta
        table = meta.db_table
        if sqlite:
            rows = await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
            have = {str(row["name"]) for row in rows}
        else:
            rows = await conn.execute_query_dict(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = $1",
                [table],
            )
            have = {str(row["column_name"]) for row in rows}
        if not have:
            continue  # no table at all: not a column problem
        missing += [f"{table}.{c}" for c in meta.fields_db_projection.values() if c not in have]
    return missing


async def close_database() -> None:
    await Tortoise.close_connections()


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
