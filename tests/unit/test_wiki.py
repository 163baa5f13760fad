"""Wiki matching (scores, language, threshold) and how-to detection."""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest

from mailbot.rules.schema import Rules
from mailbot.rules.wiki import looks_like_howto, match_articles, normalise, words

ARTICLES: list[dict[str, Any]] = [
    {
        "title": "Reset your password",
        "url": "https://docs.example.com/en/password",
        "language": "en",
        "keywords": ["password", "reset password", "log in"],
    },
    {
        "title": "Invoices and VAT",
        "url": "https://docs.example.com/en/invoices",
        "language": "en",
        "keywords": ["invoice", "vat", "receipt"],
    },
    {
        "title": "Återställ ditt lösenord",
        "url": "https://docs.example.com/sv/losenord",
        "language": "sv",
        "keywords": ["lösenord", "glömt lösenord", "logga in"],
    },
    {
        "title": "Fraktinställningar",
        "url": "https://docs.example.com/sv/frakt",
        "language": "sv",
        "keywords": ["frakt", "leveranssätt"],
    },
    {
        "title": "Fakturor och moms",
        "url": "https://docs.example.com/sv/fakturor",
        "language": "sv",
        "keywords": ["faktura", "moms"],
    },
]


def make_rules(articles: list[dict[str, Any]] = ARTICLES, **extra: Any) -> Rules:
    return Rules.model_validate(
        {
            "version": 1,
            "identity": {"address": "support@example.com", "name": "Support"},
            "timezone": "Europe/Stockholm",
            "plans": {"core": {"name": "Core", "first_response": {"working_days": 3}}},
            "default_plan": "core",
            "wiki": articles,
            **extra,
        }
    )


RULES = make_rules()


def titles(hits: tuple[Any, ...]) -> list[str]:
    return [hit.title for hit in hits]


def _normalise_by_hand(text: str) -> str:
    """The definition: NFKD of the case-folded text, every combining character dropped."""
    special = str.maketrans({"æ": "ae", "ø": "o", "đ": "d", "ł": "l", "ı": "i"})
    folded = unicodedata.normalize("NFKD", text.casefold().translate(special))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def test_normalise_is_its_definition_on_any_text() -> None:
    """The fast paths (ASCII; one translate for the combining marks) change no result."""
    rng = random.Random(5)
    pools = [(0, 0x250), (0x300, 0x370), (0, 0x3000), (0, 0x20000), (0x1E900, 0x1E960)]
    for _ in range(5000):
        text = "".join(chr(rng.randrange(*rng.choice(pools))) for _ in range(rng.randrange(0, 30)))
        assert normalise(text) == _normalise_by_hand(text), ascii(text)
    for text in ("", "Plain ASCII?", "ǅemal ÆØÅ İstanbul ß ﬁ", "Ｆｕｌｌ ｗｉｄｔｈ", "ा्"):
        assert normalise(text) == _normalise_by_hand(text), text


def test_normalise_and_words() -> None:
    assert normalise("Lösenordet ÄR fel, perché è già") == "losenordet ar fel, perche e gia"
    assert words("Invoices") == words("invoice")
    assert words("fakturor") == words("faktura") == words("fakturorna")
    assert words("spedizioni") == words("spedizione")
    assert words("passwords") == ["password"]


def test_subject_keyword_is_enough() -> None:
    hits = match_articles(RULES, subject="Password", text="Hello, please help.", language="en")
    assert titles(hits) == ["Reset your password"]
    assert hits[0].score == pytest.approx(2 / 3, abs=0.001)
    assert hits[0].url == "https://docs.example.com/en/password"


def test_one_body_word_is_not_enough_but_a_phrase_is() -> None:
    assert match_articles(RULES, subject="Hi", text="My password.", language="en") == ()
    hits = match_articles(RULES, subject="Hi", text="How do I reset password?", language="en")
    assert titles(hits) == ["Reset your password"]
    assert hits[0].score == pytest.approx(0.833, abs=0.001)  # phrase 1.5 + word 1 → 2.5/3


def test_two_body_words_pass_and_score_caps_at_one() -> None:
    hits = match_articles(
        RULES, subject="Question", text="Where is the VAT on my invoices?", language="en"
    )
    assert titles(hits) == ["Invoices and VAT"]
    full = match_articles(
        RULES, subject="Invoice VAT receipt", text="invoice vat receipt", language="en"
    )
    assert full[0].score == 1.0


def test_diacritics_plurals_and_compounds_in_swedish() -> None:
    hits = match_articles(
        RULES,
        subject="Fråga",
        text="Hur ändrar jag fraktinställningarna? Och var hittar jag fakturorna och momsen?",
        language="sv",
    )
    assert titles(hits) == ["Fakturor och moms"]  # faktura + moms (2 points) beats frakt (1)
    hits = match_articles(
        RULES, subject="Fraktinställningar", text="Hej!", language="sv"
    )  # compound in the subject
    assert titles(hits) == ["Fraktinställningar"]
    hits = match_articles(RULES, subject="Losenord", text="", language="sv")
    assert titles(hits) == ["Återställ ditt lösenord"]


def test_best_first_and_limit() -> None:
    text = "I forgot my password and need the invoice with VAT and a receipt."
    hits = match_articles(RULES, subject="password", text=text, language="en")
    assert titles(hits) == ["Invoices and VAT", "Reset your password"]
    assert hits[0].score > hits[1].score
    limited = match_articles(RULES, subject="password", text=text, language="en", limit=1)
    assert titles(limited) == ["Invoices and VAT"]


def test_only_the_message_language_is_used_when_it_has_articles() -> None:
    # English words, but the message is Swedish and there are Swedish articles.
    assert match_articles(RULES, subject="Password", text="", language="sv") == ()


def test_falls_back_to_all_languages_without_articles_in_that_language() -> None:
    hits = match_articles(RULES, subject="Password", text="", language="it")
    assert titles(hits) == ["Reset your password"]


def test_threshold_comes_from_the_rules() -> None:
    strict = make_rules(wiki_min_score=0.9)
    assert match_articles(strict, subject="Password", text="", language="en") == ()
    loose = make_rules(wiki_min_score=0.3)
    hits = match_articles(loose, subject="Hi", text="my password", language="en")
    assert titles(hits) == ["Reset your password"]


def test_no_wiki_no_hits() -> None:
    assert match_articles(make_rules([]), subject="Password", text="", language="en") == ()


def test_short_keywords_match_whole_words_only() -> None:
    # "vat" must not match inside "private"; "moms" must not match inside other words
    assert match_articles(RULES, subject="private", text="", language="en") == ()


@pytest.mark.parametrize(
    ("subject", "text", "language"),
    [
        ("Password", "How do I reset my password?", "en"),
        ("Question", "Where can I find the shipping settings", "en"),
        ("Is it possible to import products from Excel", "", "en"),
        ("Frakt", "Hur gör jag för att ändra frakten?", "sv"),
        ("Hur ställer jag in moms", "", "sv"),
        ("Fråga", "Går det att importera produkter från Excel?", "sv"),
        ("Fatture", "Come posso scaricare le fatture?", "it"),
        ("Domanda", "Come si imposta la spedizione gratuita", "it"),
        ("Domanda", "È possibile esportare gli ordini", "it"),
        ("Passwort", "Wie kann ich mein Passwort ändern", "de"),
        ("Shipping", "Can we offer free shipping above 50 EUR?", "en"),
        ("Password", "How do I reset my password?", "sv"),  # English patterns always apply
    ],
)
def test_howto_questions(subject: str, text: str, language: str) -> None:
    assert looks_like_howto(subject, text, language)


@pytest.mark.parametrize(
    ("subject", "text", "language"),
    [
        ("Checkout broken", "Customers cannot pay since this morning.", "en"),
        ("Site down?", "Is the site down? We get error 500.", "en"),
        ("Kassan", "Kassan fungerar inte sedan i morse. Är det ett fel hos er?", "sv"),
        ("Ordini", "Il programma non funziona più, perché?", "it"),
        ("Bestellung", "Der Checkout geht nicht, warum?", "de"),
        ("Invoice 2026-11", "Please find attached our invoice.", "en"),
        ("Tack", "Tack för hjälpen!", "sv"),
    ],
)
def test_not_howto(subject: str, text: str, language: str) -> None:
    assert not looks_like_howto(subject, text, language)


def test_quoted_lines_are_ignored() -> None:
    text = "Thanks, it works now.\n\n> How do I reset my password?\n"
    assert not looks_like_howto("Re: Password", text, "en")
