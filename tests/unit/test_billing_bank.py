"""Time-bank ledgers: cycles (DST too), expiry, carry-over, FIFO, overage, prepaid, statements."""

from __future__ import annotations

import itertools
import random
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from mailbot.billing.bank import (
    Cycle,
    Statement,
    TopUp,
    Usage,
    balance_at,
    cycle_of,
    statement,
)
from mailbot.billing.schema import TimeBankSpec

STHLM = ZoneInfo("Europe/Stockholm")
EPS = timedelta(microseconds=1)
D = Decimal


def sthlm(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=STHLM)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def use(at: datetime, minutes: int | str) -> Usage:
    return Usage(at=at, billed=Decimal(minutes))


def monthly(minutes: int = 240, **fields: object) -> TimeBankSpec:
    return TimeBankSpec.model_validate({"monthly": minutes, **fields})


def prepaid(opening: int | None = None) -> TimeBankSpec:
    return TimeBankSpec(prepaid=True, opening_balance=opening)


def balance(
    spec: TimeBankSpec, usages: list[Usage], at: datetime, topups: list[TopUp] | None = None
) -> Decimal:
    return balance_at(spec, usages, topups or [], at, STHLM)


def stmt(
    spec: TimeBankSpec,
    usages: list[Usage],
    start: datetime,
    end: datetime,
    topups: list[TopUp] | None = None,
) -> Statement:
    return statement(spec, usages, topups or [], start=start, end=end, tz=STHLM)


def figures(s: Statement) -> tuple[object, ...]:
    """(balance_start, allotment, used, overage, expired, balance); ints compare equal."""
    return (s.balance_start, s.allotment, s.used, s.overage, s.expired, s.balance)


def utc_length(cycle: Cycle) -> timedelta:
    # Aware datetimes sharing a tzinfo subtract as wall times: compare instants in UTC.
    return cycle.end.astimezone(UTC) - cycle.start.astimezone(UTC)


# --- cycles --------------------------------------------------------------------------------


def test_calendar_month_cycles_at_local_midnight() -> None:
    cycle = cycle_of(monthly(), sthlm(2026, 11, 15, 12), STHLM)
    assert cycle == Cycle(sthlm(2026, 11, 1), sthlm(2026, 12, 1))
    assert cycle.start.utcoffset() == timedelta(hours=1)
    assert cycle_of(monthly(), sthlm(2026, 11, 1), STHLM).start == sthlm(2026, 11, 1)
    assert cycle_of(monthly(), sthlm(2026, 11, 1) - EPS, STHLM).start == sthlm(2026, 10, 1)


def test_cycle_is_local_not_utc() -> None:
    # 23:30 UTC on 30 November is 00:30 on 1 December in Stockholm.
    assert cycle_of(monthly(), utc(2026, 11, 30, 23, 30), STHLM).start == sthlm(2026, 12, 1)
    assert cycle_of(monthly(), utc(2026, 11, 30, 22, 59), STHLM).start == sthlm(2026, 11, 1)


def test_cycle_day_15() -> None:
    spec = monthly(cycle_day=15)
    assert cycle_of(spec, sthlm(2026, 11, 14, 23, 59, 59), STHLM) == Cycle(
        sthlm(2026, 10, 15), sthlm(2026, 11, 15)
    )
    assert cycle_of(spec, sthlm(2026, 11, 15), STHLM) == Cycle(
        sthlm(2026, 11, 15), sthlm(2026, 12, 15)
    )
    # Across the year end.
    assert cycle_of(spec, sthlm(2027, 1, 3), STHLM) == Cycle(
        sthlm(2026, 12, 15), sthlm(2027, 1, 15)
    )


def test_two_month_cycles_without_starts_are_anchored_at_january() -> None:
    spec = monthly(cycle_day=15, cycle_months=2)
    assert cycle_of(spec, sthlm(2026, 2, 20), STHLM) == Cycle(
        sthlm(2026, 1, 15), sthlm(2026, 3, 15)
    )
    assert cycle_of(spec, sthlm(2026, 3, 15), STHLM) == Cycle(
        sthlm(2026, 3, 15), sthlm(2026, 5, 15)
    )
    assert cycle_of(spec, sthlm(2026, 1, 14), STHLM) == Cycle(
        sthlm(2025, 11, 15), sthlm(2026, 1, 15)
    )
    # Stable: the same answer whatever the year.
    assert cycle_of(spec, sthlm(1999, 12, 20), STHLM).start == sthlm(1999, 11, 15)


def test_two_month_cycles_anchored_at_starts() -> None:
    spec = monthly(cycle_day=15, cycle_months=2, starts=date(2026, 2, 15))
    assert cycle_of(spec, sthlm(2026, 2, 20), STHLM) == Cycle(
        sthlm(2026, 2, 15), sthlm(2026, 4, 15)
    )
    assert cycle_of(spec, sthlm(2026, 12, 31), STHLM) == Cycle(
        sthlm(2026, 12, 15), sthlm(2027, 2, 15)
    )
    # Before starts the grid extends backwards.
    assert cycle_of(spec, sthlm(2026, 1, 1), STHLM) == Cycle(
        sthlm(2025, 12, 15), sthlm(2026, 2, 15)
    )


def test_cycle_starting_on_dst_day_in_march() -> None:
    # Summer time starts 2027-03-28 at 02:00 in Stockholm: a cycle starting that day (at
    # midnight CET, still winter time) is an hour short.
    spec = monthly(cycle_day=28)
    cycle = cycle_of(spec, sthlm(2027, 4, 10), STHLM)
    assert cycle == Cycle(sthlm(2027, 3, 28), sthlm(2027, 4, 28))
    assert cycle.start.astimezone(UTC) == utc(2027, 3, 27, 23)
    assert cycle.end.astimezone(UTC) == utc(2027, 4, 27, 22)
    assert utc_length(cycle) == timedelta(days=31, hours=-1)
    assert cycle_of(spec, utc(2027, 3, 27, 23), STHLM).start == sthlm(2027, 3, 28)
    assert cycle_of(spec, utc(2027, 3, 27, 22, 59, 59), STHLM).start == sthlm(2027, 2, 28)


def test_calendar_month_holding_the_march_dst_change() -> None:
    # 2026-03-29 is the change in 2026: March's cycle is 31 days less an hour.
    cycle = cycle_of(monthly(), sthlm(2026, 3, 29, 12), STHLM)
    assert cycle == Cycle(sthlm(2026, 3, 1), sthlm(2026, 4, 1))
    assert cycle.start.utcoffset() == timedelta(hours=1)
    assert cycle.end.utcoffset() == timedelta(hours=2)
    assert utc_length(cycle) == timedelta(days=31, hours=-1)


def test_cycle_starting_on_dst_day_in_october() -> None:
    # Summer time ends 2026-10-25 at 03:00 in Stockholm: that cycle is an hour long.
    spec = monthly(cycle_day=25)
    cycle = cycle_of(spec, sthlm(2026, 10, 25, 2, 30), STHLM)
    assert cycle == Cycle(sthlm(2026, 10, 25), sthlm(2026, 11, 25))
    assert cycle.start.astimezone(UTC) == utc(2026, 10, 24, 22)
    assert cycle.end.astimezone(UTC) == utc(2026, 11, 24, 23)
    assert utc_length(cycle) == timedelta(days=31, hours=1)
    assert cycle_of(spec, utc(2026, 10, 24, 21, 59, 59), STHLM).start == sthlm(2026, 9, 25)


def test_cycle_of_rejects_prepaid_and_naive() -> None:
    with pytest.raises(ValueError, match="prepaid"):
        cycle_of(prepaid(), sthlm(2026, 1, 1), STHLM)
    with pytest.raises(ValueError, match="aware"):
        cycle_of(monthly(), datetime(2026, 1, 1), STHLM)


# --- monthly packages (seed 003) -----------------------------------------------------------


def test_unused_hours_gone_on_first_day_of_next_cycle() -> None:
    spec = monthly(240, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 10, 10), 60)]
    assert balance(spec, usages, sthlm(2026, 11, 10, 9)) == D(240)
    assert balance(spec, usages, sthlm(2026, 11, 10, 10)) == D(180)
    assert balance(spec, usages, sthlm(2026, 11, 30, 23, 59, 59)) == D(180)
    # At midnight November's 180 are gone; only December's allotment is left.
    assert balance(spec, usages, sthlm(2026, 12, 1)) == D(240)
    assert balance(spec, usages, sthlm(2026, 12, 1, 0, 0, 1)) == D(240)


def test_expiry_follows_local_midnight_across_dst() -> None:
    spec = monthly(120, cycle_day=25, starts=date(2026, 10, 25))
    usages = [use(sthlm(2026, 11, 2), 20)]
    # The October cycle ends at 00:00 CET on 25 November = 23:00 UTC on the 24th.
    assert balance(spec, usages, utc(2026, 11, 24, 22, 59, 59)) == D(100)
    assert balance(spec, usages, utc(2026, 11, 24, 23)) == D(120)
    # The cycle from 28 February 2027 ends at 00:00 CET on 28 March (DST starts at 02:00).
    spring = monthly(120, cycle_day=28, starts=date(2027, 2, 28))
    usages = [use(sthlm(2027, 3, 1), 30)]
    assert balance(spring, usages, utc(2027, 3, 27, 22, 59, 59)) == D(90)
    assert balance(spring, usages, utc(2027, 3, 27, 23)) == D(120)


def test_usage_at_the_cycle_boundary_uses_the_new_lot() -> None:
    spec = monthly(60, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 12, 1), 45)]
    assert balance(spec, usages, sthlm(2026, 12, 1) - EPS) == D(60)
    assert balance(spec, usages, sthlm(2026, 12, 1)) == D(15)
    nov = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1))
    assert figures(nov) == (0, 60, 0, 0, 60, 0)  # November's 60 expired unused
    dec = stmt(spec, usages, sthlm(2026, 12, 1), sthlm(2027, 1, 1))
    assert (dec.used, dec.overage) == (D(45), D(0))


def test_carry_over_one_cycle() -> None:
    spec = monthly(240, carry_over=1, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 10), 60)]
    # November's 180 unused minutes are still usable in December...
    assert balance(spec, usages, sthlm(2026, 12, 1)) == D(420)
    assert balance(spec, usages, sthlm(2026, 12, 31, 23, 59, 59)) == D(420)
    # ...and gone on 1 January, when January's lot arrives.
    assert balance(spec, usages, sthlm(2027, 1, 1)) == D(480)
    dec = stmt(spec, usages, sthlm(2026, 12, 1), sthlm(2027, 1, 1))
    assert figures(dec) == (180, 240, 0, 0, 180, 240)


def test_fifo_consumes_the_older_lot_first() -> None:
    spec = monthly(240, carry_over=1, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 10), 60), use(sthlm(2026, 12, 5), 200)]
    assert balance(spec, usages, sthlm(2026, 12, 5)) == D(220)
    # November's 180 were used first, so nothing of it expires on 1 January and
    # December's lot keeps 220 until 1 February.
    dec = stmt(spec, usages, sthlm(2026, 12, 1), sthlm(2027, 1, 1))
    assert figures(dec) == (180, 240, 200, 0, 0, 220)
    assert balance(spec, usages, sthlm(2027, 1, 1)) == D(460)
    jan = stmt(spec, usages, sthlm(2027, 1, 1), sthlm(2027, 2, 1))
    assert figures(jan) == (220, 240, 0, 0, 220, 240)


def test_carry_over_usage_spanning_two_lots() -> None:
    spec = monthly(100, carry_over=2, starts=date(2026, 1, 1))
    # Nothing used for two months: three lots of 100 are usable in March.
    assert balance(spec, [], sthlm(2026, 3, 15)) == D(300)
    usages = [use(sthlm(2026, 3, 15), 150)]
    # January's lot (usable until 1 April) went first, then 50 of February's (usable until
    # 1 May).
    assert balance(spec, usages, sthlm(2026, 3, 15)) == D(150)
    assert balance(spec, usages, sthlm(2026, 4, 1)) == D(250)  # Feb 50 + Mar 100 + Apr 100
    assert balance(spec, usages, sthlm(2026, 5, 1)) == D(300)  # Feb's 50 gone, May's came
    march = stmt(spec, usages, sthlm(2026, 3, 1), sthlm(2026, 4, 1))
    assert figures(march) == (200, 100, 150, 0, 0, 150)
    april = stmt(spec, usages, sthlm(2026, 4, 1), sthlm(2026, 5, 1))
    assert figures(april) == (150, 100, 0, 0, 50, 200)


def test_overage_when_the_lot_runs_out() -> None:
    spec = monthly(60, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 3), 45), use(sthlm(2026, 11, 20), "52.5")]
    assert balance(spec, usages, sthlm(2026, 11, 20)) == D(0)  # never negative
    nov = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1))
    assert figures(nov) == (0, 60, 60, D("37.5"), 0, 0)
    # The next cycle's lot is whole: overage is billed, not borrowed.
    assert balance(spec, usages, sthlm(2026, 12, 1)) == D(60)


def test_usage_before_starts_is_overage() -> None:
    spec = monthly(60, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 10, 20), 30)]
    assert balance(spec, usages, sthlm(2026, 10, 25)) == D(0)
    october = stmt(spec, usages, sthlm(2026, 10, 1), sthlm(2026, 11, 1))
    assert figures(october) == (0, 0, 0, 30, 0, 0)
    assert balance(spec, usages, sthlm(2026, 11, 1)) == D(60)


def test_without_starts_the_package_begins_with_the_earliest_activity() -> None:
    spec = monthly(240, carry_over=1)
    usages = [use(sthlm(2026, 12, 10), 40)]
    # No November lot to carry over: the package starts with December's cycle.
    assert balance(spec, usages, sthlm(2026, 12, 20)) == D(200)
    assert balance(spec, usages, sthlm(2027, 1, 5)) == D(440)


def test_an_untouched_package_shows_one_allotment() -> None:
    spec = monthly(240, carry_over=3)
    assert balance(spec, [], sthlm(2026, 6, 15)) == D(240)
    future = [use(sthlm(2027, 1, 1), 30)]  # later entries do not change the past
    assert balance(spec, future, sthlm(2026, 6, 15)) == D(240)


def test_grouped_two_month_cycle() -> None:
    # Seed 003: two months grouped by agreement; `monthly` is the allotment per cycle.
    spec = monthly(480, cycle_months=2, starts=date(2026, 1, 1))
    usages = [use(sthlm(2026, 1, 20), 100), use(sthlm(2026, 2, 20), 300)]
    assert balance(spec, usages, sthlm(2026, 2, 28, 23, 59)) == D(80)
    assert balance(spec, usages, sthlm(2026, 3, 1)) == D(480)
    cycle = stmt(spec, usages, sthlm(2026, 1, 1), sthlm(2026, 3, 1))
    assert figures(cycle) == (0, 480, 400, 0, 80, 0)
    # A calendar-month window in the middle of a cycle: no grant, no expiry.
    feb = stmt(spec, usages, sthlm(2026, 2, 1), sthlm(2026, 3, 1))
    assert figures(feb) == (380, 0, 300, 0, 80, 0)
    jan = stmt(spec, usages, sthlm(2026, 1, 1), sthlm(2026, 2, 1))
    assert figures(jan) == (0, 480, 100, 0, 0, 380)


def test_topup_in_a_monthly_package_expires_with_its_cycle() -> None:
    spec = monthly(60, starts=date(2026, 11, 1))
    topups = [TopUp(sthlm(2026, 11, 15), 120)]
    usages = [use(sthlm(2026, 11, 20), 90)]
    assert balance(spec, usages, sthlm(2026, 11, 20), topups) == D(90)
    nov = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1), topups)
    assert figures(nov) == (0, 180, 90, 0, 90, 0)
    assert balance(spec, usages, sthlm(2026, 12, 1), topups) == D(60)


def test_topup_before_usage_at_the_same_instant() -> None:
    spec = prepaid()
    at = sthlm(2026, 5, 5, 10)
    assert balance(spec, [use(at, 30)], at, [TopUp(at, 60)]) == D(30)


# --- prepaid service accounts (seed 002) ---------------------------------------------------


def test_prepaid_account_keeps_its_balance_across_years() -> None:
    spec = prepaid(opening=600)
    usages = [use(sthlm(2024, 3, 1), 100), use(sthlm(2026, 2, 1), "52.5")]
    topups = [TopUp(sthlm(2025, 6, 1), 300)]
    assert balance(spec, [], sthlm(2020, 1, 1)) == D(600)
    assert balance(spec, usages, sthlm(2024, 3, 1), topups) == D(500)
    assert balance(spec, usages, sthlm(2024, 12, 31, 23, 59), topups) == D(500)
    assert balance(spec, usages, sthlm(2025, 6, 1), topups) == D(800)
    assert balance(spec, usages, sthlm(2026, 2, 1), topups) == D("747.5")
    assert balance(spec, usages, sthlm(2035, 1, 1), topups) == D("747.5")
    year = stmt(spec, usages, sthlm(2025, 1, 1), sthlm(2026, 1, 1), topups)
    assert figures(year) == (500, 300, 0, 0, 0, 800)


def test_prepaid_overage_and_no_negative_balance() -> None:
    spec = prepaid()
    usages = [use(sthlm(2026, 1, 10), 45), use(sthlm(2026, 2, 10), 30), use(sthlm(2026, 4, 1), 15)]
    topups = [TopUp(sthlm(2026, 2, 1), 60), TopUp(sthlm(2026, 3, 1), 120)]
    # January's 45 came before any hours were bought: overage.
    assert balance(spec, usages, sthlm(2026, 1, 31), topups) == D(0)
    # The February top-up does not pay off January's overage.
    assert balance(spec, usages, sthlm(2026, 2, 1), topups) == D(60)
    assert balance(spec, usages, sthlm(2026, 4, 1), topups) == D(135)
    q1 = stmt(spec, usages, sthlm(2026, 1, 1), sthlm(2026, 4, 1), topups)
    assert figures(q1) == (0, 180, 30, 45, 0, 150)


def test_prepaid_overage_when_exhausted() -> None:
    spec = prepaid(opening=60)
    usages = [use(sthlm(2026, 1, 10), 45), use(sthlm(2026, 1, 20), 30)]
    jan = stmt(spec, usages, sthlm(2026, 1, 1), sthlm(2026, 2, 1))
    assert figures(jan) == (60, 0, 60, 15, 0, 0)


# --- statements ----------------------------------------------------------------------------


def test_statement_for_november_includes_its_expiry_at_december_midnight() -> None:
    spec = monthly(240, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 10), 60), use(sthlm(2026, 12, 3), 30)]
    nov = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1))
    assert nov.start == sthlm(2026, 11, 1)
    assert nov.end == sthlm(2026, 12, 1)
    assert figures(nov) == (0, 240, 60, 0, 180, 0)
    # A window starting at that midnight does not count the expiry again, and grants there.
    dec = stmt(spec, usages, sthlm(2026, 12, 1), sthlm(2027, 1, 1))
    assert figures(dec) == (0, 240, 30, 0, 210, 0)
    # A window ending just before the midnight has not seen it.
    almost = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1) - EPS)
    assert figures(almost) == (0, 240, 60, 0, 0, 180)
    # A window ending just after it: expired, and December's grant is in it.
    after = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1) + EPS)
    assert figures(after) == (0, 480, 60, 0, 180, 240)


def test_statement_windows_in_utc_give_the_same_figures() -> None:
    spec = monthly(240, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 10), 60)]
    local = stmt(spec, usages, sthlm(2026, 11, 1), sthlm(2026, 12, 1))
    in_utc = stmt(spec, usages, utc(2026, 10, 31, 23), utc(2026, 11, 30, 23))
    assert figures(local) == figures(in_utc)


def test_statement_mid_cycle_window_matches_balance_at() -> None:
    spec = monthly(240, starts=date(2026, 11, 1))
    usages = [use(sthlm(2026, 11, 10), 60), use(sthlm(2026, 11, 20), 30)]
    window = stmt(spec, usages, sthlm(2026, 11, 15), sthlm(2026, 11, 25))
    assert figures(window) == (180, 0, 30, 0, 0, 150)
    assert window.balance_start == balance(spec, usages, sthlm(2026, 11, 15) - EPS)
    assert window.balance == balance(spec, usages, sthlm(2026, 11, 25) - EPS)


def test_statement_rejects_empty_window_and_naive() -> None:
    spec = monthly()
    with pytest.raises(ValueError, match="start < end"):
        stmt(spec, [], sthlm(2026, 1, 1), sthlm(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        statement(spec, [], [], start=datetime(2026, 1, 1), end=sthlm(2026, 2, 1), tz=STHLM)


def test_unsorted_history_and_zero_usage() -> None:
    spec = monthly(240, carry_over=1, starts=date(2026, 1, 1))
    ordered = [use(sthlm(2026, 1, 5), 30), use(sthlm(2026, 2, 7), 0), use(sthlm(2026, 3, 9), 90)]
    shuffled = [ordered[2], ordered[0], ordered[1]]
    for at in (sthlm(2026, 2, 1), sthlm(2026, 3, 9), sthlm(2026, 4, 1)):
        assert balance(spec, shuffled, at) == balance(spec, ordered, at)


def test_statements_chain_and_add_up() -> None:
    rng = random.Random(3)
    spec = monthly(300, cycle_day=15, carry_over=1, starts=date(2024, 1, 15))
    start = sthlm(2024, 1, 15)
    usages = [
        use(
            start + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60)),
            rng.choice(["15", "52.5", "75", "30"]),
        )
        for _ in range(600)
    ]
    topups = [TopUp(sthlm(2025, 5, 20), 600)]
    months = [sthlm(2024 + (m // 12), m % 12 + 1, 1) for m in range(36)]
    previous: Statement | None = None
    for first, last in itertools.pairwise(months):
        s = stmt(spec, usages, first, last, topups)
        assert s.balance == s.balance_start + s.allotment - s.used - s.expired
        assert s.balance >= 0
        in_window = sum((u.billed for u in usages if first <= u.at < last), D(0))
        assert s.used + s.overage == in_window
        if previous is not None:
            assert s.balance_start == previous.balance
        previous = s
    whole = stmt(spec, usages, months[0], months[-1], topups)
    assert whole.used + whole.overage == sum(
        (u.billed for u in usages if months[0] <= u.at < months[-1]), D(0)
    )


# --- inputs --------------------------------------------------------------------------------


def test_entries_are_validated() -> None:
    with pytest.raises(ValueError, match="aware"):
        Usage(datetime(2026, 1, 1), D(10))
    with pytest.raises(TypeError, match="Decimal"):
        Usage(sthlm(2026, 1, 1), 10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        Usage(sthlm(2026, 1, 1), D(-1))
    with pytest.raises(ValueError, match="positive"):
        TopUp(sthlm(2026, 1, 1), 0)
    with pytest.raises(ValueError, match="aware"):
        balance_at(monthly(), [], [], datetime(2026, 1, 1), STHLM)


# --- performance ---------------------------------------------------------------------------


def test_ten_years_of_monthly_cycles_with_10000_usages_is_fast() -> None:
    rng = random.Random(7)
    spec = monthly(600, carry_over=2)
    start = sthlm(2016, 1, 1)
    span = 10 * 365 * 24 * 60
    usages = sorted(
        (use(start + timedelta(minutes=rng.randrange(span)), rng.choice(["15", "37.5", "75"]))
         for _ in range(10_000)),
        key=lambda u: u.at,
    )  # fmt: skip
    topups = [TopUp(start + timedelta(days=100 * i), 300) for i in range(30)]
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        s = stmt(spec, usages, sthlm(2025, 11, 1), sthlm(2025, 12, 1), topups)
        balance(spec, usages, sthlm(2026, 1, 1), topups)
        best = min(best, (time.perf_counter() - began) / 2)
    assert s.balance == s.balance_start + s.allotment - s.used - s.expired
    assert best < 0.1, f"{best * 1000:.1f} ms"
