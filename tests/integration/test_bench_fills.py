"""The benchmarks' bulk fills against the current schema: a column added to a model must not
leave a benchmark failing at its set-up unnoticed (bench/startup.py and bench/sla.py did,
after the ``mailbox`` and ``category`` columns came)."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

from mailbot.tickets.database import sqlite_path

REPO = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    module_name = f"mailbot_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _counts(path: Path, *tables: str) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        db.close()


async def test_the_startup_benchmark_fills_the_current_schema(tmp_path: Path) -> None:
    startup = _load("startup")
    url = await startup.reset(None, tmp_path)
    await startup.populate(url, 30)
    path = sqlite_path(url)
    assert path is not None
    assert _counts(path, "ticket", "message", "outbox", "ticket_clock", "reminder") == {
        "ticket": 30,
        "message": 90,
        "outbox": 60,
        "ticket_clock": 60,
        "reminder": 90,
    }


async def test_the_sla_benchmark_fills_the_current_schema(tmp_path: Path) -> None:
    sla = _load("sla")
    path = tmp_path / "sla.sqlite3"
    await sla.populate(path, 30)
    assert _counts(path, "ticket", "ticket_clock", "reminder") == {
        "ticket": 30,
        "ticket_clock": 30,
        "reminder": 90,
    }
