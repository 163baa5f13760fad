"""The built-in language detector on real-looking support mails, long and short."""

from __future__ import annotations

import pytest

from mailbot.rules.language import SUPPORTED, detect_language, language_scores

ALL = ["en", "sv", "it", "de"]


@pytest.mark.parametrize(
    ("expected", "text"),
    [
        # English
        ("en", "Order stuck\nHi, one of our orders has been stuck in pending since yesterday."),
        ("en", "Password reset\nHow do I reset my password?"),
        ("en", "Invoice\nWhere can I find my invoices?"),
        (
            "en",
            "Hello,\n\nwe would like to change the shipping rates for Norway. Is it possible "
            "to set a different price for orders above 500 SEK?\n\nKind regards,\nJohn",
        ),
        # Swedish
        ("sv", "Fråga om frakt\nHur ändrar jag fraktkostnaden för leveranser till Norge?"),
        ("sv", "Lösenord\nJag har glömt mitt lösenord."),
        ("sv", "Hej! Vi har problem med kassan, kunderna kan inte betala med kort sedan i morse."),
        (
            "sv",
            "Hej,\n\nvi vill gärna lägga in en ny betalningsmetod i butiken. Går det att "
            "göra själv eller behöver ni hjälpa oss?\n\nMed vänlig hälsning\nKarin",
        ),
        # Italian
        ("it", "Fattura\nCome posso scaricare le fatture del mese scorso?"),
        ("it", "Buongiorno, il programma non si collega più al database del negozio."),
        ("it", "Problema importazione\nNon riesco a importare il file CSV dei prodotti."),
        (
            "it",
            "Gentili signori,\n\nvorrei sapere se è possibile sincronizzare le giacenze con "
            "PrestaShop ogni ora. Grazie mille.\n\nCordiali saluti\nMarco",
        ),
        # German
        ("de", "Passwort\nWie kann ich mein Passwort ändern?"),
        ("de", "Guten Tag, seit gestern funktioniert der Versand nicht mehr."),
        (
            "de",
            "Hallo,\n\nwir haben eine Frage zu unserer Rechnung. Könnten Sie uns bitte die "
            "Rechnung für Oktober noch einmal schicken?\n\nViele Grüße\nJonas",
        ),
    ],
)
def test_detects(expected: str, text: str) -> None:
    assert detect_language(text, ALL, default="xx") == expected


@pytest.mark.parametrize(
    "text",
    ["", "   ", "Hej", "Ciao", "Thanks!", "Tack!", "Grazie", "OK", "12345", "Re: [#1042]",
     "CSV import", "https://shop.example.com/checkout"],
)  # fmt: skip
def test_too_short_or_ambiguous_gives_default(text: str) -> None:
    assert detect_language(text, ALL, default="xx") == "xx"


def test_only_candidates_are_chosen() -> None:
    german = "Wie kann ich mein Passwort ändern? Ich finde die Einstellung nicht."
    assert detect_language(german, ALL, default="en") == "de"
    assert detect_language(german, ["en", "sv", "it"], default="en") == "en"
    swedish = "Hur gör jag för att byta lösenord på mitt konto?"
    assert detect_language(swedish, ["en", "it"], default="it") == "it"


def test_unknown_candidates_are_ignored() -> None:
    assert detect_language("Hur gör jag för att byta lösenord?", ["fr", "sv"], "en") == "sv"
    assert detect_language("Bonjour, comment ça va?", ["fr"], default="en") == "en"


def test_letters_give_hints_but_are_capped() -> None:
    assert language_scores("åå", ALL) == {"en": 0.0, "sv": 2.0, "it": 0.0, "de": 0.0}
    assert language_scores("ü ß", ALL)["de"] == 2.0
    assert language_scores("città università", ALL)["it"] == 2.0
    assert language_scores("ö" * 40, ALL) == {"en": 0.0, "sv": 3.0, "it": 0.0, "de": 3.0}
    # Letters alone never decide between Swedish and German.
    assert detect_language("ööö ääää", ["sv", "de"], "en") == "en"


def test_supported_languages() -> None:
    assert set(SUPPORTED) == {"en", "sv", "it", "de"}
