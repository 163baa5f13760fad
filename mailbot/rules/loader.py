"""Read ``rules.yaml`` and report every problem as ``file:line:col: field.path: message``.

The YAML is composed into nodes first (a ``yaml.SafeLoader`` subclass), then turned into
plain Python data by a small walker that remembers where each mapping key and each value
(including every sequence item) starts. Pydantic's error locations are field paths, so each
validation error can be mapped back to the line and column the operator has to look at::

    rules.yaml:14:11: customers[2].plan: unknown plan 'prp' — did you mean 'pro'?

Duplicate keys, which PyYAML silently accepts (the last one wins), are reported. All
problems of a file are collected and raised together as one :class:`RulesError`.

Customer entries may come from files of their own (``customers_from:``, see
``mailbot.rules.customer_files``). They are appended to ``customers`` before validation, so
the schema and the cross-field checks see one list; :class:`_Report` remembers which file
and line each appended entry came from and names that place instead of rules.yaml::

    customers.csv:1042: plan: unknown plan 'prp' — did you mean 'pro'?
    more/customers.yaml:12:11: [3].plan: unknown plan 'prp' — did you mean 'pro'?

(a CSV problem gives the line and the column's name, a YAML one the line, the column and
the path inside that file), and a message that refers to an entry (``customers[1041]``)
names where that one is written too (``customers.csv:57``).

The loader also narrows YAML 1.1's implicit typing, which surprises operators: only
``true``/``false`` are booleans (``no``, the Norwegian language code, stays a string;
``on``/``off``/``yes`` too) and base-60 numbers do not exist (``17:00`` stays a string).
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mailbot.errors import RulesError
from mailbot.rules import customer_files
from mailbot.rules.schema import REFERENCE_ERROR, Loc, Rules, did_you_mean, reference_problems

log = logging.getLogger(__name__)

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"


class _RulesLoader(yaml.SafeLoader):
    """SafeLoader with YAML-1.2-like scalars: no yes/no/on/off booleans, no base-60."""


# A copy without YAML 1.1's bool/int/float rules; ours are added below.
_RulesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_RulesLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_RulesLoader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"),
)
_RulesLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)

if yaml.__with_libyaml__:

    class _FastRulesLoader(yaml.CSafeLoader):
        """The same scalars as :class:`_RulesLoader`, parsed by libyaml: some three times
        faster, for customer files of thousands of entries."""

    _FastRulesLoader.yaml_implicit_resolvers = _RulesLoader.yaml_implicit_resolvers
    _FAST: type[yaml.CSafeLoader] | None = _FastRulesLoader
else:  # pragma: no cover - PyYAML without libyaml
    _FAST = None


Position = tuple[int, int]  # 1-based line and column


def _position(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns composed YAML nodes into Python data and records where each path starts."""

    def __init__(self, loader: yaml.constructor.SafeConstructor) -> None:
        self._loader = loader
        self.keys: dict[Loc, Position] = {}
        self.values: dict[Loc, Position] = {}
        self.problems: list[tuple[Position, str]] = []
        self._stack: set[int] = set()

    def build(self, node: yaml.Node, path: Loc) -> Any:
        self.values[path] = _position(node)
        if id(node) in self._stack:
            self.problems.append((_position(node), f"{_path_text(path)}: recursive alias"))
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._stack.discard(id(node))

    def _scalar(self, node: yaml.Node, path: Loc) -> object:
        try:
            return self._loader.construct_object(node, deep=True)
        except ValueError as exc:  # e.g. an impossible date: 2026-02-30
            self.problems.append((_position(node), f"{_path_text(path)}: {exc}"))
            return node.value

    def _key(self, node: yaml.Node, path: Loc) -> str | int | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append((_position(node), f"{_path_text(path)}: keys must be plain words"))
            return None
        key: object = self._loader.construct_object(node, deep=True)
        if isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
            return key
        return str(node.value)

    def _mapping(self, node: yaml.MappingNode, path: Loc) -> dict[str | int, Any]:
        first: dict[str | int, Position] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            where = _position(key_node)
            if key in first:
                self.problems.append(
                    (
                        where,
                        f"{_path_text((*path, key))}: duplicate key {key!r}"
                        f" (first at line {first[key][0]})",
                    )
                )
            else:
                first[key] = where
        # Merge keys (<<: *anchor) go first, so the mapping's own keys override them.
        self._loader.flatten_mapping(node)
        result: dict[str | int, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            self.keys[(*path, key)] = _position(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


def _path_text(loc: Loc) -> str:
    if not loc:
        return "(top level)"
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            args = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping found at ``loc``, if known."""
    tp: Any = Rules
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (tuple, list):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# Pydantic's wording talks about Python types; operators write YAML.
_PLAIN_MESSAGES = {
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
}


def _describe(error: ErrorDetails) -> tuple[Loc, str, bool]:
    """(field path, message, whether the position is a key's) for one pydantic error."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        options = list(model.model_fields) if model else []
        return loc, f"unknown key {loc[-1]!r}{did_you_mean(loc[-1], options)}", True
    if kind == "missing":
        return loc, "required key is missing", False
    if loc and loc[-1] == "[key]":
        return loc[:-1], message, True
    if kind == "string_pattern_mismatch" and loc and loc[-2:-1] == ("templates",):
        message = "a template name is lower-case letters, digits, '-' or '_'"
    if kind in _PLAIN_MESSAGES:
        return loc, _PLAIN_MESSAGES[kind], False
    if kind == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        return loc, f"needs at least {least} item{'s' if least != 1 else ''}", False
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        message += did_you_mean(error.get("input"), expected)
    return loc, message, False


#: Problems shown per customer file at most; the others are counted (a plan renamed in
#: rules.yaml would otherwise print a line for each of thousands of rows).
MAX_FILE_PROBLEMS = 100

_MISSING = "required key is missing"
# A message's reference to a customer entry by its field path: "... matched by customers[3]".
_ENTRY_REFERENCE = re.compile(r"(?<![\w.'\"])customers\[(\d+)\]")

Place = tuple[int, int, int]  # file (0: rules.yaml, k: the k-th customer file), line, column


@dataclass(slots=True)
class _Included:
    """A ``customers_from`` file: how problems name it and where its entries are written."""

    source: str
    #: The index in ``customers`` of its first entry; None when its entries were not added
    #: (the inline ``customers`` is not a list).
    start: int | None
    csv: bool
    #: YAML: the positions of its nodes, by the field path inside the file.
    builder: _Builder | None = None
    #: CSV: the line each entry starts on.
    lines: list[int] = field(default_factory=list)

    def line_of(self, entry: int) -> int:
        if self.builder is not None:
            return _Report.position(self.builder, (entry,), False)[0]
        return self.lines[entry] if entry < len(self.lines) else 1


class _Report:
    """The problems (or warnings) of a rules file and of the customer files it includes,
    each placed at the file, line and column where its field path is written."""

    def __init__(self, source: str, builder: _Builder | None) -> None:
        self.source = source
        self.builder = builder
        self.included: list[_Included] = []
        # Customer files whose entries were added: their first index, their number.
        self._starts: list[int] = []
        self._orders: list[int] = []
        self.items: list[tuple[Place, str]] = []
        for (line, col), text in builder.problems if builder else ():
            self._put((0, line, col), text)

    def include(self, source: str, start: int | None, *, csv: bool) -> int:
        """Register a customer file whose entries are ``customers[start:]`` (those of the
        files registered later excepted); returns its number for :meth:`put`."""
        self.included.append(_Included(source, start, csv))
        if start is not None:
            self._starts.append(start)
            self._orders.append(len(self.included))
        return len(self.included)

    @staticmethod
    def position(builder: _Builder | None, loc: Loc, key: bool) -> Position:
        if builder is None:
            return 1, 1
        if key and loc in builder.keys:
            return builder.keys[loc]
        for n in range(len(loc), -1, -1):
            if loc[:n] in builder.values:
                return builder.values[loc[:n]]
        return 1, 1

    def _origin(self, index: int) -> tuple[int, _Included, int] | None:
        """The customer file ``customers[index]`` comes from: its number, itself and the
        entry's index in it; None for an inline entry."""
        k = bisect.bisect_right(self._starts, index) - 1
        if k < 0:
            return None
        order = self._orders[k]
        return order, self.included[order - 1], index - self._starts[k]

    def _source(self, order: int) -> str:
        return self.source if order == 0 else self.included[order - 1].source

    def _put(self, place: Place, text: str) -> None:
        order, line, col = place
        where = f"{self._source(order)}:{line}" + (f":{col}" if col else "")
        self.items.append((place, f"{where}: {text}"))

    def put(self, order: int, line: int, col: int, text: str) -> None:
        """A problem of the ``order``-th customer file at ``line`` and ``col`` (0: none)."""
        self._put((order, line, col), self._refer(text, order))

    def add_line(self, order: int, text: str) -> None:
        """A problem already written as ``file:line:col: text`` (a YAML syntax error)."""
        self.items.append(((order, 0, 0), text))

    def add(self, loc: Loc, message: str, key: bool = False) -> None:
        """A problem of the field at ``loc`` (a path into the rules with the customer files'
        entries added), placed in the file that entry is written in."""
        origin = None
        if len(loc) >= 2 and loc[0] == "customers" and isinstance(loc[1], int):
            origin = self._origin(loc[1])
        if origin is None:
            line, col = self.position(self.builder, loc, key)
            self._put((0, line, col), self._refer(f"{_path_text(loc)}: {message}", 0))
            return
        order, included, entry = origin
        if not included.csv:
            inner: Loc = (entry, *loc[2:])
            line, col = self.position(included.builder, inner, key)
            self.put(order, line, col, f"{_path_text(inner)}: {message}")
            return
        if message == _MISSING:
            message = "required, but the cell is empty"
        path = _path_text(loc[2:]) if len(loc) > 2 else ""
        self.put(order, included.line_of(entry), 0, f"{path}: {message}" if path else message)

    def _refer(self, text: str, order: int) -> str:
        """Name where a referred entry (``customers[N]``) is written when customer files
        are involved: ``customers.csv:57`` for one from a file, ``customers[3]
        (rules.yaml:150)`` for an inline one in a problem of a customer file."""
        if not self._starts:
            return text

        def name(match: re.Match[str]) -> str:
            origin = self._origin(int(match[1]))
            if origin is not None:
                _, included, entry = origin
                return f"{included.source}:{included.line_of(entry)}"
            if order == 0:
                return match[0]
            line = self.position(self.builder, ("customers", int(match[1])), False)[0]
            return f"{match[0]} ({self.source}:{line})"

        return _ENTRY_REFERENCE.sub(name, text)

    def lines(self, noun: str = "problem") -> Iterator[str]:
        """Every problem once, by file (rules.yaml first), line and column; at most
        :data:`MAX_FILE_PROBLEMS` of a customer file, then how many more (``noun``s)."""
        seen: set[str] = set()
        shown = hidden = 0
        current = 0
        for (order, _, _), text in sorted(self.items, key=lambda item: item[0]):
            if text in seen:
                continue
            seen.add(text)
            if order != current:
                if hidden:
                    yield self._hidden(current, hidden, noun)
                current, shown, hidden = order, 0, 0
            if order and shown >= MAX_FILE_PROBLEMS:
                hidden += 1
                continue
            shown += 1
            yield text
        if hidden:
            yield self._hidden(current, hidden, noun)

    def _hidden(self, order: int, count: int, noun: str) -> str:
        return (
            f"{self._source(order)}: {count:,} more {noun}{'s' if count != 1 else ''} not"
            f" shown (at most {MAX_FILE_PROBLEMS} per customer file)"
        )


def _compose(text: str, source: str, *, fast: bool = False) -> tuple[Any, _Builder]:
    loader = _FAST(text) if fast and _FAST is not None else _RulesLoader(text)
    try:
        node = loader.get_single_node()
        builder = _Builder(loader)
        data = builder.build(node, ()) if node is not None else None
        return data, builder
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        raise RulesError([f"{where}: YAML syntax error: {detail}"]) from None
    except yaml.YAMLError as exc:
        raise RulesError([f"{source}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()


class RulesErrorWithFiles(RulesError):
    """A :class:`RulesError` that also lists the customer files the rules name (resolved,
    readable or not), so that a reload watches them: fixing or creating one is noticed
    although no ruleset with it has loaded yet."""

    def __init__(self, problems: list[str], files: tuple[Path, ...]) -> None:
        super().__init__(problems)
        self.files = files


def _include_customers(
    data: dict[str | int, Any], report: _Report, rules_dir: Path
) -> tuple[Path, ...]:
    """Read the ``customers_from`` files and append their entries to ``data["customers"]``,
    telling ``report`` where each is written; a file's own problems (unreadable, not UTF-8,
    CSV syntax, its header) go to ``report`` too.

    Returns every file named (resolved, once), whether it could be read or not.
    """
    names = data.get("customers_from")
    if not isinstance(names, list):
        return ()  # absent, or a shape the schema reports
    inline = data.get("customers", [])
    merge = isinstance(inline, list)
    entries: list[Any] = list(inline) if merge else []
    shown_dir = Path(report.source).parent
    first: dict[Path, int] = {}
    for k, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            continue  # the schema reports it
        loc: Loc = ("customers_from", k)
        path = customer_files.resolve(rules_dir, name)
        if path in first:
            report.add(loc, f"{name!r} is already included by customers_from[{first[path]}]")
            continue
        first[path] = k
        kind = customer_files.file_format(name)
        if kind is None:
            report.add(loc, f"{name!r} is neither a CSV file (.csv) nor a YAML file (.yaml, .yml)")
            continue
        source = str(shown_dir / name.strip())
        try:
            raw = path.read_bytes()
        except OSError as exc:
            report.add(loc, f"cannot read {source}: {exc.strerror or exc}")
            continue
        order = report.include(source, len(entries) if merge else None, csv=kind == "csv")
        text, problem = customer_files.decode(raw)
        if text is None:
            assert problem is not None
            report.put(order, problem[0], 0, problem[1])
        elif kind == "csv":
            rows, problems = customer_files.read_csv(text)
            for line, message in problems:
                report.put(order, line, 0, message)
            report.included[order - 1].lines = [row.line for row in rows]
            entries += [row.values for row in rows]
        else:
            entries += _yaml_entries(text, report, order)
    if merge and first:
        data["customers"] = entries
    return tuple(first)


def _yaml_entries(text: str, report: _Report, order: int) -> list[Any]:
    """The entries of a YAML customer file (a list, as under ``customers:``)."""
    included = report.included[order - 1]
    try:
        data, builder = _compose(text, included.source, fast=True)
    except RulesError as exc:
        for problem in exc.problems:
            report.add_line(order, problem)
        return []
    for (line, col), message in builder.problems:
        report.put(order, line, col, message)
    if data is None:
        report.put(
            order,
            1,
            1,
            "the file is empty: write a YAML list of customer entries (- match: ...,"
            " plan: ...), or [] for none",
        )
        return []
    if not isinstance(data, list):
        line, col = builder.values.get((), (1, 1))
        report.put(
            order,
            line,
            col,
            "(top level): expected a list of customer entries (- match: ..., plan: ...),"
            " as under customers:",
        )
        return []
    included.builder = builder
    return data


def parse_rules(text: str, source: str, base: Path | None = None) -> Rules:
    """Validate the text of a rules file; ``source`` names it in every problem reported.

    ``customers_from`` files are read relative to ``base`` (by default the directory of
    ``source``). Raises :class:`RulesError` (a :class:`RulesErrorWithFiles`) listing every
    problem, sorted by file (the rules first, then the customer files) and line.
    """
    data, builder = _compose(text, source)
    report = _Report(source, builder)
    if data is None:
        raise RulesError([f"{source}:1:1: the rules file is empty"])
    if not isinstance(data, dict):
        report.add((), "the rules file must be a mapping of keys (version, identity, plans, ...)")
        raise RulesError(list(report.lines()))
    files = _include_customers(data, report, Path(source).parent if base is None else base)
    try:
        rules = Rules.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        failed = [tuple(error["loc"]) for error in errors]
        for error in errors:
            here = tuple(error["loc"])
            if error["type"] == "too_short" and any(
                len(other) > len(here) and other[: len(here)] == here for other in failed
            ):
                continue  # "too short after validation": its items' own errors say why
            loc, message, key = _describe(error)
            report.add(loc, message, key)
        if not any(error["type"] == REFERENCE_ERROR for error in errors):
            # Shape errors stopped validation before the cross-field checks: run them too.
            for loc, message in reference_problems(data):
                report.add(loc, message)
        raise RulesErrorWithFiles(list(report.lines()), files) from None
    if report.items:
        raise RulesErrorWithFiles(list(report.lines()), files)
    return rules


def locate(text: str, source: str, base: Path | None = None) -> _Report:
    """A report that places field paths of the rules in ``text`` (and of the customer files
    they include) as :func:`parse_rules` does, for warnings about rules that loaded."""
    data, builder = _compose(text, source)
    report = _Report(source, builder)
    if isinstance(data, dict):
        _include_customers(data, report, Path(source).parent if base is None else base)
    report.items.clear()
    return report


def load_rules(path: Path) -> Rules:
    """Read and validate a rules file; raises :class:`RulesError` naming file, line, field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([f"{path}: cannot read the rules file: {exc}"]) from None
    rules = parse_rules(text, str(path), path.parent)
    log.info(
        "loaded rules from %s: %d plans, %d customers (%d customer files), %d wiki articles",
        path,
        len(rules.plans),
        len(rules.customers),
        len(rules.customers_from),
        len(rules.wiki),
    )
    return rules
