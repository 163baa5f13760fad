"""A fresh database per test: a SQLite file (WAL) by default, or the PostgreSQL database named
by ``MAILBOT_TEST_DB_URL`` (``postgresql://...``), emptied before each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tortoise import Tortoise, connections

from mailbot.tickets.database import (
    MODELS,
    close_database,
    forget_compiled_queries,
    normalise_db_url,
    open_database,
    sqlite_url,
)
from mailbot.tickets.schema_migrate import prepare_schema

POSTGRES_ENV = "MAILBOT_TEST_DB_URL"


async def _fresh_postgres(url: str) -> None:
    forget_compiled_queries()  # earlier tests in this process may have used SQLite
    await Tortoise.init(db_url=normalise_db_url(url), modules={"models": MODELS})
    conn = connections.get("default")
    await conn.execute_script("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
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
