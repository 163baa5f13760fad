"""Which mailbox the work in hand belongs to, when one daemon serves several.

Each mailbox's tasks run with :data:`MAILBOX` set to its name (``mailbot.daemon`` sets it
before it starts them; asyncio tasks inherit it). A ticket created and an outbox row queued
while it is set carry that name, so each mailbox's sender sends its own mail (through its SMTP
server, from its address) and each mailbox's sweeps apply its own rules. A daemon of one
mailbox leaves it empty: ``""`` is the unnamed, default mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar

MAILBOX: ContextVar[str] = ContextVar("mailbot_mailbox", default="")


def current_mailbox() -> str:
    return MAILBOX.get()


def served(name: str, *, default: bool) -> Sequence[str] | None:
    """The mailbox names a mailbox's sender and sweeps take rows of: its own, and for the
    first (default) mailbox also the unnamed ones (rows from before mailboxes were named).
    None: a daemon of one unnamed mailbox takes every row."""
    if not name:
        return None
    return (name, "") if default else (name,)
