"""What one time entry costs: rounding, minimum, surcharges and free categories (pure).

The price of an entry is worked out in three steps, each kept in the :class:`Charge`:

1. ``rounded``: the minutes worked, rounded up to the started ``increment`` (20 minutes
   with 15-minute increments bill as 30), then raised to ``minimum`` if one is set. An
   entry of 0 minutes stays at 0: the minimum is for work done, not for nothing.
2. ``surcharge_percent``: the percentages that apply, *added* together: urgent in office
   hours (+75 % by default) or urgent outside office hours (+150 %), plus the category's
   own (project management +25 %). Urgent outside office hours on project management is
   +175 %, not 2.5 × 1.25.
3. ``billed = rounded × (100 + surcharge_percent) / 100`` minutes, as an exact
   :class:`~decimal.Decimal` (20 minutes urgent in office hours: 30 × 1.75 = 52.5). Nothing
   is rounded here; how billed minutes are invoiced is not this module's business.

A free category (``chargeable: false``) bills nothing: ``billed`` is 0 and no surcharge
applies, but ``rounded`` still shows the time it took. Money is never a float: minutes are
ints, billed minutes Decimals.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mailbot.billing.schema import BillingSpec

_HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class Charge:
    """The price of one time entry (see the module docstring)."""

    #: Minutes as logged.
    worked: int
    #: Minutes after rounding up to the started increment and applying the minimum.
    rounded: int
    #: The total surcharge in percent (0 for a free category).
    surcharge_percent: int
    #: Minutes billed: ``rounded × (100 + surcharge_percent) / 100``, exact; 0 when free.
    billed: Decimal
    #: False for a free category.
    chargeable: bool
    #: Why the price differs from the rounded time, for people: "urgent outside office
    #: hours +150 %", "category project-management +25 %", "category bug is free"...
    reasons: tuple[str, ...]


def round_up(minutes: int, increment: int) -> int:
    """``minutes`` rounded up to a whole number of ``increment`` (per *started* increment)."""
    if increment <= 0:
        raise ValueError(f"the increment must be a positive number of minutes, not {increment}")
    if minutes < 0:
        raise ValueError(f"cannot bill a negative time ({minutes} min)")
    return -(-minutes // increment) * increment


def charge(
    worked: int,
    *,
    billing: BillingSpec,
    category: str,
    urgent: bool,
    outside_office_hours: bool,
) -> Charge:
    """Price ``worked`` minutes on a ticket of ``category`` (see the module docstring).

    ``outside_office_hours`` matters only for urgent tickets. An unknown ``category`` is a
    :class:`KeyError`.
    """
    spec = billing.categories.get(category)
    if spec is None:
        known = ", ".join(sorted(billing.categories))
        raise KeyError(f"unknown billing category {category!r} (categories: {known})")
    rounded = round_up(worked, billing.increment)
    reasons: list[str] = []
    if billing.minimum is not None and 0 < rounded < billing.minimum:
        rounded = billing.minimum
        reasons.append(f"minimum {billing.minimum} min per entry")
    if not spec.chargeable:
        reasons.append(f"category {category} is free")
        return Charge(worked, rounded, 0, Decimal(0), False, tuple(reasons))
    percent = 0
    if urgent:
        if outside_office_hours:
            urgent_percent = billing.surcharges.urgent_outside_office_hours
            where = "outside office hours"
        else:
            urgent_percent = billing.surcharges.urgent_office_hours
            where = "in office hours"
        if urgent_percent:
            percent += urgent_percent
            reasons.append(f"urgent {where} +{urgent_percent} %")
    if spec.surcharge_percent:
        percent += spec.surcharge_percent
        reasons.append(f"category {category} +{spec.surcharge_percent} %")
    billed = Decimal(rounded * (100 + percent)) / _HUNDRED
    return Charge(worked, rounded, percent, billed, True, tuple(reasons))
