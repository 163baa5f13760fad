"""``mailbot simulate --corpus``: a folder of mail through parse + analyse, summed up.

Every message under a directory (recursively: .eml files, mbox files, Maildirs, exactly as
``mailbot import`` reads them) is parsed once and analysed under one or two rulesets, as
intake would on arrival at one fixed moment. Nothing is stored: threading runs against a
throw-away empty SQLite database in a temporary directory (the live database is never
opened), so every message is judged as if it were the first mail seen, and answers are
rendered (a template that fails is an error) but never queued.

Pure parts: :func:`outcome_of` (what one analysed message would get), :func:`auto_class`,
:func:`summarise` (counts per outcome, plan, language, severity) and :func:`diff_runs`
(outcome transitions between two rulesets, with example files), and the text tables.
:func:`run_corpus` is the only part doing I/O.

Outcome names come from the decision, not from a table of ours: a message with an answer
is counted under ``Decision.reply.kind.value`` (``ack``, ``wiki``, ``out_of_scope``,
``training`` and whatever kinds :class:`~mailbot.domain.ReplyKind` gains), one the action
table escalates under ``escalation``, one without an answer under why the decision gave
none (see :func:`outcome_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from mailbot.agents.tokens import TokenSigner
from mailbot.agents.verdict import MailRole
from mailbot.domain import TicketAction
from mailbot.errors import ConfigError, ParseError
from mailbot.ingest.pipeline import Analysis, analyse, answer_for, parse_off_loop
from mailbot.ingest.sources import iter_raw
from mailbot.policy import Policy, load_policy
from mailbot.tickets.database import close_database, open_database, sqlite_url

log = logging.getLogger(__name__)

# Outcomes without an answer (an answer's outcome is its ReplyKind value).
FOLLOW_UP = "no answer: follow-up"
AUTO_GENERATED = "no answer: auto-generated"
AGENT = "no answer: agent"
NO_SENDER = "no answer: no sender"
STORED_ONLY = "no answer: stored only"
SILENCE = "silence"
#: Mail the rules escalate (Decision.escalate_to), answered or not.
ESCALATION = "escalation"
UNPARSEABLE = "unparseable"
ERROR = "error"

# Table order: answers first, then the rules' silence, the no-answer reasons, the failures.
_LATE = (SILENCE, FOLLOW_UP, AUTO_GENERATED, AGENT, NO_SENDER, STORED_ONLY, UNPARSEABLE, ERROR)


@dataclass(frozen=True, slots=True)
class Ruleset:
    """A loaded policy and the name it is shown under (its rules file)."""

    name: str
    policy: Policy

    @classmethod
    def load(cls, rules_path: Path, templates_dir: Path) -> Ruleset:
        return cls(str(rules_path), load_policy(rules_path, templates_dir))


def templates_for(rules_path: Path | None, templates: Path | None, fallback: Path) -> Path:
    """The template directory for a rules file named on the simulate command line: the
    directory named, else ``templates/`` beside the rules file when there is one, else
    ``fallback`` (the configured templates)."""
    if templates is not None:
        return templates
    if rules_path is None:
        return fallback
    beside = rules_path.resolve().parent / "templates"
    return beside if beside.is_dir() else fallback


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one message would get under one ruleset."""

    outcome: str
    plan: str | None = None
    language: str | None = None
    #: A new ticket's severity; None when no ticket would be opened.
    severity: str | None = None
    #: For auto-generated mail: the class of the reason (see :func:`auto_class`).
    auto_class: str | None = None
    #: Why: the deciding rule hit, the parse error, or the exception.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MessageRun:
    """One message (a file, or one message of an mbox or Maildir) under each ruleset."""

    source: str
    verdicts: tuple[Verdict, ...]


@dataclass(frozen=True, slots=True)
class CorpusRun:
    root: str
    rulesets: tuple[str, ...]
    files: int
    messages: tuple[MessageRun, ...]
    seconds: float
    at: datetime


def auto_class(reason: str | None) -> str:
    """The class of an auto-generated verdict's reason, without the header's value:
    ``Precedence: bulk`` -> ``Precedence``, ``From: x@y (mailer daemon)`` -> ``mailer
    daemon``, ``list mail (List-Id: ...)`` -> ``list mail``."""
    if not reason:
        return "unknown"
    text = reason.strip()
    if text.startswith(("From:", "Sender:")) and text.endswith(")") and " (" in text:
        return text[text.rindex(" (") + 2 : -1]
    cuts = [i for i in (text.find(":"), text.find(" (")) if i > 0]
    return text[: min(cuts)].strip() if cuts else text


def outcome_of(analysis: Analysis) -> Verdict:
    """What intake would do with an analysed message, named from its decision."""
    decision = analysis.decision
    new = decision.thread.action is TicketAction.NEW
    outcome = _outcome(analysis)
    return Verdict(
        outcome,
        plan=decision.plan,
        language=decision.language,
        severity=decision.severity if new else None,
        auto_class=auto_class(decision.auto.reason) if outcome == AUTO_GENERATED else None,
        detail=decision.rule_hits[-1] if decision.rule_hits else "",
    )


def _outcome(analysis: Analysis) -> str:
    """The order follows intake: an agent's mail goes the agent way; then an escalation;
    then the decided answer's kind; without one, why there is none: no ticket action, a
    follow-up, auto-generated mail, no sender, an agent's address; anything else is the
    rules choosing silence (an action without a template)."""
    decision = analysis.decision
    action = decision.thread.action
    verdict = analysis.agent
    if verdict.internal or (
        verdict.role is MailRole.AGENT_DIRECT
        and action in (TicketAction.APPEND, TicketAction.REOPEN)
    ):
        return AGENT
    if decision.escalate_to:
        return ESCALATION  # an action-table escalation (its answer, if any, is an ack)
    if decision.reply is not None:
        return decision.reply.kind.value
    if action is TicketAction.NONE:
        return AUTO_GENERATED if decision.auto.auto_generated else STORED_ONLY
    if action is not TicketAction.NEW:
        return FOLLOW_UP
    if decision.auto.auto_generated:
        return AUTO_GENERATED
    if analysis.parsed.from_ is None:
        return NO_SENDER
    if verdict.role is not MailRole.CUSTOMER:
        return AGENT
    return SILENCE


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def corpus_files(root: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """The files ``run_corpus`` reads: every file under a directory (sorted), or the one
    file, or the Maildir itself (read as a whole, like ``mailbot import``). ``exclude``:
    glob patterns matched against each file's path relative to ``root`` and against its
    name (``*.md``, ``*/expected/*``)."""
    if not root.exists():
        raise ConfigError(f"{root}: no such file or directory")
    if root.is_dir() and not _is_maildir(root):
        return sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not _excluded(p.relative_to(root).as_posix(), exclude)
        )
    return [root]


def _excluded(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rpartition("/")[2]
    return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _relative(label: str, root: Path) -> str:
    """An ``iter_raw`` label (``file:``/``mbox:``/``maildir:`` + path) relative to root."""
    where = label.partition(":")[2]
    base = root if root.is_dir() else root.parent
    try:
        return Path(where).relative_to(base).as_posix()
    except ValueError:
        return where


def _read(path: Path, root: Path) -> Iterator[tuple[str, bytes | Exception]]:
    """The messages of one file (several for an mbox), or why it could not be read."""
    try:
        messages = list(iter_raw(path))
    except Exception as exc:
        log.exception("simulate: cannot read %s", path)
        yield _relative(f"file:{path}", root), exc
        return
    for label, raw in messages:
        yield _relative(label, root), raw


#: Per-message parser warnings (mail-parser's fallbacks, unhandled part types): in a run
#: over thousands of messages they drown the summary; shown with -v (debug logging).
_PARSER_LOGGERS = ("mailparser", "mail-parser", "mailbot.ingest.parse")


@contextlib.contextmanager
def _quiet_parser() -> Iterator[None]:
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in _PARSER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def run_corpus(
    root: Path,
    rulesets: Sequence[Ruleset],
    now: datetime,
    signer: TokenSigner | None = None,
    *,
    render: bool = True,
    exclude: Sequence[str] = (),
) -> CorpusRun:
    """Every message under ``root`` parsed once and analysed under each ruleset.

    Opens (and afterwards closes) a throw-away SQLite database in a temporary directory for
    the threading look-ups: run it where no other database is open in this process.
    ``render``: also render and compose each answer, as intake would (a failure is an error).
    """
    files = await asyncio.to_thread(corpus_files, root, exclude)
    runs: list[MessageRun] = []
    start = time.perf_counter()
    with _quiet_parser(), tempfile.TemporaryDirectory(prefix="mailbot-simulate-") as tmp:
        await open_database(sqlite_url(Path(tmp) / "simulate.sqlite3"))
        try:
            conn = connections.get("default")
            for path in files:
                for source, raw in _read(path, root):
                    if isinstance(raw, Exception):
                        verdict = Verdict(ERROR, detail=f"unreadable: {raw!r}")
                        runs.append(MessageRun(source, (verdict,) * len(rulesets)))
                        continue
                    verdicts = await _judge(conn, source, raw, rulesets, now, signer, render)
                    runs.append(MessageRun(source, verdicts))
        finally:
            await close_database()
    return CorpusRun(
        root=str(root),
        rulesets=tuple(r.name for r in rulesets),
        files=len(files),
        messages=tuple(runs),
        seconds=time.perf_counter() - start,
        at=now,
    )


async def _judge(
    conn: BaseDBAsyncClient,
    source: str,
    raw: bytes,
    rulesets: Sequence[Ruleset],
    now: datetime,
    signer: TokenSigner | None,
    render: bool,
) -> tuple[Verdict, ...]:
    try:
        parsed = await parse_off_loop(raw)
    except ParseError as exc:
        return (Verdict(UNPARSEABLE, detail=str(exc)),) * len(rulesets)
    except Exception as exc:
        log.exception("simulate: the parser crashed on %s", source)
        return (Verdict(ERROR, detail=f"parser crashed: {exc!r}"),) * len(rulesets)
    verdicts: list[Verdict] = []
    for ruleset in rulesets:
        try:
            analysis = await analyse(conn, parsed, ruleset.policy, now, signer, raw)
            verdict = outcome_of(analysis)
            if render and verdict.outcome != AGENT:
                answer_for(ruleset.policy, analysis, analysis.decision.thread.ticket_id, now)
        except Exception as exc:
            log.exception("simulate: %s failed under %s", source, ruleset.name)
            verdict = Verdict(ERROR, detail=f"{type(exc).__name__}: {exc}")
        verdicts.append(verdict)
    return tuple(verdicts)


def _outcome_order(item: tuple[str, int]) -> tuple[int, int, str]:
    name, count = item
    rank = _LATE.index(name) + 1 if name in _LATE else 0
    return rank, -count, name


def _by_count(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts over a corpus under one ruleset."""

    rules: str
    files: int
    messages: int
    #: Per outcome, answers first (most frequent first), then the no-answer outcomes.
    outcomes: dict[str, int]
    #: Auto-generated mail per reason class.
    auto_generated: dict[str, int]
    plans: dict[str, int]
    languages: dict[str, int]
    #: New tickets per severity.
    severities: dict[str, int]
    #: (source, what went wrong) for every error.
    errors: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, object]:
        return {
            "rules": self.rules,
            "files": self.files,
            "messages": self.messages,
            "outcomes": self.outcomes,
            "auto_generated": self.auto_generated,
            "plans": self.plans,
            "languages": self.languages,
            "severities": self.severities,
            "errors": [{"source": s, "error": e} for s, e in self.errors],
        }


def summarise(run: CorpusRun, index: int = 0) -> Summary:
    """The counts of ``run`` under its ``index``-th ruleset."""
    outcomes: Counter[str] = Counter()
    autos: Counter[str] = Counter()
    plans: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    severities: Counter[str] = Counter()
    errors: list[tuple[str, str]] = []
    for message in run.messages:
        verdict = message.verdicts[index]
        outcomes[verdict.outcome] += 1
        if verdict.auto_class is not None:
            autos[verdict.auto_class] += 1
        if verdict.plan is not None:
            plans[verdict.plan] += 1
        if verdict.language is not None:
            languages[verdict.language] += 1
        if verdict.severity is not None:
            severities[verdict.severity] += 1
        if verdict.outcome == ERROR:
            errors.append((message.source, verdict.detail))
    return Summary(
        rules=run.rulesets[index],
        files=run.files,
        messages=len(run.messages),
        outcomes=dict(sorted(outcomes.items(), key=_outcome_order)),
        auto_generated=_by_count(autos),
        plans=_by_count(plans),
        languages=_by_count(languages),
        severities=dict(sorted(severities.items())),
        errors=tuple(errors),
    )


@dataclass(frozen=True, slots=True)
class Transition:
    """``count`` messages went from ``before`` to ``after``; the first few of them."""

    before: str
    after: str
    count: int
    examples: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "from": self.before,
            "to": self.after,
            "count": self.count,
            "examples": list(self.examples),
        }


#: The verdict fields compared besides the outcome.
DIFF_FIELDS = ("plan", "language", "severity")


@dataclass(frozen=True, slots=True)
class RulesDiff:
    """What a second ruleset would change over the same mail."""

    before: Summary
    after: Summary
    #: Messages whose outcome changes.
    changed: int
    #: Outcome transitions, most frequent first.
    transitions: tuple[Transition, ...]
    #: Per field of DIFF_FIELDS: its transitions (whatever the outcome did).
    changes: dict[str, tuple[Transition, ...]]

    def as_json(self) -> dict[str, object]:
        return {
            "before": self.before.as_json(),
            "after": self.after.as_json(),
            "messages": self.before.messages,
            "changed": self.changed,
            "unchanged": self.before.messages - self.changed,
            "transitions": [t.as_json() for t in self.transitions],
            "changes": {k: [t.as_json() for t in v] for k, v in self.changes.items()},
        }


def _transitions(pairs: Sequence[tuple[str, str, str]], examples: int) -> tuple[Transition, ...]:
    """(before, after, source) triples -> transitions, most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    samples: dict[tuple[str, str], list[str]] = {}
    for before, after, source in pairs:
        counts[before, after] += 1
        kept = samples.setdefault((before, after), [])
        if len(kept) < examples:
            kept.append(source)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(Transition(b, a, n, tuple(samples[b, a])) for (b, a), n in ordered)


def diff_runs(run: CorpusRun, *, examples: int = 3, before: int = 0, after: int = 1) -> RulesDiff:
    """Outcome transitions (and plan, language, severity changes) from the ``before``-th to
    the ``after``-th ruleset of ``run``, with the first ``examples`` sources of each."""
    outcome_pairs: list[tuple[str, str, str]] = []
    field_pairs: dict[str, list[tuple[str, str, str]]] = {f: [] for f in DIFF_FIELDS}
    for message in run.messages:
        old, new = message.verdicts[before], message.verdicts[after]
        if old.outcome != new.outcome:
            outcome_pairs.append((old.outcome, new.outcome, message.source))
        for name in DIFF_FIELDS:
            a, b = getattr(old, name), getattr(new, name)
            if a != b:
                field_pairs[name].append((a or "-", b or "-", message.source))
    return RulesDiff(
        before=summarise(run, before),
        after=summarise(run, after),
        changed=len(outcome_pairs),
        transitions=_transitions(outcome_pairs, examples),
        changes={name: _transitions(pairs, examples) for name, pairs in field_pairs.items()},
    )


# ---- text -------------------------------------------------------------------------------

_WIDTH = 44


def _header(run: CorpusRun) -> list[str]:
    return [
        f"corpus:   {run.root}: {run.files} files, {len(run.messages)} messages"
        f" in {run.seconds:.1f} s",
        f"at:       {run.at.isoformat(timespec='minutes')}",
        "threading against an empty throw-away database; nothing stored, nothing sent",
    ]


def _counts(title: str, counts: dict[str, int]) -> list[str]:
    rows = [f"  {name:<{_WIDTH - 2}}{count:>9}" for name, count in counts.items()]
    return [f"{title:<{_WIDTH}}{'messages':>9}", *(rows or ["  -"])]


def summary_lines(run: CorpusRun, summary: Summary) -> list[str]:
    """The summary table of one ruleset, as text."""
    lines = [*_header(run), f"rules:    {summary.rules}", ""]
    lines.append(f"{'outcome':<{_WIDTH}}{'messages':>9}")
    for name, count in summary.outcomes.items():
        lines.append(f"  {name:<{_WIDTH - 2}}{count:>9}")
        if name == AUTO_GENERATED:
            lines += [
                f"      {reason:<{_WIDTH - 6}}{n:>9}"
                for reason, n in summary.auto_generated.items()
            ]
    lines.append(f"  {'total':<{_WIDTH - 2}}{summary.messages:>9}")
    for title, counts in (
        ("plan", summary.plans),
        ("language", summary.languages),
        ("severity (new tickets)", summary.severities),
    ):
        lines += ["", *_counts(title, counts)]
    lines += _error_lines(summary)
    return lines


def _error_lines(summary: Summary) -> list[str]:
    if not summary.errors:
        return ["", "errors:   none"]
    lines = ["", f"errors:   {len(summary.errors)} (under {summary.rules})"]
    lines += [f"  {source}: {detail}" for source, detail in summary.errors]
    return lines


def _transition_lines(transitions: tuple[Transition, ...]) -> list[str]:
    lines: list[str] = []
    for t in transitions:
        lines.append(f"  {t.before + ' -> ' + t.after:<{_WIDTH - 2}}{t.count:>9}")
        lines += [f"      {source}" for source in t.examples]
    return lines


def diff_lines(run: CorpusRun, diff: RulesDiff) -> list[str]:
    """What the second ruleset changes, as text."""
    lines = [
        *_header(run),
        f"before:   {diff.before.rules}",
        f"after:    {diff.after.rules}",
        "",
        f"{'outcome':<{_WIDTH}}{'before':>9}{'after':>9}{'change':>9}",
    ]
    names = list(diff.before.outcomes)
    names += [name for name in diff.after.outcomes if name not in diff.before.outcomes]
    for name in sorted(names, key=lambda n: _outcome_order((n, 0))[0]):
        old, new = diff.before.outcomes.get(name, 0), diff.after.outcomes.get(name, 0)
        change = f"{new - old:+d}" if new != old else ""
        lines.append(f"  {name:<{_WIDTH - 2}}{old:>9}{new:>9}{change:>9}")
    lines.append("")
    if diff.transitions:
        lines.append(f"{diff.changed} of {diff.before.messages} messages change outcome:")
        lines += _transition_lines(diff.transitions)
    else:
        lines.append(f"no message changes outcome ({diff.before.messages} messages)")
    for name, transitions in diff.changes.items():
        if transitions:
            lines += ["", f"{name} changes:", *_transition_lines(transitions)]
    if not any(diff.changes.values()):
        lines += ["", f"no {', '.join(DIFF_FIELDS)} changes"]
    for summary in (diff.before, diff.after):
        if summary.errors:
            lines += _error_lines(summary)
    if not diff.before.errors and not diff.after.errors:
        lines += ["", "errors:   none"]
    return lines


def run_json(run: CorpusRun) -> dict[str, object]:
    """The summary of a one-ruleset run as a JSON object."""
    return {
        "root": run.root,
        "at": run.at.isoformat(),
        "seconds": round(run.seconds, 2),
        **summarise(run).as_json(),
    }


def diff_json(run: CorpusRun, diff: RulesDiff) -> dict[str, object]:
    return {
        "root": run.root,
        "at": run.at.isoformat(),
        "seconds": round(run.seconds, 2),
        "files": run.files,
        **diff.as_json(),
    }
