"""The billing and time-bank sections of rules.yaml: durations, defaults and clear errors."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from mailbot.billing.schema import (
    BillingSpec,
    CategorySpec,
    Minutes,
    Surcharges,
    TimeBankSpec,
)


class _Holder(BaseModel):
    minutes: Minutes


def errors(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(f"{e['loc']}: {e['msg']}" for e in exc.value.errors())


def bank(text: str) -> TimeBankSpec:
    return TimeBankSpec.model_validate(yaml.safe_load(text))


def billing(text: str) -> BillingSpec:
    return BillingSpec.model_validate(yaml.safe_load(text))


# --- Minutes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "minutes"),
    [(90, 90), (1, 1), ("4h", 240), ("1h30", 90), ("25m", 25), ("1:30", 90), ("90", 90)],
)
def test_minutes_accepts_ints_and_durations(value: object, minutes: int) -> None:
    assert _Holder(minutes=value).minutes == minutes  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -5, "0m", True, 1.5, None, [60]])
def test_minutes_rejects_non_positive_and_other_types(value: object) -> None:
    with pytest.raises(ValidationError):
        _Holder(minutes=value)  # type: ignore[arg-type]


def test_minutes_error_message_comes_from_parse_duration() -> None:
    with pytest.raises(ValidationError) as exc:
        _Holder(minutes="four hours")  # type: ignore[arg-type]
    assert "'four hours' is not a duration: write e.g. 25m, 1h, 1h30" in errors(exc)
    with pytest.raises(ValidationError) as exc:
        _Holder(minutes="1h75")  # type: ignore[arg-type]
    assert "minutes after the hours must be below 60" in errors(exc)


def test_minutes_json_schema_admits_text() -> None:
    schema = _Holder.model_json_schema()["properties"]["minutes"]
    assert {"type": "string", "examples": ["25m", "4h", "1h30"]} in schema["anyOf"]


# --- TimeBankSpec --------------------------------------------------------------------------


def test_monthly_bank_from_yaml() -> None:
    spec = bank(
        """
        monthly: 4h
        cycle_day: 15
        cycle_months: 2
        carry_over: 1
        warn_below: 1h
        warn_customer: true
        starts: 2026-03-15
        """
    )
    assert spec.monthly == 240
    assert not spec.prepaid
    assert (spec.cycle_day, spec.cycle_months, spec.carry_over) == (15, 2, 1)
    assert spec.warn_below == 60
    assert spec.warn_customer
    assert spec.starts == date(2026, 3, 15)
    assert spec.opening_balance is None


def test_monthly_bank_defaults() -> None:
    spec = bank("monthly: 600")
    assert spec.monthly == 600
    assert (spec.cycle_day, spec.cycle_months, spec.carry_over) == (1, 1, 0)
    assert spec.warn_below is None
    assert not spec.warn_customer
    assert spec.starts is None


def test_prepaid_bank_from_yaml() -> None:
    spec = bank("prepaid: true\nopening_balance: 10h\nwarn_below: 2h")
    assert spec.prepaid
    assert spec.monthly is None
    assert spec.opening_balance == 600
    assert spec.warn_below == 120


def test_prepaid_bank_may_repeat_defaults() -> None:
    spec = bank("prepaid: true\ncycle_day: 1\ncycle_months: 1\ncarry_over: 0")
    assert spec.prepaid


def test_both_monthly_and_prepaid_is_an_error() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("monthly: 4h\nprepaid: true")
    assert "either monthly" in errors(exc)
    assert "not both" in errors(exc)


@pytest.mark.parametrize("text", ["warn_below: 1h", "prepaid: false", "{}"])
def test_neither_monthly_nor_prepaid_is_an_error(text: str) -> None:
    with pytest.raises(ValidationError) as exc:
        bank(text)
    assert "needs monthly: <minutes per cycle>" in errors(exc)
    assert "prepaid: true" in errors(exc)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cycle_day", 31),
        ("cycle_day", 29),
        ("cycle_day", 0),
        ("cycle_months", 0),
        ("cycle_months", 13),
        ("carry_over", -1),
        ("carry_over", 25),
    ],
)
def test_cycle_fields_out_of_range(field: str, value: int) -> None:
    with pytest.raises(ValidationError) as exc:
        bank(f"monthly: 4h\n{field}: {value}")
    assert exc.value.errors()[0]["loc"] == (field,)


def test_cycle_day_31_says_why() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("monthly: 4h\ncycle_day: 31")
    assert "less than or equal to 28" in errors(exc)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("cycle_day: 15", "cycle_day"),
        ("cycle_months: 2", "cycle_months"),
        ("carry_over: 3", "carry_over"),
    ],
)
def test_prepaid_forbids_cycle_settings(line: str, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        bank(f"prepaid: true\n{line}")
    assert f"{field} applies to monthly time banks only" in errors(exc)
    assert "never expire" in errors(exc)


def test_prepaid_forbids_starts() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("prepaid: true\nstarts: 2026-01-01")
    assert "starts applies to monthly time banks only" in errors(exc)


def test_opening_balance_only_for_prepaid() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("monthly: 4h\nopening_balance: 2h")
    assert "opening_balance applies to prepaid accounts only" in errors(exc)


def test_starts_must_fall_on_cycle_day() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("monthly: 4h\nstarts: 2026-03-15")
    message = errors(exc)
    assert "starts 2026-03-15 is on day 15" in message
    assert "set cycle_day: 15" in message
    assert bank("monthly: 4h\ncycle_day: 15\nstarts: 2026-03-15").starts == date(2026, 3, 15)


def test_bad_duration_in_bank_names_field() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("monthly: four hours")
    assert exc.value.errors()[0]["loc"] == ("monthly",)
    assert "is not a duration" in errors(exc)


def test_bank_rejects_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError) as exc:
        bank("monthly: 4h\nmontly: 5h")
    assert "montly" in errors(exc)
    spec = bank("monthly: 4h")
    with pytest.raises(ValidationError):
        spec.monthly = 60


# --- CategorySpec / Surcharges -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "chargeable"), [("free", False), ("chargeable", True), ("Free", False)]
)
def test_category_shorthand(value: str, chargeable: bool) -> None:
    spec = CategorySpec.model_validate(value)
    assert spec.chargeable is chargeable
    assert spec.surcharge_percent == 0
    assert spec.label is None


def test_category_mapping() -> None:
    spec = CategorySpec.model_validate({"surcharge_percent": 25, "label": "Project management"})
    assert spec.chargeable
    assert spec.surcharge_percent == 25
    assert spec.label == "Project management"


def test_category_bad_shorthand() -> None:
    with pytest.raises(ValidationError) as exc:
        CategorySpec.model_validate("gratis")
    assert "'gratis' is not a category: write free, chargeable or a mapping" in errors(exc)


@pytest.mark.parametrize("percent", [-1, 1001])
def test_category_surcharge_bounds(percent: int) -> None:
    with pytest.raises(ValidationError):
        CategorySpec(surcharge_percent=percent)


def test_surcharges_defaults_and_bounds() -> None:
    assert Surcharges() == Surcharges(urgent_office_hours=75, urgent_outside_office_hours=150)
    with pytest.raises(ValidationError):
        Surcharges(urgent_outside_office_hours=1001)
    with pytest.raises(ValidationError):
        Surcharges(urgent_office_hours=-5)


# --- BillingSpec ---------------------------------------------------------------------------


def test_billing_defaults() -> None:
    spec = BillingSpec()
    assert spec.increment == 15
    assert spec.minimum is None
    assert spec.surcharges == Surcharges()
    assert spec.default_category == "support"
    charged = {name for name, c in spec.categories.items() if c.chargeable}
    free = {name for name, c in spec.categories.items() if not c.chargeable}
    assert free == {"bug"}
    assert charged == {
        "support",
        "howto",
        "configuration",
        "training",
        "customer-bug",
        "project",
        "project-management",
        "advice",
    }
    surcharged = {name: c.surcharge_percent for name, c in spec.categories.items()}
    assert {name: p for name, p in surcharged.items() if p} == {"project-management": 25}


def test_billing_defaults_are_not_shared() -> None:
    assert BillingSpec().categories is not BillingSpec().categories


def test_billing_from_yaml_with_shorthand() -> None:
    spec = billing(
        """
        increment: 30m
        minimum: 1h
        surcharges:
          urgent_office_hours: 50
          urgent_outside_office_hours: 100
        default_category: support
        categories:
          support: chargeable
          bug: free
          howto: free
          project-management:
            surcharge_percent: 25
            label: Project management
        """
    )
    assert spec.increment == 30
    assert spec.minimum == 60
    assert spec.surcharges.urgent_office_hours == 50
    assert spec.surcharges.urgent_outside_office_hours == 100
    assert list(spec.categories) == ["support", "bug", "howto", "project-management"]
    assert not spec.categories["howto"].chargeable
    assert spec.categories["project-management"].label == "Project management"


def test_unknown_default_category_did_you_mean() -> None:
    with pytest.raises(ValidationError) as exc:
        billing("default_category: suport")
    assert exc.value.errors()[0]["loc"] == ("default_category",)
    assert "default_category 'suport' is not one of the categories" in errors(exc)
    assert "did you mean 'support'?" in errors(exc)


def test_default_category_checked_even_when_left_out() -> None:
    with pytest.raises(ValidationError) as exc:
        billing("categories:\n  hours: chargeable\n  bug: free")
    assert exc.value.errors()[0]["loc"] == ("default_category",)
    assert "'support' is not one of the categories (bug, hours)" in errors(exc)


def test_unknown_default_category_without_close_match() -> None:
    with pytest.raises(ValidationError) as exc:
        billing("default_category: zzz")
    assert "did you mean" not in errors(exc)


@pytest.mark.parametrize(
    "name", ["Support", "1st-line", "-x", "with space", "a" * 33, "", "åtgärd"]
)
def test_category_names(name: str) -> None:
    data: dict[str, Any] = {"categories": {name: "chargeable", "support": "chargeable"}}
    with pytest.raises(ValidationError) as exc:
        BillingSpec.model_validate(data)
    assert "is not a category name" in errors(exc)


def test_category_name_limits_accepted() -> None:
    name = "a" + "b" * 31
    spec = BillingSpec.model_validate(
        {"categories": {name: "free", "x_1-y": "chargeable"}, "default_category": name}
    )
    assert set(spec.categories) == {name, "x_1-y"}


def test_bad_increment_text() -> None:
    with pytest.raises(ValidationError) as exc:
        billing("increment: quarter")
    assert exc.value.errors()[0]["loc"] == ("increment",)
    assert "'quarter' is not a duration" in errors(exc)


def test_billing_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        billing("incremnet: 15")
    assert "incremnet" in errors(exc)
