"""Opening and closing the database: SQLite (file, WAL, synchronous=FULL) or PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise import Tortoise

from mailbot.errors import ConfigError

log = logging.getLogger(__name__)

MODELS = ["mailbot.tickets.models"]

# Durability first: a message is acknowledged on IMAP only after its commit, so a commit must
# survive power loss (FULL), and a second process must wait rather than fail (busy_timeout).
_SQLITE_DEFAULTS = {"journal_mode": "WAL", "synchronous": "FULL", "busy_timeout": "10000"}


def sqlite_url(path: Path) -> str:
    return f"sqlite://{path.resolve()}"


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


async def open_database(url: str, *, create_schema: bool = True) -> None:
    """Connect and (by default) create missing tables. Safe to call on an existing database."""
    await Tortoise.init(db_url=normalise_db_url(url), modules={"models": MODELS})
    if create_schema:
        await Tortoise.generate_schemas(safe=True)
    log.info("database open: %s", redact(url))


async def close_database() -> None:
    await Tortoise.close_connections()


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
