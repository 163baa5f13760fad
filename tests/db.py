"""A fresh database per test: a SQLite file (WAL) by default, or the PostgreSQL database named
by ``MAILBOT_TEST_DB_URL`` (``postgresql://...``), emptied before each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tortoise import Tortoise, connections

from mailbot.tickets.database import (
    close_database,
    forget_compiled_queries,
    open_database,
    sqlite_url,
    tortoise_config,
)
from mailbot.tickets.schema_migrate import prepare_schema

POSTGRES_ENV = "MAILBOT_TEST_DB_URL"


async def empty_postgres(url: str) -> None:
    """Connect to the throw-away PostgreSQL database ``url`` and drop every table in it
    (the connection stays open: close it with ``close_database``)."""
    forget_compiled_queries()  # earlier tests in this process may have used SQLite
    await Tortoise.init(config=tortoise_config(url))
    conn = connections.get("default")
    await conn.execute_script("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")


async def _fresh_postgres(url: str) -> None:
    await empty_postgres(url)
    await prepare_schema(url)  # as open_database creates an empty database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[str]:
    url = os.environ.get(POSTGRES_ENV)
    if url:
        await _fresh_postgres(url)
    else:
        url = sqlite_url(tmp_path / "state" / "mailbot.sqlite3")
        await open_database(url)
    try:
        yield url
    finally:
        await close_database()
