"""new_text: quoted history and signatures removed, never empty, never slow, never raising."""

from __future__ import annotations

import time

import pytest

from mailbot.ingest import quotes
from mailbot.ingest.quotes import new_text

SWEDISH = """Hej!

Skrivaren på plan 2 fungerar fortfarande inte. Kan ni skicka en tekniker?

Mvh,
Anna

Den 4 mars 2024 kl. 10:15 skrev Support <support@example.com>:
> Hej Anna,
>
> Har du provat att starta om skrivaren?
"""

SWEDISH_OUTLOOK = """Tack, nu fungerar det!

Från: Support <support@example.com>
Skickat: den 4 mars 2024 10:15
Till: Anna Svensson <anna@example.se>
Ämne: SV: Skrivaren [Ticket#42]

Hej Anna, har du provat att starta om skrivaren?
"""

ITALIAN = """Buongiorno,

la stampante continua a non funzionare.

Cordiali saluti
Marco

Il giorno lun 4 mar 2024 alle ore 10:15 Support <support@example.com> ha scritto:
> Buongiorno Marco,
> ha provato a riavviare la stampante?
"""

ITALIAN_IN_DATA = """Grazie, ora funziona.

In data 4 marzo 2024 10:15:31 "Support" <support@example.com> ha scritto:

Buongiorno Marco, ha provato a riavviare?
"""

GERMAN = """Hallo,

der Drucker druckt wieder.

Am Mo., 4. März 2024 um 10:15 Uhr schrieb Support <support@example.com>:
> Bitte starten Sie den Drucker neu.
"""

ENGLISH_ORIGINAL_MESSAGE = """It works now, thank you!

-----Original Message-----
From: Support
Sent: Monday, March 4, 2024 10:15 AM
Subject: Printer

Please restart the printer.
"""


@pytest.mark.parametrize(
    ("text", "kept", "dropped"),
    [
        (SWEDISH, "Kan ni skicka en tekniker?", ["skrev Support", "Har du provat", "Mvh"]),
        (SWEDISH_OUTLOOK, "Tack, nu fungerar det!", ["Från:", "starta om"]),
        (ITALIAN, "la stampante continua a non funzionare.", ["ha scritto", "riavviare"]),
        (ITALIAN_IN_DATA, "Grazie, ora funziona.", ["In data", "riavviare"]),
        (GERMAN, "der Drucker druckt wieder.", ["schrieb", "neu."]),
        (ENGLISH_ORIGINAL_MESSAGE, "It works now, thank you!", ["Original Message", "restart"]),
    ],
    ids=["sv", "sv-outlook", "it", "it-in-data", "de", "en-original-message"],
)
def test_quoted_history_is_removed(text: str, kept: str, dropped: list[str]) -> None:
    result = new_text(text)
    assert kept in result
    for fragment in dropped:
        assert fragment not in result


def test_text_without_quotes_is_returned_stripped() -> None:
    assert new_text("\n\n  Just a question: is the office open?  \n\n") == (
        "Just a question: is the office open?"
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\r\n\t"])
def test_empty_input_gives_empty_text(text: str) -> None:
    assert new_text(text) == ""


def test_only_quoted_text_is_never_emptied() -> None:
    text = "> Quoted line one\n> Quoted line two"
    assert new_text(text) == text


def test_inline_answers_keep_their_context_but_lose_the_outer_quotes() -> None:
    text = "> Question one?\n\nAnswer one.\n\n> Question two?\n\nAnswer two.\n\n> -- Tim\n"
    assert new_text(text) == "Answer one.\n\n> Question two?\n\nAnswer two."


def test_customer_sentences_starting_like_sign_offs_are_kept() -> None:
    text = (
        "Hi,\n\nThanks, but the scanner on floor 3 still shows error E-42 after the restart "
        "you suggested yesterday.\n\nAnna"
    )
    assert "error E-42" in new_text(text)


def test_bulleted_lists_are_not_signatures() -> None:
    text = "Steps:\n- open the tray\n- remove the paper\n- close it\n\nStill jammed."
    assert new_text(text) == text


def test_short_sign_off_is_removed() -> None:
    assert new_text("The VPN works again.\n\nBest regards,\nAnna\nACME AB") == (
        "The VPN works again."
    )


def test_library_failure_returns_the_input_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self, languages: list[str]) -> None:
            pass

        def read(self, text: str) -> None:
            raise RuntimeError("boom")

    monkeypatch.setattr(quotes, "EmailReplyParser", Broken)
    assert new_text("  New text\n> old text  ") == "New text\n> old text"


def test_languages_parameter_is_honoured() -> None:
    dutch = (
        "Bedankt, het werkt nu.\n\nVan: Support <s@example.com>\n"
        "Verzonden: maandag 4 maart 2024 10:15\nAan: Jan <jan@example.nl>\n"
        "Onderwerp: Printer\n\nHeeft u de printer opnieuw gestart?"
    )
    assert new_text(dutch, languages=("nl",)) == "Bedankt, het werkt nu."
    assert "opnieuw gestart" in new_text(dutch)  # Dutch headers are unknown to en/sv/it/de


def test_crlf_is_normalised() -> None:
    assert new_text("Line one\r\nLine two\r\n") == "Line one\nLine two"


@pytest.mark.parametrize(
    "text",
    [
        "hello" + "\n" * 200_000 + "x",
        "hello" + " \r\n\t" * 100_000 + "x",
        "hi\nOn " + "x " * 50_000 + "\n",
        "hi\n" + ("On " + "x " * 240 + "\n") * 200,
        "hi\n" + ("Il " + "x " * 240 + "\n") * 200,
        "hi\n" + "> " * 200_000,
        "Hi\n" + "From: a\n" * 50_000,
    ],
    ids=[
        "blank-lines",
        "crlf-tabs",
        "long-on-line",
        "many-on-lines",
        "many-il-lines",
        "long-quote-line",
        "from-lines",
    ],
)
def test_pathological_input_is_fast(text: str) -> None:
    started = time.perf_counter()
    result = new_text(text)
    assert time.perf_counter() - started < 2.0
    assert result.strip()


def test_long_new_text_beyond_the_scan_cap_is_kept_whole() -> None:
    text = "\n".join(f"Log line {i}: printer status OK" for i in range(5000))
    assert len(text) > quotes.MAX_SCAN_CHARS
    assert new_text(text) == text


def test_long_lines_are_restored_after_the_split() -> None:
    long_line = "word " * 400
    text = f"{long_line}\n\nOn Mon, Mar 4, 2024 at 10:15 AM Support <s@example.com> wrote:\n> old"
    assert new_text(text) == long_line.strip()
