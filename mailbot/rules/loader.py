"""Read ``rules.yaml`` and report every problem as ``file:line:col: field.path: message``.

The YAML is composed into nodes first (a ``yaml.SafeLoader`` subclass), then turned into
plain Python data by a small walker that remembers where each mapping key and each value
(including every sequence item) starts. Pydantic's error locations are field paths, so each
validation error can be mapped back to the line and column the operator has to look at::

    rules.yaml:14:11: customers[2].plan: unknown plan 'prp' — did you mean 'pro'?

Duplicate keys, which PyYAML silently accepts (the last one wins), are reported. All
problems of a file are collected and raised together as one :class:`RulesError`.

The loader also narrows YAML 1.1's implicit typing, which surprises operators: only
``true``/``false`` are booleans (``no``, the Norwegian language code, stays a string;
``on``/``off``/``yes`` too) and base-60 numbers do not exist (``17:00`` stays a string).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mailbot.errors import RulesError
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


Position = tuple[int, int]  # 1-based line and column


def _position(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns composed YAML nodes into Python data and records where each path starts."""

    def __init__(self, loader: _RulesLoader) -> None:
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


class _Report:
    def __init__(self, source: str, builder: _Builder | None) -> None:
        self.source = source
        self.builder = builder
        self.items: list[tuple[Position, str]] = list(builder.problems) if builder else []

    def where(self, loc: Loc, key: bool) -> Position:
        if self.builder is None:
            return 1, 1
        if key and loc in self.builder.keys:
            return self.builder.keys[loc]
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.builder.values:
                return self.builder.values[loc[:n]]
        return 1, 1

    def add(self, loc: Loc, message: str, key: bool = False) -> None:
        self.items.append((self.where(loc, key), f"{_path_text(loc)}: {message}"))

    def lines(self) -> Iterator[str]:
        seen: set[str] = set()
        for (line, col), text in sorted(self.items, key=lambda item: item[0]):
            full = f"{self.source}:{line}:{col}: {text}"
            if full not in seen:
                seen.add(full)
                yield full


def _compose(text: str, source: str) -> tuple[Any, _Builder]:
    loader = _RulesLoader(text)
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


def parse_rules(text: str, source: str) -> Rules:
    """Validate the text of a rules file; ``source`` names it in every problem reported.

    Raises :class:`RulesError` listing every problem, sorted by line.
    """
    data, builder = _compose(text, source)
    report = _Report(source, builder)
    if data is None:
        raise RulesError([f"{source}:1:1: the rules file is empty"])
    if not isinstance(data, dict):
        report.add((), "the rules file must be a mapping of keys (version, identity, plans, ...)")
        raise RulesError(list(report.lines()))
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
        raise RulesError(list(report.lines())) from None
    if report.items:
        raise RulesError(list(report.lines()))
    return rules


def load_rules(path: Path) -> Rules:
    """Read and validate a rules file; raises :class:`RulesError` naming file, line, field."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([f"{path}: cannot read the rules file: {exc}"]) from None
    rules = parse_rules(text, str(path))
    log.info(
        "loaded rules from %s: %d plans, %d customers, %d wiki articles",
        path,
        len(rules.plans),
        len(rules.customers),
        len(rules.wiki),
    )
    return rules
