"""A fresh SQLite database (file, WAL) per test, shared by integration and e2e conftests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailbot.tickets.database import close_database, open_database, sqlite_url


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[str]:
    url = sqlite_url(tmp_path / "state" / "mailbot.sqlite3")
    await open_database(url)
    try:
        yield url
    finally:
        await close_database()
