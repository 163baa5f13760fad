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

Holidays will come from calendars in a later version of the rules; the functions already
take them as ``holidays: frozenset[date]``.

Names of days and months are our own tables, never the system locale.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailbot.rules.schema import FirstResponse, OfficeHours, Plan

NO_HOLIDAYS: frozenset[date] = frozenset()

# A calendar with no working day in ten years is a configuration error, not a loop.
_MAX_SEARCH_DAYS = 3660


def _is_working_day(day: date, holidays: frozenset[date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def _next_working_day(day: date, holidays: frozenset[date]) -> date:
    for _ in range(_MAX_SEARCH_DAYS):
        day += timedelta(days=1)
        if _is_working_day(day, holidays):
            return day
    raise ValueError("no working day within ten years: check the holidays")


def _start(local: datetime, office_hours: OfficeHours, holidays: frozenset[date]) -> datetime:
    """The first moment of business time at or after ``local`` (naive local time)."""
    day = local.date()
    if _is_working_day(day, holidays):
        if local.time() < office_hours.opens:
            return datetime.combine(day, office_hours.opens)
        if local.time() < office_hours.closes:
            return local
    return datetime.combine(_next_working_day(day, holidays), office_hours.opens)


def add_business_time(
    start: datetime,
    amount: timedelta,
    tz: ZoneInfo,
    office_hours: OfficeHours,
    holidays: frozenset[date] = NO_HOLIDAYS,
) -> datetime:
    """``start`` (aware) plus ``amount`` of business time, as an aware UTC datetime."""
    if start.tzinfo is None:
        raise ValueError("business time needs an aware datetime")
    current = _start(start.astimezone(tz).replace(tzinfo=None), office_hours, holidays)
    remaining = amount
    while True:
        closing = datetime.combine(current.date(), office_hours.closes)
        available = closing - current
        if remaining <= available:
            current += remaining
            break
        remaining -= available
        current = datetime.combine(_next_working_day(current.date(), holidays), office_hours.opens)
    return current.replace(tzinfo=tz).astimezone(UTC)


def _day_length(office_hours: OfficeHours) -> timedelta:
    opens = datetime.combine(date.min, office_hours.opens)
    return datetime.combine(date.min, office_hours.closes) - opens


def first_response_deadline(
    plan: Plan | FirstResponse,
    arrival: datetime,
    tz: ZoneInfo,
    office_hours: OfficeHours,
    holidays: frozenset[date] = NO_HOLIDAYS,
) -> datetime:
    """When the first answer is due for a request that arrived at ``arrival`` (aware).

    Returns an aware UTC datetime. See the module docstring for how each kind counts.
    """
    if arrival.tzinfo is None:
        raise ValueError("arrival must be an aware datetime")
    target = plan.first_response if isinstance(plan, Plan) else plan
    if target.kind == "hours":
        return arrival.astimezone(UTC) + timedelta(hours=target.amount)
    if target.kind == "working_hours":
        amount = timedelta(hours=target.amount)
    else:
        amount = _day_length(office_hours) * target.amount
    return add_business_time(arrival, amount, tz, office_hours, holidays)


# -- words -------------------------------------------------------------------------------

# (singular, plural) per language and kind; "{n}" is the amount.
_PROMISES: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "hours": ("within {n} hour", "within {n} hours"),
        "working_hours": ("within {n} working hour", "within {n} working hours"),
        "working_days": ("within {n} working day", "within {n} working days"),
    },
    "sv": {
        "hours": ("inom {n} timme", "inom {n} timmar"),
        "working_hours": ("inom {n} arbetstimme", "inom {n} arbetstimmar"),
        "working_days": ("inom {n} arbetsdag", "inom {n} arbetsdagar"),
    },
    "it": {
        "hours": ("entro {n} ora", "entro {n} ore"),
        "working_hours": ("entro {n} ora lavorativa", "entro {n} ore lavorative"),
        "working_days": ("entro {n} giorno lavorativo", "entro {n} giorni lavorativi"),
    },
    "de": {
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


def promise_text(plan: Plan, language: str) -> str:
    """The response time promised to the customer, e.g. "within 3 working days".

    The plan's own ``promise`` for that language wins; otherwise the text is generated
    from ``first_response`` (English for a language without a table).
    """
    if language in plan.promise:
        return plan.promise[language]
    target = plan.first_response
    singular, plural = _PROMISES.get(language, _PROMISES["en"])[target.kind]
    return (singular if target.amount == 1 else plural).format(n=target.amount)


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
