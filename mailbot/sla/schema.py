"""The ``calendars:`` section and ``plans.*.sla`` blocks of rules.yaml.

``calendars`` maps a name to a business calendar::

    calendars:
      office:
        timezone: Europe/Stockholm        # default: the rules' timezone
        weekdays: "08:00-17:00"           # Monday to Friday (default: office_hours)
        hours: {fri: ["08:00-12:00", "13:00-15:00"], sat: []}   # per day; overrides weekdays
        holidays: {country: SE, categories: [public, de_facto]}  # the holidays package
        closed: [2026-12-31]              # explicit closed dates
        half_days: {2026-12-23: "08:00-12:00"}

Without ``weekdays`` and ``hours`` a calendar is open ``office_hours`` Monday to Friday; with
``hours`` alone, days not listed are closed. ``office`` always exists: declared, or derived
from ``office_hours`` and ``timezone`` without holidays (the behaviour before calendars).
``24x7`` is built in (around the clock, no holidays) and cannot be declared.

A plan's ``sla`` block sets its clocks (``first_response``, ``registered``,
``action_started``, ``resolution``), each ``{minutes|hours|working_hours|working_days: N,
calendar: NAME}``. ``minutes`` and ``hours`` run around the clock (``24x7``) unless a
calendar is named; ``working_hours`` and ``working_days`` count on the block's
``calendar`` (default ``office``) and cannot use ``24x7``. ``severity: {L1: {...}}``
replaces single clocks (and optionally the reminders) for a severity;
``outside_office_hours`` replaces clocks for requests that arrive while the block's calendar
is closed (only urgent ones unless ``urgent_only: false``). A plan's own ``first_response``
is the first-response clock when the block has none.

Names of calendars are checked against the declared ones in
:func:`calendar_reference_problems`, which ``mailbot.rules.schema`` runs with its other
cross-field checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo

import holidays as holidays_pkg
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailbot.sla.calendar import (
    AROUND_THE_CLOCK_NAME,
    WEEKDAYS,
    BusinessCalendar,
    DayHours,
    HolidaySource,
    Interval,
    check_day,
    parse_interval,
    weekly,
)

CLOCK_NAMES: tuple[str, ...] = ("first_response", "registered", "action_started", "resolution")
SEVERITIES: tuple[str, ...] = ("L1", "L2", "L3", "L4")
OFFICE = "office"

_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?\s*$")


def _did_you_mean(word: object, options: list[str]) -> str:
    from mailbot.rules.schema import did_you_mean  # here: an import cycle

    return did_you_mean(word, options)


def _interval(value: Any) -> Any:
    if isinstance(value, str):
        return parse_interval(value)
    return value


def _day_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


OpeningInterval = Annotated[tuple[int, int], BeforeValidator(_interval)]
DayIntervals = Annotated[
    tuple[OpeningInterval, ...], BeforeValidator(_day_list), AfterValidator(check_day)
]
CalendarName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")]


def parse_duration(value: Any) -> Any:
    """``"30m"``, ``"2h"``, ``"1h30m"`` -> timedelta; a timedelta passes through."""
    if isinstance(value, timedelta) or not isinstance(value, str):
        return value
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        raise ValueError(f"a duration looks like '30m', '2h' or '1h30m' (got {value!r})")
    hours, minutes = (int(group or 0) for group in match.groups())
    return timedelta(hours=hours, minutes=minutes)


def format_duration(value: timedelta) -> str:
    """``timedelta(minutes=90)`` -> ``"1h30m"``."""
    minutes = int(value.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{rest}m" if rest or not hours else "")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- calendars ---------------------------------------------------------------------------


class WeekHoursSpec(_Model):
    """Opening intervals per weekday; ``[]`` is closed, a missing day is closed too."""

    mon: DayIntervals | None = None
    tue: DayIntervals | None = None
    wed: DayIntervals | None = None
    thu: DayIntervals | None = None
    fri: DayIntervals | None = None
    sat: DayIntervals | None = None
    sun: DayIntervals | None = None

    def given(self) -> dict[str, DayHours]:
        return {day: hours for day in WEEKDAYS if (hours := getattr(self, day)) is not None}


class HolidaysSpec(_Model):
    """Public holidays of a country (ISO 3166 code), optional subdivision and categories."""

    country: str
    subdivision: str | None = None
    categories: tuple[str, ...] = ("public",)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        known = holidays_pkg.list_supported_countries()
        code = value.strip().upper()
        if code not in known:
            hint = _did_you_mean(code, sorted(known))
            raise ValueError(f"no public holidays are known for country {value!r}{hint}")
        return code

    @field_validator("subdivision")
    @classmethod
    def _subdivision(cls, value: str | None, info: ValidationInfo) -> str | None:
        country = info.data.get("country")
        if value is None or country is None:
            return value
        known = [str(s) for s in holidays_pkg.list_supported_countries()[country]]
        if value not in known:
            match = {s.upper(): s for s in known}.get(value.strip().upper())
            if match is not None:
                return match
            listed = ", ".join(known) if known else "none"
            raise ValueError(
                f"{country} has no subdivision {value!r}{_did_you_mean(value, known)}"
                f" (known: {listed})"
            )
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        country = info.data.get("country")
        if country is None:
            return value
        known = [str(c) for c in type(holidays_pkg.country_holidays(country)).supported_categories]
        for category in value:
            if category not in known:
                raise ValueError(
                    f"{country} has no holiday category {category!r}"
                    f"{_did_you_mean(category, known)} (known: {', '.join(known)})"
                )
        if not value:
            raise ValueError("give at least one category, e.g. [public]")
        return value

    def source(self) -> HolidaySource:
        return HolidaySource(self.country, self.subdivision, self.categories)


class CalendarSpec(_Model):
    """One named business calendar (see the module docstring)."""

    timezone: str | None = None
    weekdays: DayIntervals | None = None
    hours: WeekHoursSpec | None = None
    holidays: HolidaysSpec | None = None
    closed: tuple[date, ...] = ()
    half_days: dict[date, DayIntervals] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from mailbot.rules.schema import check_timezone  # here: an import cycle

        return check_timezone(value)

    @model_validator(mode="after")
    def _ever_open(self) -> Self:
        if self.weekdays is None and self.hours is None:
            return self  # office_hours, Monday to Friday
        if not any(self.week_hours(None).values()) and not any(self.half_days.values()):
            raise ValueError("the calendar is never open: give weekdays or hours")
        return self

    def week_hours(self, default: Interval | None) -> dict[str, DayHours]:
        """Intervals per weekday name; ``default`` is used Monday to Friday when unset."""
        week: dict[str, DayHours] = {}
        if self.weekdays is not None:
            week = dict.fromkeys(WEEKDAYS[:5], self.weekdays)
        elif self.hours is None and default is not None:
            week = dict.fromkeys(WEEKDAYS[:5], (default,))
        if self.hours is not None:
            week.update(self.hours.given())
        return week

    def build(self, name: str, timezone: str, default: Interval) -> BusinessCalendar:
        return BusinessCalendar(
            zone=ZoneInfo(self.timezone or timezone),
            week=weekly(self.week_hours(default)),
            holidays=self.holidays.source() if self.holidays else None,
            closed=frozenset(self.closed),
            half_days=dict(self.half_days),
            name=name,
        )


# -- clocks ------------------------------------------------------------------------------

TargetKind = Literal["minutes", "hours", "working_hours", "working_days"]
TARGET_KINDS: tuple[TargetKind, ...] = ("minutes", "hours", "working_hours", "working_days")


class ClockTarget(_Model):
    """Exactly one of minutes, hours, working_hours, working_days; optionally a calendar."""

    minutes: int | None = Field(default=None, gt=0, le=60 * 24 * 365)
    hours: int | None = Field(default=None, gt=0, le=24 * 365)
    working_hours: int | None = Field(default=None, gt=0, le=24 * 365)
    working_days: int | None = Field(default=None, gt=0, le=365)
    calendar: CalendarName | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in TARGET_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of minutes, hours, working_hours or working_days"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.calendar == AROUND_THE_CLOCK_NAME and given[0].startswith("working_"):
            raise ValueError(
                f"{given[0]} cannot count on the 24x7 calendar: use hours or minutes"
                " for around the clock"
            )
        return self

    @property
    def kind(self) -> TargetKind:
        return next(name for name in TARGET_KINDS if getattr(self, name) is not None)

    @property
    def amount(self) -> int:
        value: int = getattr(self, self.kind)
        return value

    def calendar_name(self, default: str) -> str:
        """The calendar this target counts on; ``default`` is the sla block's calendar."""
        if self.calendar is not None:
            return self.calendar
        return AROUND_THE_CLOCK_NAME if self.kind in ("minutes", "hours") else default


class ReminderSpec(_Model):
    """A reminder to the agents: at a share of the target, or some time before the breach."""

    at_percent: int | None = Field(default=None, gt=0, lt=100)
    before: Annotated[timedelta, BeforeValidator(parse_duration)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.at_percent is None) == (self.before is None):
            raise ValueError("give exactly one of at_percent or before")
        if self.before is not None and self.before <= timedelta(0):
            raise ValueError("before must be longer than zero")
        return self

    @property
    def key(self) -> str:
        """A stable name: ``at_percent:80`` or ``before:30m`` (a reminder row's kind)."""
        if self.before is not None:
            return f"before:{format_duration(self.before)}"
        return f"at_percent:{self.at_percent}"


class ClockRow(_Model):
    """Targets of the four clocks; a missing one is not tracked (or not overridden)."""

    first_response: ClockTarget | None = None
    registered: ClockTarget | None = None
    action_started: ClockTarget | None = None
    resolution: ClockTarget | None = None

    def targets(self) -> dict[str, ClockTarget]:
        return {name: t for name in CLOCK_NAMES if (t := getattr(self, name)) is not None}


class SeverityRow(ClockRow):
    """Clocks (and optionally reminders) that replace the plan's for one severity."""

    reminders: tuple[ReminderSpec, ...] | None = None


class OutsideHoursRow(ClockRow):
    """Clocks for requests arriving while the calendar is closed (seed 001's last row)."""

    urgent_only: bool = True


class SeverityOverrides(_Model):
    L1: SeverityRow | None = None
    L2: SeverityRow | None = None
    L3: SeverityRow | None = None
    L4: SeverityRow | None = None

    def row(self, severity: str | None) -> SeverityRow | None:
        if severity not in SEVERITIES:
            return None
        row: SeverityRow | None = getattr(self, severity)
        return row


#: Reminder recipients resolved per ticket when the reminder goes out: the ticket's agent,
#: or the account manager of the customer's account (seed 003: "a named account manager who
#: gets the reminders"). Without one, the plan's other recipient gets it.
ROLE_RECIPIENTS = ("assignee", "account_manager")


def _address(value: str) -> str:
    from mailbot.rules.schema import check_address  # here: an import cycle

    if value.strip() in ROLE_RECIPIENTS:
        return value.strip()
    return check_address(value)


class PlanSla(_Model):
    """A plan's SLA: clocks, overrides by severity and outside office hours, reminders."""

    calendar: CalendarName = OFFICE
    first_response: ClockTarget | None = None
    registered: ClockTarget | None = None
    action_started: ClockTarget | None = None
    resolution: ClockTarget | None = None
    severity: SeverityOverrides | None = None
    outside_office_hours: OutsideHoursRow | None = None
    reminders: tuple[ReminderSpec, ...] = ()
    #: Who gets the warnings before a deadline (default: ``escalate_to``): an address,
    #: ``assignee`` or ``account_manager``.
    notify: Annotated[str, AfterValidator(_address)] | None = None
    #: Who gets the escalation when a deadline is breached.
    escalate_to: Annotated[str, AfterValidator(_address)] | None = None

    def recipient(self, kind: str) -> str | None:
        """The address for a reminder of ``kind`` (``breach`` or a warning), if any."""
        if kind == "breach":
            return self.escalate_to
        return self.notify or self.escalate_to

    @model_validator(mode="after")
    def _office_calendar(self) -> Self:
        if self.calendar == AROUND_THE_CLOCK_NAME and self.outside_office_hours is not None:
            raise ValueError("outside_office_hours needs an office calendar, not 24x7")
        return self

    def targets(self) -> dict[str, ClockTarget]:
        return {name: t for name in CLOCK_NAMES if (t := getattr(self, name)) is not None}


# -- cross-field checks on raw data ------------------------------------------------------

Loc = tuple[str | int, ...]


def _calendar_refs(loc: Loc, sla: Mapping[str, Any]) -> list[tuple[Loc, object]]:
    """(path, name) of every calendar an sla block names."""
    found: list[tuple[Loc, object]] = []
    if "calendar" in sla:
        found.append(((*loc, "calendar"), sla["calendar"]))

    def row(row_loc: Loc, value: object) -> None:
        if not isinstance(value, Mapping):
            return
        for clock in CLOCK_NAMES:
            target = value.get(clock)
            if isinstance(target, Mapping) and target.get("calendar") is not None:
                found.append(((*row_loc, clock, "calendar"), target["calendar"]))

    row(loc, sla)
    severity = sla.get("severity")
    if isinstance(severity, Mapping):
        for level, value in severity.items():
            row((*loc, "severity", level), value)
    row((*loc, "outside_office_hours"), sla.get("outside_office_hours"))
    return found


def calendar_reference_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Unknown calendar names and a declared ``24x7``, as (field path, message) pairs."""
    problems: list[tuple[Loc, str]] = []
    calendars = data.get("calendars")
    declared = [str(name) for name in calendars] if isinstance(calendars, Mapping) else []
    if AROUND_THE_CLOCK_NAME in declared:
        problems.append(
            (
                ("calendars", AROUND_THE_CLOCK_NAME),
                "24x7 is built in (around the clock, no holidays): choose another name",
            )
        )
    known = sorted({*declared, OFFICE, AROUND_THE_CLOCK_NAME})
    plans = data.get("plans")
    if not isinstance(plans, Mapping):
        return problems
    for plan_id, plan in plans.items():
        sla = plan.get("sla") if isinstance(plan, Mapping) else None
        if not isinstance(sla, Mapping):
            continue
        for loc, name in _calendar_refs(("plans", plan_id, "sla"), sla):
            if isinstance(name, str) and name not in known:
                problems.append(
                    (
                        loc,
                        f"unknown calendar {name!r}{_did_you_mean(name, known)}"
                        f" (known: {', '.join(known)})",
                    )
                )
    return problems
