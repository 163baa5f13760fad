"""rules.yaml: a good file loads; every problem names file:line:col, the field and a hint."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from pydantic import ValidationError

from mailbot.domain import ReplyKind
from mailbot.errors import ConfigError, RulesError
from mailbot.outbound.render import TemplateRenderer
from mailbot.rules.deadline import format_deadline, promise_text
from mailbot.rules.loader import load_rules, parse_rules
from mailbot.rules.schema import Rules

ROOT = Path(__file__).resolve().parents[2]

GOOD = textwrap.dedent(
    """\
    version: 1
    identity:
      address: Support@Example.COM
      name: Example Support
    timezone: Europe/Stockholm
    plans:
      core:
        name: Core
        first_response: {working_days: 3}
        howto: wiki
      pro:
        name: Pro
        priority: 20
        first_response: {working_hours: 8}
    default_plan: core
    customers:
      - match: "@shop.se"
        plan: pro
      - match: anna@shop.se
        plan: pro
        name: Anna
        language: sv
    """
)


def problems(text: str, source: str = "rules.yaml") -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(text, source)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def where(text: str, needle: str, offset: int = 0) -> str:
    """``line:col`` (1-based) of the first occurrence of ``needle`` plus ``offset`` columns."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return f"{number}:{line.index(needle) + 1 + offset}"
    raise AssertionError(f"{needle!r} not in text")


def test_good_file_loads_with_defaults() -> None:
    rules = parse_rules(GOOD, "rules.yaml")
    assert rules.version == 1
    assert rules.identity.address == "Support@example.com"
    assert rules.identity.domains == ("example.com",)
    assert rules.identity.ticket_prefix == ""
    assert rules.identity.token(1042) == "[#1042]"
    assert rules.languages == ("en", "sv", "it")
    assert rules.default_language == "en"
    assert (rules.office_hours.opens, rules.office_hours.closes) == (time(8), time(17))
    assert rules.templates[ReplyKind.ACK] == "ack"
    assert rules.templates.wiki == "wiki"
    assert rules.plans["pro"].first_response.kind == "working_hours"
    assert rules.plans["pro"].first_response.amount == 8
    assert rules.plans["core"].howto == "wiki"
    assert rules.plans["pro"].howto == "acknowledge"
    assert rules.customers[0].match == "@shop.se"
    assert rules.tz.key == "Europe/Stockholm"


def test_rules_are_frozen() -> None:
    rules = parse_rules(GOOD, "rules.yaml")
    with pytest.raises(ValidationError):
        rules.default_plan = "pro"


def test_unknown_plan_names_line_column_path_and_suggestion() -> None:
    text = GOOD.replace("plan: pro\n    name: Anna", "plan: prp\n    name: Anna")
    col = where(text, "plan: prp", offset=len("plan: "))
    assert problems(text) == [
        f"rules.yaml:{col}: customers[1].plan: unknown plan 'prp' — did you mean 'pro'?"
    ]


def test_unknown_key_points_at_the_key_with_suggestion() -> None:
    text = GOOD.replace("priority: 20", "priorty: 20")
    assert problems(text) == [
        f"rules.yaml:{where(text, 'priorty')}: plans.pro.priorty: unknown key 'priorty'"
        " — did you mean 'priority'?"
    ]


def test_unknown_top_level_key() -> None:
    text = GOOD + "custmers: []\n"
    (problem,) = problems(text)
    assert problem.startswith(f"rules.yaml:{where(text, 'custmers')}: custmers: unknown key")
    assert "did you mean 'customers'?" in problem


def test_missing_key_points_at_its_mapping() -> None:
    text = GOOD.replace("  name: Example Support\n", "")
    assert problems(text) == [
        f"rules.yaml:{where(text, 'address: Support')}: identity.name: required key is missing"
    ]


def test_bad_timezone_suggests_the_right_one() -> None:
    text = GOOD.replace("Europe/Stockholm", "Europe/Stokholm")
    col = where(text, "Europe/Stokholm")
    assert problems(text) == [
        f"rules.yaml:{col}: timezone: unknown timezone 'Europe/Stokholm'"
        " — did you mean 'Europe/Stockholm'?"
    ]


def test_unknown_and_undeclared_languages() -> None:
    text = GOOD.replace("version: 1\n", "version: 1\nlanguages: [en, sw]\n")
    text = text.replace("language: sv", "language: it")
    found = problems(text)
    assert found == [
        f"rules.yaml:{where(text, 'sw]')}: languages[1]: unknown language 'sw'"
        " — did you mean 'sv'? (known: en, sv, it, de)",
        f"rules.yaml:{where(text, 'language: it', offset=10)}: customers[1].language:"
        " language 'it' is not in languages (en)",
    ]


def test_no_stays_a_string_not_a_boolean() -> None:
    # YAML 1.1 would read `no` (Norwegian) as False; our loader keeps it a word.
    text = GOOD.replace("version: 1\n", "version: 1\nlanguages: [en, sv, no]\n")
    (problem,) = problems(text)
    assert "languages[2]: unknown language 'no'" in problem


def test_office_hours_stay_text() -> None:
    rules = parse_rules(GOOD + "office_hours: 07:30-16:00\n", "rules.yaml")
    assert (rules.office_hours.opens, rules.office_hours.closes) == (time(7, 30), time(16))
    text = GOOD + 'office_hours: "17:00-08:00"\n'
    (problem,) = problems(text)
    assert "office_hours: office hours must open before they close" in problem


def test_first_response_needs_exactly_one_kind() -> None:
    text = GOOD.replace("{working_days: 3}", "{working_days: 3, hours: 4}")
    (problem,) = problems(text)
    assert problem.startswith(f"rules.yaml:{where(text, '{working_days')}:")
    assert "plans.core.first_response: give exactly one of hours, working_hours" in problem


def test_howto_literal_with_suggestion() -> None:
    text = GOOD.replace("howto: wiki", "howto: wikki")
    (problem,) = problems(text)
    assert f"{where(text, 'wikki')}: plans.core.howto:" in problem
    assert problem.endswith("did you mean 'wiki'?")


def test_template_kind_and_name_are_checked() -> None:
    text = GOOD + "templates:\n  acknowledgement: ack\n  wiki: ../etc\n"
    found = problems(text)
    assert len(found) == 2
    assert f"{where(text, 'acknowledgement')}: templates.acknowledgement: unknown key" in found[0]
    assert "templates.wiki: a template name is lower-case letters" in found[1]


def test_template_defaults_are_kept_when_one_is_given() -> None:
    rules = parse_rules(GOOD + "templates:\n  wiki: howto\n", "rules.yaml")
    assert (rules.templates.ack, rules.templates.wiki) == ("ack", "howto")
    assert rules.templates.names() == ("ack", "howto", "out_of_scope", "training")
    # Only the ones in use are required in every language: no action table, no others.
    assert rules.reply_template_names() == ("ack", "howto")


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    text = GOOD.replace("    priority: 20\n", "    priority: 20\n    priority: 30\n")
    first = where(text, "priority: 20").split(":")[0]
    assert problems(text) == [
        f"rules.yaml:{where(text, 'priority: 30')}: plans.pro.priority: duplicate key"
        f" 'priority' (first at line {first})"
    ]


def test_duplicate_customer_rule() -> None:
    text = GOOD + '  - match: "@Shop.se"\n    plan: core\n'
    quoted = where(text, '"@Shop.se"')
    assert problems(text) == [
        f"rules.yaml:{quoted}: customers[2].match: '@shop.se' is already matched by customers[0]"
    ]


def test_all_problems_are_listed_in_line_order() -> None:
    text = (
        GOOD.replace("Europe/Stockholm", "Mars/Olympus")
        .replace("priority: 20", "priority: high")
        .replace('"@shop.se"', '"shop.se"')
        .replace("plan: pro\n    name: Anna", "plan: gold\n    name: Anna")
    )
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == [
        "timezone",
        "plans.pro.priority",
        "customers[0].match",
        "customers[1].plan",
    ]
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)


def test_yaml_syntax_error_names_file_line_column() -> None:
    text = GOOD.replace("  name: Example Support", "  name: [Example Support")
    (problem,) = problems(text, "conf/rules.yaml")
    assert problem.startswith("conf/rules.yaml:")
    assert "YAML syntax error" in problem
    line = int(problem.split(":")[1])
    assert line >= int(where(text, "[Example").split(":")[0])


def test_empty_and_non_mapping_files() -> None:
    assert problems("") == ["rules.yaml:1:1: the rules file is empty"]
    (problem,) = problems("- a\n- b\n")
    assert problem.startswith("rules.yaml:1:1: (top level): the rules file must be a mapping")


def test_merge_keys_work_and_own_keys_override() -> None:
    text = GOOD.replace(
        "  core:\n    name: Core\n",
        "  core: &base\n    name: Core\n",
    ).replace("    name: Pro\n", "    <<: *base\n    name: Pro\n")
    rules = parse_rules(text, "rules.yaml")
    assert rules.plans["pro"].name == "Pro"
    assert rules.plans["pro"].first_response.kind == "working_hours"
    assert rules.plans["pro"].howto == "wiki"


def test_rules_built_in_python_are_cross_checked() -> None:
    data = {
        "version": 1,
        "identity": {"address": "support@example.com", "name": "S"},
        "timezone": "UTC",
        "plans": {"core": {"name": "Core", "first_response": {"hours": 4}}},
        "default_plan": "cor",
    }
    with pytest.raises(ValidationError) as info:
        Rules.model_validate(data)
    (error,) = info.value.errors()
    assert error["loc"] == ("default_plan",)
    assert error["msg"] == "unknown plan 'cor' — did you mean 'core'?"


def test_load_rules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD.replace("plan: pro\n    name: Anna", "plan: x\n    name: Anna"))
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.problems[0].startswith(f"{path}:")
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


# -- the shipped rules.yaml and templates ------------------------------------------------


def test_shipped_rules_yaml_loads() -> None:
    rules = load_rules(ROOT / "rules.yaml")
    assert set(rules.plans) == {"core", "pro", "ultimate"}
    assert rules.plans["core"].first_response.working_days == 3
    assert rules.plans["ultimate"].first_response.hours == 4
    assert rules.plans["ultimate"].priority > rules.plans["pro"].priority
    assert rules.plans["pro"].priority > rules.plans["core"].priority
    assert rules.plans["core"].howto == "wiki"
    assert rules.timezone == "Europe/Stockholm"
    assert {a.language for a in rules.wiki} == {"en", "sv", "it"}


def test_every_shipped_template_validates_and_renders() -> None:
    rules = load_rules(ROOT / "rules.yaml")
    renderer = TemplateRenderer(ROOT / "templates", default_language=rules.default_language)
    renderer.validate(rules.templates.names(), rules.languages)
    for language in rules.languages:
        for kind in ReplyKind:
            plan = rules.plans["core"]
            context = {
                "ticket_ref": "#1042",
                "ticket_token": "[#1042]",
                "subject": "Frakt",
                "customer_name": "",
                "plan_name": plan.name,
                "promise": promise_text(plan, language),
                "deadline_text": format_deadline(
                    datetime(2026, 11, 26, 9, tzinfo=UTC), rules.tz, language
                ),
                "support_name": rules.identity.name,
                "support_address": rules.identity.address,
                "articles": [{"title": "Frakt", "url": "https://docs.example.com/frakt"}],
                "paid_option": "Paid support: 60 EUR an hour.",
            }
            out = renderer.render(rules.templates[kind], language, context)
            assert out.subject == "Re: Frakt"
            assert "#1042" in out.text
            assert out.html is not None and "#1042" in out.html
            assert promise_text(plan, language) in out.text
            if kind in (ReplyKind.WIKI, ReplyKind.TRAINING):
                assert "https://docs.example.com/frakt" in out.text
            if kind in (ReplyKind.OUT_OF_SCOPE, ReplyKind.TRAINING):
                assert "Paid support: 60 EUR an hour." in out.text
                assert "Paid support: 60 EUR an hour." in out.html
            if kind is not ReplyKind.WIKI:
                assert "[#1042]" in out.text


def test_validate_names_the_missing_template(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "ack.subject.j2").write_text("Re: {{ subject }}\n")
    renderer = TemplateRenderer(tmp_path)
    with pytest.raises(ConfigError) as info:
        renderer.validate(["ack"], ["en"])
    assert str(tmp_path / "en" / "ack.txt.j2") in str(info.value)


def test_shape_errors_are_in_plain_words() -> None:
    text = (
        GOOD.replace("{working_hours: 8}", "{working_hours: eight}")
        .replace("customers:\n", "customers: {a: b}\nwiki: []\nlanguages: []\n")
        .replace('  - match: "@shop.se"\n    plan: pro\n', "")
        .replace("  - match: anna@shop.se\n    plan: pro\n    name: Anna\n    language: sv\n", "")
    )
    assert problems(text) == [
        "rules.yaml:1:1: default_language: default_language 'en' is not in languages ()",
        f"rules.yaml:{where(text, 'eight')}: plans.pro.first_response.working_hours:"
        " expected a whole number",
        f"rules.yaml:{where(text, '{a: b}')}: customers: expected a list",
        f"rules.yaml:{where(text, 'languages: []', 11)}: languages: needs at least 1 item",
    ]


def test_an_impossible_date_is_a_rules_error_with_its_position() -> None:
    text = (
        "version: 1\nidentity: {address: s@e.com, name: S}\ntimezone: Europe/Stockholm\n"
        "plans: {core: {name: C, first_response: {hours: 4}}}\ndefault_plan: core\n"
        "calendars:\n  office:\n    closed: [2026-02-30]\n"
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text, "r.yaml")
    assert any(
        p.startswith("r.yaml:8:14: calendars.office.closed[0]: day is out of range")
        for p in info.value.problems
    ), info.value.problems
