"""First-response deadlines, promises and local date formatting."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from mailbot.rules.deadline import first_response_deadline, format_deadline, promise_text
from mailbot.rules.schema import FirstResponse, OfficeHours, Plan

STHLM = ZoneInfo("Europe/Stockholm")
OFFICE = OfficeHours.model_validate("08:00-17:00")


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=STHLM)


def plan(**first_response: int) -> Plan:
    return Plan(name="P", first_response=FirstResponse(**first_response))


# 2026-11-16 is a Monday; 2026-11-20 a Friday; 2026-10-25 the end of summer time.
CASES = [
    # working hours
    (
        "Fri 16:30 + 1 wh",
        {"working_hours": 1},
        local(2026, 11, 20, 16, 30),
        local(2026, 11, 23, 8, 30),
    ),
    ("Mon 10:00 + 1 wh", {"working_hours": 1}, local(2026, 11, 16, 10), local(2026, 11, 16, 11)),
    ("ends at closing", {"working_hours": 7}, local(2026, 11, 16, 10), local(2026, 11, 16, 17)),
    ("Mon 10:00 + 8 wh", {"working_hours": 8}, local(2026, 11, 16, 10), local(2026, 11, 17, 9)),
    ("before opening", {"working_hours": 2}, local(2026, 11, 16, 6, 45), local(2026, 11, 16, 10)),
    ("after closing", {"working_hours": 2}, local(2026, 11, 16, 19), local(2026, 11, 17, 10)),
    ("at closing", {"working_hours": 1}, local(2026, 11, 16, 17), local(2026, 11, 17, 9)),
    ("Saturday + 4 wh", {"working_hours": 4}, local(2026, 11, 21, 11), local(2026, 11, 23, 12)),
    ("Sunday night + 1", {"working_hours": 1}, local(2026, 11, 22, 23, 59), local(2026, 11, 23, 9)),
    ("spans a weekend", {"working_hours": 20}, local(2026, 11, 19, 9), local(2026, 11, 23, 11)),
    # working days
    ("Mon 10:00 + 3 wd", {"working_days": 3}, local(2026, 11, 16, 10), local(2026, 11, 19, 10)),
    ("Thu 10:00 + 3 wd", {"working_days": 3}, local(2026, 11, 19, 10), local(2026, 11, 24, 10)),
    (
        "Fri 16:59 + 1 wd",
        {"working_days": 1},
        local(2026, 11, 20, 16, 59),
        local(2026, 11, 23, 16, 59),
    ),
    ("Saturday + 3 wd", {"working_days": 3}, local(2026, 11, 21, 12), local(2026, 11, 25, 17)),
    ("Mon 07:00 + 1 wd", {"working_days": 1}, local(2026, 11, 16, 7), local(2026, 11, 16, 17)),
    ("Fri 18:00 + 1 wd", {"working_days": 1}, local(2026, 11, 20, 18), local(2026, 11, 23, 17)),
    # around the clock
    ("4 h", {"hours": 4}, local(2026, 11, 16, 10), local(2026, 11, 16, 14)),
    ("4 h overnight", {"hours": 4}, local(2026, 11, 20, 22), local(2026, 11, 21, 2)),
    # Summer time ends 2026-10-25 03:00 CEST -> 02:00 CET: 4 real hours show as 3 on the clock.
    ("4 h across DST", {"hours": 4}, local(2026, 10, 25, 0, 30), local(2026, 10, 25, 3, 30)),
    # Business hours are wall-clock hours: DST (on a Sunday night) changes nothing there.
    ("wh across DST", {"working_hours": 2}, local(2026, 10, 23, 16), local(2026, 10, 26, 9)),
    ("wd across DST", {"working_days": 1}, local(2026, 10, 23, 10), local(2026, 10, 26, 10)),
]


@pytest.mark.parametrize(
    ("first_response", "arrival", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_deadline(first_response: dict[str, int], arrival: datetime, expected: datetime) -> None:
    due = first_response_deadline(plan(**first_response), arrival, STHLM, OFFICE)
    assert due.tzinfo is UTC
    assert due == expected


def test_dst_hours_are_elapsed_hours() -> None:
    arrival = datetime(2026, 10, 24, 22, 30, tzinfo=UTC)  # 00:30 CEST
    due = first_response_deadline(plan(hours=4), arrival, STHLM, OFFICE)
    assert due == datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
    assert due.astimezone(STHLM).strftime("%H:%M %Z") == "03:30 CET"


def test_holidays_are_skipped() -> None:
    christmas = frozenset({date(2026, 12, 24), date(2026, 12, 25)})
    arrival = local(2026, 12, 23, 16)  # Wednesday
    due = first_response_deadline(plan(working_hours=2), arrival, STHLM, OFFICE, christmas)
    assert due == local(2026, 12, 28, 9)  # Monday
    without = first_response_deadline(plan(working_hours=2), arrival, STHLM, OFFICE)
    assert without == local(2026, 12, 24, 9)


def test_other_office_hours() -> None:
    short = OfficeHours(opens=time(9), closes=time(12))
    due = first_response_deadline(plan(working_days=2), local(2026, 11, 16, 11), STHLM, short)
    assert due == local(2026, 11, 18, 11)


def test_naive_arrival_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        first_response_deadline(plan(hours=1), datetime(2026, 11, 16, 10), STHLM, OFFICE)


def test_accepts_a_first_response_directly() -> None:
    due = first_response_deadline(FirstResponse(hours=2), local(2026, 11, 16, 10), STHLM, OFFICE)
    assert due == local(2026, 11, 16, 12)


@pytest.mark.parametrize(
    ("first_response", "language", "text"),
    [
        ({"working_days": 3}, "en", "within 3 working days"),
        ({"working_days": 3}, "sv", "inom 3 arbetsdagar"),
        ({"working_days": 3}, "it", "entro 3 giorni lavorativi"),
        ({"working_days": 3}, "de", "innerhalb von 3 Werktagen"),
        ({"working_days": 1}, "en", "within 1 working day"),
        ({"working_days": 1}, "sv", "inom 1 arbetsdag"),
        ({"working_days": 1}, "it", "entro 1 giorno lavorativo"),
        ({"hours": 4}, "en", "within 4 hours"),
        ({"hours": 4}, "sv", "inom 4 timmar"),
        ({"hours": 4}, "it", "entro 4 ore"),
        ({"hours": 1}, "sv", "inom 1 timme"),
        ({"hours": 1}, "it", "entro 1 ora"),
        ({"working_hours": 8}, "en", "within 8 working hours"),
        ({"working_hours": 8}, "sv", "inom 8 arbetstimmar"),
        ({"working_hours": 8}, "it", "entro 8 ore lavorative"),
        ({"working_hours": 8}, "fr", "within 8 working hours"),
    ],
)
def test_promise_text(first_response: dict[str, int], language: str, text: str) -> None:
    assert promise_text(plan(**first_response), language) == text


def test_promise_override_per_language() -> None:
    p = Plan(
        name="Pro",
        first_response=FirstResponse(working_hours=8),
        promise={"sv": "med förtur, inom 8 arbetstimmar"},
    )
    assert promise_text(p, "sv") == "med förtur, inom 8 arbetstimmar"
    assert promise_text(p, "en") == "within 8 working hours"


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "Tuesday 24 November 2026, 10:30"),
        ("sv", "tisdag 24 november 2026 kl. 10:30"),
        ("it", "martedì 24 novembre 2026, 10:30"),
        ("de", "Dienstag, 24. November 2026, 10:30 Uhr"),
        ("xx", "Tuesday 24 November 2026, 10:30"),
    ],
)
def test_format_deadline(language: str, text: str) -> None:
    due = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)  # 10:30 in Stockholm (CET)
    assert format_deadline(due, STHLM, language) == text


def test_format_deadline_uses_the_timezone() -> None:
    due = datetime(2026, 7, 5, 22, 15, tzinfo=UTC)
    assert format_deadline(due, STHLM, "sv") == "måndag 6 juli 2026 kl. 00:15"
    assert format_deadline(due, ZoneInfo("UTC"), "it") == "domenica 5 luglio 2026, 22:15"
