"""Wiki matching: which documentation articles answer a message, and is it a how-to question.

Matching works on normalised words: case-folded, without diacritics (``lösenord`` matches
``losenord``), with a light suffix stripping so that simple plurals and inflections meet
(``invoices``/``invoice``, ``fakturor``/``faktura``, ``spedizioni``/``spedizione``). A
one-word keyword of five letters or more also matches inside a longer word, for Swedish
and German compounds (``frakt`` in ``fraktinställningar``). A keyword of several words
must appear as that sequence of words.

Score of an article, between 0 and 1::

    points = sum over its distinct matched keywords of
             (1.5 for a phrase of several words, else 1.0) × (2 if found in the subject)
    score  = min(1, points / 3)

So with the default ``wiki_min_score: 0.5`` an article needs one keyword in the subject,
or a phrase in the body, or two different keywords in the body. Three points (e.g. a
phrase in the subject, or three words in the body) give full confidence.
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from mailbot.domain import WikiHit
from mailbot.rules.schema import Rules, WikiArticle

log = logging.getLogger(__name__)

_SATURATION = 3.0
_SUBJECT_WEIGHT = 2.0
_PHRASE_WEIGHT = 1.5
_COMPOUND_MIN = 5
_STEM_MIN = 4
# Longest first. One suffix is stripped, and only when at least _STEM_MIN letters remain.
_SUFFIXES = tuple(
    sorted(
        (
            # English
            "ing", "ings", "ed", "es", "s",
            # Swedish
            "erna", "arna", "orna", "na", "ningar", "ning", "en", "et", "er", "ar", "or", "an",
            # Italian
            "zioni", "zione", "i", "e", "o", "a",
            # German
            "ungen", "ung", "n",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+")
_SPECIAL = str.maketrans({"æ": "ae", "ø": "o", "đ": "d", "ł": "l", "ı": "i"})


@lru_cache(maxsize=1)
def _combining_marks() -> dict[int, None]:
    """Every code point with a combining class, to drop with ``str.translate``."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))}


def normalise(text: str) -> str:
    """Case-folded text without diacritics: ``"Lösenordet"`` → ``"losenordet"``."""
    if text.isascii():
        return text.lower()  # casefold() of ASCII; nothing to decompose
    folded = unicodedata.normalize("NFKD", text.casefold().translate(_SPECIAL))
    return folded.translate(_combining_marks())


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _STEM_MIN:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    """Normalised, stemmed words of ``text``."""
    return [stem(word) for word in _WORD.findall(normalise(text))]


@lru_cache(maxsize=4096)
def _keyword_words(keyword: str) -> tuple[str, ...]:
    return tuple(words(keyword))


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    if not needle:
        return False
    if len(needle) == 1:
        word = needle[0]
        if len(word) >= _COMPOUND_MIN:
            return any(word in token for token in haystack)
        return word in haystack
    n = len(needle)
    return any(list(haystack[i : i + n]) == list(needle) for i in range(len(haystack) - n + 1))


@dataclass(frozen=True, slots=True)
class _Scored:
    score: float
    order: int
    article: WikiArticle


def score_article(article: WikiArticle, subject: Sequence[str], body: Sequence[str]) -> float:
    """The article's score (0..1) against already-normalised subject and body words."""
    points = 0.0
    seen: set[tuple[str, ...]] = set()
    for keyword in article.keywords:
        needle = _keyword_words(keyword)
        if not needle or needle in seen:
            continue
        seen.add(needle)
        base = _PHRASE_WEIGHT if len(needle) > 1 else 1.0
        if _contains(subject, needle):
            points += base * _SUBJECT_WEIGHT
        elif _contains(body, needle):
            points += base
    return min(1.0, points / _SATURATION)


def match_articles(
    rules: Rules, *, subject: str, text: str, language: str, limit: int = 3
) -> tuple[WikiHit, ...]:
    """Articles scoring at least ``rules.wiki_min_score``, best first, at most ``limit``.

    Only articles in ``language`` are considered; when the wiki has none in that language,
    all articles are.
    """
    candidates = [a for a in rules.wiki if a.language == language] or list(rules.wiki)
    subject_words = words(subject)
    body_words = words(text)
    scored = [
        _Scored(score_article(article, subject_words, body_words), order, article)
        for order, article in enumerate(candidates)
    ]
    hits = sorted(
        (s for s in scored if s.score >= rules.wiki_min_score),
        key=lambda s: (-s.score, s.order),
    )
    result = tuple(WikiHit(s.article.title, s.article.url, round(s.score, 3)) for s in hits)
    log.debug("wiki: %d of %d articles match (language %s)", len(result), len(candidates), language)
    return result[: max(limit, 0)]


# -- how-to questions --------------------------------------------------------------------

# Patterns run on normalise()d text (no diacritics): "può" is written "puo" here.
_HOWTO: dict[str, tuple[str, ...]] = {
    "en": (
        r"\bhow (?:do|can|could|should|would|shall) (?:i|we|you|one)\b",
        r"\bhow to\b",
        r"\bhow does\b",
        r"\bwhere (?:do|can|could) (?:i|we)\b",
        r"\bis it possible to\b",
        r"\bis there a way\b",
        r"\bwhat is the (?:best |right )?way\b",
    ),
    "sv": (
        r"\bhur\b",
        r"\bgar det att\b",
        r"\bvar (?:hittar|finns|andrar|staller|ser) (?:jag|man|vi)\b",
        r"\bkan (?:jag|man|vi)\b",
        r"\bfinns det (?:nagot satt|nagon mojlighet|mojlighet)\b",
    ),
    "it": (
        r"\bcome (?:posso|possiamo|si|faccio|facciamo|fare|devo|dobbiamo|funziona|imposto"
        r"|modifico|cambio|configuro|aggiungo)\b",
        r"\bdove (?:trovo|si trova|posso|si puo)\b",
        r"\be possibile\b",
        r"\bsi puo\b",
        r"\bin che modo\b",
    ),
    "de": (
        r"\bwie (?:kann|konnen|mache|machen|funktioniert|stelle|andere|richte|geht)\b",
        r"\bwo (?:finde|kann|stelle)\b",
        r"\bist es moglich\b",
        r"\bgibt es (?:eine )?moglichkeit\b",
        r"\bkann (?:ich|man)\b",
    ),
}

# Words of trouble: with one of these, a bare question mark is a problem report, not a
# how-to question ("Why is the shop down?").
_TROUBLE: dict[str, tuple[str, ...]] = {
    "en": (
        r"\berrors?\b", r"\bbroken\b", r"\bdown\b", r"\bcrash(?:ed|es)?\b", r"\bbug\b",
        r"\bnot working\b", r"\b(?:doesn.?t|does not|don.?t|won.?t|isn.?t) work",
        r"\bstopped\b", r"\bfail(?:s|ed|ing)?\b", r"\burgent\b",
    ),
    "sv": (
        r"\bfel(?:et)?\b", r"\b(?:fungerar|funkar|gar) inte\b", r"\bkrasch", r"\bnere\b",
        r"\bslutat\b", r"\btrasig", r"\bbugg", r"\bakut\b",
    ),
    "it": (
        r"\berror[ei]\b", r"\bnon (?:funziona|va|riesco)\b", r"\bbloccat[oa]\b", r"\brott[oa]\b",
        r"\bbug\b", r"\burgente\b", r"\bcrash\b",
    ),
    "de": (
        r"\bfehler\b", r"\bfunktioniert nicht\b", r"\bgeht nicht\b", r"\bkaputt\b",
        r"\babsturz\b", r"\bdringend\b",
    ),
}  # fmt: skip


def _any_of(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    """One regular expression matching where any of ``patterns`` does (one pass over the
    text instead of one per pattern); a list, so a language without patterns has none."""
    return [re.compile("|".join(f"(?:{p})" for p in patterns))] if patterns else []


_COMPILED_HOWTO = {lang: _any_of(ps) for lang, ps in _HOWTO.items()}
_COMPILED_TROUBLE = {lang: _any_of(ps) for lang, ps in _TROUBLE.items()}
_HOWTO_SCAN_CHARS = 1500


def _own_text(text: str) -> str:
    """The start of the message without quoted lines: where the question is asked."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(lines)[:_HOWTO_SCAN_CHARS]


def looks_like_howto(subject: str, text: str, language: str) -> bool:
    """Whether the message asks how to do something (and so may get a wiki answer).

    True when a how-to pattern of ``language`` (or English, which customers mix in)
    matches the subject or the start of the body, or when there is a question mark and
    no word of trouble ("error", "fungerar inte", "non funziona", ...).
    """
    sample = normalise(f"{subject}\n{_own_text(text)}")
    languages = dict.fromkeys((language, "en"))
    for lang in languages:
        if any(p.search(sample) for p in _COMPILED_HOWTO.get(lang, ())):
            return True
    if "?" not in sample:
        return False
    troubled = any(p.search(sample) for lang in languages for p in _COMPILED_TROUBLE.get(lang, ()))
    return not troubled
