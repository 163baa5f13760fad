"""First-response deadlines, the promise customers read, and deadlines written the local way.

Three ways a plan can count time (``first_response`` in rules.yaml):

``hours: N``
    around the clock: the arrival plus N elapsed hours. Computed in UTC, so a daylight
    saving change does not stretch or shrink it (4 hours are 4 hours).

``working_hours: N``
    business time: only the office hours (``office_hours``, default 08:00-17:00) of working
    days (Monday to Friday in the rules' timezone, minus ``holidays``) count. A request
    that arrives outside office hours starts at the next opening. A deadline that falls
    exactly at closing time stays there (it does not move to the next morning). So
    Friday 16:30 + 1 working hour = Monday 08:30.

``working_days: N``
    N whole working days of business time, i.e. the same time of day N working days later:
    Monday 10:00 + 3 working days = Thursday 10:00. A request before opening on a working
    day counts from that day's opening; one after closing, on a weekend or a holiday counts
    from the next opening, and its deadline is the close of the Nth working day: Saturday
    + 3 working days = Wednesday 17:00 (a weekend arrival starts Monday 08:00).

All three are computed on a :class:`~mailbot.sla.calendar.BusinessCalendar`. Given
``rules``, the plan's first-response clock is used (``mailbot.sla.clocks``): the plan's
``sla.first_response`` or else its ``first_response``, on the plan's calendar (``office``
unless ``sla.calendar`` names another), so a calendar's public holidays, closed dates and
half-days count. Without ``rules`` (older callers) the calendar is ``office_hours`` Monday
to Friday in ``tz`` minus the ``holidays`` given.

Names of days and months are our own tables, never the system locale.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailbot.rules.schema import FirstResponse, OfficeHours, Plan, Rules
from mailbot.sla.calendar import AROUND_THE_CLOCK, BusinessCalendar, office_week
from mailbot.sla.clocks import clock_specs

NO_HOLIDAYS: frozenset[date] = frozenset()


def office_calendar(
    tz: ZoneInfo, office_hours: OfficeHours, holidays: frozenset[date] = NO_HOLIDAYS
) -> BusinessCalendar:
    """Monday to Friday ``office_hours`` in ``tz``, closed on ``holidays``."""
    interval = (
        office_hours.opens.hour * 60 + office_hours.opens.minute,
        office_hours.closes.hour * 60 + office_hours.closes.minute,
    )
    return BusinessCalendar(zone=tz, week=office_week(interval), closed=holidays)


def add_business_time(
    start: datetime,
    amount: timedelta,
    tz: ZoneInfo,
    office_hours: OfficeHours,
    holidays: frozenset[date] = NO_HOLIDAYS,
) -> datetime:
    """``start`` (aware) plus ``amount`` of business time, as an aware UTC datetime."""
    return office_calendar(tz, office_hours, holidays).add_business_time(start, amount)


def first_response_deadline(
    plan: Plan | FirstResponse,
    arrival: datetime,
    tz: ZoneInfo | None = None,
    office_hours: OfficeHours | None = None,
    holidays: frozenset[date] = NO_HOLIDAYS,
    *,
    rules: Rules | None = None,
    severity: str | None = None,
    urgent: bool = False,
) -> datetime:
    """When the first answer is due for a request that arrived at ``arrival`` (aware).

    Returns an aware UTC datetime. See the module docstring for how each kind counts.
    With ``rules`` (and a :class:`Plan`), the plan's first-response clock on its calendar
    is used, with the severity's row and the outside-office-hours row where they apply.
    """
    if arrival.tzinfo is None:
        raise ValueError("arrival must be an aware datetime")
    if rules is not None and isinstance(plan, Plan):
        specs = clock_specs(plan, rules, arrival=arrival, severity=severity, urgent=urgent)
        return specs["first_response"].due_from(arrival)
    if tz is None or office_hours is None:
        raise ValueError("give rules, or tz and office_hours")
    target = plan.first_response if isinstance(plan, Plan) else plan
    if target.kind == "hours":
        return AROUND_THE_CLOCK.add_business(arrival, target.amount * 60)
    calendar = office_calendar(tz, office_hours, holidays)
    if target.kind == "working_hours":
        return calendar.add_business(arrival, target.amount * 60)
    return calendar.add_working_days(arrival, target.amount)


# -- words -------------------------------------------------------------------------------

# (singular, plural) per language and kind; "{n}" is the amount.
_PROMISES: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "minutes": ("within {n} minute", "within {n} minutes"),
        "hours": ("within {n} hour", "within {n} hours"),
        "working_hours": ("within {n} working hour", "within {n} working hours"),
        "working_days": ("within {n} working day", "within {n} working days"),
    },
    "sv": {
        "minutes": ("inom {n} minut", "inom {n} minuter"),
        "hours": ("inom {n} timme", "inom {n} timmar"),
        "working_hours": ("inom {n} arbetstimme", "inom {n} arbetstimmar"),
        "working_days": ("inom {n} arbetsdag", "inom {n} arbetsdagar"),
    },
    "it": {
        "minutes": ("entro {n} minuto", "entro {n} minuti"),
        "hours": ("entro {n} ora", "entro {n} ore"),
        "working_hours": ("entro {n} ora lavorativa", "entro {n} ore lavorative"),
        "working_days": ("entro {n} giorno lavorativo", "entro {n} giorni lavorativi"),
    },
    "de": {
        "minutes": ("innerhalb von {n} Minute", "innerhalb von {n} Minuten"),
        "hours": ("innerhalb von {n} Stunde", "innerhalb von {n} Stunden"),
        "working_hours": ("innerhalb von {n} Arbeitsstunde", "innerhalb von {n} Arbeitsstunden"),
        "working_days": ("innerhalb von {n} Werktag", "innerhalb von {n} Werktagen"),
    },
}

_DAYS: dict[str, tuple[str, ...]] = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "sv": ("måndag", "tisdag", "onsdag", "torsdag", "fredag", "lördag", "söndag"),
    "it": ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
}

_MONTHS: dict[str, tuple[str, ...]] = {
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    "sv": (
        "januari", "februari", "mars", "april", "maj", "juni",
        "juli", "augusti", "september", "oktober", "november", "december",
    ),
    "it": (
        "gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno",
        "luglio", "agosto", "settembre", "ottobre", "novembre", "dicembre",
    ),
    "de": (
        "Januar", "Februar", "März", "April", "Mai", "Juni",
        "Juli", "August", "September", "Oktober", "November", "Dezember",
    ),
}  # fmt: skip

_DATE_FORMATS: dict[str, str] = {
    "en": "{day} {d} {month} {y}, {time}",
    "sv": "{day} {d} {month} {y} kl. {time}",
    "it": "{day} {d} {month} {y}, {time}",
    "de": "{day}, {d}. {month} {y}, {time} Uhr",
}


def promise_text(plan: Plan, language: str, target: tuple[str, int] | None = None) -> str:
    """The response time promised to the customer, e.g. "within 3 working days".

    ``target`` is the first-response clock that applies to this request as (kind, amount),
    when its severity or the hour of arrival changed it; then the text follows it. Else the
    plan's own ``promise`` for that language wins; otherwise the text is generated from
    ``first_response`` (English for a language without a table).
    """
    default = (plan.first_response.kind, plan.first_response.amount)
    if (target is None or target == default) and language in plan.promise:
        return plan.promise[language]
    kind, amount = target or default
    singular, plural = _PROMISES.get(language, _PROMISES["en"])[kind]
    return (singular if amount == 1 else plural).format(n=amount)


def format_deadline(dt: datetime, tz: ZoneInfo, language: str) -> str:
    """``dt`` in ``tz``, written the local way: "måndag 23 november 2026 kl. 10:30"."""
    if dt.tzinfo is None:
        raise ValueError("format_deadline needs an aware datetime")
    local = dt.astimezone(tz)
    lang = language if language in _DATE_FORMATS else "en"
    return _DATE_FORMATS[lang].format(
        day=_DAYS[lang][local.weekday()],
        d=local.day,
        month=_MONTHS[lang][local.month - 1],
        y=local.year,
        time=f"{local:%H:%M}",
    )
