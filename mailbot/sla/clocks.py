"""SLA clocks: which clocks a ticket has, their deadlines, state and reminder times. Pure.

A clock (first response, registered, action started, resolution) has a target on a
business calendar. Its semantics, over a ticket's events:

* It **starts** at the arrival, or at the calendar's next opening if it is closed then.
* ``paused`` (the ticket waits on the customer) stops it, ``resumed`` (the customer replied)
  restarts it; time spent paused does not count. The target is measured as **business time
  on the clock's calendar**: the business time between the start and the unpaused deadline
  (for ``working_days`` that is what those days hold). Each pause that begins before the
  deadline pushes the deadline by the business time it lasted: a pause over a weekend on an
  office calendar extends it by the paused office hours only. While paused the deadline is
  open (``due_at`` is None) unless it had already passed.
* ``met`` (for first response: a human agent's customer-visible reply) stops it; met in
  time (at or before the deadline) it is ``met``, later it is ``breached``. ``closed`` stops
  it without meeting it: ``closed`` or ``breached``. Events after the clock stopped, or
  after ``now``, are ignored, as are a pause while paused and a resume while running.
* A running clock past its deadline is ``breached``; ``breached_at`` is the deadline.

Reminders (``reminder_times``) fall where the clock's elapsed business time reaches a share
of the target (``at_percent``) or the target minus some business time (``before``), plus
the breach itself at the deadline. A reminder that would fall at or before the start is left
out. A stopped clock has none; a paused one only those already reached and its past breach.

Which targets apply (``clock_specs``): the plan's ``sla`` clocks, the plan's own
``first_response`` when the block lacks one, then the severity's row, then the
``outside_office_hours`` row when the request arrives while the plan's calendar is closed
(and it is urgent, unless the row says ``urgent_only: false``); later rows replace single
clocks only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import NamedTuple

from mailbot.rules.schema import FirstResponse, Plan, Rules
from mailbot.sla.calendar import AROUND_THE_CLOCK_NAME, BusinessCalendar
from mailbot.sla.schema import CLOCK_NAMES, OFFICE, ClockTarget, ReminderSpec, TargetKind

_ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class ClockSpec:
    """One clock of one ticket: its name, target (kind and amount) and calendar."""

    name: str
    kind: TargetKind
    amount: int
    calendar: BusinessCalendar

    def due_from(self, arrival: datetime) -> datetime:
        """The deadline for a request that arrived at ``arrival``, with no pause (UTC)."""
        if self.kind == "working_days":
            return self.calendar.add_working_days(arrival, self.amount)
        minutes = self.amount * (1 if self.kind == "minutes" else 60)
        return self.calendar.add_business(arrival, minutes)

    def target_time(self, arrival: datetime) -> timedelta:
        """The target as business time on the calendar, from the start to the deadline."""
        return self.calendar.business_time_between(arrival, self.due_from(arrival))


class EventKind(StrEnum):
    ARRIVED = "arrived"
    PAUSED = "paused"
    RESUMED = "resumed"
    MET = "met"
    CLOSED = "closed"


class ClockEvent(NamedTuple):
    kind: EventKind
    at: datetime


class ClockStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ClockState:
    """A clock as of ``as_of``; durations are business time on the clock's calendar."""

    name: str
    status: ClockStatus
    as_of: datetime
    started_at: datetime
    due_at: datetime | None
    target: timedelta
    elapsed: timedelta
    remaining: timedelta
    breached_at: datetime | None
    stopped_at: datetime | None
    #: The periods the clock ran, ``(from, to)``; ``to`` is None for the current one.
    running: tuple[tuple[datetime, datetime | None], ...]

    @property
    def elapsed_minutes(self) -> float:
        return self.elapsed / timedelta(minutes=1)

    @property
    def remaining_minutes(self) -> float:
        return self.remaining / timedelta(minutes=1)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("clock events need aware datetimes")
    return t.astimezone(UTC)


def _segments(
    events: Iterable[ClockEvent], now: datetime
) -> tuple[datetime, list[tuple[datetime, datetime | None]], ClockEvent | None]:
    """(arrival, running periods, the stopping event) from the events up to ``now``."""
    ordered = sorted(
        (ClockEvent(EventKind(e.kind), _utc(e.at)) for e in events), key=lambda e: e.at
    )
    arrival = next((e.at for e in ordered if e.kind is EventKind.ARRIVED), None)
    if arrival is None:
        raise ValueError("a clock needs an 'arrived' event")
    periods: list[tuple[datetime, datetime | None]] = []
    start: datetime | None = arrival
    for event in ordered:
        if event.at > now or event.at < arrival or event.kind is EventKind.ARRIVED:
            continue
        if event.kind is EventKind.PAUSED and start is not None:
            periods.append((start, event.at))
            start = None
        elif event.kind is EventKind.RESUMED and start is None:
            start = event.at
        elif event.kind in (EventKind.MET, EventKind.CLOSED):
            if start is not None:
                periods.append((start, event.at))
            return arrival, periods, event
    if start is not None:
        periods.append((start, None))
    return arrival, periods, None


def _pauses(
    periods: list[tuple[datetime, datetime | None]], stop: ClockEvent | None
) -> list[tuple[datetime, datetime | None]]:
    """The pauses between running periods; a stop while paused ends the last pause."""
    pauses: list[tuple[datetime, datetime | None]] = []
    for (_, paused_at), (resumed_at, _) in pairwise(periods):
        assert paused_at is not None  # only the last period may be open
        pauses.append((paused_at, resumed_at))
    last = periods[-1][1]
    if last is not None and (stop is None or stop.at > last):
        pauses.append((last, stop.at if stop is not None else None))
    return pauses


def evaluate(spec: ClockSpec, events: Iterable[ClockEvent], now: datetime) -> ClockState:
    """The state of ``spec``'s clock given the ticket's events (module docstring)."""
    now = _utc(now)
    cal = spec.calendar
    arrival, periods, stop = _segments(events, now)
    started_at = cal.next_opening(arrival)
    target = spec.target_time(arrival)

    paused = stop is None and periods[-1][1] is not None
    due: datetime | None = spec.due_from(arrival)
    for paused_at, resumed_at in _pauses(periods, stop):
        if due is None or paused_at >= due:
            break
        if resumed_at is None:  # paused now: the deadline is open
            due = None
            break
        due = cal.add_business_time(due, cal.business_time_between(paused_at, resumed_at))

    elapsed = sum(
        (cal.business_time_between(a, b if b is not None else now) for a, b in periods), _ZERO
    )
    end = stop.at if stop is not None else now
    breached = due is not None and end > due
    if breached:
        status = ClockStatus.BREACHED
    elif stop is not None:
        status = ClockStatus.MET if stop.kind is EventKind.MET else ClockStatus.CLOSED
    elif paused:
        status = ClockStatus.PAUSED
    else:
        status = ClockStatus.RUNNING
    return ClockState(
        name=spec.name,
        status=status,
        as_of=now,
        started_at=started_at,
        due_at=due,
        target=target,
        elapsed=elapsed,
        remaining=max(target - elapsed, _ZERO),
        breached_at=due if breached else None,
        stopped_at=stop.at if stop is not None else None,
        running=tuple(periods),
    )


class ReminderTime(NamedTuple):
    """``kind`` is ``at_percent:50``, ``before:30m`` or ``breach``."""

    kind: str
    when: datetime


BREACH = "breach"


def _reached_at(spec: ClockSpec, state: ClockState, threshold: timedelta) -> datetime | None:
    """When the elapsed business time reaches ``threshold`` (None: not while paused)."""
    cal = spec.calendar
    done = _ZERO
    for start, end in state.running:
        moment = cal.add_business_time(start, threshold - done)
        if end is None or moment <= end:
            return moment
        done += cal.business_time_between(start, end)
    return None


def reminder_times(
    spec: ClockSpec, state: ClockState, reminders: Iterable[ReminderSpec]
) -> list[ReminderTime]:
    """Every reminder of the clock and its breach, in time order (module docstring)."""
    if state.stopped_at is not None:
        return []
    found: list[ReminderTime] = []
    for reminder in reminders:
        if reminder.at_percent is not None:
            threshold = state.target * reminder.at_percent / 100
        else:
            assert reminder.before is not None  # one of the two, by validation
            threshold = state.target - reminder.before
        if threshold <= _ZERO:
            continue
        when = _reached_at(spec, state, threshold)
        if when is not None:
            found.append(ReminderTime(reminder.key, when))
    if state.due_at is not None:
        found.append(ReminderTime(BREACH, state.due_at))
    return sorted(dict.fromkeys(found), key=lambda r: (r.when, r.kind))


# -- which clocks a ticket has -----------------------------------------------------------


def _spec(name: str, target: ClockTarget | FirstResponse, default: str, rules: Rules) -> ClockSpec:
    if isinstance(target, FirstResponse):
        calendar = AROUND_THE_CLOCK_NAME if target.kind == "hours" else default
        return ClockSpec(name, target.kind, target.amount, rules.calendar(calendar))
    return ClockSpec(
        name, target.kind, target.amount, rules.calendar(target.calendar_name(default))
    )


def clock_specs(
    plan: Plan,
    rules: Rules,
    *,
    arrival: datetime,
    severity: str | None = None,
    urgent: bool = False,
) -> dict[str, ClockSpec]:
    """The clocks of a request to ``plan``, by name, in ``CLOCK_NAMES`` order."""
    sla = plan.sla
    default = sla.calendar if sla is not None else OFFICE
    targets: dict[str, ClockTarget | FirstResponse] = {"first_response": plan.first_response}
    if sla is not None:
        targets.update(sla.targets())
        row = sla.severity.row(severity) if sla.severity is not None else None
        if row is not None:
            targets.update(row.targets())
        outside = sla.outside_office_hours
        if (
            outside is not None
            and (urgent or not outside.urgent_only)
            and not rules.calendar(default).is_open(arrival)
        ):
            targets.update(outside.targets())
    return {
        name: _spec(name, targets[name], default, rules) for name in CLOCK_NAMES if name in targets
    }


def reminders_for(plan: Plan, severity: str | None = None) -> tuple[ReminderSpec, ...]:
    """The plan's reminders, or the severity row's when it has its own."""
    sla = plan.sla
    if sla is None:
        return ()
    row = sla.severity.row(severity) if sla.severity is not None else None
    if row is not None and row.reminders is not None:
        return row.reminders
    return sla.reminders


def deadlines_for(
    plan: Plan, severity: str | None, urgent: bool, arrival: datetime, rules: Rules
) -> dict[str, datetime]:
    """Every clock's deadline (UTC) for a request that arrived at ``arrival``."""
    specs = clock_specs(plan, rules, arrival=arrival, severity=severity, urgent=urgent)
    return {name: spec.due_from(arrival) for name, spec in specs.items()}
