"""Severity (L1–L4) and urgency by the ordered ``classification:`` rules of rules.yaml."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from mailbot.domain import ClassificationResult, Severity
from mailbot.errors import RulesError
from mailbot.ingest.quotes import new_text
from mailbot.rules import classify as classify_module
from mailbot.rules.classify import classify
from mailbot.rules.loader import load_rules, parse_rules
from mailbot.rules.schema import Rules

ROOT = Path(__file__).resolve().parents[2]

BASE = textwrap.dedent(
    """\
    version: 1
    identity:
      address: support@example.com
      name: Example Support
    timezone: Europe/Stockholm
    plans:
      core:
        name: Core
        first_response: {working_days: 3}
      pro:
        name: Pro
        first_response: {working_hours: 8}
    default_plan: core
    """
)


@pytest.fixture(scope="module")
def shipped() -> Rules:
    return load_rules(ROOT / "rules.yaml")


def rules_with(section: str) -> Rules:
    return parse_rules(BASE + "classification:\n" + textwrap.indent(section, "  "), "rules.yaml")


def problems(section: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        rules_with(section)
    return info.value.problems


def run(
    rules: Rules,
    subject: str = "",
    text: str = "",
    *,
    sender: str = "someone@customer.se",
    language: str = "en",
    plan: str = "core",
    headers: dict[str, str] | tuple[tuple[str, str], ...] = (),
    has_attachment: bool = False,
    outside_hours: bool | Callable[[], bool] = False,
) -> ClassificationResult:
    return classify(
        rules,
        subject=subject,
        text=text,
        sender=sender,
        language=language,
        plan=plan,
        headers=headers,
        has_attachment=has_attachment,
        outside_hours=outside_hours,
    )


def one_rule(when: str, sets: str = "{severity: L2}", extra: str = "") -> Rules:
    """Rules with a single rule ``r`` setting L2 (or ``sets``) when ``when`` matches."""
    return rules_with(f"rules:\n  - name: r\n    when: {when}\n{extra}    set: {sets}\n")


def severity(rules: Rules, subject: str = "", text: str = "", **kw: object) -> Severity:
    return run(rules, subject, text, **kw).severity  # type: ignore[arg-type]


# -- the shipped rules: realistic messages in three languages ----------------------------

CASES = [
    # (language, subject, new text, severity, urgent)
    ("en", "Site down!!", "Hi, our site is down since 8 this morning.", "L1", True),
    ("en", "Help", "The shop seems to be down, customers see a blank page", "L1", True),
    ("en", "Checkout", "Customers can't place orders, the checkout is broken.", "L1", True),
    ("en", "Payments", "Since the update payments are failing for everyone", "L1", True),
    ("en", "Security", "I think our website has been hacked, there are strange links", "L1", True),
    ("en", "Catalogue", "Not all products are shown in the catalog", "L2", False),
    ("en", "Mails", "Order confirmation emails are not being sent to customers", "L2", False),
    ("en", "Search", "The search on our shop is not working", "L3", False),
    ("en", "Filters", "Category filters don't work on mobile", "L3", False),
    ("en", "Pages", "Some pages look corrupted after the update", "L3", False),
    ("en", "Wishlist", "The wishlist button has the wrong colour", "L4", False),
    ("en", "URGENT", "Please change the logo before tomorrow's campaign", "L4", True),
    ("en", "Logo", "Please change the logo, this is urgent", "L4", True),
    ("en", "Logo", "Please change the logo, this is not urgent at all", "L4", False),
    ("en", "Status", "The site is not down, but search is broken", "L3", False),
    ("sv", "Sajten ligger nere!", "Hej, sajten ligger nere sedan i morse.", "L1", True),
    ("sv", "Hjälp", "Butiken är nere, vad händer?", "L1", True),
    ("sv", "Kassan", "Kunderna kan inte beställa, kassan fungerar inte", "L1", True),
    ("sv", "Betalning", "Det går inte att betala med kort", "L1", True),
    ("sv", "Intrång", "Vi misstänker ett intrång på sajten", "L1", True),
    ("sv", "Produkter", "Flera produkter syns inte i kategorin", "L2", False),
    ("sv", "Mejl", "Orderbekräftelserna kommer inte fram, mejlen skickas inte", "L2", False),
    ("sv", "Sök", "Sökningen på sajten fungerar inte", "L3", False),
    ("sv", "Brådskande", "Kan ni byta bild på startsidan?", "L4", True),
    ("sv", "Fråga", "Kan ni ändra texten i sidfoten? Inte brådskande.", "L4", False),
    ("sv", "Akut", "Filtren fungerar inte i mobilen", "L3", True),
    ("it", "Problema", "Il sito web non funziona più da stamattina", "L1", True),
    ("it", "Ordini", "I clienti non riescono più a ordinare", "L1", True),
    ("it", "Ordini", "Non si possono fare ordini dal negozio", "L1", True),
    ("it", "Pagamenti", "I pagamenti con carta non funzionano", "L1", True),
    ("it", "Sicurezza", "Il sito è stato hackerato", "L1", True),
    ("it", "Catalogo", "Alcuni prodotti non sono visibili nel catalogo", "L2", False),
    ("it", "Email", "Le email di conferma non vengono inviate", "L2", False),
    ("it", "Ricerca", "La ricerca non trova nessun prodotto", "L3", False),
    ("it", "Filtri", "I filtri della categoria non funzionano", "L3", False),
    ("it", "Immagini", "Le immagini dei prodotti sono nere", "L4", False),
    ("it", "URGENTE", "Vorrei cambiare il colore dei pulsanti", "L4", True),
    ("it", "Colore", "Vorrei cambiare il colore dei pulsanti, non è urgente", "L4", False),
]


@pytest.mark.parametrize(("language", "subject", "text", "level", "urgent"), CASES)
def test_shipped_rules_classify_realistic_messages(
    shipped: Rules, language: str, subject: str, text: str, level: str, urgent: bool
) -> None:
    result = run(shipped, subject, text, language=language)
    assert (result.severity, result.urgent) == (Severity(level), urgent), result.hits


def test_short_swedish_message_misdetected_as_english_is_still_l1(shipped: Rules) -> None:
    # "Sajten nere" is too short for the language detector, which falls back to English;
    # keyword_languages: all still finds the Swedish phrase.
    result = run(shipped, "Sajten nere", "", language="en")
    assert result.severity is Severity.L1
    assert result.urgent


def test_hits_name_the_deciding_rule_and_what_matched(shipped: Rules) -> None:
    result = run(shipped, "Site down", "Our site is down")
    assert result.hits == ("severity L1, urgent by rule 'site-down' (body, en: 'site is down')",)
    result = run(shipped, "Mejl", "Mejlen skickas inte", language="sv")
    assert result.hits == (
        "severity L2 by rule 'products-missing-or-mails-not-sent' (body, sv: 'mejl skickas inte')",
        "not urgent by default (no rule matched)",
    )


def test_quoted_history_is_not_seen_when_the_caller_strips_it(shipped: Rules) -> None:
    body = (
        "Thanks, it works again now.\n"
        "\n"
        "On Mon, 3 Mar 2025 at 09:12, Anna <anna@shop.se> wrote:\n"
        "> Our site is down! Customers can't place orders.\n"
    )
    fresh = new_text(body)
    assert "site is down" not in fresh
    assert run(shipped, "Re: Checkout", fresh).severity is Severity.L4
    # The contract is the caller's: given the whole body, the quote would be seen.
    assert run(shipped, "Re: Checkout", body).severity is Severity.L1
    doc = classify_module.__doc__ or ""
    assert "new** text" in doc
    assert "quoted history" in doc


# -- the shipped file --------------------------------------------------------------------


def test_shipped_rules_yaml_has_the_classification(shipped: Rules) -> None:
    c = shipped.classification
    assert c.default_severity == "L4"
    assert c.default_urgent is False
    names = [rule.name for rule in c.rules]
    assert names[:4] == [
        "site-down",
        "site-down-sv-nere",
        "orders-or-payments-impossible",
        "security-breach",
    ]
    assert all(rule.set.severity == "L1" and rule.set.urgent for rule in c.rules[:4])
    assert "urgent-words" in names
    assert {rule.set.severity for rule in c.rules} == {"L1", "L2", "L3", None}
    for rule in c.rules:
        for lists in (rule.when.subject, rule.when.body, rule.when.any_text):
            if lists is not None and rule.name != "site-down-sv-nere":
                assert {"en", "sv", "it"} <= set(lists), rule.name


def test_no_classification_section_means_everything_is_l4_normal() -> None:
    rules = parse_rules(BASE, "rules.yaml")
    result = run(rules, "URGENT site is down", "hacked")
    assert (result.severity, result.urgent) == (Severity.L4, False)
    assert result.hits == (
        "severity L4 by default (no rule matched)",
        "not urgent by default (no rule matched)",
    )


def test_defaults_are_configurable() -> None:
    rules = rules_with("default_severity: L3\ndefault_urgent: true\n")
    result = run(rules, "x", "y")
    assert (result.severity, result.urgent) == (Severity.L3, True)
    assert result.hits[1] == "urgent by default (no rule matched)"


# -- order -------------------------------------------------------------------------------


ORDERED = """\
rules:
  - name: only-urgent
    when: {any_text: {en: [asap]}}
    set: {urgent: true}
  - name: first-severity
    when: {any_text: {en: [broken]}}
    set: {severity: L3, urgent: false}
  - name: later-severity
    when: {any_text: {en: [broken]}}
    set: {severity: L1, urgent: true}
"""


def test_first_rule_that_sets_severity_wins() -> None:
    rules = rules_with(ORDERED)
    result = run(rules, "", "it is broken")
    assert (result.severity, result.urgent) == (Severity.L3, False)
    assert result.hits == ("severity L3, not urgent by rule 'first-severity' (body, en: 'broken')",)


def test_urgency_and_severity_are_decided_independently() -> None:
    rules = rules_with(ORDERED)
    # only-urgent decides urgency first; first-severity then still decides the severity,
    # and its urgent: false does not override the earlier decision.
    result = run(rules, "asap", "it is broken")
    assert (result.severity, result.urgent) == (Severity.L3, True)
    assert result.hits == (
        "urgent by rule 'only-urgent' (subject, en: 'asap')",
        "severity L3 by rule 'first-severity' (body, en: 'broken')",
    )


def test_a_later_rule_decides_when_the_earlier_does_not_match() -> None:
    rules = rules_with(
        ORDERED.replace("[broken]}}\n    set: {severity: L3", "[kaputt]}}\n    set: {severity: L3")
    )
    result = run(rules, "", "it is broken")
    assert (result.severity, result.urgent) == (Severity.L1, True)


def test_rules_after_both_are_decided_are_not_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = rules_with(ORDERED)
    seen: list[str] = []
    original = classify_module._rule_matches

    def spy(rule: object, msg: object) -> object:
        seen.append(rule.name)  # type: ignore[attr-defined]
        return original(rule, msg)  # type: ignore[arg-type]

    monkeypatch.setattr(classify_module, "_rule_matches", spy)
    run(rules, "", "it is broken")
    assert seen == ["only-urgent", "first-severity"]


# -- keyword matching --------------------------------------------------------------------


def test_subject_keywords_look_only_at_the_subject() -> None:
    rules = one_rule("{subject: {en: [invoice]}}")
    assert severity(rules, "Invoice missing", "") is Severity.L2
    assert severity(rules, "Hello", "invoice missing") is Severity.L4


def test_body_keywords_look_only_at_the_body() -> None:
    rules = one_rule("{body: {en: [invoice]}}")
    assert severity(rules, "", "the invoice is wrong") is Severity.L2
    assert severity(rules, "invoice", "hello") is Severity.L4


def test_any_text_looks_at_both() -> None:
    rules = one_rule("{any_text: {en: [invoice]}}")
    assert severity(rules, "invoice", "") is Severity.L2
    assert severity(rules, "", "invoice") is Severity.L2
    assert severity(rules, "bill", "receipt") is Severity.L4


def test_keywords_ignore_case_and_accents_and_tolerate_endings() -> None:
    rules = one_rule("{any_text: {sv: [beställning], it: [perché]}}")
    assert severity(rules, "", "BESTALLNINGAR saknas", language="sv") is Severity.L2
    assert severity(rules, "", "Beställningen saknas", language="sv") is Severity.L2
    assert severity(rules, "", "ma PERCHE?", language="it") is Severity.L2


def test_keywords_match_whole_words_only() -> None:
    rules = one_rule("{any_text: {en: [down]}}")
    assert severity(rules, "", "the site is down") is Severity.L2
    assert severity(rules, "", "the download is slow") is Severity.L4
    assert severity(rules, "", "countdown timer") is Severity.L4


def test_phrases_need_their_words_in_sequence() -> None:
    rules = one_rule("{any_text: {en: [site is down]}}")
    assert severity(rules, "", "Our SITE is down!") is Severity.L2
    assert severity(rules, "", "is the site down?") is Severity.L4
    assert severity(rules, "", "site ... is down") is Severity.L2  # punctuation is no word


def test_gap_in_a_phrase_allows_up_to_four_words() -> None:
    rules = one_rule("{any_text: {it: [sito ... non funziona]}}")
    assert severity(rules, "", "sito non funziona") is Severity.L2
    assert severity(rules, "", "il sito web non funziona") is Severity.L2
    assert severity(rules, "", "il sito a b c d non funziona") is Severity.L2
    assert severity(rules, "", "il sito a b c d e non funziona") is Severity.L4
    assert severity(rules, "", "non funziona il sito") is Severity.L4


def test_keywords_of_every_language_by_default_or_only_the_messages() -> None:
    text = "sajten ligger nere"
    every = one_rule("{any_text: {sv: [ligger nere]}}")
    assert severity(every, "", text, language="en") is Severity.L2
    only = rules_with(
        "keyword_languages: message\n"
        "rules:\n"
        "  - name: r\n"
        "    when: {any_text: {sv: [ligger nere], all: [emergency]}}\n"
        "    set: {severity: L2}\n"
    )
    assert severity(only, "", text, language="en") is Severity.L4
    assert severity(only, "", text, language="sv") is Severity.L2
    assert severity(only, "", "emergency", language="it") is Severity.L2


def test_unless_skips_a_matching_rule() -> None:
    rules = one_rule(
        "{any_text: {en: [urgent]}}",
        "{urgent: true}",
        "    unless: {any_text: {en: [not urgent]}}\n",
    )
    assert run(rules, "", "urgent please").urgent is True
    assert run(rules, "", "not urgent please").urgent is False


def test_a_rule_without_when_matches_everything() -> None:
    rules = rules_with("rules:\n  - name: all\n    set: {severity: L2}\n")
    assert severity(rules, "", "") is Severity.L2


# -- the other matchers ------------------------------------------------------------------


def test_subject_regex_is_case_insensitive_unless_asked() -> None:
    rules = one_rule(r"{subject_regex: '^\s*urgent\b'}")
    assert severity(rules, "URGENT: help", "") is Severity.L2
    assert severity(rules, "Re: urgent", "") is Severity.L4
    exact = one_rule(r"{subject_regex: ['(?-i:URGENT)', '^!!']}")
    assert severity(exact, "URGENT", "") is Severity.L2
    assert severity(exact, "urgent", "") is Severity.L4
    assert severity(exact, "!! help", "") is Severity.L2  # a list is a choice


def test_body_regex_looks_only_at_the_body() -> None:
    rules = one_rule(r"{body_regex: 'error\s+5\d\d'}")
    assert severity(rules, "", "we get Error 503 on checkout") is Severity.L2
    assert severity(rules, "error 503", "hello") is Severity.L4
    assert (
        run(rules, "", "we get Error 503").hits[0]
        == "severity L2 by rule 'r' (body_regex: 'Error 503')"
    )


def test_regexes_are_compiled_once_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = one_rule(r"{subject_regex: 'a+b', body_regex: 'c+d', header: {X-Priority: '^1'}}")
    calls: list[str] = []

    def no_compile(*args: object, **kwargs: object) -> object:
        calls.append(str(args))
        raise AssertionError("compiled while classifying")

    monkeypatch.setattr("re.compile", no_compile)
    assert severity(rules, "aab", "ccd", headers={"X-Priority": "1"}) is Severity.L2
    assert calls == []


def test_header_matcher() -> None:
    rules = one_rule("{header: {X-Priority: '^[12]\\b', Importance: high}}", "{urgent: true}")
    both = {"x-priority": "1 (Highest)", "IMPORTANCE": "High"}
    assert run(rules, headers=both).urgent is True
    pairs = (("x-priority", "3"), ("x-priority", "2"), ("importance", "high"))
    assert run(rules, headers=pairs).urgent is True  # any value of a repeated header
    assert run(rules, headers={"x-priority": "1"}).urgent is False  # every header must match
    assert run(rules, headers={"x-priority": "3", "importance": "high"}).urgent is False
    hit = run(rules, headers=both).hits[0]
    assert hit == "urgent by rule 'r' (header x-priority: '1 (Highest)'; header importance: 'High')"


def test_sender_matcher() -> None:
    rules = one_rule("{sender: [boss@shop.se, '@vip.it', '*.big.example']}")
    assert severity(rules, sender="Boss@Shop.SE") is Severity.L2
    assert severity(rules, sender="other@shop.se") is Severity.L4
    assert severity(rules, sender="anna@vip.it") is Severity.L2
    assert severity(rules, sender="anna@eu.vip.it") is Severity.L4
    assert severity(rules, sender="x@eu.big.example") is Severity.L2
    assert severity(rules, sender="x@big.example") is Severity.L4
    assert severity(rules, sender="x@notbig.example") is Severity.L4
    assert severity(rules, sender="") is Severity.L4


def test_plan_and_language_matchers() -> None:
    rules = one_rule("{plan: pro, language: [sv, it]}")
    assert severity(rules, plan="pro", language="sv") is Severity.L2
    assert severity(rules, plan="pro", language="it") is Severity.L2
    assert severity(rules, plan="pro", language="en") is Severity.L4
    assert severity(rules, plan="core", language="sv") is Severity.L4
    assert run(rules, plan="pro", language="sv").hits[0] == (
        "severity L2 by rule 'r' (plan pro; language sv)"
    )


def test_has_attachment_matcher() -> None:
    yes = one_rule("{has_attachment: true}")
    no = one_rule("{has_attachment: false}")
    assert severity(yes, has_attachment=True) is Severity.L2
    assert severity(yes, has_attachment=False) is Severity.L4
    assert severity(no, has_attachment=False) is Severity.L2
    assert severity(no, has_attachment=True) is Severity.L4


def test_outside_hours_takes_a_boolean_or_a_callable_called_at_most_once() -> None:
    rules = rules_with(
        "rules:\n"
        "  - name: night\n"
        "    when: {outside_hours: true, any_text: {en: [down]}}\n"
        "    set: {urgent: true}\n"
        "  - name: day\n"
        "    when: {outside_hours: false}\n"
        "    set: {severity: L3}\n"
    )
    assert run(rules, "down", outside_hours=True).urgent is True
    assert run(rules, "down", outside_hours=False).urgent is False
    calls: list[int] = []

    def night() -> bool:
        calls.append(1)
        return True

    result = run(rules, "down", outside_hours=night)
    assert (result.urgent, result.severity) == (True, Severity.L4)
    assert calls == [1]
    assert "outside office hours" in result.hits[0]


def test_outside_hours_callable_is_not_called_when_no_rule_needs_it() -> None:
    rules = one_rule("{any_text: {en: [down]}}")

    def boom() -> bool:
        raise AssertionError("called")

    assert severity(rules, "down", outside_hours=boom) is Severity.L2


def test_all_matchers_of_a_rule_must_match() -> None:
    rules = one_rule("{plan: [pro], any_text: {en: [down]}, has_attachment: true}")
    assert severity(rules, "down", plan="pro", has_attachment=True) is Severity.L2
    assert severity(rules, "down", plan="core", has_attachment=True) is Severity.L4
    assert severity(rules, "up", plan="pro", has_attachment=True) is Severity.L4
    assert severity(rules, "down", plan="pro", has_attachment=False) is Severity.L4


# -- loader errors -----------------------------------------------------------------------


def full_text(section: str) -> str:
    return BASE + "classification:\n" + textwrap.indent(section, "  ")


def at(section: str, needle: str, offset: int = 0) -> str:
    """``rules.yaml:line:col`` of the first ``needle`` (plus ``offset`` columns)."""
    for number, line in enumerate(full_text(section).splitlines(), start=1):
        if needle in line:
            return f"rules.yaml:{number}:{line.index(needle) + 1 + offset}"
    raise AssertionError(f"{needle!r} not in text")


def rule(when: str, sets: str = "{urgent: true}", key: str = "when") -> str:
    return f"rules:\n  - name: r\n    {key}: {when}\n    set: {sets}\n"


def test_bad_regex_is_a_load_error_with_position_and_path() -> None:
    section = rule("{subject_regex: ['ok', '(unclosed']}")
    assert problems(section) == [
        f"{at(section, '(unclosed', -1)}: classification.rules[0].when.subject_regex[1]: "
        "bad regular expression '(unclosed': missing ), unterminated subpattern at position 0"
    ]


def test_bad_header_regex_names_the_header() -> None:
    section = rule("{header: {X-Priority: '[1'}}")
    assert problems(section) == [
        f"{at(section, '[1', -1)}: classification.rules[0].when.header.X-Priority: "
        "bad regular expression '[1': unterminated character set at position 0"
    ]


def test_unknown_plan_is_a_load_error_with_suggestion() -> None:
    section = rule("{plan: [core, proo]}")
    assert problems(section) == [
        f"{at(section, 'proo')}: classification.rules[0].when.plan[1]: "
        "unknown plan 'proo' — did you mean 'pro'?"
    ]


def test_unknown_plan_in_unless_written_as_a_single_word() -> None:
    section = rule("{plan: coer}", key="unless")
    assert problems(section) == [
        f"{at(section, 'coer')}: classification.rules[0].unless.plan[0]: "
        "unknown plan 'coer' — did you mean 'core'?"
    ]


def test_unknown_matcher_key_is_a_load_error_with_suggestion() -> None:
    section = rule("{subjet: {en: [x]}}")
    assert problems(section) == [
        f"{at(section, 'subjet')}: classification.rules[0].when.subjet: "
        "unknown key 'subjet' — did you mean 'subject'?"
    ]


def test_set_needs_something_and_severity_is_checked() -> None:
    section = "rules:\n  - name: r\n    set: {}\n"
    assert problems(section) == [
        f"{at(section, '{}')}: classification.rules[0].set: "
        "set needs severity (L1..L4), urgent (true/false), category, or several"
    ]
    section = "rules:\n  - name: r\n    set: {severity: L5}\n"
    found = problems(section)
    assert len(found) == 1
    assert found[0].startswith(f"{at(section, 'L5')}: classification.rules[0].set.severity: ")
    assert "'L1', 'L2', 'L3' or 'L4'" in found[0]


def test_languages_of_keywords_are_checked() -> None:
    section = rule("{any_text: {sw: [nere]}}")
    assert problems(section) == [
        f"{at(section, 'sw:')}: classification.rules[0].when.any_text.sw: "
        "unknown language 'sw' — did you mean 'sv'? (known: en, sv, it, de, all)"
    ]
    section = rule("{any_text: {de: [kaputt]}}")
    assert problems(section) == [
        f"{at(section, '[kaputt]')}: classification.rules[0].when.any_text.de: "
        "keyword language 'de' is not in languages (en, sv, it)"
    ]
    section = rule("{language: [svv]}")
    assert problems(section) == [
        f"{at(section, 'svv')}: classification.rules[0].when.language[0]: "
        "unknown language 'svv' — did you mean 'sv'?"
    ]


def test_rule_names_are_unique_and_well_formed() -> None:
    section = (
        "rules:\n"
        "  - name: a\n    set: {urgent: true}\n"
        "  - name: b\n    set: {urgent: true}\n"
        "  - name: a\n    set: {urgent: false}\n"
        "  - name: 'two words'\n    set: {urgent: false}\n"
    )
    line_of_second_a = at(section, "name: b").split(":")[1]
    assert problems(section) == [
        f"rules.yaml:{int(line_of_second_a) + 2}:13: classification.rules[2].name: "
        "rule name 'a' is already used by rules[0]",
        f"{at(section, 'two words', -1)}: classification.rules[3].name: 'two words': a rule name "
        "is 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
    ]


def test_bad_sender_and_empty_keyword_are_reported_alone() -> None:
    section = rule("{sender: ['@no domain'], any_text: {en: ['!!']}}")
    assert problems(section) == [
        f"{at(section, '@no', -1)}: classification.rules[0].when.sender[0]: '@no domain' is "
        "neither an address ('a@b.se'), a domain ('@b.se') nor subdomains ('*.b.se')",
        f"{at(section, '!!', -1)}: classification.rules[0].when.any_text.en[0]: "
        "keyword '!!' needs letters or digits",
    ]


def test_empty_lists_are_errors() -> None:
    section = rule("{plan: [], subject: {en: []}}")
    assert problems(section) == [
        f"{at(section, '[]')}: classification.rules[0].when.plan: needs at least 1 item",
        f"{at(section, '[]}')}: classification.rules[0].when.subject.en: needs at least 1 item",
    ]


def test_rules_built_in_python_are_cross_checked() -> None:
    rules = rules_with("rules:\n  - name: r\n    when: {plan: pro}\n    set: {urgent: true}\n")
    data = rules.model_dump()
    data["classification"]["rules"][0]["when"]["plan"] = ("gold",)
    with pytest.raises(ValueError, match="unknown plan 'gold'"):
        Rules.model_validate(data)


def test_a_priority_header_reaches_a_header_rule_through_the_parser() -> None:
    from mailbot.ingest.parse import parse_message
    from mailbot.rules.loader import parse_rules as load

    raw = (
        b"From: a@shop.example\r\nTo: support@example.com\r\nSubject: Question\r\n"
        b"Message-ID: <p1@shop.example>\r\nX-Priority: 1 (Highest)\r\nImportance: high\r\n\r\n"
        b"Something small.\r\n"
    )
    msg = parse_message(raw)
    assert msg.header("x-priority") == "1 (Highest)" and msg.header("importance") == "high"
    rules = load(
        "version: 1\nidentity: {address: s@e.com, name: S}\ntimezone: Europe/Stockholm\n"
        "plans: {core: {name: C, first_response: {hours: 4}}}\ndefault_plan: core\n"
        "classification:\n  rules:\n    - name: flagged-urgent\n"
        "      when: {header: {x-priority: '^1'}}\n      set: {urgent: true}\n",
        "r.yaml",
    )
    result = classify(
        rules,
        subject=msg.subject,
        text=msg.text,
        sender="a@shop.example",
        language="en",
        plan="core",
        headers=msg.headers,
    )
    assert result.urgent is True


def test_a_rule_can_set_the_category_and_it_must_be_a_billing_category() -> None:
    section = (
        "rules:\n"
        "  - name: hosting\n"
        "    when: {any_text: {all: [hosting, database connection]}}\n"
        "    set: {category: configuration}\n"
        "  - name: typo\n"
        "    when: {any_text: {all: [training]}}\n"
        "    set: {category: trainig}\n"
    )
    found = problems(section)
    assert len(found) == 1
    assert "classification.rules[1].set.category: unknown category 'trainig'" in found[0]
    assert "did you mean 'training'?" in found[0]


def test_the_first_matching_category_wins_independently_of_severity() -> None:
    rules = rules_with(
        "rules:\n"
        "  - name: down\n"
        "    when: {any_text: {all: [site is down]}}\n"
        "    set: {severity: L1}\n"
        "  - name: hosting\n"
        "    when: {any_text: {all: [database connection]}}\n"
        "    set: {category: configuration}\n"
        "  - name: bug\n"
        "    when: {any_text: {all: [database]}}\n"
        "    set: {category: bug}\n"
    )
    result = run(rules, "Help", "The site is down: database connection refused.")
    assert (result.severity, result.category) == (Severity.L1, "configuration")
    assert any("category configuration by rule 'hosting'" in hit for hit in result.hits)
    assert run(rules, "Question", "How do I export orders?").category is None


def _first_needle_by_hand(
    msg: classify_module._Message,
    needles: tuple[classify_module.Needle, ...],
    where: tuple[tuple[str, classify_module._Words], ...],
) -> str | None:
    """The definition: every needle in order, every place in order; the first found."""
    for needle in needles:
        if not msg.wants(needle):
            continue
        for place, found in where:
            if found.contains(needle):
                return f"{place}, {needle.language}: {needle.text!r}"
    return None


@pytest.mark.parametrize(
    "rules_file",
    ["rules.yaml", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/*/rules.yaml"))],
)
def test_the_anchor_index_finds_what_every_needle_in_order_would(rules_file: str) -> None:
    """_keywords skips needles whose anchor word the text lacks: never a different answer
    than trying them all, on texts made of the rules' own keywords and other words."""
    import random

    rules = load_rules(ROOT / rules_file)
    lists = [
        needles
        for rule in rules.classification.rules
        for when in (rule.when, rule.unless)
        if when is not None
        for needles in (when.subject_needles, when.body_needles, when.any_needles)
        if needles
    ]
    assert lists, f"{rules_file} has no keyword lists"
    vocabulary = [n.text for needles in lists for n in needles] + [
        "the", "order", "fails", "och", "non", "funziona", "error", "...", "urgent", "kassan",
    ]  # fmt: skip
    rng = random.Random(11)
    for _ in range(300):
        subject = " ".join(rng.choice(vocabulary) for _ in range(rng.randrange(0, 4)))
        body = " ".join(rng.choice(vocabulary) for _ in range(rng.randrange(0, 12)))
        msg = classify_module._Message(
            subject=subject,
            text=body,
            sender="a@shop.example",
            language=rng.choice(["en", "sv", "it", "de"]),
            plan="core",
            headers=(),
            has_attachment=False,
            outside_hours_source=False,
            all_languages=rng.random() < 0.3,
        )
        places = (
            (("subject", msg.subject_words),),
            (("body", msg.body_words),),
            (("subject", msg.subject_words), ("body", msg.body_words)),
        )
        for needles in lists:
            for where in places:
                expected = _first_needle_by_hand(msg, needles, where)
                assert classify_module._keywords(msg, needles, where) == expected
