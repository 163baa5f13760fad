"""Customer entries kept in files of their own: ``customers_from:`` in rules.yaml.

::

    customers_from:
      - customers.csv          # relative to rules.yaml (or an absolute path)
      - more/customers.yaml    # a YAML list of entries, written as under customers:

The entries of the files come after the inline ``customers:``, file by file in the order
listed, row by row. They are validated and cross-checked together with the inline ones
(plans, languages and accounts exist; no ``match`` twice), and every problem names the file
and line where it is written (``mailbot.rules.loader``)::

    customers.csv:1042: plan: unknown plan 'prp' — did you mean 'pro'?

The files are part of the ruleset: the ruleset version hashes them and a reload watches
them (:func:`customer_files`, ``mailbot.policy``).

A CSV file is read by these rules (:func:`read_csv`):

* UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one);
* the first row names the columns: fields of a customer entry (``match``, ``plan``,
  ``name``, ``language``, ``account``) in any order, case ignored; ``match`` and ``plan``
  are required; a column without a name must stay empty;
* the separator is the one of ``,``, ``;`` and tab that the header row has most of (a
  header holds only column names), so spreadsheets that write ``;`` (Swedish, Italian
  settings) and those that write ``,`` both load;
* quotes as in RFC 4180 (``"Shop ""Nord"" AB"``; a quoted cell may span lines);
* cells are trimmed; an empty cell leaves the field out (an optional one has its default,
  a required one is an error); blank rows are skipped.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from mailbot.rules.schema import Customer, Rules, did_you_mean

#: File name endings of the two formats.
CSV_SUFFIXES = (".csv",)
YAML_SUFFIXES = (".yaml", ".yml")

#: The columns a CSV file may have: the fields of a customer entry, in the model's order.
COLUMNS: tuple[str, ...] = tuple(Customer.model_fields)
REQUIRED: tuple[str, ...] = tuple(n for n, f in Customer.model_fields.items() if f.is_required())
_SEPARATORS = (",", ";", "\t")

Problem = tuple[int, str]  # 1-based line, message (with its field, when it has one)


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One entry of a CSV file: the line it starts on and its non-empty cells by column."""

    line: int
    values: dict[str, str]


def resolve(rules_dir: Path, name: str) -> Path:
    """Where a ``customers_from`` entry is: ``name`` relative to rules.yaml's directory."""
    return (rules_dir / name.strip()).resolve()


def customer_files(rules_path: Path, rules: Rules) -> tuple[Path, ...]:
    """The files ``customers_from`` includes, resolved: part of the ruleset (its version,
    what a reload watches) like rules.yaml itself."""
    return tuple(dict.fromkeys(resolve(rules_path.parent, n) for n in rules.customers_from))


def file_format(name: str) -> str | None:
    """``"csv"`` or ``"yaml"`` by the file name's ending (any case), else None."""
    suffix = Path(name.strip()).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in YAML_SUFFIXES:
        return "yaml"
    return None


def decode(data: bytes) -> tuple[str | None, Problem | None]:
    """The text of a UTF-8 file (a byte-order mark dropped), or the line of the first byte
    that is not UTF-8 and what to do about it."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        return None, (
            line,
            f"the file is not UTF-8: byte 0x{byte:02x} at byte {column} of this line; save"
            ' it as UTF-8 (in Excel: "CSV UTF-8")',
        )


def separator(header: str) -> str:
    """The separator of a CSV file: the one of ``,`` ``;`` tab its header line has most of
    (a comma when it has none: a file of one column)."""
    counts = [(header.count(sep), -i, sep) for i, sep in enumerate(_SEPARATORS)]
    best = max(counts)
    return best[2] if best[0] else ","


def _shown(sep: str) -> str:
    return "tab" if sep == "\t" else repr(sep)


def _header(cells: list[str]) -> tuple[list[str], list[Problem]]:
    """Column names (lower-cased, ``""`` for a nameless column) and the header's problems."""
    names = [cell.strip().lower() for cell in cells]
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for k, name in enumerate(names, start=1):
        if not name:
            continue
        if name not in COLUMNS:
            problems.append(
                (
                    1,
                    f"header: unknown column {cells[k - 1].strip()!r}"
                    f"{did_you_mean(name, COLUMNS)} (columns: {', '.join(COLUMNS)})",
                )
            )
        elif name in first:
            problems.append(
                (1, f"header: column {name!r} is named twice (columns {first[name]} and {k})")
            )
        else:
            first[name] = k
    missing = [name for name in REQUIRED if name not in first]
    if missing:
        some = " and ".join(repr(name) for name in missing)
        problems.append(
            (
                1,
                f"header: no {some} column{'s' if len(missing) > 1 else ''}; the first row"
                f" names the columns, {' and '.join(REQUIRED)} are required"
                f" (columns: {', '.join(COLUMNS)})",
            )
        )
    return names, problems


def read_csv(text: str) -> tuple[list[CsvRow], list[Problem]]:
    """The entries of a CSV file's text (see the module docstring) and its problems.

    A problem in the header row or the CSV syntax (an unclosed quote) stops the reading
    there: the rows would be read wrong. A row's own problems (a value in a nameless column,
    more cells than columns) leave that row out and the others in.
    """
    if not text.strip():
        return [], [
            (
                1,
                "the file is empty: its first row names the columns"
                f" ({', '.join(COLUMNS)}; {' and '.join(REQUIRED)} are required)",
            )
        ]
    sep = separator(text.partition("\n")[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[CsvRow] = []
    problems: list[Problem] = []
    names: list[str] = []
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if line == 1:
                names, problems = _header(cells)
                if problems:
                    return [], problems
                continue
            row = _row(line, cells, names, sep, problems)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        problems.append((start, f"CSV syntax error: {exc} (the separator is {_shown(sep)})"))
        return rows, problems
    return rows, problems


def _row(
    line: int, cells: list[str], names: list[str], sep: str, problems: list[Problem]
) -> CsvRow | None:
    values: dict[str, str] = {}
    bad = False
    for k, cell in enumerate(cells):
        value = cell.strip()
        if not value:
            continue
        if k >= len(names):
            problems.append(
                (
                    line,
                    f"{len(cells)} cells, but the header names {len(names)} columns"
                    f" (the separator is {_shown(sep)}; quote a value that holds it)",
                )
            )
            return None
        if not names[k]:
            problems.append((line, f"column {k + 1} has no name in the header but a value here"))
            bad = True
            continue
        values[names[k]] = value
    if bad:
        return None
    return CsvRow(line, values) if values else None
