"""The ``classification:`` section of ``rules.yaml``: ordered rules for severity and urgency.

Shape::

    classification:
      default_severity: L4        # when no rule sets a severity
      default_urgent: false       # when no rule sets urgent
      keyword_languages: all      # all | message (see below)
      rules:
        - name: site-down
          when:                   # every matcher given must match (AND)
            subject: {en: [site is down], sv: [ligger nere]}
          unless:                 # optional: the rule is skipped when this matches
            any_text: {en: [not down]}
          set: {severity: L1, urgent: true}

Semantics (implemented in :mod:`mailbot.rules.classify`):

* Rules are tried in file order. The first matching rule whose ``set`` has a ``severity``
  decides the severity; independently, the first matching rule whose ``set`` has
  ``urgent`` decides urgency. A rule that sets only one of them does not stop the search
  for the other. Nothing matched: ``default_severity`` / ``default_urgent``.
* A rule matches when every matcher in ``when`` matches and ``unless`` (if given) does
  not match. An empty or missing ``when`` matches every message.
* Inside one matcher, a list is a choice (OR): ``sender: [a@x.se, "@y.se"]``.

Matchers:

``subject`` / ``body`` / ``any_text``
    Keywords per language, ``{en: [...], sv: [...], it: [...], all: [...]}``, looked for in
    the subject, in the new body text, or in either. Matching ignores case and accents and
    works on whole words with light suffix stripping (``order``/``orders``,
    ``betalning``/``betalningar``, ``ordine``/``ordini``; see :mod:`mailbot.rules.wiki`).
    A keyword of several words is a phrase: its words must follow each other. ``...`` in a
    phrase allows up to four other words in between (``sito ... non funziona`` matches
    "il sito web non funziona"). With ``keyword_languages: all`` (the default) every list
    is tried whatever the message's language, because short messages ("Sajten nere!")
    are often not recognised; with ``message`` only the list of the message's language and
    the ``all`` list are. Restrict a single ambiguous word with ``language:`` in the same
    rule (Swedish ``nere`` is Italian for "black").
``subject_regex`` / ``body_regex``
    Python regular expressions, one or a list, searched (not anchored) in the subject or
    the new body text as written, case-insensitively (``(?-i:URGENT)`` for exact case).
    Compiled when the rules are loaded; a bad one is a load error.
``header``
    ``{Header-Name: regex}``: every header named must be present with a value the regex
    finds (case-insensitive; any value of a repeated header may match). Only headers the
    caller passes in can match: intake keeps a fixed list (see ``mailbot.ingest.parse``).
``sender``
    Addresses (``anna@shop.se``), domains (``@shop.se``) or subdomains (``*.shop.se``).
``plan`` / ``language``
    Plan ids of ``plans`` / language codes of ``languages``.
``has_attachment`` / ``outside_hours``
    ``true`` or ``false``: the message has (no) attachment; it arrived outside (inside)
    office hours, as the caller computes it.

``set`` gives ``severity`` (L1..L4), ``urgent`` (true/false) or both.

Cross-field checks (plans and languages exist, rule names are unique) are in
:func:`classification_problems`, called by ``schema.reference_problems`` on raw data so the
loader reports them with file, line and column.

This module imports nothing from ``mailbot.rules.schema`` or ``wiki`` at import time
(``schema`` imports it); what it needs from them is imported when first used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from mailbot.rules.language import SUPPORTED

Loc = tuple[str | int, ...]

#: The key of a keyword list that applies to every language.
ALL_LANGUAGES = "all"
#: How many other words ``...`` in a keyword phrase may stand for.
GAP_WORDS = 4
#: Flags of every ``*_regex`` and ``header`` pattern.
REGEX_FLAGS = re.IGNORECASE

SeverityName = Literal["L1", "L2", "L3", "L4"]

_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable, no colon
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_GAP = "..."
_Sized = TypeVar("_Sized", tuple[Any, ...], dict[Any, Any])


def _listify(value: Any) -> Any:
    """``x`` → ``[x]``, so a one-item list can be written as the item."""
    return [value] if isinstance(value, str) else value


def _non_empty(value: _Sized) -> _Sized:
    """Empty lists are errors; checked after the items, so a bad item is reported alone."""
    if not value:
        raise ValueError("needs at least 1 item")
    return value


def _check_regex(value: str) -> str:
    try:
        re.compile(value, REGEX_FLAGS)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"bad regular expression {value!r}: {exc.msg}{where}") from None
    return value


def _check_keyword(value: str) -> str:
    parts = value.split(_GAP)
    if not all(re.search(r"\w", part) for part in parts):
        raise ValueError(
            f"keyword {value!r} needs letters or digits"
            + (" on both sides of '...'" if len(parts) > 1 else "")
        )
    return value


def _check_keyword_language(value: str) -> str:
    if value != ALL_LANGUAGES and value not in SUPPORTED:
        from mailbot.rules.schema import did_you_mean  # here: schema imports this module

        options = (*SUPPORTED, ALL_LANGUAGES)
        raise ValueError(
            f"unknown language {value!r}{did_you_mean(value, options)}"
            f" (known: {', '.join(options)})"
        )
    return value


def _check_sender(value: str) -> str:
    text = value.strip().lower()
    if text.startswith("*."):
        domain, prefix = text[2:].rstrip("."), "*."
    elif text.startswith("@"):
        domain, prefix = text[1:].rstrip("."), "@"
    else:
        local, at, domain = text.rpartition("@")
        prefix = f"{local}@"
        if not at or not local or any(ch.isspace() for ch in local):
            domain = ""
    if not _DOMAIN.match(domain):
        raise ValueError(
            f"{value!r} is neither an address ('a@b.se'), a domain ('@b.se') "
            "nor subdomains ('*.b.se')"
        )
    return prefix + domain


def _check_header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a header name (printable characters, no ':')")
    return value.lower()


Regex = Annotated[str, AfterValidator(_check_regex)]
Keyword = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_keyword)]
KeywordLanguage = Annotated[str, AfterValidator(_check_keyword_language)]
KeywordLists = Annotated[
    dict[KeywordLanguage, Annotated[tuple[Keyword, ...], AfterValidator(_non_empty)]],
    AfterValidator(_non_empty),
]
RegexList = Annotated[tuple[Regex, ...], BeforeValidator(_listify), AfterValidator(_non_empty)]
SenderList = Annotated[
    tuple[Annotated[str, AfterValidator(_check_sender)], ...],
    BeforeValidator(_listify),
    AfterValidator(_non_empty),
]
NameList = Annotated[
    tuple[Annotated[str, Field(min_length=1)], ...],
    BeforeValidator(_listify),
    AfterValidator(_non_empty),
]
HeaderName = Annotated[str, AfterValidator(_check_header_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Segments = tuple[tuple[str, ...], ...]


class Needle:
    """A keyword ready for matching: its text, language and normalised word segments.

    ``segments`` are the stemmed words between ``...`` gaps; a plain phrase has one.
    """

    __slots__ = ("language", "required", "segments", "text")

    def __init__(self, text: str, language: str, segments: Segments) -> None:
        self.text = text
        self.language = language
        self.segments = segments
        #: Every word of the keyword: a cheap test before looking for the sequence.
        self.required = frozenset(word for segment in segments for word in segment)

    def __repr__(self) -> str:
        return f"Needle({self.text!r}, {self.language!r})"


_WORD = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=65536)
def _match_form(word: str) -> str:
    from mailbot.rules.wiki import stem  # here: wiki imports schema, which imports us

    return stem(stem(word))


def match_words(text: str) -> list[str]:
    """The words of ``text`` as keywords are compared: normalised, stemmed twice.

    Normalisation and stemming are ``mailbot.rules.wiki``'s (case, accents, one suffix);
    the second pass lets Swedish definite forms meet their base (``beställningen`` →
    ``beställning`` → ``beställ``, like ``beställning``). Stems are cached per word.
    """
    from mailbot.rules.wiki import normalise  # here: wiki imports schema, which imports us

    folded = text.lower() if text.isascii() else normalise(text)
    return [_match_form(word) for word in _WORD.findall(folded)]


def _needles(lists: Mapping[str, tuple[str, ...]] | None) -> tuple[Needle, ...]:
    if not lists:
        return ()

    found: list[Needle] = []
    for language, keywords in lists.items():
        for keyword in keywords:
            segments = tuple(tuple(match_words(part)) for part in keyword.split(_GAP))
            found.append(Needle(keyword, language, segments))
    return tuple(found)


class When(_Model):
    """The matchers of a rule; every one given must match. See the module docstring."""

    subject: KeywordLists | None = None
    body: KeywordLists | None = None
    any_text: KeywordLists | None = None
    subject_regex: RegexList | None = None
    body_regex: RegexList | None = None
    header: Annotated[dict[HeaderName, Regex], AfterValidator(_non_empty)] | None = None
    sender: SenderList | None = None
    plan: NameList | None = None
    language: NameList | None = None
    has_attachment: bool | None = None
    outside_hours: bool | None = None

    _subject_needles: tuple[Needle, ...] = PrivateAttr(default=())
    _body_needles: tuple[Needle, ...] = PrivateAttr(default=())
    _any_needles: tuple[Needle, ...] = PrivateAttr(default=())
    _subject_patterns: tuple[re.Pattern[str], ...] = PrivateAttr(default=())
    _body_patterns: tuple[re.Pattern[str], ...] = PrivateAttr(default=())
    _header_patterns: tuple[tuple[str, re.Pattern[str]], ...] = PrivateAttr(default=())

    def model_post_init(self, context: Any, /) -> None:
        """Compile every pattern and keyword once, when the rules are loaded."""
        self._subject_needles = _needles(self.subject)
        self._body_needles = _needles(self.body)
        self._any_needles = _needles(self.any_text)
        self._subject_patterns = tuple(re.compile(p, REGEX_FLAGS) for p in self.subject_regex or ())
        self._body_patterns = tuple(re.compile(p, REGEX_FLAGS) for p in self.body_regex or ())
        self._header_patterns = tuple(
            (name, re.compile(p, REGEX_FLAGS)) for name, p in (self.header or {}).items()
        )

    @property
    def subject_needles(self) -> tuple[Needle, ...]:
        return self._subject_needles

    @property
    def body_needles(self) -> tuple[Needle, ...]:
        return self._body_needles

    @property
    def any_needles(self) -> tuple[Needle, ...]:
        return self._any_needles

    @property
    def subject_patterns(self) -> tuple[re.Pattern[str], ...]:
        return self._subject_patterns

    @property
    def body_patterns(self) -> tuple[re.Pattern[str], ...]:
        return self._body_patterns

    @property
    def header_patterns(self) -> tuple[tuple[str, re.Pattern[str]], ...]:
        """(lower-cased header name, compiled pattern) pairs."""
        return self._header_patterns


class Outcome(_Model):
    """What a matching rule sets: a severity, urgency, a category (``billing.categories``:
    it decides assignment ``by_category`` and whether logged time is charged), or several."""

    severity: SeverityName | None = None
    urgent: bool | None = None
    category: str | None = None

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.severity is None and self.urgent is None and self.category is None:
            raise ValueError(
                "set needs severity (L1..L4), urgent (true/false), category, or several"
            )
        return self


def _check_rule_name(value: str) -> str:
    if not _RULE_NAME.match(value):
        raise ValueError(
            f"{value!r}: a rule name is 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return value


class ClassificationRule(_Model):
    """One named rule: ``when`` (and not ``unless``) matches → ``set``."""

    name: Annotated[str, AfterValidator(_check_rule_name)]
    when: When = When()
    unless: When | None = None
    set: Outcome


class Classification(_Model):
    """The ``classification:`` section: defaults and ordered rules."""

    default_severity: SeverityName = "L4"
    default_urgent: bool = False
    keyword_languages: Literal["all", "message"] = "all"
    rules: tuple[ClassificationRule, ...] = ()


# -- cross-field checks on raw data ------------------------------------------------------


def classification_problems(
    data: object, plan_ids: list[str] | None, declared: list[str]
) -> list[tuple[Loc, str]]:
    """Problems of a raw ``classification:`` section that need the rest of the file.

    Unknown plans and undeclared languages (with a did-you-mean) and duplicate rule names,
    as (field path, message) pairs. Malformed parts are skipped: the schema reports them.
    """
    from mailbot.rules.schema import did_you_mean  # here: schema imports this module

    if not isinstance(data, Mapping):
        return []
    problems: list[tuple[Loc, str]] = []
    rules = data.get("rules")
    if not isinstance(rules, (list, tuple)):
        return []

    def language(loc: Loc, value: object, what: str) -> None:
        if not isinstance(value, str) or value in declared or value == ALL_LANGUAGES:
            return
        if value in SUPPORTED:
            problems.append((loc, f"{what} {value!r} is not in languages ({', '.join(declared)})"))
        # an unknown code is a shape error, reported by the schema

    def items(value: object) -> list[tuple[int | None, object]]:
        if isinstance(value, str):
            return [(None, value)]
        if isinstance(value, (list, tuple)):
            return list(enumerate(value))
        return []

    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            continue
        base: Loc = ("classification", "rules", i)
        name = rule.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(
                    ((*base, "name"), f"rule name {name!r} is already used by rules[{seen[name]}]")
                )
            else:
                seen[name] = i
        for part in ("when", "unless"):
            when = rule.get(part)
            if not isinstance(when, Mapping):
                continue
            for j, plan in items(when.get("plan")):
                loc: Loc = (*base, part, "plan") + ((j,) if j is not None else ())
                if plan_ids is not None and isinstance(plan, str) and plan not in plan_ids:
                    problems.append((loc, f"unknown plan {plan!r}{did_you_mean(plan, plan_ids)}"))
            for j, lang in items(when.get("language")):
                loc = (*base, part, "language") + ((j,) if j is not None else ())
                if isinstance(lang, str) and lang not in SUPPORTED:
                    hint = did_you_mean(lang, SUPPORTED)
                    problems.append((loc, f"unknown language {lang!r}{hint}"))
                else:
                    language(loc, lang, "language")
            for field in ("subject", "body", "any_text"):
                lists = when.get(field)
                if isinstance(lists, Mapping):
                    for lang in lists:
                        language((*base, part, field, lang), lang, "keyword language")
    return problems
