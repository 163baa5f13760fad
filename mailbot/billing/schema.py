"""The billing and time-bank sections of rules.yaml, as validated pydantic models (pure).

Two things are configured here, and the rest of :mod:`mailbot.billing` only computes:

**How logged time is priced** (:class:`BillingSpec`, used by :mod:`mailbot.billing.charge`).
Time is billed per *started* ``increment`` (default 15 minutes: 20 minutes worked bill as
30), optionally never less than ``minimum`` per entry. Urgent tickets carry a surcharge that
depends on whether the work was done in office hours (default +75 %) or outside them
(default +150 %). Every ticket has a *category*; a category is either chargeable or free
(bugs in our product, simple guidance) and may carry its own surcharge (project management
+25 %). Surcharge percentages add up: urgent outside office hours on project management is
+175 %. The default categories, used when rules.yaml names none (naming any replaces them
all)::

    support             chargeable       the default_category
    bug                 free             a bug in our product
    howto               chargeable       guidance; make it "free" for simple guidance
    configuration       chargeable
    training            chargeable
    customer-bug        chargeable       a bug caused by the customer
    project             chargeable
    project-management  chargeable, +25 %
    advice              chargeable

**What a customer has paid for in advance** (:class:`TimeBankSpec`, used by
:mod:`mailbot.billing.bank`). Either a *monthly* package (``monthly: 4h``): every cycle of
``cycle_months`` months starting on ``cycle_day`` grants the allotment, usable in that cycle
and the next ``carry_over`` cycles, after which what is left of it expires; or a *prepaid*
service account (``prepaid: true``): an ``opening_balance`` plus top-ups that never expire.
Chargeable time beyond what the bank covers is overage, billed separately. ``warn_below``
is the balance under which the account manager (and the customer, with ``warn_customer``)
is warned.

Durations are whole minutes (:data:`Minutes`): a positive integer, or text such as ``4h``,
``1h30`` or ``25m`` read by :func:`mailbot.billing.durations.parse_duration`.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mailbot.billing.durations import parse_duration


def _minutes(value: object) -> object:
    """A positive whole number of minutes from an int or a duration text."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, 25m, 4h or 1h30, not a true/false")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value} is not a positive number of minutes")
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"expected a duration such as 90, 25m, 4h or 1h30, not {value!r}")


#: Whole minutes, > 0: an int (``90``) or a duration text (``"4h"``, ``"1h30"``, ``"25m"``).
Minutes = Annotated[
    int,
    BeforeValidator(_minutes),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "exclusiveMinimum": 0},
                {"type": "string", "examples": ["25m", "4h", "1h30"]},
            ],
            "description": "whole minutes, or a duration such as 25m, 4h, 1h30",
        }
    ),
]

_CATEGORY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _category_name(name: str) -> str:
    if not _CATEGORY_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a category name: lowercase letters, digits, '-' and '_', "
            "starting with a letter, at most 32 characters"
        )
    return name


#: A billing category's name: ``support``, ``project-management``...
CategoryName = Annotated[str, AfterValidator(_category_name)]

#: Surcharges are whole percentages between 0 and 1000 (+1000 % = eleven times the time).
Percent = Annotated[int, Field(ge=0, le=1000)]


def _did_you_mean(word: str, options: list[str]) -> str:
    from mailbot.rules.schema import did_you_mean  # here: an import cycle

    return did_you_mean(word, options)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeBankSpec(_Model):
    """A monthly support package or a prepaid service account (see the module docstring).

    Monthly: ``monthly`` minutes per *cycle* (with ``cycle_months: 2``, write the two
    months' total: a 4 h/month package grouped by two is ``monthly: 8h``). Cycles start at
    local midnight (rules.yaml's ``timezone``) on ``cycle_day`` and last ``cycle_months``
    months. They are anchored at ``starts`` (which must fall on ``cycle_day``), or else at
    January 2000, so two-month cycles without ``starts`` begin in January, March, May...
    Without ``starts`` the package is taken to begin with the cycle holding the account's
    earliest activity.
    ``carry_over`` is how many later cycles an allotment stays usable in (0: it expires at
    the end of its own cycle).

    Prepaid: ``opening_balance`` (optional) plus top-ups, never expiring.
    """

    monthly: Minutes | None = None
    prepaid: bool = False
    cycle_day: int = Field(default=1, ge=1, le=28)
    cycle_months: int = Field(default=1, ge=1, le=12)
    carry_over: int = Field(default=0, ge=0, le=24)
    warn_below: Minutes | None = None
    warn_customer: bool = False
    starts: date | None = None
    opening_balance: Minutes | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.prepaid and self.monthly is not None:
            raise ValueError(
                "a time bank is either monthly (monthly: <minutes per cycle>) or prepaid "
                "(prepaid: true), not both"
            )
        if not self.prepaid and self.monthly is None:
            raise ValueError(
                "a time bank needs monthly: <minutes per cycle> (e.g. monthly: 4h) or prepaid: true"
            )
        if self.prepaid:
            defaults = {"cycle_day": 1, "cycle_months": 1, "carry_over": 0}
            for name, default in defaults.items():
                if getattr(self, name) != default:
                    raise ValueError(
                        f"{name} applies to monthly time banks only: a prepaid account has "
                        "no cycles and its hours never expire"
                    )
            if self.starts is not None:
                raise ValueError(
                    "starts applies to monthly time banks only: a prepaid account has no "
                    "cycles (use opening_balance for the hours it starts with)"
                )
        else:
            if self.opening_balance is not None:
                raise ValueError(
                    "opening_balance applies to prepaid accounts only: a monthly package "
                    "grants monthly minutes every cycle"
                )
            if self.starts is not None and self.starts.day != self.cycle_day:
                raise ValueError(
                    f"starts {self.starts.isoformat()} is on day {self.starts.day} of the "
                    f"month but cycle_day is {self.cycle_day}: cycles start on the same day "
                    f"every month, so set cycle_day: {self.starts.day} (at most 28) or move "
                    "starts"
                )
        return self


class CategorySpec(_Model):
    """How time on tickets of one category is billed.

    In YAML a category is a mapping, or one of the shorthands ``free`` (``chargeable:
    false``) and ``chargeable``.
    """

    chargeable: bool = True
    surcharge_percent: Percent = 0
    label: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            word = data.strip().lower()
            if word == "free":
                return {"chargeable": False}
            if word == "chargeable":
                return {"chargeable": True}
            raise ValueError(
                f"{data!r} is not a category: write free, chargeable or a mapping "
                "(chargeable, surcharge_percent, label)"
            )
        return data


class Surcharges(_Model):
    """Surcharges in percent on urgent tickets, in and outside office hours."""

    urgent_office_hours: Percent = 75
    urgent_outside_office_hours: Percent = 150


def _default_categories() -> dict[str, CategorySpec]:
    free = CategorySpec(chargeable=False)
    charged = CategorySpec()
    return {
        "support": charged,
        "bug": free,
        "howto": charged,
        "configuration": charged,
        "training": charged,
        "customer-bug": charged,
        "project": charged,
        "project-management": CategorySpec(surcharge_percent=25),
        "advice": charged,
    }


class BillingSpec(_Model):
    """Pricing of logged time (see the module docstring for the default categories)."""

    increment: Minutes = 15
    minimum: Minutes | None = None
    surcharges: Surcharges = Surcharges()
    categories: dict[CategoryName, CategorySpec] = Field(default_factory=_default_categories)
    default_category: str = Field(default="support", validate_default=True)

    @field_validator("default_category")
    @classmethod
    def _known_default(cls, value: str, info: ValidationInfo) -> str:
        categories = info.data.get("categories")
        if categories is None:  # categories itself was invalid, reported on its own
            return value
        if value not in categories:
            names = sorted(categories)
            raise ValueError(
                f"default_category {value!r} is not one of the categories "
                f"({', '.join(names) or 'none'}){_did_you_mean(value, names)}"
            )
        return value
