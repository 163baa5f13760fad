"""Business calendars: opening, business-time arithmetic, holidays, DST, working days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailbot.sla.calendar import (
    AROUND_THE_CLOCK,
    BusinessCalendar,
    HolidaySource,
    check_day,
    office_week,
    parse_interval,
    weekly,
)

STHLM = ZoneInfo("Europe/Stockholm")
ROME = ZoneInfo("Europe/Rome")
NINE_TO_FIVE = parse_interval("08:00-17:00")


def at(zone: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=zone)


def sthlm(*args: int) -> datetime:
    return at(STHLM, *args)


def rome(*args: int) -> datetime:
    return at(ROME, *args)


PLAIN = BusinessCalendar(zone=STHLM, week=office_week(NINE_TO_FIVE))
SWEDEN = BusinessCalendar(
    zone=STHLM,
    week=office_week(NINE_TO_FIVE),
    holidays=HolidaySource("SE", categories=("public", "de_facto")),
)
ITALY = BusinessCalendar(
    zone=ROME, week=office_week(parse_interval("09:00-18:00")), holidays=HolidaySource("IT")
)
LUNCH = BusinessCalendar(
    zone=STHLM,
    week=weekly({day: [(480, 720), (780, 1020)] for day in ("mon", "tue", "wed", "thu", "fri")}),
)
XMAS_HALF = BusinessCalendar(
    zone=STHLM,
    week=office_week(NINE_TO_FIVE),
    holidays=HolidaySource("SE"),
    half_days={date(2026, 12, 24): ((480, 720),)},
)
ALWAYS_STHLM = BusinessCalendar(
    zone=STHLM, week=weekly({d: [(0, 1440)] for d in ("mon", "tue", "wed", "thu", "fri")})
)

# 2026: Mon 16 Nov, Fri 20 Nov. DST starts Sun 29 Mar, ends Sun 25 Oct (EU, both zones).
ADD_BUSINESS = [
    (
        "Fri 16:30 + 1 h -> Mon 08:30",
        PLAIN,
        sthlm(2026, 11, 20, 16, 30),
        60,
        sthlm(2026, 11, 23, 8, 30),
    ),
    ("Saturday starts Monday 08:00", PLAIN, sthlm(2026, 11, 21, 11), 0, sthlm(2026, 11, 23, 8)),
    ("Saturday + 4 h", PLAIN, sthlm(2026, 11, 21, 11), 240, sthlm(2026, 11, 23, 12)),
    ("ends exactly at closing", PLAIN, sthlm(2026, 11, 16, 16), 60, sthlm(2026, 11, 16, 17)),
    ("16:59:59 + 1 min", PLAIN, sthlm(2026, 11, 16, 16, 59, 59), 1, sthlm(2026, 11, 17, 8, 0, 59)),
    ("40 business hours", PLAIN, sthlm(2026, 11, 16, 10), 40 * 60, sthlm(2026, 11, 20, 14)),
    ("lunch break is skipped", LUNCH, sthlm(2026, 11, 16, 11), 120, sthlm(2026, 11, 16, 14)),
    (
        "arrival in the lunch break",
        LUNCH,
        sthlm(2026, 11, 16, 12, 30),
        30,
        sthlm(2026, 11, 16, 13, 30),
    ),
    ("ends at lunch, stays there", LUNCH, sthlm(2026, 11, 16, 11), 60, sthlm(2026, 11, 16, 12)),
    # Midsummer Eve (Fri 19 June 2026) is closed with the de facto category: Thu -> Mon.
    ("Midsummer Eve closed", SWEDEN, sthlm(2026, 6, 18, 16), 120, sthlm(2026, 6, 22, 9)),
    (
        "Midsummer Eve open without holidays",
        PLAIN,
        sthlm(2026, 6, 18, 16),
        120,
        sthlm(2026, 6, 19, 9),
    ),
    # Ferragosto (Sat 15 Aug 2026) is a weekend day; Assumption is on a Saturday, so test 2025 too.
    ("Ferragosto 2025 (Friday) closed", ITALY, rome(2025, 8, 14, 17), 120, rome(2025, 8, 18, 10)),
    ("Christmas Eve half-day", XMAS_HALF, sthlm(2026, 12, 24, 11), 120, sthlm(2026, 12, 28, 9)),
    # Business minutes are wall-clock office minutes: DST nights change nothing.
    ("Sthlm spring DST", PLAIN, sthlm(2026, 3, 27, 16), 120, sthlm(2026, 3, 30, 9)),
    ("Sthlm autumn DST", PLAIN, sthlm(2026, 10, 23, 16), 120, sthlm(2026, 10, 26, 9)),
    ("Rome spring DST", ITALY, rome(2026, 3, 27, 17), 120, rome(2026, 3, 30, 10)),
    ("Rome autumn DST", ITALY, rome(2026, 10, 23, 17), 120, rome(2026, 10, 26, 10)),
    # ... also when the office is open on the changing night: 24 wall-clock hours a day.
    (
        "24 h day, spring night",
        ALWAYS_STHLM,
        sthlm(2026, 3, 26, 12),
        24 * 60,
        sthlm(2026, 3, 27, 12),
    ),
    (
        "around the clock 4 h",
        AROUND_THE_CLOCK,
        sthlm(2026, 10, 25, 0, 30),
        240,
        sthlm(2026, 10, 25, 3, 30),
    ),
    (
        "around the clock, Saturday",
        AROUND_THE_CLOCK,
        sthlm(2026, 11, 21, 22),
        240,
        sthlm(2026, 11, 22, 2),
    ),
]


@pytest.mark.parametrize(
    ("calendar", "start", "minutes", "expected"),
    [case[1:] for case in ADD_BUSINESS],
    ids=[case[0] for case in ADD_BUSINESS],
)
def test_add_business(
    calendar: BusinessCalendar, start: datetime, minutes: int, expected: datetime
) -> None:
    due = calendar.add_business(start, minutes)
    assert due.tzinfo is UTC
    assert due == expected


def test_around_the_clock_is_elapsed_time_across_dst() -> None:
    start = sthlm(2026, 3, 29, 0, 30)  # CET; summer time starts at 02:00
    due = AROUND_THE_CLOCK.add_business(start, 240)
    assert due - start == timedelta(hours=4)
    assert due.astimezone(STHLM).strftime("%H:%M %Z") == "05:30 CEST"


BETWEEN = [
    ("same day", PLAIN, sthlm(2026, 11, 16, 9), sthlm(2026, 11, 16, 11), 120),
    ("over a weekend", PLAIN, sthlm(2026, 11, 20, 16), sthlm(2026, 11, 23, 9), 120),
    ("reversed is zero", PLAIN, sthlm(2026, 11, 16, 11), sthlm(2026, 11, 16, 9), 0),
    ("a whole week", PLAIN, sthlm(2026, 11, 16, 0), sthlm(2026, 11, 23, 0), 45 * 60),
    ("lunch not counted", LUNCH, sthlm(2026, 11, 16, 8), sthlm(2026, 11, 16, 17), 8 * 60),
    (
        "16:59:59 to next opening",
        PLAIN,
        sthlm(2026, 11, 16, 16, 59, 59),
        sthlm(2026, 11, 17, 8),
        1 / 60,
    ),
    ("Easter 2026 (SE)", SWEDEN, sthlm(2026, 4, 2, 8), sthlm(2026, 4, 7, 17), 2 * 9 * 60),
    (
        "Sthlm spring night, 24 h days",
        ALWAYS_STHLM,
        sthlm(2026, 3, 26, 0),
        sthlm(2026, 3, 28, 0),
        48 * 60,
    ),
    ("Rome autumn week", ITALY, rome(2026, 10, 19, 0), rome(2026, 10, 31, 0), 10 * 9 * 60),
    ("Rome spring DST weekend", ITALY, rome(2026, 3, 27, 17), rome(2026, 3, 30, 10), 120),
    ("Ferragosto 2025", ITALY, rome(2025, 8, 15, 0), rome(2025, 8, 16, 0), 0),
    ("Midsummer Eve 2026", SWEDEN, sthlm(2026, 6, 19, 0), sthlm(2026, 6, 20, 0), 0),
    ("Christmas Eve half-day", XMAS_HALF, sthlm(2026, 12, 24, 0), sthlm(2026, 12, 25, 0), 240),
]


@pytest.mark.parametrize(
    ("calendar", "a", "b", "minutes"),
    [case[1:] for case in BETWEEN],
    ids=[case[0] for case in BETWEEN],
)
def test_business_minutes_between(
    calendar: BusinessCalendar, a: datetime, b: datetime, minutes: float
) -> None:
    assert calendar.business_minutes_between(a, b) == pytest.approx(minutes)


WORKING_DAYS = [
    ("Mon 10:00 + 3 = Thu 10:00", PLAIN, sthlm(2026, 11, 16, 10), 3, sthlm(2026, 11, 19, 10)),
    ("Thu 10:00 + 3 = Tue 10:00", PLAIN, sthlm(2026, 11, 19, 10), 3, sthlm(2026, 11, 24, 10)),
    ("Saturday + 3 = Wed 17:00", PLAIN, sthlm(2026, 11, 21, 12), 3, sthlm(2026, 11, 25, 17)),
    ("Mon 07:00 + 1 = Mon 17:00", PLAIN, sthlm(2026, 11, 16, 7), 1, sthlm(2026, 11, 16, 17)),
    ("Fri 18:00 + 1 = Mon 17:00", PLAIN, sthlm(2026, 11, 20, 18), 1, sthlm(2026, 11, 23, 17)),
    ("16:59:59 + 1", PLAIN, sthlm(2026, 11, 16, 16, 59, 59), 1, sthlm(2026, 11, 17, 16, 59, 59)),
    # Easter 2026 in Sweden: Good Friday 3 April and Easter Monday 6 April are closed.
    ("Wed before Easter + 3", SWEDEN, sthlm(2026, 4, 1, 10), 3, sthlm(2026, 4, 8, 10)),
    ("Easter without holidays", PLAIN, sthlm(2026, 4, 1, 10), 3, sthlm(2026, 4, 6, 10)),
    ("Good Friday arrival + 3", SWEDEN, sthlm(2026, 4, 3, 10), 3, sthlm(2026, 4, 9, 17)),
    ("Midsummer: Thu + 1 = Mon", SWEDEN, sthlm(2026, 6, 18, 10), 1, sthlm(2026, 6, 22, 10)),
    ("across DST keeps wall time", PLAIN, sthlm(2026, 10, 23, 10), 1, sthlm(2026, 10, 26, 10)),
    ("Rome across spring DST", ITALY, rome(2026, 3, 27, 11), 1, rome(2026, 3, 30, 11)),
    (
        "lunch-break arrival starts 13:00",
        LUNCH,
        sthlm(2026, 11, 16, 12),
        1,
        sthlm(2026, 11, 17, 13),
    ),
    (
        "half-day: clamps to its close",
        XMAS_HALF,
        sthlm(2026, 12, 23, 15),
        1,
        sthlm(2026, 12, 24, 12),
    ),
    ("zero days: the start", PLAIN, sthlm(2026, 11, 21, 12), 0, sthlm(2026, 11, 23, 8)),
]


@pytest.mark.parametrize(
    ("calendar", "start", "days", "expected"),
    [case[1:] for case in WORKING_DAYS],
    ids=[case[0] for case in WORKING_DAYS],
)
def test_add_working_days(
    calendar: BusinessCalendar, start: datetime, days: int, expected: datetime
) -> None:
    assert calendar.add_working_days(start, days) == expected


def test_working_days_equal_business_days_on_identical_days() -> None:
    start = sthlm(2026, 11, 16, 7)
    for arrival in (start + timedelta(minutes=37 * k) for k in range(200)):
        for n in (1, 3):
            by_days = PLAIN.add_working_days(arrival, n)
            assert by_days == PLAIN.add_business(arrival, n * 9 * 60), arrival


def test_lunch_break_rule_moves_to_the_afternoon_opening() -> None:
    # 12:00 is closing time (half-open intervals), so the next day's 12:00 becomes 13:00.
    start = sthlm(2026, 11, 16, 11, 59)
    assert LUNCH.add_working_days(start, 1) == sthlm(2026, 11, 17, 11, 59)
    assert LUNCH.add_working_days(sthlm(2026, 11, 16, 13), 1) == sthlm(2026, 11, 17, 13)
    later = BusinessCalendar(zone=STHLM, week=weekly({"mon": [(480, 1020)], "tue": [(600, 1020)]}))
    assert later.add_working_days(sthlm(2026, 11, 16, 9), 1) == sthlm(2026, 11, 17, 10)


OPEN = [
    (PLAIN, sthlm(2026, 11, 16, 8), True),
    (PLAIN, sthlm(2026, 11, 16, 7, 59, 59), False),
    (PLAIN, sthlm(2026, 11, 16, 16, 59, 59), True),
    (PLAIN, sthlm(2026, 11, 16, 17), False),
    (PLAIN, sthlm(2026, 11, 21, 12), False),
    (LUNCH, sthlm(2026, 11, 16, 12, 30), False),
    (SWEDEN, sthlm(2026, 6, 19, 10), False),
    (PLAIN, sthlm(2026, 6, 19, 10), True),
    (SWEDEN, sthlm(2026, 12, 24, 10), False),
    (XMAS_HALF, sthlm(2026, 12, 24, 10), True),
    (XMAS_HALF, sthlm(2026, 12, 24, 13), False),
    (ITALY, rome(2025, 8, 15, 10), False),
    (AROUND_THE_CLOCK, sthlm(2026, 12, 25, 3), True),
]


@pytest.mark.parametrize(("calendar", "t", "expected"), OPEN)
def test_is_open(calendar: BusinessCalendar, t: datetime, expected: bool) -> None:
    assert calendar.is_open(t) is expected


NEXT_OPENING = [
    (PLAIN, sthlm(2026, 11, 16, 10), sthlm(2026, 11, 16, 10)),
    (PLAIN, sthlm(2026, 11, 16, 17), sthlm(2026, 11, 17, 8)),
    (PLAIN, sthlm(2026, 11, 21, 11), sthlm(2026, 11, 23, 8)),
    (LUNCH, sthlm(2026, 11, 16, 12), sthlm(2026, 11, 16, 13)),
    (SWEDEN, sthlm(2026, 12, 23, 18), sthlm(2026, 12, 28, 8)),
]


@pytest.mark.parametrize(("calendar", "t", "expected"), NEXT_OPENING)
def test_next_opening(calendar: BusinessCalendar, t: datetime, expected: datetime) -> None:
    opening = calendar.next_opening(t)
    assert opening.tzinfo is UTC
    assert opening == expected


def test_subdivision_holidays() -> None:
    bavaria = BusinessCalendar(
        zone=ZoneInfo("Europe/Berlin"),
        week=office_week(NINE_TO_FIVE),
        holidays=HolidaySource("DE", "BY"),
    )
    berlin = BusinessCalendar(
        zone=ZoneInfo("Europe/Berlin"),
        week=office_week(NINE_TO_FIVE),
        holidays=HolidaySource("DE", "BE"),
    )
    epiphany = date(2026, 1, 6)  # a holiday in Bavaria, not in Berlin
    assert not bavaria.is_working_day(epiphany)
    assert berlin.is_working_day(epiphany)


def test_holidays_are_computed_per_year_lazily() -> None:
    calendar = BusinessCalendar(
        zone=STHLM, week=office_week(NINE_TO_FIVE), holidays=HolidaySource("SE")
    )
    assert calendar.add_business(sthlm(2026, 12, 30, 16), 60) == sthlm(2026, 12, 30, 17)
    assert sorted(calendar._years) == [2026]
    # New Year's Day 2027 is a holiday, 2 and 3 January a weekend.
    assert calendar.add_business(sthlm(2026, 12, 30, 16), 11 * 60) == sthlm(2027, 1, 4, 9)
    assert sorted(calendar._years) == [2026, 2027]


def test_explicit_closed_dates() -> None:
    calendar = BusinessCalendar(
        zone=STHLM, week=office_week(NINE_TO_FIVE), closed=frozenset({date(2026, 11, 17)})
    )
    assert calendar.add_business(sthlm(2026, 11, 16, 16), 120) == sthlm(2026, 11, 18, 9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8-17", "must look like '08:00-17:00'"),
        ("08:00", "must look like '08:00-17:00'"),
        ("17:00-08:00", "closes before it opens"),
        ("08:00-08:00", "closes before it opens"),
        ("25:00-26:00", "not a valid time range"),
        ("08:61-09:00", "not a valid time range"),
        ("24:00-24:00", "24:00 can only close"),
    ],
)
def test_bad_intervals(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_interval(text)


def test_intervals_parse_and_may_close_at_midnight() -> None:
    assert parse_interval(" 8:30 - 24:00 ") == (510, 1440)


def test_overlapping_intervals() -> None:
    with pytest.raises(ValueError, match="'08:00-12:00' and '11:00-13:00' overlap"):
        check_day([(660, 780), (480, 720)])
    assert check_day([(780, 1020), (480, 720)]) == ((480, 720), (780, 1020))


def test_never_open_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="never open"):
        BusinessCalendar(zone=STHLM, week=weekly({}))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        PLAIN.add_business(datetime(2026, 11, 16, 10), 60)
    with pytest.raises(ValueError, match="negative"):
        PLAIN.add_business(sthlm(2026, 11, 16, 10), -1)
