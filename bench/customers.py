"""Customer files benchmark: rules.yaml with ``customers_from`` a CSV of N entries.

    .venv/bin/python bench/customers.py [--customers 20000] [--yaml] [--repeat 3]

Writes the shipped rules.yaml plus ``customers_from: [customers.csv]`` and a CSV of N
customers (addresses and domains, several plans, languages and accounts) to a temporary
directory, then reports the best of ``--repeat`` runs of:

1. ``load_rules``: read, validate and cross-check rules.yaml with the CSV's entries;
2. ``load_policy``: what start-up does (the rules, the version hash over every file, the
   templates checked; the rules are read twice, as the first read finds the customer file),
   and what a reload does (``expect``: the running ruleset's files; read once);
3. ``mailbot check``'s warnings (``lint_file``: the lint and the placing of each warning in
   its file; the generated entries overlap, so there are thousands, 100 shown);
4. ``resolve_customer`` for a sender (the per-message lookup), in µs.

``--yaml`` measures the same entries as a YAML list (``customers.yaml``) too: YAML is parsed
node by node to know every line, so it is several times slower than CSV; use CSV for
thousands of entries.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailbot.policy import load_policy  # noqa: E402
from mailbot.rules.customers import resolve_customer  # noqa: E402
from mailbot.rules.lint import lint, lint_file  # noqa: E402
from mailbot.rules.loader import load_rules  # noqa: E402

PLANS = ("core", "pro", "ultimate")
LANGUAGES = ("", "sv", "en", "it")
ACCOUNTS = ("", "", "nordic-decor")


def entries(count: int) -> list[tuple[str, str, str, str, str]]:
    rng = random.Random(5)
    rows = []
    for i in range(count):
        domain = f"shop{i // 4}.example"
        match = f"@{domain}" if i % 4 == 0 else f"user{i}@{domain}"
        plan = PLANS[0] if i % 4 == 0 else rng.choice(PLANS)
        rows.append((match, plan, f"Customer {i}", rng.choice(LANGUAGES), rng.choice(ACCOUNTS)))
    return rows


def write(directory: Path, count: int, as_yaml: bool) -> Path:
    rows = entries(count)
    if as_yaml:
        name = "customers.yaml"
        lines = []
        for match, plan, who, language, account in rows:
            lines.append(f'- match: "{match}"\n  plan: {plan}\n  name: {who}\n')
            lines += [f"  language: {language}\n"] if language else []
            lines += [f"  account: {account}\n"] if account else []
        (directory / name).write_text("".join(lines), encoding="utf-8")
    else:
        name = "customers.csv"
        text = "match;plan;name;language;account\n" + "".join(";".join(row) + "\n" for row in rows)
        (directory / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    rules = (REPO / "rules.yaml").read_text(encoding="utf-8")
    rules = rules.replace("\ncustomers:\n", f"\ncustomers_from: [{name}]\ncustomers:\n", 1)
    path = directory / "rules.yaml"
    path.write_text(rules, encoding="utf-8")
    return path


def best(repeat: int, action: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(count: int, as_yaml: bool, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        rules_path = write(directory, count, as_yaml)
        kind = "YAML" if as_yaml else "CSV"
        size = (directory / ("customers.yaml" if as_yaml else "customers.csv")).stat().st_size
        rules = load_rules(rules_path)
        assert len(rules.customers) == count + 5, len(rules.customers)
        print(f"{count:,} customers from {kind} ({size / 1e6:.1f} MB):")
        print(f"  load_rules            {best(repeat, lambda: load_rules(rules_path)):7.3f} s")
        policy = lambda: load_policy(rules_path, REPO / "templates")  # noqa: E731
        print(f"  load_policy           {best(repeat, policy):7.3f} s")
        files = load_policy(rules_path, REPO / "templates").files
        reload = lambda: load_policy(rules_path, REPO / "templates", expect=files)  # noqa: E731
        print(f"  load_policy (reload)  {best(repeat, reload):7.3f} s")
        found = len(lint(rules, REPO / "templates"))
        check = best(repeat, lambda: lint_file(rules, rules_path, REPO / "templates"))
        print(f"  check warnings        {check:7.3f} s ({found:,} warnings)")
        senders = [f"user{i}@shop{i // 4}.example" for i in range(1, count, max(1, count // 200))]
        start = time.perf_counter()
        for sender in senders:
            resolve_customer(rules, sender)
        per = (time.perf_counter() - start) / len(senders) * 1e6
        print(f"  resolve_customer      {per:7.0f} µs per sender")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--yaml", action="store_true", help="also as a YAML list")
    args = parser.parse_args()
    measure(args.customers, False, args.repeat)
    if args.yaml:
        measure(args.customers, True, args.repeat)


if __name__ == "__main__":
    main()
