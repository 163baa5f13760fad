"""Severity (L1–L4) and urgency of a message, by the ordered rules of ``classification:``.

Pure: no I/O, no clock. The rules' shape and matchers are described in
:mod:`mailbot.rules.classify_schema`; everything there is compiled when the rules are
loaded, so classifying a message only tokenises its subject and body once and runs the
precompiled matchers.

Decision, precisely:

1. Rules are tried in order. A rule matches when every matcher of its ``when`` matches
   and its ``unless`` (if any) does not.
2. The first matching rule whose ``set`` has a ``severity`` decides the severity;
   the first matching rule whose ``set`` has ``urgent`` decides urgency. The two searches
   are independent: a rule that sets only ``urgent`` does not end the search for a
   severity, and the reverse.
3. What no rule decided comes from ``default_severity`` / ``default_urgent``.

Nothing implies anything else: "L1 is urgent" holds because the shipped L1 rules also set
``urgent: true``, so an operator can see and change it.

Caller contract: ``text`` is only the **new** text of the message, with quoted history and
signatures already removed (``mailbot.ingest.quotes``), so "site is down" in an old quote
of a follow-up does not make it L1 again. A follow-up's subject usually repeats the
first message's ("Re: Site down"), so classify the first message of a ticket; re-classifying
a follow-up sees that subject again. ``language`` is
the message's (customer's or detected) language, ``plan`` its plan id. ``outside_hours`` may
be a boolean or a callable, which is called at most once and only when a rule asks.

``ClassificationResult.hits`` explains the result for ``mailbot simulate`` and the ticket's
history, e.g. ``"severity L1, urgent by rule 'site-down' (subject, en: 'site is down')"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from mailbot.domain import ClassificationResult, Severity
from mailbot.rules.classify_schema import (
    ALL_LANGUAGES,
    GAP_WORDS,
    Classification,
    ClassificationRule,
    Needle,
    When,
    match_words,
)
from mailbot.rules.schema import Rules

log = logging.getLogger(__name__)

Headers = Mapping[str, str] | Sequence[tuple[str, str]]

_SHOWN_CHARS = 60


def _show(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= _SHOWN_CHARS else flat[: _SHOWN_CHARS - 1] + "…")


class _Words:
    """The normalised words of one text, with an index of where each word occurs."""

    __slots__ = ("_positions", "token_set", "tokens")

    def __init__(self, text: str) -> None:
        self.tokens = match_words(text)
        self.token_set = frozenset(self.tokens)
        self._positions: dict[str, list[int]] | None = None

    def positions(self, word: str) -> list[int]:
        if self._positions is None:
            index: dict[str, list[int]] = {}
            for i, token in enumerate(self.tokens):
                index.setdefault(token, []).append(i)
            self._positions = index
        return self._positions.get(word, [])

    def _segment_at(self, segment: tuple[str, ...], start: int) -> bool:
        return tuple(self.tokens[start : start + len(segment)]) == segment

    def _rest_from(self, segments: tuple[tuple[str, ...], ...], start: int) -> bool:
        """Whether ``segments`` follow from ``start`` on, each within GAP_WORDS of the last."""
        if not segments:
            return True
        first, rest = segments[0], segments[1:]
        for begin in range(start, min(start + GAP_WORDS + 1, len(self.tokens))):
            if self._segment_at(first, begin) and self._rest_from(rest, begin + len(first)):
                return True
        return False

    def contains(self, needle: Needle) -> bool:
        first, rest = needle.segments[0], needle.segments[1:]
        if not first or not needle.required <= self.token_set:
            return False
        if len(first) == 1 and not rest:
            return True
        for start in self.positions(first[0]):
            if self._segment_at(first, start) and self._rest_from(rest, start + len(first)):
                return True
        return False


@dataclass(slots=True)
class _Message:
    """One message as the matchers see it; word lists and the hours flag are computed lazily."""

    subject: str
    text: str
    sender: str
    language: str
    plan: str
    headers: tuple[tuple[str, str], ...]
    has_attachment: bool
    outside_hours_source: bool | Callable[[], bool]
    all_languages: bool
    _subject_words: _Words | None = field(default=None)
    _body_words: _Words | None = field(default=None)
    _outside: bool | None = field(default=None)

    @property
    def subject_words(self) -> _Words:
        if self._subject_words is None:
            self._subject_words = _Words(self.subject)
        return self._subject_words

    @property
    def body_words(self) -> _Words:
        if self._body_words is None:
            self._body_words = _Words(self.text)
        return self._body_words

    @property
    def outside_hours(self) -> bool:
        if self._outside is None:
            source = self.outside_hours_source
            self._outside = bool(source() if callable(source) else source)
        return self._outside

    def wants(self, needle: Needle) -> bool:
        return (
            self.all_languages
            or needle.language == ALL_LANGUAGES
            or needle.language == self.language
        )


@lru_cache(maxsize=4096)
def _by_anchor(needles: tuple[Needle, ...]) -> dict[str, tuple[int, ...]]:
    """For one keyword list: a word each needle requires (its anchor: the longest, likely
    the rarest) -> those needles' positions in the list. A needle whose anchor a text lacks
    cannot match it, so most needles are never looked at."""
    index: dict[str, list[int]] = {}
    for position, needle in enumerate(needles):
        if needle.required:  # none: it matches nothing (see _Words.contains)
            anchor = max(sorted(needle.required), key=len)
            index.setdefault(anchor, []).append(position)
    return {word: tuple(positions) for word, positions in index.items()}


def _keywords(
    msg: _Message, needles: tuple[Needle, ...], where: tuple[tuple[str, _Words], ...]
) -> str | None:
    """The first needle (in the list's order) found in one of ``where``'s texts."""
    index = _by_anchor(needles)
    candidates: set[int] = set()
    for _, found in where:
        for word in index.keys() & found.token_set:
            candidates.update(index[word])
    for position in sorted(candidates):
        needle = needles[position]
        if not msg.wants(needle):
            continue
        for place, found in where:
            if found.contains(needle):
                return f"{place}, {needle.language}: {needle.text!r}"
    return None


def _sender_matches(patterns: tuple[str, ...], sender: str) -> str | None:
    address = sender.strip().lower()
    domain = address.rpartition("@")[2]
    for pattern in patterns:
        if pattern.startswith("*."):
            if domain.endswith(pattern[1:]):
                return pattern
        elif pattern.startswith("@"):
            if domain == pattern[1:]:
                return pattern
        elif address == pattern:
            return pattern
    return None


def _match(when: When, msg: _Message) -> list[str] | None:
    """What matched, one note per matcher, or None when some matcher does not match.

    Cheap matchers run first, keywords and patterns last.
    """
    notes: list[str] = []
    if when.plan is not None:
        if msg.plan not in when.plan:
            return None
        notes.append(f"plan {msg.plan}")
    if when.language is not None:
        if msg.language not in when.language:
            return None
        notes.append(f"language {msg.language}")
    if when.sender is not None:
        matched = _sender_matches(when.sender, msg.sender)
        if matched is None:
            return None
        notes.append(f"sender {matched}")
    if when.has_attachment is not None:
        if msg.has_attachment != when.has_attachment:
            return None
        notes.append("attachment" if msg.has_attachment else "no attachment")
    if when.outside_hours is not None:
        if msg.outside_hours != when.outside_hours:
            return None
        notes.append("outside office hours" if msg.outside_hours else "in office hours")
    for name, pattern in when.header_patterns:
        value = next((v for k, v in msg.headers if k == name and pattern.search(v)), None)
        if value is None:
            return None
        notes.append(f"header {name}: {_show(value)}")
    for needles, where in (
        (when.subject_needles, (("subject", msg.subject_words),)),
        (when.body_needles, (("body", msg.body_words),)),
        (when.any_needles, (("subject", msg.subject_words), ("body", msg.body_words))),
    ):
        if needles:
            note = _keywords(msg, needles, where)
            if note is None:
                return None
            notes.append(note)
    for patterns, place, text in (
        (when.subject_patterns, "subject_regex", msg.subject),
        (when.body_patterns, "body_regex", msg.text),
    ):
        if patterns:
            found = next((m for p in patterns if (m := p.search(text))), None)
            if found is None:
                return None
            notes.append(f"{place}: {_show(found.group(0))}")
    return notes


def _rule_matches(rule: ClassificationRule, msg: _Message) -> list[str] | None:
    notes = _match(rule.when, msg)
    if notes is None:
        return None
    if rule.unless is not None and _match(rule.unless, msg) is not None:
        return None
    return notes


def _header_pairs(headers: Headers) -> tuple[tuple[str, str], ...]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((name.strip().lower(), value) for name, value in items)


def classify_with(
    classification: Classification,
    *,
    subject: str,
    text: str,
    sender: str,
    language: str,
    plan: str,
    headers: Headers = (),
    has_attachment: bool = False,
    outside_hours: bool | Callable[[], bool] = False,
) -> ClassificationResult:
    """:func:`classify` with a ``classification:`` section instead of the whole rules."""
    msg = _Message(
        subject=subject,
        text=text,
        sender=sender,
        language=language,
        plan=plan,
        headers=_header_pairs(headers),
        has_attachment=has_attachment,
        outside_hours_source=outside_hours,
        all_languages=classification.keyword_languages == "all",
    )
    severity: Severity | None = None
    urgent: bool | None = None
    category: str | None = None
    decided: dict[str, list[str]] = {}  # rule name -> what it decided, in order
    notes_of: dict[str, list[str]] = {}
    for rule in classification.rules:
        new_severity = rule.set.severity if severity is None else None
        new_urgent = rule.set.urgent if urgent is None else None
        new_category = rule.set.category if category is None else None
        if new_severity is None and new_urgent is None and new_category is None:
            continue  # this rule could decide nothing that is still open
        notes = _rule_matches(rule, msg)
        if notes is None:
            continue
        outcome = decided.setdefault(rule.name, [])
        notes_of[rule.name] = notes
        if new_severity is not None:
            severity = Severity(new_severity)
            outcome.append(f"severity {severity}")
        if new_urgent is not None:
            urgent = new_urgent
            outcome.append("urgent" if urgent else "not urgent")
        if new_category is not None:
            category = new_category
            outcome.append(f"category {category}")
        if severity is not None and urgent is not None and category is not None:
            break
    hits = [
        f"{', '.join(outcome)} by rule {name!r}"
        + (f" ({'; '.join(notes_of[name])})" if notes_of[name] else "")
        for name, outcome in decided.items()
    ]
    if severity is None:
        severity = Severity(classification.default_severity)
        hits.append(f"severity {severity} by default (no rule matched)")
    if urgent is None:
        urgent = classification.default_urgent
        hits.append(f"{'urgent' if urgent else 'not urgent'} by default (no rule matched)")
    log.debug("classified: %s, urgent=%s: %s", severity, urgent, hits)
    return ClassificationResult(
        severity=severity, urgent=urgent, hits=tuple(hits), category=category
    )


def classify(
    rules: Rules,
    *,
    subject: str,
    text: str,
    sender: str,
    language: str,
    plan: str,
    headers: Headers = (),
    has_attachment: bool = False,
    outside_hours: bool | Callable[[], bool] = False,
) -> ClassificationResult:
    """Severity and urgency of one message by ``rules.classification`` (see the module doc).

    ``text`` must be the new text only (quotes stripped by the caller). ``headers`` is a
    mapping or ``(name, value)`` pairs such as ``ParsedMessage.headers``; names are compared
    case-insensitively. ``outside_hours`` is a boolean or a callable evaluated at most once,
    only if a rule has an ``outside_hours`` matcher.
    """
    return classify_with(
        rules.classification,
        subject=subject,
        text=text,
        sender=sender,
        language=language,
        plan=plan,
        headers=headers,
        has_attachment=has_attachment,
        outside_hours=outside_hours,
    )
