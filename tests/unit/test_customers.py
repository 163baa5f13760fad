"""Sender → customer and plan: exact address, most specific domain, default."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.rules.customers import is_own_address, resolve_customer
from mailbot.rules.schema import Rules


def make_rules(customers: list[dict[str, Any]]) -> Rules:
    return Rules.model_validate(
        {
            "version": 1,
            "identity": {
                "address": "support@example.com",
                "name": "Support",
                "extra_addresses": ["noreply@example.com"],
            },
            "timezone": "Europe/Stockholm",
            "plans": {
                "core": {"name": "Core", "first_response": {"working_days": 3}},
                "pro": {"name": "Pro", "first_response": {"working_hours": 8}},
                "ultimate": {"name": "Ultimate", "first_response": {"hours": 4}},
            },
            "default_plan": "core",
            "customers": customers,
        }
    )


RULES = make_rules(
    [
        {"match": "*.big.example", "plan": "pro", "name": "Big subsidiaries"},
        {"match": "@big.example", "plan": "pro", "name": "Big"},
        {"match": "@eu.big.example", "plan": "ultimate", "name": "Big EU"},
        {"match": "CEO@Big.Example", "plan": "ultimate", "name": "The CEO", "language": "sv"},
        {"match": "*.shops.example", "plan": "pro"},
        {"match": "*.nordic.shops.example", "plan": "ultimate"},
    ]
)


@pytest.mark.parametrize(
    ("address", "plan", "matched_by", "rule"),
    [
        ("ceo@big.example", "ultimate", "address", "ceo@big.example"),
        ("CEO@BIG.EXAMPLE", "ultimate", "address", "ceo@big.example"),
        ("anna@big.example", "pro", "domain", "@big.example"),
        ("anna@Big.Example", "pro", "domain", "@big.example"),
        ("x@eu.big.example", "ultimate", "domain", "@eu.big.example"),
        ("x@us.big.example", "pro", "domain", "*.big.example"),
        ("x@a.eu.big.example", "pro", "domain", "*.big.example"),
        ("x@se.nordic.shops.example", "ultimate", "domain", "*.nordic.shops.example"),
        ("x@de.shops.example", "pro", "domain", "*.shops.example"),
        ("x@shops.example", "core", "default", "default_plan: core"),
        ("x@notbig.example", "core", "default", "default_plan: core"),
        ("x@big.example.org", "core", "default", "default_plan: core"),
        ("nobody", "core", "default", "default_plan: core"),
    ],
)
def test_resolve(address: str, plan: str, matched_by: str, rule: str) -> None:
    match = resolve_customer(RULES, address)
    assert (match.plan_id, match.matched_by, match.rule) == (plan, matched_by, rule)
    assert match.plan is RULES.plans[plan]


def test_exact_address_carries_name_and_language() -> None:
    match = resolve_customer(RULES, "ceo@big.example")
    assert (match.customer_name, match.language) == ("The CEO", "sv")
    default = resolve_customer(RULES, "someone@else.example")
    assert (default.customer_name, default.language) == (None, None)


def test_exact_address_wins_even_when_listed_after_domains() -> None:
    rules = make_rules(
        [
            {"match": "@shop.se", "plan": "pro"},
            {"match": "boss@shop.se", "plan": "ultimate"},
        ]
    )
    assert resolve_customer(rules, "boss@shop.se").plan_id == "ultimate"
    assert resolve_customer(rules, "staff@shop.se").plan_id == "pro"


def test_plain_domain_beats_wildcard_of_same_length_regardless_of_order() -> None:
    rules = make_rules(
        [
            {"match": "*.shop.se", "plan": "pro"},
            {"match": "@eu.shop.se", "plan": "ultimate"},
        ]
    )
    assert resolve_customer(rules, "a@eu.shop.se").plan_id == "ultimate"


def test_own_addresses() -> None:
    assert is_own_address(RULES, "Support@Example.com")
    assert is_own_address(RULES, "noreply@example.com")
    assert not is_own_address(RULES, "sales@example.com")


# --- the index against a plain scan of the precedence rules ----------------------------------

_LABELS = st.sampled_from(["a", "b", "shop", "eu", "big"])
_DOMAINS = st.lists(_LABELS, min_size=1, max_size=4).map(lambda ls: ".".join([*ls, "example"]))


def _scan(rules: Rules, address: str) -> str | None:
    """The precedence of the module docstring, by brute force: the matching rule's text."""
    key = address.lower()
    domain = key.rpartition("@")[2]
    best, best_rank = None, (0, 0)
    for customer in rules.customers:
        if customer.kind == "address" and customer.match == key:
            return customer.match
        if customer.kind == "domain" and domain == customer.match[1:]:
            rank = (customer.match.count(".") + 1, 1)
        elif customer.kind == "subdomains" and domain.endswith("." + customer.match[2:]):
            rank = (customer.match[2:].count(".") + 1, 0)
        else:
            continue
        if rank > best_rank:
            best, best_rank = customer.match, rank
    return best


@settings(max_examples=300, deadline=None, database=None)
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(["@", "*.", "x@"]), _DOMAINS), max_size=12, unique=True
    ),
    local=st.sampled_from(["x", "y"]),
    domain=_DOMAINS,
)
def test_the_index_agrees_with_a_scan(
    entries: list[tuple[str, str]], local: str, domain: str
) -> None:
    rules = make_rules([{"match": kind + d, "plan": "pro"} for kind, d in entries])
    found = resolve_customer(rules, f"{local}@{domain}")
    expected = _scan(rules, f"{local}@{domain}")
    assert (found.rule if found.matched_by != "default" else None) == expected
