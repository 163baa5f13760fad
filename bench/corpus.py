"""The whole real-world corpus through the whole intake: stored, quarantined, crashed.

    .venv/bin/python bench/corpus.py [--corpus ../shared/corpus] [--by-source] [--json]

Every raw message of ``../shared/corpus`` (read in place, never copied) goes through
``Intake.accept`` into a fresh SQLite file, as the daemon would take it from IMAP: parse,
loop checks, threading, the decision, the answer queued. Printed: how many files, how many
stored, stored as duplicates of one already there, quarantined (with the reasons), and
crashed (an exception out of ``accept``, or a quarantine whose reason says intake or the
parser failed: bugs of ours). Also the rate, and the parse-alone floor over the same files.

Exit status 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailbot.agents.tokens import TokenSigner  # noqa: E402
from mailbot.clock import FixedClock  # noqa: E402
from mailbot.domain import Disposition  # noqa: E402
from mailbot.errors import ParseError  # noqa: E402
from mailbot.ingest.parse import parse_message  # noqa: E402
from mailbot.ingest.pipeline import Intake  # noqa: E402
from mailbot.policy import load_policy  # noqa: E402
from mailbot.tickets.database import close_database, open_database, sqlite_url  # noqa: E402
from mailbot.tickets.models import Message, MessageState  # noqa: E402
from mailbot.tickets.service import Origin  # noqa: E402

_BUG_PREFIXES = ("intake failed", "parser crashed")


def corpus_files(root: Path) -> list[Path]:
    return sorted(
        p
        for source in sorted(root.iterdir())
        if (source / "messages").is_dir()
        for p in (source / "messages").rglob("*")
        if p.is_file()
    )


def parse_floor(files: list[Path]) -> float:
    """Seconds to parse every file alone (the floor the intake is compared with)."""
    start = time.perf_counter()
    for path in files:
        with contextlib.suppress(ParseError):
            parse_message(path.read_bytes())
    return time.perf_counter() - start


async def run(root: Path) -> dict[str, object]:
    files = corpus_files(root)
    policy = load_policy(REPO / "rules.yaml", REPO / "templates")
    outcomes: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = {}
    crashes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        await open_database(sqlite_url(Path(tmp) / "corpus.sqlite3"))
        try:
            intake = Intake(
                policy,
                FixedClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
                signer=TokenSigner(b"bench-corpus-key"),
            )
            start = time.perf_counter()
            for path in files:
                source = path.relative_to(root).parts[0]
                label = f"corpus:{path.relative_to(root)}"
                try:
                    outcome = await intake.accept(path.read_bytes(), Origin(label=label))
                except Exception as exc:  # counted and named: this is what the run looks for
                    crashes.append(f"{label}: {exc!r}")
                    kind = "crashed"
                else:
                    kind = {
                        Disposition.STORED: "stored",
                        Disposition.DUPLICATE: "duplicate",
                        Disposition.QUARANTINED: "quarantined",
                    }.get(outcome.disposition, outcome.disposition.name.lower())
                outcomes[kind] += 1
                by_source.setdefault(source, Counter())[kind] += 1
            elapsed = time.perf_counter() - start
            quarantined = await Message.filter(state=MessageState.QUARANTINED).all()
            reasons = Counter((m.error or "").split(":", 1)[0] for m in quarantined)
            crashes += [f"{m.source}: {m.error}" for m in quarantined if _is_bug(m.error)]
        finally:
            await close_database()
    floor = parse_floor(files)
    return {
        "files": len(files),
        "outcomes": dict(outcomes),
        "quarantine_reasons": dict(reasons),
        "crashed": len(crashes),
        "crashes": crashes,
        "by_source": {k: dict(v) for k, v in sorted(by_source.items())},
        "intake_seconds": round(elapsed, 2),
        "intake_per_second": round(len(files) / elapsed, 1),
        "parse_floor_per_second": round(len(files) / floor, 1),
    }


def _is_bug(error: str | None) -> bool:
    return (error or "").startswith(_BUG_PREFIXES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--by-source", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.corpus / "README.md").is_file():
        print(f"corpus not found at {args.corpus}", file=sys.stderr)
        return 2
    result = asyncio.run(run(args.corpus))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        outcomes = result["outcomes"]
        print(f"corpus: {result['files']} messages -> {outcomes}, crashed {result['crashed']}")
        print(f"quarantine reasons: {result['quarantine_reasons']}")
        print(
            f"intake {result['intake_per_second']} msg/s "
            f"(parse alone {result['parse_floor_per_second']} msg/s)"
        )
        if args.by_source:
            for source, counts in result["by_source"].items():  # type: ignore[attr-defined]
                print(f"  {source}: {counts}")
        for line in result["crashes"]:  # type: ignore[attr-defined]
            print(f"CRASH {line}")
    return 1 if result["crashed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
