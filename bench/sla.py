"""SLA benchmark: deadline maths per ticket, and start-up with 100,000 open tickets.

    .venv/bin/python bench/sla.py [--tickets 100000] [--samples 5000]

1. Deadlines: ``sla_status`` (every clock's state and every reminder time) for new tickets of
   the shipped rules (plans x severities, arrivals spread over a year, so holidays and
   weekends are crossed), in µs per ticket; the floor is the calendar alone
   (``add_working_days`` + ``add_business`` on the same arrivals).
2. Start-up: a SQLite database with N open tickets, each with its clocks and pending reminder
   rows, is written once; then a fresh process opens it, loads the rules, builds the daemon,
   runs the first reminder sweep and finds the next wake-up. Reported: wall time of that
   start-up (the target is < 5 s) and the process's peak RSS (< 200 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailbot.policy import load_policy  # noqa: E402
from mailbot.sla.plan import sla_status  # noqa: E402
from mailbot.tickets.database import close_database, open_database, sqlite_url  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)


def deadlines(samples: int) -> None:
    rules = load_policy(REPO / "rules.yaml", REPO / "templates").rules
    rng = random.Random(3)
    arrivals = [START + timedelta(minutes=rng.randrange(365 * 24 * 60)) for _ in range(samples)]
    plans = list(rules.plans)
    office = rules.calendar("office")
    for arrival in arrivals[:200]:  # warm the holiday cache, as a running daemon has it
        office.add_working_days(arrival, 3)
    t0 = time.perf_counter()
    for arrival in arrivals:
        office.add_working_days(arrival, 3)
        office.add_business(arrival, 8 * 60)
    floor = (time.perf_counter() - t0) / samples * 1e6
    t0 = time.perf_counter()
    reminders = 0
    for n, arrival in enumerate(arrivals):
        status = sla_status(
            rules,
            plans[n % len(plans)],
            severity=f"L{n % 4 + 1}",
            urgent=n % 4 == 0,
            arrival=arrival,
            now=arrival,
        )
        reminders += len(status.reminders)
    full = (time.perf_counter() - t0) / samples * 1e6
    print(f"calendar floor (2 ops):   {floor:8.1f} µs per ticket")
    print(
        f"sla_status (all clocks):  {full:8.1f} µs per ticket ({reminders / samples:.1f} reminders)"
    )


async def populate(path: Path, tickets: int) -> None:
    await open_database(sqlite_url(path))  # creates the schema
    await close_database()
    db = sqlite3.connect(path)
    now = datetime.now(UTC)
    iso = lambda t: t.isoformat()  # noqa: E731
    db.executemany(
        "INSERT INTO ticket (id, status, plan, customer, customer_name, language, subject,"
        " created_at, updated_at, deadline, severity, urgent, priority, category, howto, spam,"
        " mailbox)"
        " VALUES (?, 'open', 'ultimate', ?, '', 'sv', 'Benchmark', ?, ?, ?, 'L4', 0, 30, '',"
        " 0, 0, '')",
        (
            (i, f"c{i}@shop.example", iso(now), iso(now), iso(now + timedelta(hours=4 + i % 97)))
            for i in range(1, tickets + 1)
        ),
    )
    db.executemany(
        "INSERT INTO ticket_clock (ticket_id, name, status, started_at, due_at)"
        " VALUES (?, 'first_response', 'running', ?, ?)",
        ((i, iso(now), iso(now + timedelta(hours=4 + i % 97))) for i in range(1, tickets + 1)),
    )
    db.executemany(
        "INSERT INTO reminder (ticket_id, clock, kind, recipient, due_at, status)"
        " VALUES (?, 'first_response', ?, 'team@example.com', ?, 'pending')",
        (
            (i, kind, iso(now + timedelta(hours=offset + i % 97)))
            for i in range(1, tickets + 1)
            for kind, offset in (("at_percent:50", 2), ("at_percent:80", 3), ("breach", 4))
        ),
    )
    db.commit()
    db.close()


STARTUP = """
import asyncio, resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from mailbot.daemon import Daemon
from mailbot.policy import load_policy
from mailbot.settings import load_settings
from mailbot.tickets.database import close_database, open_database
async def main():
    settings = load_settings({{}}, imap_url="imap+plain://u@127.0.0.1:1/INBOX",
                             smtp_url="smtp+plain://127.0.0.1:1", db_url={url!r},
                             rules={rules!r})
    from pathlib import Path
    policy = load_policy(settings.rules_path, Path({templates!r}))
    await open_database(settings.db_url)
    daemon = Daemon(settings, policy)
    report = await daemon.reminders.run_once()
    due = await daemon.reminders.next_due()
    await close_database()
    return report, due
report, due = asyncio.run(main())
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      report.sent, due)
"""


def startup(tickets: int) -> None:
    path = Path(tempfile.mkdtemp(prefix="mailbot-bench-sla-")) / "mailbot.sqlite3"
    t0 = time.perf_counter()
    asyncio.run(populate(path, tickets))
    print(
        f"populated:                {tickets} open tickets, {3 * tickets} pending reminders "
        f"in {time.perf_counter() - t0:.1f} s (setup, not a figure)"
    )
    code = STARTUP.format(
        repo=str(REPO),
        url=sqlite_url(path),
        rules=str(REPO / "rules.yaml"),
        templates=str(REPO / "templates"),
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    inner, rss, sent, due = out.stdout.split(maxsplit=3)
    print(
        f"start-up to first sweep:  {wall:8.2f} s wall ({float(inner):.2f} s inside Python), "
        f"{sent} sent, next wake-up {due.strip()}"
    )
    print(f"start-up peak RSS:        {float(rss):8.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=5_000)
    args = parser.parse_args()
    deadlines(args.samples)
    startup(args.tickets)
