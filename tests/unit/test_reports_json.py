"""Report figures in JSON: exact decimal strings written one way, whatever the source."""

from __future__ import annotations

from decimal import Decimal

from mailbot.tickets.reports import TimebankRow


def test_minutes_are_written_one_way() -> None:
    row = TimebankRow(
        account="a",
        name="A",
        bank="monthly 8 h",
        worked=100,
        billed=Decimal("202.5000"),  # as read back from the database
        surcharged=Decimal("82.5"),  # as computed
        free=0,
        allotment=Decimal(480),
        used=Decimal("202.50"),
        expired=Decimal("277.5000"),
        overage=Decimal("0.0000"),
        balance=None,
    )
    data = row.as_json()
    assert (data["billed_minutes"], data["surcharge_minutes"]) == ("202.5", "82.5")
    assert (data["allotment_minutes"], data["used_minutes"]) == ("480", "202.5")
    assert (data["expired_minutes"], data["overage_minutes"]) == ("277.5", "0")
