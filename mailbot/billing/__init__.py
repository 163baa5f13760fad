"""Time banks and billing: durations, charges, surcharges and balances (pure)."""
