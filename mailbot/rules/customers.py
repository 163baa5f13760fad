"""Who is writing: map a sender address to a customer entry and its plan.

Precedence, all case-insensitive:

1. an exact address rule (``anna@shop.se``);
2. the most specific domain rule: more domain labels beat fewer, and at equal length a
   plain domain (``@shop.se``) beats a subdomain wildcard (``*.shop.se``). ``@shop.se``
   matches only ``shop.se`` itself; ``*.shop.se`` matches ``eu.shop.se``, ``a.b.shop.se``
   but not ``shop.se``;
3. otherwise the rules' ``default_plan``.

The schema rejects two rules with the same ``match``, so there are no ties to break.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailbot.rules.schema import Customer, Plan, Rules

MatchedBy = Literal["address", "domain", "default"]


@dataclass(frozen=True, slots=True)
class CustomerMatch:
    """The outcome of a lookup; ``rule`` is the matching rule text, for logs and simulate."""

    plan_id: str
    plan: Plan
    customer_name: str | None
    language: str | None
    matched_by: MatchedBy
    rule: str
    #: Whose time bank and account manager: the entry's ``account``, else the entry's
    #: ``match`` (``@shop.se``), else (default plan) the sender's address.
    account: str


def _domain_rank(customer: Customer, domain: str) -> tuple[int, int] | None:
    """How specifically ``customer`` matches ``domain`` (higher is better), or None."""
    if customer.kind == "domain":
        rule = customer.match[1:]
        return (rule.count(".") + 1, 1) if domain == rule else None
    if customer.kind == "subdomains":
        rule = customer.match[2:]
        return (rule.count(".") + 1, 0) if domain.endswith("." + rule) else None
    return None


def resolve_customer(rules: Rules, address: str) -> CustomerMatch:
    """The customer entry and plan for a sender ``address`` (see the module docstring)."""
    key = address.strip().lower()
    domain = key.rpartition("@")[2]

    best: Customer | None = None
    best_rank: tuple[int, int] = (0, 0)
    for customer in rules.customers:
        if customer.kind == "address":
            if customer.match == key:
                return _matched(rules, customer, "address")
            continue
        rank = _domain_rank(customer, domain) if domain else None
        if rank is not None and rank > best_rank:
            best, best_rank = customer, rank
    if best is not None:
        return _matched(rules, best, "domain")
    return CustomerMatch(
        plan_id=rules.default_plan,
        plan=rules.plans[rules.default_plan],
        customer_name=None,
        language=None,
        matched_by="default",
        rule=f"default_plan: {rules.default_plan}",
        account=key,
    )


def _matched(rules: Rules, customer: Customer, how: MatchedBy) -> CustomerMatch:
    return CustomerMatch(
        plan_id=customer.plan,
        plan=rules.plans[customer.plan],
        customer_name=customer.name,
        language=customer.language,
        matched_by=how,
        rule=customer.match,
        account=customer.account or customer.match,
    )


def is_own_address(rules: Rules, address: str) -> bool:
    """Whether ``address`` is the support address or one of ``identity.extra_addresses``."""
    return address.strip().lower() in rules.identity.addresses
