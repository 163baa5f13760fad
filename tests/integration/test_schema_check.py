"""A database whose migration history says it is current but which lacks a column of the
models (changed by hand) is refused at start-up with the columns named, instead of failing on
every message. (Databases behind their migrations: tests/integration/test_migrate.py.)"""

from __future__ import annotations

import pytest
from tortoise import connections

from mailbot.daemon import require_schema
from mailbot.errors import ConfigError
from mailbot.tickets.database import missing_columns


async def test_a_complete_database_passes(database: str) -> None:
    assert await missing_columns() == []
    await require_schema(database)


async def test_missing_columns_are_named(database: str) -> None:
    conn = connections.get("default")
    await conn.execute_script('ALTER TABLE "ticket" DROP COLUMN "howto"')
    await conn.execute_script('ALTER TABLE "message" DROP COLUMN "rules_version"')
    assert sorted(await missing_columns()) == ["message.rules_version", "ticket.howto"]
    with pytest.raises(ConfigError) as info:
        await require_schema(database)
    assert "message.rules_version, ticket.howto" in str(info.value) or (
        "ticket.howto, message.rules_version" in str(info.value)
    )
