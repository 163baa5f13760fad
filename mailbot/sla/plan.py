"""A ticket's SLA as of now: every clock's state and the reminders still to come. Pure.

Input: the rules, the ticket's plan, severity, urgency, arrival, and the ticket's events (a
pause, resume or close applies to every clock; a ``met`` names its clock). Output: each
clock's ``ClockState`` and the reminder rows to plan (warnings to the plan's ``notify``
address, the breach to its ``escalate_to``). Both intake (a new ticket) and the ticket
service (every later event) call :func:`sla_status`, so deadlines are always recomputed from
the same events by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mailbot.rules.schema import Rules
from mailbot.sla.clocks import (
    ClockEvent,
    ClockState,
    ClockStatus,
    EventKind,
    clock_specs,
    evaluate,
    reminder_times,
    reminders_for,
)

_STOPPED = {ClockStatus.MET, ClockStatus.CLOSED}


@dataclass(frozen=True, slots=True)
class TicketEvent:
    kind: EventKind
    at: datetime
    clock: str | None = None  # for ``met``: which clock; None: every clock


@dataclass(frozen=True, slots=True)
class PlannedReminder:
    clock: str
    kind: str  # "at_percent:80", "before:30m", "breach"
    due_at: datetime
    recipient: str


@dataclass(frozen=True, slots=True)
class SlaStatus:
    clocks: tuple[ClockState, ...]
    reminders: tuple[PlannedReminder, ...]
    #: The first-response target that applies, as (kind, amount): what the customer is promised.
    first_response_target: tuple[str, int] | None = None

    @property
    def next_deadline(self) -> datetime | None:
        """The earliest deadline of a clock that still runs (the ticket's ``deadline``)."""
        open_dues = [
            c.due_at for c in self.clocks if c.status not in _STOPPED and c.due_at is not None
        ]
        return min(open_dues, default=None)

    def due_of(self, name: str) -> datetime | None:
        return next((c.due_at for c in self.clocks if c.name == name), None)


def sla_status(
    rules: Rules,
    plan_id: str,
    *,
    severity: str,
    urgent: bool,
    arrival: datetime,
    events: Iterable[TicketEvent] = (),
    now: datetime,
) -> SlaStatus:
    plan = rules.plans[plan_id]
    specs = clock_specs(plan, rules, arrival=arrival, severity=severity, urgent=urgent)
    history = list(events)
    warnings = reminders_for(plan, severity)
    states: list[ClockState] = []
    planned: list[PlannedReminder] = []
    for name, spec in specs.items():
        own = [ClockEvent(EventKind.ARRIVED, arrival)] + [
            ClockEvent(e.kind, e.at) for e in history if e.clock in (None, name)
        ]
        state = evaluate(spec, own, now)
        states.append(state)
        if plan.sla is None:
            continue
        for reminder in reminder_times(spec, state, warnings):
            recipient = plan.sla.recipient(reminder.kind)
            if recipient is not None:
                planned.append(PlannedReminder(name, reminder.kind, reminder.when, recipient))
    first = specs.get("first_response")
    target = (first.kind, first.amount) if first is not None else None
    return SlaStatus(tuple(states), tuple(planned), target)
