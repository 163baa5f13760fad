"""Pricing one time entry: started increments, minimum, surcharges that add, free categories."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from mailbot.billing.charge import Charge, charge, round_up
from mailbot.billing.schema import BillingSpec, CategorySpec, Surcharges

DEFAULT = BillingSpec()


def price(
    worked: int,
    category: str = "support",
    *,
    urgent: bool = False,
    outside: bool = False,
    billing: BillingSpec = DEFAULT,
) -> Charge:
    return charge(
        worked, billing=billing, category=category, urgent=urgent, outside_office_hours=outside
    )


@pytest.mark.parametrize(
    ("minutes", "increment", "rounded"),
    [(0, 15, 0), (1, 15, 15), (14, 15, 15), (15, 15, 15), (16, 15, 30), (20, 15, 30),
     (45, 15, 45), (46, 15, 60), (7, 1, 7), (61, 60, 120)],
)  # fmt: skip
def test_round_up_per_started_increment(minutes: int, increment: int, rounded: int) -> None:
    assert round_up(minutes, increment) == rounded


def test_round_up_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="increment"):
        round_up(10, 0)
    with pytest.raises(ValueError, match="negative"):
        round_up(-1, 15)


def test_seed_001_urgent_at_19_on_a_weekday() -> None:
    """20 min urgent at 19:00 on a weekday -> 30 min × 2.5 = 75 min billed."""
    result = price(20, urgent=True, outside=True)
    assert result.worked == 20
    assert result.rounded == 30
    assert result.surcharge_percent == 150
    assert result.billed == Decimal(75)
    assert isinstance(result.billed, Decimal)
    assert result.chargeable
    assert result.reasons == ("urgent outside office hours +150 %",)


def test_urgent_in_office_hours_is_75_percent() -> None:
    result = price(20, urgent=True, outside=False)
    assert result.rounded == 30
    assert result.surcharge_percent == 75
    assert result.billed == Decimal("52.5")
    assert str(result.billed) == "52.5"
    assert result.reasons == ("urgent in office hours +75 %",)


def test_not_urgent_has_no_surcharge_even_outside_office_hours() -> None:
    result = price(20, outside=True)
    assert result.surcharge_percent == 0
    assert result.billed == Decimal(30)
    assert result.reasons == ()


def test_project_management_adds_25_percent() -> None:
    result = price(20, "project-management")
    assert result.surcharge_percent == 25
    assert result.billed == Decimal("37.5")
    assert result.reasons == ("category project-management +25 %",)


def test_percentages_add_urgent_outside_and_project_management() -> None:
    result = price(20, "project-management", urgent=True, outside=True)
    assert result.surcharge_percent == 175
    assert result.billed == Decimal("82.5")  # 30 × 2.75, not 30 × 2.5 × 1.25 = 93.75
    assert result.reasons == (
        "urgent outside office hours +150 %",
        "category project-management +25 %",
    )


def test_percentages_add_urgent_in_office_and_project_management() -> None:
    result = price(50, "project-management", urgent=True)
    assert result.rounded == 60
    assert result.surcharge_percent == 100
    assert result.billed == Decimal(120)


def test_billed_is_exact_decimal() -> None:
    spec = BillingSpec(increment=1, surcharges=Surcharges(urgent_office_hours=33))
    assert price(7, urgent=True, billing=spec).billed == Decimal("9.31")
    assert price(20, urgent=True, billing=spec).billed == Decimal("26.6")
    one = BillingSpec(increment=1)
    assert price(7, urgent=True, billing=one).billed == Decimal("12.25")
    assert price(1, "project-management", billing=one).billed == Decimal("1.25")


def test_seed_002_free_category_costs_nothing() -> None:
    result = price(20, "bug", urgent=True, outside=True)
    assert result.billed == Decimal(0)
    assert result.rounded == 30  # the time it took is still shown
    assert result.surcharge_percent == 0
    assert not result.chargeable
    assert result.reasons == ("category bug is free",)


def test_charged_categories_of_seed_002() -> None:
    for category in ("configuration", "training", "customer-bug", "project", "advice"):
        result = price(45, category)
        assert result.chargeable
        assert result.billed == Decimal(45)


def test_minimum_per_entry() -> None:
    spec = BillingSpec(minimum=30)
    result = price(5, billing=spec)
    assert result.rounded == 30
    assert result.billed == Decimal(30)
    assert result.reasons == ("minimum 30 min per entry",)
    above = price(40, billing=spec)
    assert above.rounded == 45
    assert above.reasons == ()


def test_minimum_then_surcharge() -> None:
    spec = BillingSpec(minimum="1h")  # type: ignore[arg-type]
    result = price(10, urgent=True, outside=True, billing=spec)
    assert result.rounded == 60
    assert result.billed == Decimal(150)
    assert result.reasons == ("minimum 60 min per entry", "urgent outside office hours +150 %")


def test_minimum_not_applied_to_nothing() -> None:
    assert price(0, billing=BillingSpec(minimum=30)).rounded == 0
    assert price(0, billing=BillingSpec(minimum=30)).billed == Decimal(0)


def test_minimum_on_free_category_shows_but_costs_nothing() -> None:
    result = price(5, "bug", billing=BillingSpec(minimum=30))
    assert result.rounded == 30
    assert result.billed == Decimal(0)
    assert result.reasons == ("minimum 30 min per entry", "category bug is free")


def test_other_increment() -> None:
    spec = BillingSpec(increment=30)
    assert price(31, billing=spec).rounded == 60
    assert price(30, billing=spec).rounded == 30


def test_zero_percent_surcharges_give_no_reason() -> None:
    spec = BillingSpec(surcharges=Surcharges(urgent_office_hours=0, urgent_outside_office_hours=0))
    result = price(20, urgent=True, outside=True, billing=spec)
    assert result.billed == Decimal(30)
    assert result.surcharge_percent == 0
    assert result.reasons == ()


def test_custom_category_surcharge_and_free() -> None:
    spec = BillingSpec(
        categories={
            "support": CategorySpec(),
            "rush": CategorySpec(surcharge_percent=1000),
            "goodwill": CategorySpec(chargeable=False, surcharge_percent=50),
        }
    )
    assert price(15, "rush", billing=spec).billed == Decimal(165)
    goodwill = price(15, "goodwill", urgent=True, billing=spec)
    assert goodwill.billed == Decimal(0)
    assert goodwill.surcharge_percent == 0


def test_unknown_category_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown billing category 'hardware'") as exc:
        price(20, "hardware")
    assert "project-management" in str(exc.value)


def test_negative_worked_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        price(-5)


def test_charge_is_frozen() -> None:
    result = price(20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.billed = Decimal(1)  # type: ignore[misc]
