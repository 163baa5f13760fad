"""SLA clocks: state over events, pauses in business time, row selection, reminder times."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailbot.rules.loader import parse_rules
from mailbot.rules.schema import Rules
from mailbot.sla.calendar import AROUND_THE_CLOCK, BusinessCalendar, office_week
from mailbot.sla.clocks import (
    ClockEvent,
    ClockSpec,
    ClockStatus,
    EventKind,
    clock_specs,
    deadlines_for,
    evaluate,
    reminder_times,
    reminders_for,
)
from mailbot.sla.schema import ReminderSpec

STHLM = ZoneInfo("Europe/Stockholm")
OFFICE = BusinessCalendar(zone=STHLM, week=office_week((480, 1020)))


def t(d: int, h: int = 0, mi: int = 0, s: int = 0, mo: int = 11) -> datetime:
    """A time in November 2026 in Stockholm: Mon 16, Fri 20, Sat 21, Mon 23."""
    return datetime(2026, mo, d, h, mi, s, tzinfo=STHLM)


def ev(kind: str, at: datetime) -> ClockEvent:
    return ClockEvent(EventKind(kind), at)


def wh(n: int, calendar: BusinessCalendar = OFFICE) -> ClockSpec:
    return ClockSpec("first_response", "working_hours", n, calendar)


H = timedelta(hours=1)

# (case, spec, events, now, status, due_at, elapsed)
STATES = [
    (
        "running",
        wh(4),
        [ev("arrived", t(16, 10))],
        t(16, 12),
        ClockStatus.RUNNING,
        t(16, 14),
        2 * H,
    ),
    (
        "arrived on Saturday",
        wh(4),
        [ev("arrived", t(21, 11))],
        t(23, 9),
        ClockStatus.RUNNING,
        t(23, 12),
        H,
    ),
    (
        "breached",
        wh(4),
        [ev("arrived", t(16, 10))],
        t(16, 14, 0, 1),
        ClockStatus.BREACHED,
        t(16, 14),
        4 * H + timedelta(seconds=1),
    ),
    (
        "due instant is not a breach",
        wh(4),
        [ev("arrived", t(16, 10))],
        t(16, 14),
        ClockStatus.RUNNING,
        t(16, 14),
        4 * H,
    ),
    (
        "met in time",
        wh(4),
        [ev("arrived", t(16, 10)), ev("met", t(16, 13))],
        t(18),
        ClockStatus.MET,
        t(16, 14),
        3 * H,
    ),
    (
        "met at the deadline",
        wh(4),
        [ev("arrived", t(16, 10)), ev("met", t(16, 14))],
        t(18),
        ClockStatus.MET,
        t(16, 14),
        4 * H,
    ),
    (
        "met late",
        wh(4),
        [ev("arrived", t(16, 10)), ev("met", t(16, 15))],
        t(18),
        ClockStatus.BREACHED,
        t(16, 14),
        5 * H,
    ),
    (
        "closed unanswered",
        wh(4),
        [ev("arrived", t(16, 10)), ev("closed", t(16, 11))],
        t(18),
        ClockStatus.CLOSED,
        t(16, 14),
        H,
    ),
    # Paused Fri 16:00 to Mon 09:00: only Fri 16-17 and Mon 08-09 count, the weekend not.
    (
        "pause over a weekend",
        wh(4),
        [ev("arrived", t(20, 15)), ev("paused", t(20, 16)), ev("resumed", t(23, 9))],
        t(23, 10),
        ClockStatus.RUNNING,
        t(23, 12),
        2 * H,
    ),
    (
        "paused now: no deadline",
        wh(4),
        [ev("arrived", t(20, 15)), ev("paused", t(20, 16))],
        t(23, 10),
        ClockStatus.PAUSED,
        None,
        H,
    ),
    (
        "paused after the deadline stays breached",
        wh(2),
        [ev("arrived", t(16, 10)), ev("paused", t(16, 13))],
        t(16, 15),
        ClockStatus.BREACHED,
        t(16, 12),
        3 * H,
    ),
    (
        "two pauses add up",
        wh(4),
        [
            ev("arrived", t(16, 8)),
            ev("paused", t(16, 9)),
            ev("resumed", t(16, 10)),
            ev("paused", t(16, 11)),
            ev("resumed", t(16, 12, 30)),
        ],
        t(16, 13),
        ClockStatus.RUNNING,
        t(16, 14, 30),
        2.5 * H,
    ),
    (
        "met while paused",
        wh(4),
        [ev("arrived", t(16, 10)), ev("paused", t(16, 11)), ev("met", t(17, 9))],
        t(18),
        ClockStatus.MET,
        t(17, 12),  # the pause until the reply (7 business hours) extends the deadline
        H,
    ),
    (
        "events after now are ignored",
        wh(4),
        [ev("arrived", t(16, 10)), ev("met", t(16, 13))],
        t(16, 12),
        ClockStatus.RUNNING,
        t(16, 14),
        2 * H,
    ),
    (
        "16:59:59 arrival",
        wh(1),
        [ev("arrived", t(16, 16, 59, 59))],
        t(16, 17),
        ClockStatus.RUNNING,
        t(17, 8, 59, 59),
        timedelta(seconds=1),
    ),
    (
        "around the clock 4 h over a weekend night",
        ClockSpec("registered", "hours", 4, AROUND_THE_CLOCK),
        [ev("arrived", t(21, 22))],
        t(22, 1),
        ClockStatus.RUNNING,
        t(22, 2),
        3 * H,
    ),
    (
        "around the clock pause counts elapsed time",
        ClockSpec("registered", "hours", 4, AROUND_THE_CLOCK),
        [ev("arrived", t(20, 15)), ev("paused", t(20, 16)), ev("resumed", t(23, 9))],
        t(23, 9),
        ClockStatus.RUNNING,
        t(23, 12),
        H,
    ),
    (
        "working days with a pause",
        ClockSpec("resolution", "working_days", 1, OFFICE),
        [ev("arrived", t(16, 10)), ev("paused", t(16, 11)), ev("resumed", t(16, 14))],
        t(16, 15),
        ClockStatus.RUNNING,
        t(17, 13),
        2 * H,
    ),
]


@pytest.mark.parametrize(
    ("spec", "events", "now", "status", "due", "elapsed"),
    [case[1:] for case in STATES],
    ids=[case[0] for case in STATES],
)
def test_evaluate(
    spec: ClockSpec,
    events: list[ClockEvent],
    now: datetime,
    status: ClockStatus,
    due: datetime | None,
    elapsed: timedelta,
) -> None:
    state = evaluate(spec, events, now)
    assert state.status is status
    assert state.due_at == due
    assert state.elapsed == elapsed
    if due is not None:
        assert state.due_at is not None and state.due_at.tzinfo is UTC
    assert (state.breached_at is not None) == (status is ClockStatus.BREACHED)


def test_state_figures() -> None:
    events = [ev("arrived", t(21, 11)), ev("paused", t(23, 9)), ev("resumed", t(23, 10))]
    state = evaluate(wh(4), events, t(23, 11))
    assert state.started_at == t(23, 8)
    assert state.target == 4 * H
    assert state.elapsed_minutes == 120
    assert state.remaining_minutes == 120
    assert state.due_at == t(23, 13)
    assert state.running == (
        (t(21, 11).astimezone(UTC), t(23, 9).astimezone(UTC)),
        (t(23, 10).astimezone(UTC), None),
    )


def test_event_order_does_not_matter_and_arrival_is_needed() -> None:
    events = [ev("resumed", t(23, 9)), ev("arrived", t(20, 15)), ev("paused", t(20, 16))]
    assert evaluate(wh(4), events, t(23, 10)).due_at == t(23, 12)
    with pytest.raises(ValueError, match="arrived"):
        evaluate(wh(4), [ev("met", t(16, 10))], t(16, 11))
    with pytest.raises(ValueError, match="aware"):
        evaluate(wh(4), [ev("arrived", datetime(2026, 11, 16, 10))], t(16, 11))


REMINDERS = (
    ReminderSpec(at_percent=50),
    ReminderSpec(at_percent=80),
    ReminderSpec.model_validate({"before": "30m"}),
)


def test_reminder_times_at_percent_and_before() -> None:
    spec = wh(10)  # Mon 08:00 + 10 working hours = Tue 09:00
    state = evaluate(spec, [ev("arrived", t(16, 7))], t(16, 9))
    times = reminder_times(spec, state, REMINDERS)
    assert times == [
        ("at_percent:50", t(16, 13)),
        ("at_percent:80", t(16, 16)),
        ("before:30m", t(17, 8, 30)),
        ("breach", t(17, 9)),
    ]


def test_reminders_move_with_a_pause_and_include_passed_ones() -> None:
    spec = wh(10)
    events = [ev("arrived", t(16, 8)), ev("paused", t(16, 10)), ev("resumed", t(16, 11))]
    times = dict(reminder_times(spec, evaluate(spec, events, t(16, 15)), REMINDERS))
    assert times == {
        "at_percent:50": t(16, 14),
        "at_percent:80": t(16, 17),  # 8 business hours reached at closing time
        "before:30m": t(17, 9, 30),
        "breach": t(17, 10),
    }
    # 20 % was reached before the pause: its time is in the first running period.
    early = reminder_times(spec, evaluate(spec, events, t(16, 15)), [ReminderSpec(at_percent=10)])
    assert early[0] == ("at_percent:10", t(16, 9))


def test_reminders_of_a_paused_clock_are_only_the_reached_ones() -> None:
    spec = wh(10)
    events = [ev("arrived", t(16, 8)), ev("paused", t(16, 14))]
    times = reminder_times(spec, evaluate(spec, events, t(16, 15)), REMINDERS)
    assert times == [("at_percent:50", t(16, 13))]


def test_no_reminders_once_met_and_none_before_the_start() -> None:
    spec = wh(1)
    met = evaluate(spec, [ev("arrived", t(16, 10)), ev("met", t(16, 10, 5))], t(16, 12))
    assert reminder_times(spec, met, REMINDERS) == []
    running = evaluate(spec, [ev("arrived", t(16, 10))], t(16, 10))
    two_hours_before = ReminderSpec.model_validate({"before": "2h"})
    assert reminder_times(spec, running, [two_hours_before]) == [("breach", t(16, 11))]


def test_around_the_clock_reminders_are_elapsed_time() -> None:
    spec = ClockSpec("registered", "hours", 4, AROUND_THE_CLOCK)
    state = evaluate(spec, [ev("arrived", t(21, 22))], t(21, 22))
    assert dict(reminder_times(spec, state, REMINDERS)) == {
        "at_percent:50": t(22, 0),
        "at_percent:80": t(22, 1, 12),
        "before:30m": t(22, 1, 30),
        "breach": t(22, 2),
    }


RULES_TEXT = textwrap.dedent(
    """\
    version: 1
    identity: {address: support@example.com, name: Support}
    timezone: Europe/Stockholm
    default_plan: agency
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
              reminders: [{at_percent: 75}]
          outside_office_hours:
            registered: {hours: 2}
            action_started: {hours: 4}
          reminders: [{at_percent: 50}, {at_percent: 80}, {before: 30m}]
      everyone:
        name: Everyone outside hours
        first_response: {hours: 8}
        sla:
          outside_office_hours:
            urgent_only: false
            first_response: {working_hours: 1}
    """
)


@pytest.fixture(scope="module")
def rules() -> Rules:
    return parse_rules(RULES_TEXT, "rules.yaml")


# (case, plan, severity, urgent, arrival, expected deadlines)
SELECTION = [
    (
        "plain plan: first response only",
        "core",
        None,
        False,
        t(16, 10),
        {"first_response": t(19, 10)},
    ),
    (
        "normal, in office hours",
        "agency",
        None,
        False,
        t(16, 10),
        {"first_response": t(17, 13), "registered": t(17, 13), "action_started": t(23, 13)},
    ),
    (
        "severity L1 replaces single clocks",
        "agency",
        "L1",
        False,
        t(16, 10),
        {"first_response": t(16, 11), "registered": t(16, 10, 30), "action_started": t(23, 13)},
    ),
    (
        "unknown severity: the plan's row",
        "agency",
        "L9",
        False,
        t(16, 10),
        {"first_response": t(17, 13), "registered": t(17, 13), "action_started": t(23, 13)},
    ),
    (
        "urgent outside office hours: its own row, around the clock",
        "agency",
        None,
        True,
        t(21, 22),
        {"first_response": t(24, 11), "registered": t(22, 0), "action_started": t(22, 2)},
    ),
    (
        "urgent in office hours: the normal row",
        "agency",
        None,
        True,
        t(16, 10),
        {"first_response": t(17, 13), "registered": t(17, 13), "action_started": t(23, 13)},
    ),
    (
        "not urgent outside office hours: the normal row",
        "agency",
        None,
        False,
        t(21, 22),
        {"first_response": t(24, 11), "registered": t(24, 11), "action_started": t(30, 11)},
    ),
    (
        "L1 and urgent outside hours: outside row last",
        "agency",
        "L1",
        True,
        t(21, 22),
        {"first_response": t(21, 23), "registered": t(22, 0), "action_started": t(22, 2)},
    ),
    (
        "urgent_only: false applies to everyone",
        "everyone",
        None,
        False,
        t(21, 22),
        {"first_response": t(23, 9)},
    ),
]


@pytest.mark.parametrize(
    ("plan_id", "severity", "urgent", "arrival", "expected"),
    [case[1:] for case in SELECTION],
    ids=[case[0] for case in SELECTION],
)
def test_deadlines_for(
    rules: Rules,
    plan_id: str,
    severity: str | None,
    urgent: bool,
    arrival: datetime,
    expected: dict[str, datetime],
) -> None:
    due = deadlines_for(rules.plans[plan_id], severity, urgent, arrival, rules)
    assert due == expected


def test_clock_specs_name_their_calendars(rules: Rules) -> None:
    specs = clock_specs(rules.plans["agency"], rules, arrival=t(21, 22), urgent=True)
    assert {name: spec.calendar.name for name, spec in specs.items()} == {
        "first_response": "office",
        "registered": "24x7",
        "action_started": "24x7",
    }


def test_reminders_for_severity(rules: Rules) -> None:
    agency = rules.plans["agency"]
    assert [r.key for r in reminders_for(agency)] == [
        "at_percent:50",
        "at_percent:80",
        "before:30m",
    ]
    assert [r.key for r in reminders_for(agency, "L1")] == ["at_percent:75"]
    assert reminders_for(rules.plans["core"]) == ()
