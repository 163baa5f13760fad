"""``mailbot check``'s warnings: every class with its exact text, and none for a clean file."""

from __future__ import annotations

import json
import textwrap
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailbot.rules.classify import classify
from mailbot.rules.json_schema import REGENERATE, rules_json_schema, schema_text
from mailbot.rules.lint import RulesWarning, format_warnings, lint, templates_in_use
from mailbot.rules.loader import _RulesLoader, load_rules, parse_rules

ROOT = Path(__file__).resolve().parents[2]

CLEAN = textwrap.dedent(
    """\
    version: 1
    identity: {address: support@example.com, name: Example Support}
    timezone: Europe/Stockholm
    languages: [en, sv, it]
    plans:
      core:
        name: Core
        first_response: {working_days: 3}
        howto: wiki
      pro:
        name: Pro
        first_response: {working_hours: 8}
    default_plan: core
    customers:
      - {match: "@shop.se", plan: pro}
      - {match: anna@shop.se, plan: pro, name: Anna, language: sv}
    wiki:
      - {title: Password, url: "https://d.example.com/1", language: en, keywords: [password]}
      - {title: Lösenord, url: "https://d.example.com/2", language: sv, keywords: [lösenord]}
      - {title: Password, url: "https://d.example.com/3", language: it, keywords: [password]}
    agents:
      maria: {name: Maria, addresses: [maria@example.com], team: support}
    teams:
      support: {name: Support}
    """
)


def warnings(text: str, templates: Path | None = None) -> list[str]:
    rules = parse_rules(text, "rules.yaml")
    return format_warnings(lint(rules, templates), text, "rules.yaml")


def with_rules(*rules: str, mode: str = "all") -> str:
    """CLEAN with a classification section holding ``rules`` (YAML flow mappings)."""
    lines = "".join(f"    - {rule}\n" for rule in rules)
    return CLEAN + f"classification:\n  keyword_languages: {mode}\n  rules:\n{lines}"


# -- no warnings -----------------------------------------------------------------------


def test_a_clean_file_gives_none() -> None:
    assert warnings(CLEAN) == []
    assert warnings(CLEAN, ROOT / "templates") == []
    assert lint(parse_rules(CLEAN, "rules.yaml"), None) == []


def test_the_shipped_rules_yaml_gives_none() -> None:
    rules = load_rules(ROOT / "rules.yaml")
    assert lint(rules, ROOT / "templates") == []


def test_a_warning_is_a_field_path_and_a_text() -> None:
    found = RulesWarning(("customers", 2, "match"), "text")
    assert (found.path, str(found)) == ("customers[2].match", "customers[2].match: text")


# -- classification rules that can never match -----------------------------------------


def test_a_rule_on_a_plan_nobody_is_on() -> None:
    text = with_rules("{name: vip, when: {plan: [gold]}, set: {urgent: true}}").replace(
        "default_plan: core", "  gold: {name: Gold, first_response: {hours: 2}}\ndefault_plan: core"
    )
    assert warnings(text) == [
        "warning: rules.yaml:13:3: plans.gold: no customer is on plan 'gold'"
        " and it is not the default_plan",
        "warning: rules.yaml:29:32: classification.rules[0].when.plan: rule 'vip' can never"
        " match: no customer is on plan 'gold' and it is not the default_plan",
    ]


def test_a_rule_on_several_plans_nobody_is_on() -> None:
    plans = (
        "  gold: {name: Gold, first_response: {hours: 2}}\n"
        "  silver: {name: Silver, first_response: {hours: 3}}\n"
    )
    text = with_rules("{name: vip, when: {plan: [gold, silver]}, set: {urgent: true}}")
    text = text.replace("default_plan: core", plans + "default_plan: core")
    assert [w for w in warnings(text) if "rules[0]" in w] == [
        "warning: rules.yaml:30:32: classification.rules[0].when.plan: rule 'vip' can never"
        " match: no customer is on plans 'gold' or 'silver' and none of them is the"
        " default_plan",
    ]


def test_a_rule_whose_senders_are_on_another_plan() -> None:
    text = with_rules(
        "{name: shop-core, when: {sender: ['@shop.se', '*.shop.se'], plan: [core]},"
        " set: {urgent: true}}"
    )
    # @shop.se is on pro; other subdomains of shop.se fall to the default plan, core.
    assert warnings(text) == []
    text = text.replace("'@shop.se', '*.shop.se'", "'@shop.se', anna@shop.se")
    assert warnings(text) == [
        "warning: rules.yaml:28:74: classification.rules[0].when.plan: rule 'shop-core' can"
        " never match: its senders are on plan 'pro', not 'core'",
    ]


def test_a_rule_whose_senders_always_get_another_language() -> None:
    text = with_rules(
        "{name: anna-en, when: {sender: anna@shop.se, language: en}, set: {urgent: true}}"
    )
    assert warnings(text) == [
        "warning: rules.yaml:28:62: classification.rules[0].when.language: rule 'anna-en' can"
        " never match: its senders are always answered in 'sv' (set by their customer"
        " entries), not 'en'",
    ]


def test_a_rule_whose_plans_customers_always_get_another_language() -> None:
    text = with_rules("{name: pro-it, when: {plan: [pro], language: [it]}, set: {urgent: true}}")
    assert warnings(text) == []  # most of @shop.se is detected: Italian is possible
    text = text.replace("plan: pro}", "plan: pro, language: en}")
    assert warnings(text) == [
        "warning: rules.yaml:28:52: classification.rules[0].when.language: rule 'pro-it' can"
        " never match: the customers on plan 'pro' are always answered in 'en' or 'sv' (set"
        " by their customer entries), not 'it'",
    ]


def test_an_empty_unless_and_an_unless_that_repeats_when() -> None:
    text = with_rules(
        "{name: a, when: {any_text: {en: [down]}}, unless: {}, set: {urgent: true}}",
        "{name: b, when: {any_text: {en: [down]}, has_attachment: true},"
        " unless: {has_attachment: true}, set: {severity: L2}}",
        "{name: c, when: {any_text: {en: [down]}}, unless: {any_text: {en: [not down]}},"
        " set: {severity: L1}}",
    )
    assert warnings(text) == [
        "warning: rules.yaml:28:57: classification.rules[0].unless: rule 'a' can never match:"
        " its unless is empty, and an empty unless matches every message",
        "warning: rules.yaml:29:79: classification.rules[1].unless: rule 'b' can never match:"
        " its unless repeats has_attachment of its when, so it matches whenever when does",
    ]


def test_keywords_message_mode_never_tries() -> None:
    text = with_rules(
        "{name: nere, when: {language: [sv], any_text: {it: [nere]}}, set: {severity: L1}}",
        "{name: ner, when: {language: [sv], any_text: {sv: [nere], it: [giu], all: [down]}},"
        " set: {severity: L1}}",
        mode="message",
    )
    assert warnings(text) == [
        "warning: rules.yaml:28:53: classification.rules[0].when.any_text: rule 'nere' can"
        " never match: with keyword_languages: message only keywords in 'sv' are tried on"
        " its messages, and its any_text keywords are in 'it'",
        "warning: rules.yaml:29:69: classification.rules[1].when.any_text.it: never tried:"
        " with keyword_languages: message rule 'ner' only tries keywords in 'sv'",
    ]
    assert warnings(text.replace("keyword_languages: message", "keyword_languages: all")) == []


def test_a_keyword_matching_cannot_see() -> None:
    text = with_rules(
        "{name: ru, when: {any_text: {all: [сайт не работает, сайт ... down]}},"
        " set: {severity: L1}}"
    )
    assert warnings(text) == [
        "warning: rules.yaml:28:42: classification.rules[0].when.any_text.all[0]: keyword"
        " 'сайт не работает' can never match: matching sees only the letters a-z and digits"
        " (accents removed), and it has none",
        "warning: rules.yaml:28:60: classification.rules[0].when.any_text.all[1]: keyword"
        " 'сайт ... down' can never match: matching sees only the letters a-z and digits"
        " (accents removed), and its part before '...' has none",
    ]
    # What classification makes of them: no match, whatever the text.
    rules = parse_rules(text, "rules.yaml")
    hit = classify(rules, subject="сайт не работает", text="сайт не down", sender="a@b.se",
                   language="en", plan="core")  # fmt: skip
    assert hit.hits == ("severity L4 by default (no rule matched)",
                        "not urgent by default (no rule matched)")  # fmt: skip


def test_a_rule_after_rules_that_match_everything() -> None:
    text = with_rules(
        "{name: everyone-l3, set: {severity: L3}}",
        "{name: everyone-calm, set: {urgent: false}}",
        "{name: outage, when: {any_text: {en: [down]}}, set: {severity: L1, urgent: true}}",
        "{name: outage-bug, when: {any_text: {en: [down]}}, set: {severity: L1, category: bug}}",
    )
    assert warnings(text) == [
        "warning: rules.yaml:30:59: classification.rules[2].set: rule 'outage' never decides"
        " anything: rules 'everyone-l3' and 'everyone-calm' before it match every message and"
        " already set severity and urgent",
    ]
    one = with_rules("{name: all-l3, set: {severity: L3}}", "{name: l1, set: {severity: L1}}")
    assert warnings(one) == [
        "warning: rules.yaml:29:23: classification.rules[1].set: rule 'l1' never decides"
        " anything: rule 'all-l3' before it matches every message and already sets severity",
    ]


# -- customers -------------------------------------------------------------------------


def test_an_address_inside_a_domain_on_another_plan() -> None:
    text = CLEAN.replace("{match: anna@shop.se, plan: pro,", "{match: anna@shop.se, plan: core,")
    assert warnings(text) == [
        "warning: rules.yaml:16:13: customers[1].match: 'anna@shop.se' is inside customers[0]"
        " ('@shop.se', plan 'pro') and gives plan 'core' instead; if that is meant, name the"
        " same account in both",
    ]
    # One organisation, one person on a better plan: said with the same account.
    accounts = "accounts:\n  shop: {name: Shop AB}\n"
    same = text.replace("plan: pro}", "plan: pro, account: shop}").replace(
        "language: sv}", "language: sv, account: shop}"
    )
    assert warnings(same + accounts) == []


def test_overlapping_domains_on_different_plans() -> None:
    text = CLEAN.replace(
        "customers:\n",
        'customers:\n  - {match: "*.example.org", plan: pro}\n'
        '  - {match: "@eu.example.org", plan: core, name: EU}\n'
        '  - {match: "*.eu.example.org", plan: pro, name: EU}\n',
    )
    assert warnings(text) == [
        "warning: rules.yaml:16:13: customers[1].match: '@eu.example.org' is inside"
        " customers[0] ('*.example.org', plan 'pro') and gives plan 'core' instead; if that"
        " is meant, name the same account in both",
    ]


def test_an_entry_that_changes_nothing() -> None:
    text = (
        CLEAN.replace(
            "customers:\n",
            'customers:\n  - {match: "@x.se", plan: pro, account: x}\n'
            "  - {match: bo@x.se, plan: pro, account: x}\n",
        )
        + "accounts:\n  x: {name: X}\n"
    )
    assert warnings(text) == [
        "warning: rules.yaml:16:13: customers[1].match: 'bo@x.se' changes nothing:"
        " customers[0] ('@x.se') already gives it plan 'pro', the same name, language and"
        " account",
    ]


# -- plans, wiki, agents ---------------------------------------------------------------


def test_a_plan_nobody_is_on() -> None:
    text = CLEAN.replace("plan: pro}", "plan: core}").replace("plan: pro,", "plan: core,")
    assert warnings(text) == [
        "warning: rules.yaml:10:3: plans.pro: no customer is on plan 'pro' and it is not the"
        " default_plan",
    ]


def test_a_wiki_plan_whose_customers_write_a_language_without_articles() -> None:
    lines = CLEAN.splitlines(keepends=True)
    text = "".join(line for line in lines if "language: it" not in line)
    assert warnings(text) == [
        "warning: rules.yaml:9:12: plans.core.howto: plan 'core' answers how-to questions from"
        " the wiki, but no wiki article is in 'it': such questions are matched against the"
        " keywords of other languages",
    ]
    # pro's customers write Swedish only (fixed), and have articles in it.
    pro = text.replace("{working_hours: 8}\n", "{working_hours: 8}\n    howto: wiki\n")
    pro = pro.replace("plan: pro}", "plan: pro, language: sv}")
    assert [w for w in warnings(pro) if "plans.pro" in w] == []


def test_an_empty_wiki_and_a_wiki_nobody_uses() -> None:
    start = CLEAN.index("wiki:\n")
    empty = CLEAN[:start] + CLEAN[CLEAN.index("agents:") :]
    assert warnings(empty) == [
        "warning: rules.yaml:9:12: plans.core.howto: plan 'core' answers how-to questions"
        " from the wiki, but the wiki has no articles: they are only acknowledged",
    ]
    unused = CLEAN.replace("    howto: wiki\n", "")
    assert warnings(unused) == [
        "warning: rules.yaml:16:1: wiki: no plan answers how-to questions from the wiki"
        " (howto: wiki, or an action wiki or training_offer), so its 3 articles are never sent",
    ]


def test_a_wiki_keyword_matching_cannot_see() -> None:
    text = CLEAN.replace("keywords: [lösenord]", "keywords: [lösenord, '???']")
    assert warnings(text) == [
        "warning: rules.yaml:19:90: wiki[1].keywords[1]: keyword '???' can never match:"
        " matching sees only the letters a-z and digits (accents removed), and it has none",
    ]


def test_an_action_that_answers_from_the_wiki() -> None:
    text = CLEAN.replace("    howto: wiki\n", "")
    text += "actions:\n  - {name: pro-wiki, when: {plans: [pro], howto: true}, do: wiki}\n"
    assert warnings(text) == []
    # A training offer lists articles too: the wiki is in use.
    offer = text.replace("do: wiki}", "do: training_offer, after: 3}")
    assert warnings(offer) == []
    text = text.replace("language: it, keywords", "language: sv, keywords")
    assert warnings(text) == [
        "warning: rules.yaml:25:61: actions[0].do: plan 'pro' answers how-to questions from"
        " the wiki, but no wiki article is in 'it': such questions are matched against the"
        " keywords of other languages",
    ]


def test_an_agent_in_no_team() -> None:
    bo = "\n  bo: {name: Bo, addresses: [bo@example.com]}"
    text = CLEAN.replace("team: support}", "team: support}" + bo)
    assert warnings(text) == [
        "warning: rules.yaml:23:3: agents.bo: agent 'bo' is in no team: no team's tickets or"
        " notices reach them (teams: support)",
    ]
    no_teams = text[: text.index("teams:")].replace(", team: support", "")
    assert warnings(no_teams) == []


# -- templates -------------------------------------------------------------------------


def test_templates_in_use() -> None:
    rules = parse_rules(CLEAN + "templates: {wiki: howto}\n", "rules.yaml")
    in_use = templates_in_use(rules)
    assert {"ack", "howto", "relay", "notify", "agent_error", "timebank_low"} <= in_use
    assert {"reminder", "escalation"} <= in_use
    assert "wiki" not in in_use


def test_template_files_nothing_uses(tmp_path: Path) -> None:
    files = {
        "en/ack.subject.j2": "Re: {{ subject }}",
        "en/ack.txt.j2": '{% include "en/footer.txt.j2" %}{% include "shared/sign.j2" %}',
        "en/footer.txt.j2": "--",  # not a template name in use, but included: in use
        "shared/sign.j2": "Support",  # included
        "en/old.subject.j2": "old",
        "en/old.txt.j2": "old",
        "sv/old.txt.j2": "old",
        "de/ack.txt.j2": "Danke",
        "shared/unused.j2": "x",
        "en/.ack.txt.j2.swp": "editor",
        "README": "not a template",
    }
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body, encoding="utf-8")
    text = CLEAN + "templates: {ack: ack}\n"
    assert warnings(text, tmp_path) == [
        f"warning: rules.yaml:25:1: templates: template 'old' is used by no answer kind,"
        f" notice or rule: en/old.subject.j2, en/old.txt.j2, sv/old.txt.j2 in {tmp_path}",
        f"warning: rules.yaml:25:1: templates: de/ in {tmp_path} is not a language of these"
        " rules (languages, default_language, agents' languages): de/ack.txt.j2 never used",
        f"warning: rules.yaml:25:1: templates: shared/unused.j2 in {tmp_path} is not a"
        " template mailbot renders (<language>/<name>.subject|txt|html.j2) and no template in"
        " use includes it",
    ]
    # An agent writing German makes de/ a language of these rules.
    german = text.replace("team: support}", "team: support, language: de}")
    assert all("de/" not in w for w in warnings(german, tmp_path))


# -- the JSON Schema -------------------------------------------------------------------


def test_the_committed_schema_is_what_mailbot_schema_prints() -> None:
    committed = (ROOT / "rules.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), (
        f"rules.schema.json is out of date with the models: regenerate it with `{REGENERATE}`"
    )


def test_every_before_validator_is_described() -> None:
    schema = rules_json_schema(strict=True)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"] == "urn:mailbot:rules:1"
    assert schema["title"] == "mailbot rules.yaml (version 1)"
    assert "prefixItems" not in json.dumps(schema)


def test_the_shipped_rules_yaml_names_the_schema() -> None:
    first = (ROOT / "rules.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./rules.schema.json"


def _as_an_editor_reads(text: str) -> Any:
    """rules.yaml as a YAML 1.2 editor sees it: dates stay text, keys are text."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(plain(k)): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value.isoformat() if isinstance(value, date) else value

    return plain(yaml.load(text, Loader=_RulesLoader))  # a SafeLoader subclass


def test_the_schema_validates_the_shipped_rules_yaml() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "rules.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in (ROOT / "rules.yaml", *sorted(ROOT.glob("examples/*/rules.yaml"))):
        data = _as_an_editor_reads(path.read_text(encoding="utf-8"))
        assert [e.message for e in validator.iter_errors(data)] == [], path


def test_the_schema_accepts_the_short_forms_and_flags_typos() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(rules_json_schema())
    short = CLEAN + textwrap.dedent(
        """\
        office_hours: "08:00-16:00"
        calendars:
          office:
            weekdays: ["08:00-12:00", "13:00-17:00"]
            hours: {fri: "08:00-15:00", sat: []}
            half_days: {2026-12-23: "08:00-12:00"}
        billing:
          increment: 15m
          categories: {support: chargeable, bug: free, pm: {chargeable: true}}
          default_category: support
        classification:
          rules:
            - {name: a, when: {sender: "@shop.se", plan: pro, subject_regex: "down"}, set: {urgent: true}}
        """  # noqa: E501
    )
    parse_rules(short, "rules.yaml")  # the loader takes it ...
    assert list(validator.iter_errors(_as_an_editor_reads(short))) == []  # ... so does the schema
    typo = _as_an_editor_reads(CLEAN.replace("howto: wiki", "howtoo: wiki"))
    assert [e.message for e in validator.iter_errors(typo)] == [
        "Additional properties are not allowed ('howtoo' was unexpected)"
    ]
