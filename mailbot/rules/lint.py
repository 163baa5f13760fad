"""Warnings about a valid rules.yaml: what loads but is probably not what the operator meant.

``mailbot check`` prints them after its OK lines, located like the loader's errors
(``warning: rules.yaml:LINE:COL: field.path: text``); ``check --strict`` fails on them.
Errors (a plan that does not exist, the same address twice, an empty keyword list) are the
loader's business and never reach this module: it sees only rules that loaded.

The warning classes:

* classification rules that can never match or never decide anything: a ``plan`` nobody
  is on, ``sender`` entries that are on other plans or always get another language, an
  empty ``unless`` or one that repeats ``when``, keyword lists that
  ``keyword_languages: message`` never tries, keywords without a letter or digit that
  matching can see, a rule after rules that match every message and already set what it
  sets;
* template files in the templates directory that no answer kind, notice or rule uses
  (:func:`templates_in_use` is the one list of names in use);
* customer entries inside another one (``a@b.se`` in ``@b.se``, ``@x.b.se`` or
  ``*.x.b.se`` in ``*.b.se``) that give another plan without naming the same account, or
  that change nothing at all (entries from ``customers_from`` files too, named by their
  file and line);
* plans that answer how-to questions from the wiki while no wiki article is in a language
  their customers write (or the wiki is empty), a wiki no plan uses, wiki keywords that
  can never match;
* agents in no team when there are teams;
* plans no customer entry names that are not the default plan either.

Pure: :func:`lint` looks at the rules and lists the templates directory. The line and
column of a warning come from the loader (:func:`format_warnings`), the same way its
errors get theirs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta

from mailbot.policy import AGENT_TEMPLATES, CUSTOMER_TEMPLATES, TEAM_TEMPLATES
from mailbot.rules.classify_schema import ALL_LANGUAGES, ClassificationRule, When, match_words
from mailbot.rules.customers import resolve_customer
from mailbot.rules.loader import _path_text, locate
from mailbot.rules.schema import Customer, Loc, Rules
from mailbot.rules.wiki import words

#: The parts of a template mailbot reads: templates/<language>/<name>.<part>.j2
_TEMPLATE_FILE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,63})\.(?:subject|txt|html)\.j2$")
_KEYWORD_FIELDS = ("subject", "body", "any_text")


@dataclass(frozen=True, slots=True)
class RulesWarning:
    """One finding: where (a field path of rules.yaml) and what."""

    loc: Loc
    message: str
    #: Locate the key of ``loc`` (a mapping entry: a plan, an agent) rather than its value.
    key: bool = False

    @property
    def path(self) -> str:
        return _path_text(self.loc)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def lint(rules: Rules, templates_dir: Path | None) -> list[RulesWarning]:
    """Every warning about ``rules`` (and the templates in ``templates_dir``), in file order
    of their sections."""
    return [
        *_classification(rules),
        *_customers(rules),
        *_plans(rules),
        *_wiki(rules),
        *_agents(rules),
        *(_templates(rules, templates_dir) if templates_dir is not None else ()),
    ]


def format_warnings(
    warnings: Iterable[RulesWarning], text: str, source: str, base: Path | None = None
) -> list[str]:
    """``warning: SOURCE:LINE:COL: field.path: text`` lines, sorted by position.

    ``text`` is the rules file the warnings are about: its nodes give each field path a
    line and column exactly as the loader's errors get theirs, and an entry that came from
    a ``customers_from`` file (read relative to ``base``, by default the directory of
    ``source``) is named by that file and line (``warning: customers.csv:57: match: ...``).
    """
    report = locate(text, source, base)
    for warning in warnings:
        report.add(warning.loc, warning.message, warning.key)
    return [f"warning: {line}" for line in report.lines("warning")]


def lint_file(rules: Rules, rules_path: Path, templates_dir: Path | None) -> list[str]:
    """The formatted warnings of a rules file already loaded as ``rules``."""
    found = lint(rules, templates_dir)
    if not found:
        return []
    text = rules_path.read_text(encoding="utf-8")
    return format_warnings(found, text, str(rules_path), rules_path.parent)


# -- helpers ---------------------------------------------------------------------------


def _quoted(items: Iterable[str], conjunction: str = "or") -> str:
    names = [repr(item) for item in dict.fromkeys(items)]
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def _plan_words(plans: Iterable[str], conjunction: str = "or") -> str:
    names = list(dict.fromkeys(plans))
    return f"plan{'s' if len(names) > 1 else ''} {_quoted(names, conjunction)}"


Profile = tuple[str, str | None]  # a plan, and the language answers are fixed to (or None)


def _profile(customer: Customer) -> Profile:
    return customer.plan, customer.language


def _domain_of(customer: Customer) -> str:
    return (
        customer.match.rpartition("@")[2] if customer.kind != "subdomains" else customer.match[2:]
    )


def _within(domain: str, parent: str) -> bool:
    """Whether ``domain`` is a subdomain of ``parent`` (not ``parent`` itself)."""
    return domain.endswith("." + parent)


def _all_profiles(rules: Rules) -> set[Profile]:
    """Every (plan, fixed language) some sender can have."""
    return {(rules.default_plan, None), *(_profile(c) for c in rules.customers)}


def _sender_profiles(rules: Rules, pattern: str) -> set[Profile]:
    """The (plan, fixed language) pairs of the senders a classification ``sender`` entry
    matches: the customer entries inside it, and whatever covers its other addresses."""
    if pattern.startswith("*."):
        parent = pattern[2:]
        inside = {_profile(c) for c in rules.customers if _within(_domain_of(c), parent)}
        # "_" is in no domain of rules.yaml: an address no entry names, in a new subdomain.
        other = resolve_customer(rules, f"@_.{parent}")
        return {*inside, (other.plan_id, other.language)}
    if pattern.startswith("@"):
        domain = pattern[1:]
        inside = {
            _profile(c) for c in rules.customers if c.kind == "address" and _domain_of(c) == domain
        }
        # "@domain" equals no address entry: the lookup of an address no entry names.
        other = resolve_customer(rules, f"@{domain}")
        return {*inside, (other.plan_id, other.language)}
    match = resolve_customer(rules, pattern)
    return {(match.plan_id, match.language)}


def _plan_languages(rules: Rules, plan: str) -> list[str]:
    """The languages the customers of ``plan`` may write in (their answers' languages)."""
    fixed: set[str] = set()
    detected = plan == rules.default_plan
    for customer in rules.customers:
        if customer.plan == plan:
            if customer.language is None:
                detected = True
            else:
                fixed.add(customer.language)
    return [lang for lang in rules.languages if detected or lang in fixed]


def _used_plans(rules: Rules) -> set[str]:
    return {rules.default_plan, *(c.plan for c in rules.customers)}


# -- classification ----------------------------------------------------------------------


def _matchers(when: When) -> dict[str, object]:
    """The matchers a ``when``/``unless`` gives (field -> value)."""
    return {
        name: value
        for name in type(when).model_fields
        if (value := getattr(when, name)) is not None
    }


def _classification(rules: Rules) -> Iterator[RulesWarning]:
    everything_decided: dict[str, str] = {}  # outcome field -> the rule that always sets it
    message_mode = rules.classification.keyword_languages == "message"
    for i, rule in enumerate(rules.classification.rules):
        base: Loc = ("classification", "rules", i)
        never = _never_matches(rules, rule, base, message_mode)
        if never is not None:
            yield never
        elif message_mode:
            yield from _untried_keywords(rule, base)
        yield from _keyword_warnings(rule, base)
        sets = [f for f in ("severity", "urgent", "category") if getattr(rule.set, f) is not None]
        if never is None and sets and all(f in everything_decided for f in sets):
            earlier = list(dict.fromkeys(everything_decided[f] for f in sets))
            who = (
                f"rule {earlier[0]!r} before it matches every message and already sets"
                if len(earlier) == 1
                else f"rules {_quoted(earlier, 'and')} before it match every message and"
                " already set"
            )
            yield RulesWarning(
                (*base, "set"),
                f"rule {rule.name!r} never decides anything: {who} {' and '.join(sets)}",
            )
        if not _matchers(rule.when) and rule.unless is None:
            for field in sets:
                everything_decided.setdefault(field, rule.name)


def _plans_in_order(rules: Rules, plans: Iterable[str]) -> list[str]:
    wanted = set(plans)
    return [plan for plan in rules.plans if plan in wanted]


def _never_matches(
    rules: Rules, rule: ClassificationRule, base: Loc, message_mode: bool
) -> RulesWarning | None:
    """Why ``rule`` can never match, if it cannot."""
    name = rule.name
    when = rule.when
    unless = rule.unless
    if unless is not None:
        given = _matchers(unless)
        if not given:
            return RulesWarning(
                (*base, "unless"),
                f"rule {name!r} can never match: its unless is empty, and an empty unless"
                " matches every message",
            )
        if all(getattr(when, field) == value for field, value in given.items()):
            return RulesWarning(
                (*base, "unless"),
                f"rule {name!r} can never match: its unless repeats {', '.join(given)} of its"
                " when, so it matches whenever when does",
            )
    if when.sender is not None:
        profiles = set().union(*(_sender_profiles(rules, p) for p in when.sender))
        who = "its senders"
    else:
        profiles = _all_profiles(rules)
        who = ""
    if when.plan is not None:
        on_plan = {p for p in profiles if p[0] in when.plan}
        if not on_plan:
            if when.sender is None:
                neither = "it is not" if len(set(when.plan)) == 1 else "none of them is"
                return RulesWarning(
                    (*base, "when", "plan"),
                    f"rule {name!r} can never match: no customer is on"
                    f" {_plan_words(when.plan)} and {neither} the default_plan",
                )
            have = _plans_in_order(rules, (p[0] for p in profiles))
            return RulesWarning(
                (*base, "when", "plan"),
                f"rule {name!r} can never match: its senders are on"
                f" {_plan_words(have, 'and')}, not {_quoted(when.plan)}",
            )
        profiles = on_plan
        on = _plans_in_order(rules, (p[0] for p in profiles))
        who = who or f"the customers on {_plan_words(on)}"
    if when.language is not None and who:
        fixed = {p[1] for p in profiles}
        if None not in fixed and not fixed & set(when.language):
            have_languages = [lang for lang in rules.languages if lang in fixed]
            return RulesWarning(
                (*base, "when", "language"),
                f"rule {name!r} can never match: {who} are always answered in"
                f" {_quoted(have_languages)} (set by their customer entries), not"
                f" {_quoted(when.language)}",
            )
    if message_mode and when.language is not None:
        for field, lists in _keyword_lists(when):
            if not [lang for lang in lists if _tried(lang, when.language)]:
                return RulesWarning(
                    (*base, "when", field),
                    f"rule {name!r} can never match: with keyword_languages: message only"
                    f" keywords in {_quoted(when.language)} are tried on its messages, and"
                    f" its {field} keywords are in {_quoted(lists, 'and')}",
                )
    return None


def _keyword_lists(when: When) -> Iterator[tuple[str, dict[str, tuple[str, ...]]]]:
    for field in _KEYWORD_FIELDS:
        lists = getattr(when, field)
        if lists:
            yield field, lists


def _tried(language: str, rule_languages: tuple[str, ...]) -> bool:
    """Whether ``keyword_languages: message`` can try a keyword list of ``language`` on the
    messages a rule with ``language: rule_languages`` matches."""
    return language == ALL_LANGUAGES or language in rule_languages


def _untried_keywords(rule: ClassificationRule, base: Loc) -> Iterator[RulesWarning]:
    """Keyword lists ``keyword_languages: message`` never tries (the rule has others)."""
    languages = rule.when.language
    if languages is None:
        return
    for field, lists in _keyword_lists(rule.when):
        for lang in lists:
            if not _tried(lang, languages):
                yield RulesWarning(
                    (*base, "when", field, lang),
                    f"never tried: with keyword_languages: message rule {rule.name!r} only"
                    f" tries keywords in {_quoted(languages)}",
                )


def _keyword_warnings(rule: ClassificationRule, base: Loc) -> Iterator[RulesWarning]:
    for part in ("when", "unless"):
        when = getattr(rule, part)
        if when is None:
            continue
        for field in _KEYWORD_FIELDS:
            for lang, keywords in (getattr(when, field) or {}).items():
                for j, keyword in enumerate(keywords):
                    # Matching starts from the words before the first "...": none, no match.
                    first, gap, _ = keyword.partition("...")
                    if not match_words(first):
                        where = "its part before '...' has" if gap else "it has"
                        yield RulesWarning(
                            (*base, part, field, lang, j), _unseen_keyword(keyword, where)
                        )


def _unseen_keyword(keyword: str, where: str = "it has") -> str:
    return (
        f"keyword {keyword!r} can never match: matching sees only the letters a-z and digits"
        f" (accents removed), and {where} none"
    )


# -- customers ---------------------------------------------------------------------------


def _covers(outer: Customer, inner: Customer) -> bool:
    """Whether every address ``inner`` matches is matched by ``outer`` too."""
    if outer.kind == "domain":
        return inner.kind == "address" and _domain_of(inner) == _domain_of(outer)
    if outer.kind == "subdomains":
        return _within(_domain_of(inner), _domain_of(outer))
    return False


def _covering(entries: tuple[Customer, ...]) -> Iterator[tuple[int, list[int]]]:
    """Each entry's index with those of the entries that cover it (:func:`_covers`), in
    order; looked up by domain, as customer files hold thousands of entries."""
    domains: dict[str, list[int]] = {}  # "@b.se" entries by their domain
    parents: dict[str, list[int]] = {}  # "*.b.se" entries by theirs
    for j, entry in enumerate(entries):
        if entry.kind == "domain":
            domains.setdefault(_domain_of(entry), []).append(j)
        elif entry.kind == "subdomains":
            parents.setdefault(_domain_of(entry), []).append(j)
    for i, inner in enumerate(entries):
        domain = _domain_of(inner)
        found = list(domains.get(domain, ())) if inner.kind == "address" else []
        labels = domain.split(".")
        for n in range(1, len(labels)):
            found += parents.get(".".join(labels[n:]), ())
        found = sorted(j for j in found if j != i and _covers(entries[j], inner))
        if found:
            yield i, found


def _customers(rules: Rules) -> Iterator[RulesWarning]:
    entries = rules.customers
    for i, found in _covering(entries):
        inner = entries[i]
        # The narrowest entry covering this one: the one it overrides.
        j, outer = max(((j, entries[j]) for j in found), key=lambda item: len(_domain_of(item[1])))
        loc: Loc = ("customers", i, "match")
        same_account = inner.account is not None and inner.account == outer.account
        if inner.plan != outer.plan and not same_account:
            yield RulesWarning(
                loc,
                f"{inner.match!r} is inside customers[{j}] ({outer.match!r}, plan"
                f" {outer.plan!r}) and gives plan {inner.plan!r} instead; if that is meant,"
                " name the same account in both",
            )
        elif (
            inner.plan == outer.plan
            and inner.language == outer.language
            and inner.name in (None, outer.name)
            and (inner.account or inner.match) == (outer.account or outer.match)
        ):
            yield RulesWarning(
                loc,
                f"{inner.match!r} changes nothing: customers[{j}] ({outer.match!r}) already"
                f" gives it plan {outer.plan!r}, the same name, language and account",
            )


# -- plans, wiki, agents ------------------------------------------------------------------


def _plans(rules: Rules) -> Iterator[RulesWarning]:
    used = _used_plans(rules)
    for plan_id in rules.plans:
        if plan_id not in used:
            yield RulesWarning(
                ("plans", plan_id),
                f"no customer is on plan {plan_id!r} and it is not the default_plan",
                key=True,
            )


def _wiki_plans(rules: Rules) -> dict[str, Loc]:
    """Plans whose how-to questions may get wiki articles -> where that is said: the plan's
    ``howto: wiki``, else the first wiki redirect or training offer (which lists articles
    too) of the action table."""
    found: dict[str, Loc] = {
        plan_id: ("plans", plan_id, "howto")
        for plan_id, plan in rules.plans.items()
        if plan.howto == "wiki"
    }
    for k, action in enumerate(rules.actions):
        if action.do in ("wiki", "training_offer"):
            for plan_id in action.when.plans or tuple(rules.plans):
                found.setdefault(plan_id, ("actions", k, "do"))
    return found


def _wiki(rules: Rules) -> Iterator[RulesWarning]:
    for i, article in enumerate(rules.wiki):
        for j, keyword in enumerate(article.keywords):
            if not words(keyword):
                yield RulesWarning(("wiki", i, "keywords", j), _unseen_keyword(keyword))
    wiki_plans = {p: loc for p, loc in _wiki_plans(rules).items() if p in _used_plans(rules)}
    if not wiki_plans:
        if rules.wiki:
            count = len(rules.wiki)
            articles = f"{count} article{'s are' if count != 1 else ' is'}"
            yield RulesWarning(
                ("wiki",),
                "no plan answers how-to questions from the wiki (howto: wiki, or an action"
                f" wiki or training_offer), so its {articles} never sent",
                key=True,
            )
        return
    languages = {article.language for article in rules.wiki}
    for plan_id, loc in wiki_plans.items():
        if not rules.wiki:
            yield RulesWarning(
                loc,
                f"plan {plan_id!r} answers how-to questions from the wiki, but the wiki has"
                " no articles: they are only acknowledged",
            )
            continue
        missing = [lang for lang in _plan_languages(rules, plan_id) if lang not in languages]
        if missing:
            yield RulesWarning(
                loc,
                f"plan {plan_id!r} answers how-to questions from the wiki, but no wiki article"
                f" is in {_quoted(missing)}: such questions are matched against the keywords"
                f" of other languages",
            )


def _agents(rules: Rules) -> Iterator[RulesWarning]:
    if not rules.teams:
        return
    for agent_id, agent in rules.agents.items():
        if agent.team is None:
            yield RulesWarning(
                ("agents", agent_id),
                f"agent {agent_id!r} is in no team: no team's tickets or notices reach them"
                f" (teams: {', '.join(rules.teams)})",
                key=True,
            )


# -- templates -----------------------------------------------------------------------------


def templates_in_use(rules: Rules) -> set[str]:
    """Every template name (``ack``, ``notify``...) these rules can render.

    The one list: an answer kind, a notice or a rule that renders a new template adds it
    here. Every answer kind's configured template (checked at start-up in every language),
    every template the action table names, and the fixed ones of relays, agents' mail and
    the team's reminders and escalations (``mailbot.policy``).
    """
    return {
        *rules.templates.names(),
        *rules.reply_template_names(),
        *CUSTOMER_TEMPLATES,
        *AGENT_TEMPLATES,
        *TEAM_TEMPLATES,
    }


def _template_languages(rules: Rules) -> set[str]:
    """Language directories something may be rendered from."""
    return {
        *rules.languages,
        rules.default_language,
        *(agent.language for agent in rules.agents.values() if agent.language),
    }


def _template_files(templates_dir: Path) -> list[str]:
    """Template files below ``templates_dir`` (hidden ones left out), as loader names."""
    if not templates_dir.is_dir():
        return []
    return sorted(
        path.relative_to(templates_dir).as_posix()
        for path in templates_dir.rglob("*.j2")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(templates_dir).parts)
    )


def _references(templates_dir: Path, name: str) -> set[str]:
    """The templates ``name`` includes, imports or extends (with literal names)."""
    try:
        source = (templates_dir / name).read_text(encoding="utf-8")
        parsed = jinja2.Environment().parse(source)
    except (OSError, UnicodeDecodeError, jinja2.TemplateSyntaxError):
        return set()  # check reports unreadable templates it uses; others are not used
    return {ref for ref in meta.find_referenced_templates(parsed) if ref is not None}


def _templates(rules: Rules, templates_dir: Path) -> Iterator[RulesWarning]:
    files = _template_files(templates_dir)
    names = templates_in_use(rules)
    languages = _template_languages(rules)
    used: set[str] = set()
    unused_name: dict[str, list[str]] = {}
    unused_language: dict[str, list[str]] = {}
    stray: list[str] = []
    for file in files:
        parts = file.split("/")
        match = _TEMPLATE_FILE.match(parts[-1]) if len(parts) == 2 else None
        if match is None:
            stray.append(file)
        elif parts[0] not in languages:
            unused_language.setdefault(parts[0], []).append(file)
        elif match["name"] not in names:
            unused_name.setdefault(match["name"], []).append(file)
        else:
            used.add(file)
    # What the templates in use include, import or extend is in use too.
    todo = list(used)
    while todo:
        for ref in _references(templates_dir, todo.pop()):
            if ref in files and ref not in used:
                used.add(ref)
                todo.append(ref)
    loc: Loc = ("templates",)
    for name, group in unused_name.items():
        group = [f for f in group if f not in used]
        if group:
            yield RulesWarning(
                loc,
                f"template {name!r} is used by no answer kind, notice or rule:"
                f" {', '.join(group)} in {templates_dir}",
                key=True,
            )
    for lang, group in unused_language.items():
        group = [f for f in group if f not in used]
        if group:
            yield RulesWarning(
                loc,
                f"{lang}/ in {templates_dir} is not a language of these rules (languages,"
                f" default_language, agents' languages): {', '.join(group)} never used",
                key=True,
            )
    for file in stray:
        if file not in used:
            yield RulesWarning(
                loc,
                f"{file} in {templates_dir} is not a template mailbot renders"
                " (<language>/<name>.subject|txt|html.j2) and no template in use includes it",
                key=True,
            )
