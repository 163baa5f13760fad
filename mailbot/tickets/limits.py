"""Storm brakes: may an automatic answer go to this address now?

Two checks, both against the outbox (the database is the record of what we sent):

* **hard bounces**: an address a delivery report said failed permanently is suppressed
  (``suppressed_address``) until a reply from it to our mail arrives;
* **rate limits** (``auto_reply_limits`` in rules.yaml): at most N automatic answers per
  recipient address, and M over all recipients, in a sliding window.

Only answers to outsiders count (acknowledgements, wiki redirects): an agent's relayed answer
is a person's mail, and notifications to agents are internal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.domain import ReplyKind
from mailbot.rules.schema import Rules
from mailbot.tickets.models import OutboxRow, SuppressedAddress
from mailbot.tickets.raw_sql import db_value, dialect_sql, python_value, table

log = logging.getLogger(__name__)

#: Outbox kinds that are automatic answers to outsiders.
AUTOMATIC_KINDS = tuple(kind.value for kind in ReplyKind)


async def auto_reply_refusal(
    conn: BaseDBAsyncClient, rules: Rules, address: str, now: datetime
) -> str | None:
    """Why no automatic answer may go to ``address`` now, or None when it may.

    One statement reads the suppression and both windows' counts (the rows this
    transaction queued included), written out: it runs for every answer. Each count stops
    at its window's limit (only "limit reached" matters), so its cost is bounded by the
    limit, not by how many answers the window holds: an hour of a mail storm, or a limit
    lifted, would otherwise make every message count them all again."""
    limits = rules.auto_reply_limits
    per, total = limits.per_address, limits.total
    kinds = ", ".join("?" for _ in AUTOMATIC_KINDS)
    outbox = table(OutboxRow)
    sql = (
        f"SELECT s.bounces, s.since, "
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM {outbox} WHERE rcpt_to = ? "
        f"AND kind IN ({kinds}) AND created_at >= ? LIMIT ?) AS r) AS recent, "
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM {outbox} WHERE kind IN ({kinds}) "
        f"AND created_at >= ? LIMIT ?) AS a) AS overall "
        f"FROM (SELECT 1 AS one) AS o LEFT JOIN {table(SuppressedAddress)} AS s "
        f"ON s.address = ?"
    )
    values = [
        address,
        *AUTOMATIC_KINDS,
        db_value(OutboxRow, "created_at", now - timedelta(seconds=per.seconds)),
        per.count,
        *AUTOMATIC_KINDS,
        db_value(OutboxRow, "created_at", now - timedelta(seconds=total.seconds)),
        total.count,
        address.lower(),
    ]
    (row,) = await conn.execute_query_dict(dialect_sql(conn, sql), values)
    if row["bounces"] is not None:
        since = python_value(SuppressedAddress, "since", row["since"])
        return (
            f"{address} hard-bounced ({row['bounces']}x since "
            f"{since.isoformat(timespec='minutes')}): no automatic mail"
        )
    recent = int(row["recent"])
    if recent >= per.count:
        return f"rate limit: {recent} automatic answers to {address} within {per.per}"
    overall = int(row["overall"])
    if overall >= total.count:
        return f"rate limit: {overall} automatic answers in all within {total.per}"
    return None


async def suppress(
    conn: BaseDBAsyncClient,
    addresses: Iterable[str],
    *,
    reason: str,
    now: datetime,
    ticket_id: int | None,
) -> list[str]:
    """Record hard bounces; returns the addresses newly suppressed."""
    new: list[str] = []
    for address in dict.fromkeys(a.strip().lower() for a in addresses if a.strip()):
        row = await SuppressedAddress.filter(address=address).using_db(conn).first()
        if row is None:
            await SuppressedAddress.create(
                using_db=conn,
                address=address[:320],
                reason=reason[:2000],
                since=now,
                last_ticket=ticket_id,
            )
            new.append(address)
        else:
            await (
                SuppressedAddress.filter(address=address)
                .using_db(conn)
                .update(bounces=row.bounces + 1, reason=reason[:2000], last_ticket=ticket_id)
            )
    if new:
        log.warning(
            "ticket #%s: hard bounce, no more automatic mail to %s", ticket_id, ", ".join(new)
        )
    return new


async def lift(conn: BaseDBAsyncClient, address: str) -> bool:
    """Mail from a suppressed address arrived: it exists again."""
    deleted = await SuppressedAddress.filter(address=address.lower()).using_db(conn).delete()
    if deleted:
        log.info("%s wrote to us: automatic mail to it is allowed again", address)
    return bool(deleted)
