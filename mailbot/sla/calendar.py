"""Business calendars: when the office is open, and business-time arithmetic on that.

A :class:`BusinessCalendar` is an IANA time zone, opening intervals per weekday (a day may
have several, e.g. 08:00-12:00 and 13:00-17:00, or none), public holidays from the
``holidays`` package (country, optional subdivision, categories), explicit closed dates and
half-days (a date with its own, usually shorter, intervals). Everything is pure: no clock is
read, every argument and result is an aware datetime, results are in UTC.

Semantics, stated once:

* Intervals are half-open, ``[opens, closes)``, in local wall-clock time. ``24:00`` may end
  an interval. A half-day's intervals replace the weekday's; a closed date or a holiday
  (unless it is also a half-day) has none.
* **Business time is wall-clock office time in the calendar's zone.** 08:00-17:00 is nine
  business hours on the days summer time starts or ends too. A wall-clock time that does not
  exist (the spring-forward gap) is read with the offset before the change; a repeated hour
  (autumn) counts once.
* ``next_opening(t)`` is ``t`` itself when open, else the next interval's opening.
* ``add_business(t, minutes)`` starts at ``next_opening(t)``; a result that falls exactly at a
  closing stays there (it does not move to the next opening): Friday 16:30 + 60 business
  minutes on 08:00-17:00 is Monday 08:30, Friday 16:00 + 60 is Friday 17:00.
* ``add_working_days(t, n)`` keeps the time of day. Let ``s = next_opening(t)`` on working
  day D0. If ``s`` is D0's first opening (the request came before opening, after closing, on a
  weekend or a holiday), the result is the closing of the n-th working day counting D0 as the
  first: Saturday + 3 = Wednesday 17:00, Monday 07:00 + 1 = Monday 17:00. Otherwise it is the
  same wall-clock time n working days after D0: Monday 10:00 + 3 = Thursday 10:00. If that
  day is not open at that time, the result is its next opening that day (a lunch break, a day
  that opens later) or, when the day has closed by then (a half-day), its last closing.
  With identical days this equals ``add_business(t, n * length of a day)``.
* :data:`AROUND_THE_CLOCK` is open always, in UTC, with no holidays: its business time is
  elapsed time, so 4 hours are 4 real hours across a DST change.

Holidays are computed lazily, one year at a time, and cached on the calendar. Arithmetic
steps from interval to interval and day to day, never minute by minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import cast

import holidays as holidays_pkg

#: Minutes since local midnight: (opens, closes), 0 <= opens < closes <= 1440.
Interval = tuple[int, int]
DayHours = tuple[Interval, ...]
WeekHours = tuple[DayHours, DayHours, DayHours, DayHours, DayHours, DayHours, DayHours]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60

# A calendar that stays closed for ten years is a configuration error, not a loop.
_MAX_SEARCH_DAYS = 3660
_ZERO = timedelta(0)


def parse_interval(text: str) -> Interval:
    """``"08:00-17:00"`` -> ``(480, 1020)``; ``24:00`` may close. Raises ``ValueError``."""
    opens_text, dash, closes_text = text.strip().partition("-")
    if not dash:
        raise ValueError(f"opening hours must look like '08:00-17:00' (got {text!r})")
    opens = _parse_clock(opens_text, text)
    closes = _parse_clock(closes_text, text)
    if opens >= MINUTES_PER_DAY:
        raise ValueError(f"{text!r}: 24:00 can only close an interval")
    if closes <= opens:
        raise ValueError(f"{text!r} closes before it opens")
    return opens, closes


def _parse_clock(part: str, whole: str) -> int:
    hours, colon, minutes = part.strip().partition(":")
    if not (colon and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"opening hours must look like '08:00-17:00' (got {whole!r})")
    value = int(hours) * 60 + int(minutes)
    if len(hours) > 2 or int(minutes) > 59 or value > MINUTES_PER_DAY:
        raise ValueError(f"{whole!r} is not a valid time range")
    return value


def format_interval(interval: Interval) -> str:
    """``(480, 1020)`` -> ``"08:00-17:00"``."""
    return "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in interval)


def check_day(intervals: Iterable[Interval]) -> DayHours:
    """The intervals of one day, sorted; raises ``ValueError`` when two overlap."""
    ordered = tuple(sorted(intervals))
    for before, after in pairwise(ordered):
        if after[0] < before[1]:
            raise ValueError(
                f"intervals {format_interval(before)!r} and {format_interval(after)!r} overlap"
            )
    return ordered


@dataclass(frozen=True, slots=True)
class HolidaySource:
    """Public holidays of one country (ISO code), optional subdivision and categories."""

    country: str
    subdivision: str | None = None
    categories: tuple[str, ...] = ("public",)

    def dates(self, year: int) -> frozenset[date]:
        found = holidays_pkg.country_holidays(
            self.country, subdiv=self.subdivision, years=year, categories=self.categories
        )
        return frozenset(found.keys())


@dataclass(frozen=True, eq=False)
class BusinessCalendar:
    """Opening hours in a zone, minus holidays and closed dates, plus half-days."""

    zone: tzinfo
    week: WeekHours
    holidays: HolidaySource | None = None
    closed: frozenset[date] = frozenset()
    half_days: Mapping[date, DayHours] = field(default_factory=dict)
    name: str = "office"
    _years: dict[int, frozenset[date]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not any(self.week) and not any(self.half_days.values()):
            raise ValueError(f"calendar {self.name!r} is never open")

    # -- days ---------------------------------------------------------------------------

    def holiday_dates(self, year: int) -> frozenset[date]:
        """The holidays of ``year`` (computed on first use, then cached)."""
        cached = self._years.get(year)
        if cached is None:
            cached = self.holidays.dates(year) if self.holidays else frozenset()
            self._years[year] = cached
        return cached

    def hours_on(self, day: date) -> DayHours:
        """The opening intervals of ``day`` (local date); empty when closed."""
        half = self.half_days.get(day)
        if half is not None:
            return half
        if day in self.closed or day in self.holiday_dates(day.year):
            return ()
        return self.week[day.weekday()]

    def is_working_day(self, day: date) -> bool:
        return bool(self.hours_on(day))

    def _working_days_from(self, day: date) -> Iterator[tuple[date, DayHours]]:
        """Working days from ``day`` (inclusive) on, with their intervals."""
        for _ in range(_MAX_SEARCH_DAYS):
            hours = self.hours_on(day)
            if hours:
                yield day, hours
            day += timedelta(days=1)
        raise ValueError(f"calendar {self.name!r}: no working day within ten years")

    # -- conversions --------------------------------------------------------------------

    def _local(self, t: datetime) -> datetime:
        if t.tzinfo is None:
            raise ValueError("business time needs an aware datetime")
        return t.astimezone(self.zone).replace(tzinfo=None)

    def _utc(self, local: datetime) -> datetime:
        return local.replace(tzinfo=self.zone).astimezone(UTC)

    # -- queries ------------------------------------------------------------------------

    def is_open(self, t: datetime) -> bool:
        local = self._local(t)
        minute = _minute_of(local)
        return any(o <= minute < c for o, c in self.hours_on(local.date()))

    def _next_open_local(self, local: datetime) -> tuple[datetime, datetime]:
        """(first business moment at or after ``local``, the end of its interval)."""
        today = local.date()
        for day, hours in self._working_days_from(today):
            midnight = datetime.combine(day, time.min)
            for opens, closes in hours:
                end = midnight + timedelta(minutes=closes)
                if day != today or local < end:
                    return max(local, midnight + timedelta(minutes=opens)), end
        raise AssertionError("unreachable")  # pragma: no cover

    def next_opening(self, t: datetime) -> datetime:
        """``t`` if the office is open then, else the next opening (UTC)."""
        return self._utc(self._next_open_local(self._local(t))[0])

    def _intervals_from(self, local: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Business intervals (local, naive) from ``local`` on; the first may be partial."""
        today = local.date()
        for day, hours in self._working_days_from(today):
            midnight = datetime.combine(day, time.min)
            for opens, closes in hours:
                start = midnight + timedelta(minutes=opens)
                end = midnight + timedelta(minutes=closes)
                if day == today:
                    if local >= end:
                        continue
                    start = max(start, local)
                yield start, end

    def add_business_time(self, t: datetime, amount: timedelta) -> datetime:
        """``t`` plus ``amount`` of business time (see the module docstring)."""
        if amount < _ZERO:
            raise ValueError("business time to add must not be negative")
        remaining = amount
        for start, end in self._intervals_from(self._local(t)):
            available = end - start
            if remaining <= available:
                return self._utc(start + remaining)
            remaining -= available
        raise AssertionError("unreachable")  # pragma: no cover

    def add_business(self, t: datetime, minutes: float) -> datetime:
        """``t`` plus ``minutes`` business minutes, as an aware UTC datetime."""
        return self.add_business_time(t, timedelta(minutes=minutes))

    def business_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Business time in ``[a, b)``; zero when ``b <= a``."""
        start, stop = self._local(a), self._local(b)
        total = _ZERO
        if stop <= start:
            return total
        for begin, end in self._intervals_from(start):
            if begin >= stop:
                break
            total += min(end, stop) - begin
        return total

    def business_minutes_between(self, a: datetime, b: datetime) -> float:
        return self.business_time_between(a, b) / timedelta(minutes=1)

    def add_working_days(self, t: datetime, n: int) -> datetime:
        """``t`` plus ``n`` working days, keeping the time of day (module docstring)."""
        if n < 0:
            raise ValueError("working days to add must not be negative")
        start, _ = self._next_open_local(self._local(t))
        days = self._working_days_from(start.date())
        first_day, first_hours = next(days)  # the day of ``start``
        if n == 0:
            return self._utc(start)
        if _minute_of(start) == first_hours[0][0]:
            day, hours = first_day, first_hours
            for _ in range(n - 1):
                day, hours = next(days)
            return self._utc(datetime.combine(day, time.min) + timedelta(minutes=hours[-1][1]))
        for _ in range(n):
            day, hours = next(days)
        midnight = datetime.combine(day, time.min)
        wanted = start - datetime.combine(start.date(), time.min)
        for opens, closes in hours:
            if wanted < timedelta(minutes=closes):
                return self._utc(midnight + max(wanted, timedelta(minutes=opens)))
        return self._utc(midnight + timedelta(minutes=hours[-1][1]))


def _minute_of(local: datetime) -> float:
    return local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60


def weekly(hours: Mapping[str, Iterable[Interval]]) -> WeekHours:
    """A week from ``{"mon": [(480, 1020)], ...}``; missing days are closed."""
    unknown = set(hours) - set(WEEKDAYS)
    if unknown:
        raise ValueError(f"unknown weekday(s): {', '.join(sorted(unknown))}")
    return cast(WeekHours, tuple(check_day(hours.get(name, ())) for name in WEEKDAYS))


def office_week(interval: Interval) -> WeekHours:
    """Monday to Friday with one interval, the weekend closed."""
    return weekly({name: [interval] for name in WEEKDAYS[:5]})


#: Open always, no holidays, in UTC: business time is elapsed time.
AROUND_THE_CLOCK = BusinessCalendar(
    zone=UTC,
    week=weekly({name: [(0, MINUTES_PER_DAY)] for name in WEEKDAYS}),
    name="24x7",
)
AROUND_THE_CLOCK_NAME = "24x7"
