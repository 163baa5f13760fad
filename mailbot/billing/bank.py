"""Time-bank ledgers: balances and statements computed from history, every time (pure).

Nothing is stored but the history: the chargeable minutes billed (:class:`Usage`) and the
hours bought (:class:`TopUp`). Each question (:func:`balance_at`, :func:`statement`)
replays that history against the account's :class:`~mailbot.billing.schema.TimeBankSpec`,
so a changed rules.yaml applies at once, to the past too, and nothing can drift.

**Lots.** Usable minutes come in *lots*, each with an amount and (perhaps) an expiry:

* A *monthly* package grants a lot of ``monthly`` minutes at the start of every cycle. The
  lot is usable in its own cycle and the next ``carry_over`` cycles; when the last of them
  ends, whatever is left of it expires at that instant. A top-up bought in a monthly
  package is an extra lot of the cycle it was bought in, expiring with that cycle's lot.
* A *prepaid* account has a lot of ``opening_balance`` minutes from the beginning of time,
  and a lot per top-up; none of them ever expires.

Usage consumes the oldest lot first (FIFO: the one that expires first). What no lot covers
is *overage*, billed separately, in the cycle the work happened; a later top-up does not
pay off past overage, and a balance is never negative.

**Cycles** (:func:`cycle_of`) last ``cycle_months`` months and start at local midnight on
``cycle_day`` in the rules' timezone, so they follow DST (a cycle from 1 March to 1 April
in Stockholm is an hour shorter than 24 × 31 hours). They are anchored at ``starts``, or
else at January 2000, so they never move. With ``starts`` lots are granted from that cycle
on (time logged before it is overage). Without it the package begins with the cycle that
holds the account's earliest usage or top-up, or the instant asked about if that is
earlier: an untouched package shows one allotment.

**Same-instant order.** At one instant, first lots expire, then a new cycle grants its lot,
then top-ups are added, then usage is consumed. So at the midnight that ends a cycle the
old allotment is already gone and the new one already there.

**Statements** (:func:`statement`) cover a window ``[start, end)``. Grants, top-ups and
usage count in the window when their instant is in it. An expiry at instant ``T`` (a cycle
end) counts in the window that holds ``T - ε``: ``start < T <= end``. So the report for
November includes what expired when November's cycle ended at 1 December 00:00, and the
statement's closing ``balance`` is what is carried into the next window (after that
expiry, before December's grant): ``balance = balance_start + allotment - used - expired``,
and it is the next window's ``balance_start``. :func:`balance_at` instead answers "how
much can be used right now" and includes everything at or before its instant, December's
grant too.

Everything is linear in the number of cycles plus entries (after sorting the entries);
amounts are exact :class:`~decimal.Decimal` minutes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from mailbot.billing.schema import TimeBankSpec

_ZERO = Decimal(0)
#: Cycles without ``starts`` are counted from this month, so they are stable.
_EPOCH_YEAR = 2000

_GRANT, _TOPUP, _USAGE = 1, 2, 3


def _aware(at: datetime, what: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, not {at!r}")


@dataclass(frozen=True, slots=True)
class Usage:
    """Chargeable minutes billed at ``at`` (an aware datetime), to be taken from the bank."""

    at: datetime
    billed: Decimal

    def __post_init__(self) -> None:
        _aware(self.at, "Usage.at")
        if not isinstance(self.billed, Decimal):
            raise TypeError(f"Usage.billed must be a Decimal, not {type(self.billed).__name__}")
        if self.billed < 0:
            raise ValueError(f"Usage.billed cannot be negative ({self.billed})")


@dataclass(frozen=True, slots=True)
class TopUp:
    """``minutes`` bought at ``at`` (an aware datetime)."""

    at: datetime
    minutes: int

    def __post_init__(self) -> None:
        _aware(self.at, "TopUp.at")
        if self.minutes <= 0:
            raise ValueError(f"a top-up must be a positive number of minutes, not {self.minutes}")


@dataclass(frozen=True, slots=True)
class Cycle:
    """One billing cycle of a monthly package: ``[start, end)``, aware local datetimes."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Statement:
    """A time bank over the window ``[start, end)``, in minutes (see the module docstring).

    ``balance == balance_start + allotment - used - expired`` always holds.
    """

    start: datetime
    end: datetime
    #: Usable at ``start``: carried in from before the window.
    balance_start: Decimal
    #: Granted in the window: cycles starting in it, top-ups made in it.
    allotment: Decimal
    #: Usage in the window that lots covered.
    used: Decimal
    #: Usage in the window that no lot covered, billed separately.
    overage: Decimal
    #: What was left of lots expiring at ``T`` with ``start < T <= end``.
    expired: Decimal
    #: Carried out of the window at ``end`` (after expiries at ``end``).
    balance: Decimal


class _Grid:
    """The cycles of a monthly package: cycle ``k`` starts ``k × cycle_months`` months after
    the anchor month, at local midnight on ``cycle_day``; start instants are cached in UTC."""

    __slots__ = ("_anchor", "_cache", "_day", "_months", "_tz")

    def __init__(self, spec: TimeBankSpec, tz: ZoneInfo) -> None:
        anchor = spec.starts or date(_EPOCH_YEAR, 1, spec.cycle_day)
        self._anchor = anchor.year * 12 + anchor.month - 1
        self._day = spec.cycle_day
        self._months = spec.cycle_months
        self._tz = tz
        self._cache: dict[int, datetime] = {}

    def start(self, k: int) -> datetime:
        """The instant (UTC) cycle ``k`` starts."""
        found = self._cache.get(k)
        if found is None:
            month = self._anchor + k * self._months
            local = datetime(month // 12, month % 12 + 1, self._day, tzinfo=self._tz)
            found = self._cache[k] = local.astimezone(UTC)
        return found

    def index(self, at: datetime) -> int:
        """The cycle holding the instant ``at``."""
        local = at.astimezone(self._tz)
        months = local.year * 12 + local.month - 1 - self._anchor
        if local.day < self._day:
            months -= 1
        k = months // self._months
        # The local date decides but for zones whose midnight repeats; the instants decide.
        while self.start(k) > at:
            k -= 1
        while self.start(k + 1) <= at:
            k += 1
        return k

    def local(self, instant: datetime) -> datetime:
        return instant.astimezone(self._tz)


def cycle_of(spec: TimeBankSpec, at: datetime, tz: ZoneInfo) -> Cycle:
    """The cycle of the monthly package ``spec`` that holds ``at`` (``[start, end)`` in tz)."""
    _aware(at, "at")
    if spec.prepaid:
        raise ValueError("a prepaid account has no cycles")
    grid = _Grid(spec, tz)
    k = grid.index(at)
    return Cycle(grid.local(grid.start(k)), grid.local(grid.start(k + 1)))


@dataclass(slots=True)
class _Lot:
    remaining: Decimal
    expires: datetime | None  # UTC; None: never


@dataclass(slots=True)
class _Run:
    """The outcome of replaying history up to a horizon, with totals over a window."""

    balance: Decimal = _ZERO
    balance_start: Decimal = _ZERO
    allotment: Decimal = _ZERO
    used: Decimal = _ZERO
    overage: Decimal = _ZERO
    expired: Decimal = _ZERO


def _replay(
    spec: TimeBankSpec,
    usages: Sequence[Usage],
    topups: Sequence[TopUp],
    tz: ZoneInfo,
    *,
    asked: datetime,
    horizon: datetime,
    inclusive: bool,
    window: datetime | None,
) -> _Run:
    """Replay events before ``horizon`` (or at it, when ``inclusive``), then expire lots up
    to ``horizon``. Totals count events at or after ``window`` (expiries after it).
    ``asked`` is the instant the question is about, for where an undated package begins."""
    horizon = horizon.astimezone(UTC)
    window_utc = window.astimezone(UTC) if window is not None else None

    def due(instant: datetime) -> bool:
        return instant < horizon or (inclusive and instant == horizon)

    # (instant, kind, sequence, minutes, expiry): the sequence keeps equal instants in order.
    events: list[tuple[datetime, int, int, Decimal, datetime | None]] = []
    seq = 0
    for usage in usages:
        at = usage.at.astimezone(UTC)
        if usage.billed and due(at):
            events.append((at, _USAGE, seq, usage.billed, None))
            seq += 1
    topup_times = [topup.at.astimezone(UTC) for topup in topups]

    lots: deque[_Lot] = deque()
    run = _Run()
    if spec.prepaid:
        if spec.opening_balance:
            lots.append(_Lot(Decimal(spec.opening_balance), None))
            run.balance = Decimal(spec.opening_balance)
        for topup, at in zip(topups, topup_times, strict=True):
            if due(at):
                events.append((at, _TOPUP, seq, Decimal(topup.minutes), None))
                seq += 1
    else:
        grid = _Grid(spec, tz)
        keep = spec.carry_over + 1
        for topup, at in zip(topups, topup_times, strict=True):
            if due(at):
                expires = grid.start(grid.index(at) + keep)
                events.append((at, _TOPUP, seq, Decimal(topup.minutes), expires))
                seq += 1
        if spec.starts is not None:
            first = 0
        else:
            earliest = min((event[0] for event in events), default=None)
            origin = asked.astimezone(UTC)
            first = grid.index(origin if earliest is None else min(earliest, origin))
        if spec.monthly is None:  # pragma: no cover - the schema requires one of the two
            raise ValueError("a time bank is either monthly or prepaid")
        monthly = Decimal(spec.monthly)
        for k in range(first, grid.index(horizon) + 1):
            start = grid.start(k)
            if due(start):
                events.append((start, _GRANT, seq, monthly, grid.start(k + keep)))
                seq += 1
    events.sort(key=lambda event: (event[0], event[1], event[2]))

    def expire(until: datetime) -> None:
        while lots:
            lot = lots[0]
            if lot.expires is None or lot.expires > until:
                return
            lots.popleft()
            run.balance -= lot.remaining
            if window_utc is not None and lot.expires > window_utc:
                run.expired += lot.remaining

    counting = window_utc is None
    for instant, kind, _, minutes, until in events:
        if not counting and window_utc is not None and instant >= window_utc:
            expire(window_utc)
            run.balance_start = run.balance
            counting = True
        expire(instant)
        if kind == _USAGE:
            need = minutes
            while need and lots:
                lot = lots[0]
                take = min(lot.remaining, need)
                lot.remaining -= take
                need -= take
                if not lot.remaining:
                    lots.popleft()
            covered = minutes - need
            run.balance -= covered
            if counting:
                run.used += covered
                run.overage += need
        else:
            lots.append(_Lot(minutes, until))
            run.balance += minutes
            if counting:
                run.allotment += minutes
    if not counting and window_utc is not None:
        expire(window_utc)
        run.balance_start = run.balance
    expire(horizon)
    return run


def balance_at(
    spec: TimeBankSpec,
    usages: Sequence[Usage],
    topups: Sequence[TopUp],
    at: datetime,
    tz: ZoneInfo,
) -> Decimal:
    """Minutes usable at ``at``: everything at or before it counted, expiries up to it too."""
    _aware(at, "at")
    run = _replay(spec, usages, topups, tz, asked=at, horizon=at, inclusive=True, window=None)
    return run.balance


def statement(
    spec: TimeBankSpec,
    usages: Sequence[Usage],
    topups: Sequence[TopUp],
    *,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
) -> Statement:
    """The time bank over ``[start, end)`` (see :class:`Statement` and the module docstring)."""
    _aware(start, "start")
    _aware(end, "end")
    if not start < end:
        raise ValueError(f"a statement needs start < end, not {start} .. {end}")
    run = _replay(spec, usages, topups, tz, asked=start, horizon=end, inclusive=False, window=start)
    return Statement(
        start=start,
        end=end,
        balance_start=run.balance_start,
        allotment=run.allotment,
        used=run.used,
        overage=run.overage,
        expired=run.expired,
        balance=run.balance,
    )
