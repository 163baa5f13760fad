"""mailbot.simulation: outcomes named from the decision, summaries, diffs, a small run."""

from __future__ import annotations

import mailbox
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot.agents.verdict import AgentVerdict, MailRole
from mailbot.domain import (
    Address,
    AutoVerdict,
    Decision,
    ParsedMessage,
    Reply,
    ReplyKind,
    ThreadMatch,
    TicketAction,
)
from mailbot.ingest.pipeline import Analysis
from mailbot.simulation import (
    AGENT,
    AUTO_GENERATED,
    ERROR,
    ESCALATION,
    FOLLOW_UP,
    NO_SENDER,
    SILENCE,
    STORED_ONLY,
    UNPARSEABLE,
    CorpusRun,
    MessageRun,
    Ruleset,
    Verdict,
    auto_class,
    corpus_files,
    diff_lines,
    diff_runs,
    outcome_of,
    run_corpus,
    summarise,
    summary_lines,
    templates_for,
)
from tests.e2e.conftest import REPO, RULES

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Stockholm
ANNA = Address("anna@butiken.se", "Anna")
NEW = ThreadMatch(None, TicketAction.NEW, "no known reference or token")
CUSTOMER = AgentVerdict(MailRole.CUSTOMER, None, None, "no agent token")


def parsed(sender: Address | None = ANNA) -> ParsedMessage:
    return ParsedMessage(
        message_id="<m@x>",
        in_reply_to=(),
        references=(),
        from_=sender,
        sender=None,
        reply_to=(),
        to=(),
        cc=(),
        subject="Hej",
        date=None,
        text="Hej",
        html=None,
        attachments=(),
        headers=(),
        content_type="text/plain",
        size=10,
    )


def analysis(
    *,
    reply: ReplyKind | None = ReplyKind.ACK,
    thread: ThreadMatch = NEW,
    auto: AutoVerdict = AutoVerdict(False),  # noqa: B008 - frozen, never mutated
    sender: Address | None = ANNA,
    agent: AgentVerdict = CUSTOMER,
    hits: tuple[str, ...] = ("plan pro: acknowledgement",),
) -> Analysis:
    decision = Decision(
        thread=thread,
        plan="pro",
        customer=sender.key if sender else "",
        language="sv",
        auto=auto,
        reply=Reply(reply, "tpl", "sv", ANNA) if reply is not None and sender else None,
        deadline=None,
        rule_hits=hits,
        severity="L2",
    )
    return Analysis(parsed(sender), "Hej", "Hej", decision, agent)


@pytest.mark.parametrize("kind", list(ReplyKind))
def test_an_answer_is_counted_under_its_kind_whatever_kinds_exist(kind: ReplyKind) -> None:
    verdict = outcome_of(analysis(reply=kind))
    assert verdict.outcome == kind.value
    assert (verdict.plan, verdict.language, verdict.severity) == ("pro", "sv", "L2")
    assert verdict.detail == "plan pro: acknowledgement"


def test_no_answer_is_named_by_why() -> None:
    append = ThreadMatch(7, TicketAction.APPEND, "replies to <a@x>", by_reference=True)
    reopen = ThreadMatch(7, TicketAction.REOPEN, "replies to <a@x>", by_reference=True)
    store = ThreadMatch(None, TicketAction.NONE, "auto-generated, threads nowhere")
    bounce = AutoVerdict(True, "delivery status report (message/delivery-status part)", True)
    assert outcome_of(analysis(reply=None, thread=append)).outcome == FOLLOW_UP
    assert outcome_of(analysis(reply=None, thread=reopen)).outcome == FOLLOW_UP
    auto = outcome_of(analysis(reply=None, thread=store, auto=bounce))
    assert (auto.outcome, auto.auto_class) == (AUTO_GENERATED, "delivery status report")
    assert auto.severity is None  # no ticket, no severity
    assert outcome_of(analysis(reply=None, thread=store)).outcome == STORED_ONLY
    assert outcome_of(analysis(reply=None, auto=bounce)).outcome == AUTO_GENERATED
    assert outcome_of(analysis(reply=None, sender=None)).outcome == NO_SENDER
    direct = AgentVerdict(MailRole.AGENT_DIRECT, "maria", None, "from an agent, no token")
    assert outcome_of(analysis(reply=None, agent=direct)).outcome == AGENT
    # The rules chose no answer for a customer's new ticket: silence, with the hit shown.
    silent = outcome_of(analysis(reply=None, hits=("action quiet: silence",)))
    assert (silent.outcome, silent.detail) == (SILENCE, "action quiet: silence")


def test_agent_mail_goes_the_agent_way_even_with_a_decided_answer() -> None:
    accepted = AgentVerdict(MailRole.AGENT_REPLY, "maria", 7, "token for #7")
    assert outcome_of(analysis(agent=accepted)).outcome == AGENT
    direct = AgentVerdict(MailRole.AGENT_DIRECT, "maria", None, "from an agent, no token")
    append = ThreadMatch(7, TicketAction.APPEND, "replies to <a@x>", by_reference=True)
    assert outcome_of(analysis(reply=None, thread=append, agent=direct)).outcome == AGENT


def test_an_escalation_is_counted_as_one_answered_or_not() -> None:
    for reply in (ReplyKind.ACK, None):
        base = analysis(reply=reply)
        escalated = replace(base, decision=replace(base.decision, escalate_to=("leads",)))
        assert outcome_of(escalated).outcome == ESCALATION


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("Precedence: bulk", "Precedence"),
        ("Auto-Submitted: auto-replied", "Auto-Submitted"),
        ("delivery status report (message/delivery-status part)", "delivery status report"),
        ("From: MAILER-DAEMON@x.org (mailer daemon)", "mailer daemon"),
        ("Sender: postmaster@x.org (postmaster)", "postmaster"),
        ("From: noreply@x.org (no-reply address)", "no-reply address"),
        ("list mail (List-Id: <a.b>)", "list mail"),
        ("null Return-Path (<>)", "null Return-Path"),
        ("bounce subject: Undeliverable: hi", "bounce subject"),
        ("X-Mailbot-Loop: abc (another mailbot installation)", "X-Mailbot-Loop"),
        ("our own loop marker", "our own loop marker"),
        (None, "unknown"),
    ],
)
def test_auto_class_drops_the_values(reason: str | None, cls: str) -> None:
    assert auto_class(reason) == cls


def _run(*verdicts: tuple[Verdict, ...]) -> CorpusRun:
    return CorpusRun(
        root="corpus",
        rulesets=("a.yaml", "b.yaml"),
        files=len(verdicts),
        messages=tuple(MessageRun(f"m{i}.eml", v) for i, v in enumerate(verdicts)),
        seconds=1.0,
        at=NOW,
    )


ACK = Verdict("ack", "core", "en", "L4", detail="plan core: acknowledgement")
WIKI = Verdict("wiki", "core", "en", "L4")
BOUNCE = Verdict(AUTO_GENERATED, "core", "en", None, auto_class="bounce subject")
BROKEN = Verdict(UNPARSEABLE, detail="empty message")
CRASH = Verdict(ERROR, detail="ValueError: boom")


def test_summary_counts_outcomes_plans_languages_severities_and_errors() -> None:
    run = _run((ACK, ACK), (WIKI, WIKI), (BOUNCE, BOUNCE), (BROKEN, BROKEN), (CRASH, CRASH))
    summary = summarise(run)
    assert summary.rules == "a.yaml" and summary.messages == 5
    # Answers first, the no-answer outcomes after them, failures last.
    assert list(summary.outcomes.items()) == [
        ("ack", 1),
        ("wiki", 1),
        (AUTO_GENERATED, 1),
        (UNPARSEABLE, 1),
        (ERROR, 1),
    ]
    assert sum(summary.outcomes.values()) == summary.messages
    assert summary.auto_generated == {"bounce subject": 1}
    assert summary.plans == {"core": 3} and summary.languages == {"en": 3}
    assert summary.severities == {"L4": 2}
    assert summary.errors == (("m4.eml", "ValueError: boom"),)
    text = "\n".join(summary_lines(run, summary))
    assert "bounce subject" in text and "m4.eml: ValueError: boom" in text
    assert summary.as_json()["errors"] == [{"source": "m4.eml", "error": "ValueError: boom"}]


def test_diff_lists_transitions_with_examples_and_field_changes() -> None:
    pro_ack = replace(ACK, plan="pro", severity="L2")
    run = _run(
        (ACK, WIKI),
        (ACK, WIKI),
        (ACK, WIKI),
        (ACK, WIKI),
        (WIKI, ACK),
        (ACK, pro_ack),
        (BOUNCE, BOUNCE),
    )
    diff = diff_runs(run, examples=2)
    assert diff.changed == 5
    assert [(t.before, t.after, t.count, t.examples) for t in diff.transitions] == [
        ("ack", "wiki", 4, ("m0.eml", "m1.eml")),
        ("wiki", "ack", 1, ("m4.eml",)),
    ]
    assert [(t.before, t.after, t.count) for t in diff.changes["plan"]] == [("core", "pro", 1)]
    assert [(t.before, t.after) for t in diff.changes["severity"]] == [("L4", "L2")]
    assert diff.changes["language"] == ()
    data = diff.as_json()
    assert data["unchanged"] == 2 and data["changed"] == 5
    assert data["transitions"][0] == {  # type: ignore[index]
        "from": "ack",
        "to": "wiki",
        "count": 4,
        "examples": ["m0.eml", "m1.eml"],
    }
    text = "\n".join(diff_lines(run, diff))
    assert "ack -> wiki" in text and "5 of 7 messages change outcome" in text


def test_diff_of_identical_verdicts_is_empty() -> None:
    run = _run((ACK, ACK), (BOUNCE, BOUNCE), (BROKEN, BROKEN))
    diff = diff_runs(run)
    assert diff.changed == 0 and diff.transitions == ()
    assert not any(diff.changes.values())
    assert "no message changes outcome" in "\n".join(diff_lines(run, diff))


def test_templates_for_a_rules_file(tmp_path: Path) -> None:
    configured = tmp_path / "configured"
    other = tmp_path / "other" / "rules.yaml"
    other.parent.mkdir()
    assert templates_for(None, None, configured) == configured
    assert templates_for(other, None, configured) == configured
    (other.parent / "templates").mkdir()
    assert templates_for(other, None, configured) == other.parent.resolve() / "templates"
    assert templates_for(other, tmp_path / "t", configured) == tmp_path / "t"


def eml(sender: str, subject: str, body: str, msg_id: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = msg_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_run_over_files_mbox_and_maildir_writes_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "anna.eml").write_bytes(
        eml("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.", "<a@b>")
    )
    (corpus / "sub" / "password.eml").write_bytes(
        eml("john@example.org", "How do I reset my password?", "How do I reset it?", "<p@x>")
    )
    (corpus / "empty.eml").write_bytes(b"")
    box = mailbox.mbox(corpus / "old.mbox")
    box.add(eml("mario@negozio.it", "Errore", "Non va.", "<m@n>"))
    box.add(eml("x@y.org", "Out", "Away", "<o@y>", Auto_Submitted="auto-replied"))
    box.flush()
    maildir = mailbox.Maildir(corpus / "Maildir", create=True)
    maildir.add(eml("Nobody", "No address", "Hi", "<n@x>"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    files = corpus_files(corpus)
    ruleset = Ruleset.load(rules, REPO / "templates")

    run = await run_corpus(corpus, [ruleset], NOW)

    assert run.files == len(files) == 5
    by_source = {m.source: m.verdicts[0] for m in run.messages}
    assert set(by_source) == {
        "anna.eml",
        "sub/password.eml",
        "empty.eml",
        "old.mbox#1",
        "old.mbox#2",
        next(s for s in by_source if s.startswith("Maildir/")),
    }
    assert by_source["anna.eml"].outcome == "ack" and by_source["anna.eml"].plan == "pro"
    assert by_source["sub/password.eml"].outcome == "wiki"
    assert by_source["empty.eml"].outcome == UNPARSEABLE
    assert by_source["old.mbox#1"].plan == "ultimate"
    assert by_source["old.mbox#2"].auto_class == "Auto-Submitted"
    summary = summarise(run)
    assert sum(summary.outcomes.values()) == summary.messages == 6 and summary.errors == ()
    # Nothing was written next to the rules or in the corpus.
    assert _names(tmp_path) == ["corpus", "rules.yaml"]
    assert corpus_files(corpus) == files


async def test_a_missing_corpus_is_a_config_error(tmp_path: Path) -> None:
    from mailbot.errors import ConfigError

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    with pytest.raises(ConfigError, match="no such file"):
        await run_corpus(tmp_path / "nope", [Ruleset.load(rules, REPO / "templates")], NOW)


def test_exclude_skips_files_by_relative_path_or_name(tmp_path: Path) -> None:
    from mailbot.simulation import corpus_files

    for name in ("a.eml", "README.md", "set/expected/x.yml", "set/messages/b.eml"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"From: a@b.c\n\nhi\n")
    every = [p.relative_to(tmp_path).as_posix() for p in corpus_files(tmp_path)]
    assert every == ["README.md", "a.eml", "set/expected/x.yml", "set/messages/b.eml"]
    kept = corpus_files(tmp_path, ("*.md", "*/expected/*"))
    assert [p.relative_to(tmp_path).as_posix() for p in kept] == ["a.eml", "set/messages/b.eml"]
