"""rules.yaml calendars and sla blocks: shapes, defaults, and every error with file:line:col."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot.errors import RulesError
from mailbot.rules.deadline import first_response_deadline
from mailbot.rules.loader import load_rules, parse_rules
from mailbot.rules.schema import Rules

ROOT = Path(__file__).resolve().parents[2]
STHLM = ZoneInfo("Europe/Stockholm")

BASE = textwrap.dedent(
    """\
    version: 1
    identity: {address: support@example.com, name: Support}
    timezone: Europe/Stockholm
    default_plan: core
    """
)
PLAN = "plans:\n  core: {name: Core, first_response: {working_days: 3}}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.yaml")
    return info.value.problems


def where(text: str, needle: str) -> str:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return f"{number}:{line.index(needle) + 1}"
    raise AssertionError(f"{needle!r} not in text")


def sthlm(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=STHLM)


# (case, yaml after BASE, where the error points, field path and message)
ERRORS = [
    (
        "bad interval",
        'calendars:\n  office:\n    weekdays: "8-17"\n' + PLAN,
        '"8-17"',
        "calendars.office.weekdays[0]: opening hours must look like '08:00-17:00' (got '8-17')",
    ),
    (
        "overlap",
        'calendars:\n  office:\n    hours:\n      mon: ["08:00-12:00", "11:00-13:00"]\n' + PLAN,
        "[",
        "calendars.office.hours.mon: intervals '08:00-12:00' and '11:00-13:00' overlap",
    ),
    (
        "closes before it opens",
        'calendars:\n  office:\n    hours:\n      mon: ["08:00-12:00", "17:00-13:00"]\n' + PLAN,
        '"17:00-13:00"',
        "calendars.office.hours.mon[1]: '17:00-13:00' closes before it opens",
    ),
    (
        "unknown weekday",
        'calendars:\n  office:\n    hours: {mnd: "08:00-17:00"}\n' + PLAN,
        "mnd",
        "calendars.office.hours.mnd: unknown key 'mnd' — did you mean 'mon'?",
    ),
    (
        "unknown country",
        "calendars:\n  office:\n    holidays: {country: XX}\n" + PLAN,
        "XX",
        "calendars.office.holidays.country: no public holidays are known for country 'XX'",
    ),
    (
        "unknown subdivision",
        "calendars:\n  office:\n    holidays: {country: DE, subdivision: BX}\n" + PLAN,
        "BX",
        "calendars.office.holidays.subdivision: DE has no subdivision 'BX' — did you mean 'BY'?",
    ),
    (
        "unknown category",
        "calendars:\n  office:\n    holidays: {country: SE, categories: [defacto]}\n" + PLAN,
        "[defacto]",
        "calendars.office.holidays.categories: SE has no holiday category 'defacto'"
        " — did you mean 'de_facto'?",
    ),
    (
        "calendar timezone",
        "calendars:\n  office:\n    timezone: Europe/Stokholm\n" + PLAN,
        "Europe/Stokholm",
        "calendars.office.timezone: unknown timezone 'Europe/Stokholm'"
        " — did you mean 'Europe/Stockholm'?",
    ),
    (
        "never open",
        "calendars:\n  office:\n    weekdays: []\n" + PLAN,
        "weekdays",
        "calendars.office: the calendar is never open: give weekdays or hours",
    ),
    (
        "24x7 is built in",
        "calendars:\n  24x7: {}\n" + PLAN,
        "{}",
        "calendars.24x7: 24x7 is built in (around the clock, no holidays): choose another name",
    ),
    (
        "unknown calendar",
        "calendars:\n  stockholm: {}\nplans:\n  core:\n    name: Core\n"
        "    first_response: {hours: 4}\n"
        "    sla:\n      registered: {working_hours: 4, calendar: stokholm}\n",
        "stokholm",
        "plans.core.sla.registered.calendar: unknown calendar 'stokholm'"
        " — did you mean 'stockholm'? (known: 24x7, office, stockholm)",
    ),
    (
        "unknown calendar in a severity row",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      severity:\n        L1: {first_response: {hours: 1, calendar: ofice}}\n",
        "ofice",
        "plans.core.sla.severity.L1.first_response.calendar: unknown calendar 'ofice'"
        " — did you mean 'office'?",
    ),
    (
        "working days around the clock",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      registered: {working_days: 1, calendar: 24x7}\n",
        "{working_days",
        "plans.core.sla.registered: working_days cannot count on the 24x7 calendar",
    ),
    (
        "two targets",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      resolution: {hours: 4, working_days: 1}\n",
        "{hours: 4, working",
        "plans.core.sla.resolution: give exactly one of minutes, hours, working_hours or"
        " working_days (got hours, working_days)",
    ),
    (
        "escalation address",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      escalate_to: lead@@example.com\n",
        "lead@@",
        "plans.core.sla.escalate_to: 'lead@@example.com' is not a valid e-mail address",
    ),
    (
        "reminder duration",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        '    sla:\n      reminders: [{before: "30 minutes"}]\n',
        '"30 minutes"',
        "plans.core.sla.reminders[0].before: a duration looks like '30m', '2h' or '1h30m'",
    ),
    (
        "reminder needs one kind",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      reminders: [{at_percent: 50, before: 30m}]\n",
        "{at_percent",
        "plans.core.sla.reminders[0]: give exactly one of at_percent or before",
    ),
    (
        "unknown severity",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      severity: {L5: {first_response: {hours: 1}}}\n",
        "L5",
        "plans.core.sla.severity.L5: unknown key 'L5'",
    ),
    (
        "unknown sla key",
        "plans:\n  core:\n    name: Core\n    first_response: {hours: 4}\n"
        "    sla:\n      resolutoin: {hours: 4}\n",
        "resolutoin",
        "plans.core.sla.resolutoin: unknown key 'resolutoin' — did you mean 'resolution'?",
    ),
]


@pytest.mark.parametrize(
    ("body", "needle", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_name_line_column_path_and_cause(body: str, needle: str, message: str) -> None:
    text = BASE + body
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(f"rules.yaml:{where(text, needle)}: {message}"), found


def test_without_calendars_office_is_office_hours() -> None:
    rules = parse_rules(BASE + 'office_hours: "09:00-16:00"\n' + PLAN, "rules.yaml")
    office = rules.calendar("office")
    assert office.week[0] == ((540, 960),)
    assert office.week[5] == ()
    assert office.holidays is None
    assert set(rules.business_calendars) == {"office", "24x7"}


def test_calendar_shapes() -> None:
    text = (
        BASE
        + textwrap.dedent(
            """\
        office_hours: "08:00-16:00"
        calendars:
          office:
            weekdays: ["08:00-12:00", "13:00-17:00"]
            hours: {fri: "08:00-15:00", sat: []}
            holidays: {country: se, categories: [public, de_facto]}
            closed: [2026-11-18]
            half_days: {2026-12-23: "08:00-12:00"}
          rome:
            timezone: Europe/Rome
            holidays: {country: IT}
          weekend:
            hours: {sat: "10:00-14:00"}
        """
        )
        + PLAN
    )
    rules = parse_rules(text, "rules.yaml")
    office = rules.calendar("office")
    assert office.week[0] == ((480, 720), (780, 1020))
    assert office.week[4] == ((480, 900),)
    assert office.week[5] == office.week[6] == ()
    assert office.holidays is not None and office.holidays.country == "SE"
    assert not office.is_working_day(date(2026, 11, 18))
    assert office.hours_on(date(2026, 12, 23)) == ((480, 720),)
    assert not office.is_working_day(date(2026, 6, 19))  # Midsummer Eve, de facto
    rome = rules.calendar("rome")
    assert str(rome.zone) == "Europe/Rome"
    assert rome.week[0] == ((480, 960),)  # office_hours, Monday to Friday
    assert not rome.is_working_day(date(2025, 8, 15))  # Ferragosto
    weekend = rules.calendar("weekend")
    assert weekend.week[0] == () and weekend.week[5] == ((600, 840),)


def test_shipped_rules_load_and_declare_swedish_holidays() -> None:
    rules = load_rules(ROOT / "rules.yaml")
    office = rules.calendar("office")
    for closed in (date(2026, 6, 19), date(2026, 12, 24), date(2026, 4, 3), date(2026, 4, 6)):
        assert not office.is_working_day(closed), closed
    assert office.is_working_day(date(2026, 6, 18))
    # Core: 3 working days across Easter 2026 (Good Friday 3 April, Easter Monday 6 April).
    due = first_response_deadline(rules.plans["core"], sthlm(2026, 4, 1, 10), rules=rules)
    assert due == sthlm(2026, 4, 8, 10)


SLA_PLAN = textwrap.dedent(
    """\
    plans:
      core:
        name: Core
        first_response: {working_days: 3}
      agency:
        name: Agency
        first_response: {working_hours: 12}
        sla:
          registered: {working_hours: 12}
          action_started: {working_hours: 48}
          severity:
            L1:
              first_response: {hours: 1}
              registered: {minutes: 30}
              reminders: [{at_percent: 50}]
          outside_office_hours:
            registered: {hours: 2}
            action_started: {hours: 4}
          reminders: [{at_percent: 50}, {at_percent: 80}, {before: 30m}]
          escalate_to: Lead@Example.COM
    """
)


def test_sla_block_loads() -> None:
    rules = parse_rules(BASE + SLA_PLAN, "rules.yaml")
    sla = rules.plans["agency"].sla
    assert sla is not None
    assert sla.escalate_to == "Lead@example.com"
    assert [r.key for r in sla.reminders] == ["at_percent:50", "at_percent:80", "before:30m"]
    assert sla.reminders[2].before == timedelta(minutes=30)
    assert sla.outside_office_hours is not None and sla.outside_office_hours.urgent_only
    assert rules.plans["core"].sla is None


def test_rules_built_in_python_are_checked_too() -> None:
    data = {
        "version": 1,
        "identity": {"address": "s@example.com", "name": "S"},
        "timezone": "Europe/Stockholm",
        "default_plan": "core",
        "plans": {
            "core": {
                "name": "Core",
                "first_response": {"hours": 4},
                "sla": {"resolution": {"working_days": 5, "calendar": "nowhere"}},
            }
        },
    }
    with pytest.raises(ValueError, match="unknown calendar 'nowhere'"):
        Rules.model_validate(data)


def test_first_response_uses_the_calendars_holidays() -> None:
    text = BASE + "calendars:\n  office:\n    holidays: {country: SE}\n" + PLAN
    rules = parse_rules(text, "rules.yaml")
    plan = rules.plans["core"]
    # Wednesday before Easter + 3 working days skips Good Friday and Easter Monday.
    assert first_response_deadline(plan, sthlm(2026, 4, 1, 10), rules=rules) == sthlm(
        2026, 4, 8, 10
    )
    plain = parse_rules(BASE + PLAN, "rules.yaml")
    assert first_response_deadline(plan, sthlm(2026, 4, 1, 10), rules=plain) == sthlm(
        2026, 4, 6, 10
    )
