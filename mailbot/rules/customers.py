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

import weakref
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


@dataclass(frozen=True, slots=True)
class _Index:
    """The customer entries by exact address, by domain and by wildcard parent domain."""

    addresses: dict[str, Customer]
    domains: dict[str, Customer]
    parents: dict[str, Customer]

    @classmethod
    def build(cls, customers: tuple[Customer, ...]) -> _Index:
        index = cls({}, {}, {})
        for customer in customers:
            if customer.kind == "address":
                index.addresses.setdefault(customer.match, customer)
            elif customer.kind == "domain":
                index.domains.setdefault(customer.match[1:], customer)
            elif customer.kind == "subdomains":
                index.parents.setdefault(customer.match[2:], customer)
        return index


# Built once per Rules object and kept beside it (thousands of customers from files: a
# lookup is a few dict probes instead of a scan).
_INDEXES: dict[int, _Index] = {}


def _index(rules: Rules) -> _Index:
    built = _INDEXES.get(id(rules))
    if built is None:
        built = _Index.build(rules.customers)
        _INDEXES[id(rules)] = built
        weakref.finalize(rules, _INDEXES.pop, id(rules), None)
    return built


def resolve_customer(rules: Rules, address: str) -> CustomerMatch:
    """The customer entry and plan for a sender ``address`` (see the module docstring).

    A plain domain entry for the sender's own domain always has more labels than any
    wildcard entry of a parent domain, so it wins; else the longest matching parent does."""
    key = address.strip().lower()
    domain = key.rpartition("@")[2]
    index = _index(rules)
    exact = index.addresses.get(key)
    if exact is not None:
        return _matched(rules, exact, "address")
    if domain:
        same = index.domains.get(domain)
        if same is not None:
            return _matched(rules, same, "domain")
        labels = domain.split(".")
        for start in range(1, len(labels)):
            parent = index.parents.get(".".join(labels[start:]))
            if parent is not None:
                return _matched(rules, parent, "domain")
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
