"""Whether the event loop keeps turning while something is awaited (for tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class Ticks:
    count: int = 0


@asynccontextmanager
async def loop_ticks(interval: float) -> AsyncIterator[Ticks]:
    """Counts the turns of a task that sleeps ``interval`` between them, for the duration of
    the block: a loop blocked by the awaited work does not count at all."""
    ticks = Ticks()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(interval)
            ticks.count += 1

    task = asyncio.create_task(ticker())
    try:
        yield ticks
    finally:
        task.cancel()
