"""``mailbot simulate --rules / --corpus / --diff``: a folder of mail under one or two rulesets.

The first tests use a small corpus of their own; the last one runs the whole
``../shared/corpus`` (skipped when it is absent, failing with ``MAILBOT_REQUIRE_CORPUS=1``):
every message must end as a counted outcome, none as an error, and a diff between the
shipped rules.yaml and a changed copy must show exactly the changes the edit implies.
"""

from __future__ import annotations

import asyncio
import json
import mailbox
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mailbot.cli import main
from mailbot.rules.schema import Rules
from mailbot.simulation import (
    AUTO_GENERATED,
    ERROR,
    UNPARSEABLE,
    Ruleset,
    diff_json,
    diff_lines,
    diff_runs,
    run_corpus,
    summarise,
    summary_lines,
)
from tests.corpus import require_corpus
from tests.e2e.conftest import REPO, RULES
from tests.e2e.test_cli import eml

AT = "2026-11-23T10:00+01:00"  # a Monday morning in Stockholm


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL", "MAILBOT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(rules))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(REPO / "templates"))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    capsys.readouterr()
    assert main(list(argv)) == code
    return capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return json.loads(run(capsys, *argv, "--json"))


@pytest.fixture
def corpus(env: Path) -> Path:
    """Five files, six messages: an .eml per plan, an mbox of two, a Maildir, an empty file."""
    root = env / "mail"
    (root / "howto").mkdir(parents=True)
    (root / "anna.eml").write_bytes(
        eml("Anna <anna@butiken.se>", "Kassan", "Kassan fungerar inte.", "<a1@butiken.se>")
    )
    (root / "howto" / "password.eml").write_bytes(
        eml("John <john@example.org>", "How do I reset my password?", "How?", "<j1@x.org>")
    )
    (root / "empty.eml").write_bytes(b"")
    box = mailbox.mbox(root / "old.mbox")
    box.add(eml("Mario <mario@negozio.it>", "Errore", "Non va.", "<m1@negozio.it>"))
    ooo = eml("Bob <bob@example.org>", "Out of office", "Away.", "<o1@example.org>")
    box.add(ooo.replace(b"Subject:", b"Auto-Submitted: auto-replied\nSubject:", 1))
    box.flush()
    maildir = mailbox.Maildir(root / "Maildir", create=True)
    maildir.add(eml("Sara <sara@example.org>", "Login", "I cannot log in.", "<s1@example.org>"))
    return root


def changed(rules: str, old: str, new: str) -> str:
    assert rules.count(old) == 1, f"the edit {old!r} does not apply once"
    return rules.replace(old, new)


def test_simulate_one_file_under_other_rules(
    env: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anna = str(corpus / "anna.eml")
    assert run_json(capsys, "simulate", anna, "--at", AT)["plan"] == "pro"
    other = env / "other" / "rules.yaml"
    other.parent.mkdir()
    other.write_text(changed(RULES, "plan: pro, name: Butiken AB", "plan: ultimate"), "utf-8")
    result = run_json(capsys, "simulate", anna, "--rules", str(other), "--at", AT)
    assert result["plan"] == "ultimate" and result["reply"]["kind"] == "ack"
    # --templates: an empty directory has no templates, so loading the rules fails.
    (env / "empty").mkdir()
    assert main(["simulate", anna, "--rules", str(other), "--templates", str(env / "empty")]) == 2
    assert not (env / "state").exists()


def test_corpus_summary_counts_every_message_and_writes_nothing(
    env: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_json(capsys, "simulate", "--corpus", str(corpus), "--at", AT)
    assert result["files"] == 5 and result["messages"] == 6
    assert result["outcomes"] == {
        "ack": 3,  # anna (pro), mario (ultimate), sara (core, not a how-to question)
        "wiki": 1,
        AUTO_GENERATED: 1,
        UNPARSEABLE: 1,
    }
    assert result["auto_generated"] == {"Auto-Submitted": 1}
    assert result["plans"] == {"core": 3, "pro": 1, "ultimate": 1}
    assert result["languages"] == {"en": 3, "it": 1, "sv": 1}
    assert sum(result["severities"].values()) == 4  # the new tickets
    assert result["errors"] == [] and result["at"].startswith("2026-11-23T10:00")
    text = run(capsys, "simulate", "--corpus", str(corpus), "--at", AT)
    assert "5 files, 6 messages" in text and "errors:   none" in text
    assert "      Auto-Submitted" in text
    assert not (env / "state").exists()  # no database opened or created


def test_corpus_diff_shows_transitions_with_examples(
    env: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acknowledge = env / "acknowledge.yaml"
    acknowledge.write_text(changed(RULES, "howto: wiki", "howto: acknowledge"), "utf-8")
    result = run_json(
        capsys, "simulate", "--corpus", str(corpus), "--diff", str(acknowledge), "--at", AT
    )
    assert result["messages"] == 6 and result["changed"] == 1 and result["unchanged"] == 5
    assert result["transitions"] == [
        {"from": "wiki", "to": "ack", "count": 1, "examples": ["howto/password.eml"]}
    ]
    assert result["changes"] == {"plan": [], "language": [], "severity": []}
    assert result["before"]["rules"] == str(env / "rules.yaml")
    assert result["after"]["outcomes"]["ack"] == 4
    # The default plan: core -> pro for the three core senders; sara stays an ack.
    pro = env / "pro.yaml"
    pro.write_text(changed(RULES, "default_plan: core", "default_plan: pro"), "utf-8")
    text = run(
        capsys,
        "simulate",
        "--corpus",
        str(corpus),
        "--rules",
        str(acknowledge),
        "--diff",
        str(pro),
        "--examples",
        "1",
        "--at",
        AT,
    )
    assert "no message changes outcome (6 messages)" in text
    assert "plan changes:" in text and "core -> pro" in text
    plan_block = text.split("plan changes:")[1]
    assert plan_block.count(".eml") + plan_block.count("Maildir/") == 1  # --examples 1
    # One file works too: a diff over a corpus of one.
    one = run_json(
        capsys, "simulate", str(corpus / "howto" / "password.eml"), "--diff", str(acknowledge)
    )
    assert one["files"] == 1 and [t["from"] for t in one["transitions"]] == ["wiki"]


def test_new_answer_kinds_and_silence_appear_without_code_here(
    env: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "actions" not in Rules.model_fields:
        pytest.skip("this tree has no action table yet")
    table = env / "table.yaml"
    table.write_text(
        changed(
            RULES,
            "default_plan: core\n",
            "default_plan: core\n"
            "actions:\n"
            "  - {name: pro-is-paid, when: {plans: [pro]}, do: out_of_scope}\n"
            "  - {name: ultimate-quiet, when: {plans: [ultimate]}, do: silence}\n",
        ),
        "utf-8",
    )
    result = run_json(capsys, "simulate", "--corpus", str(corpus), "--diff", str(table))
    transitions = {(t["from"], t["to"]): t["examples"] for t in result["transitions"]}
    assert transitions == {
        ("ack", "out_of_scope"): ["anna.eml"],
        ("ack", "silence"): ["old.mbox#1"],
    }


def test_usage_errors(env: Path, corpus: Path) -> None:
    with pytest.raises(SystemExit) as both:
        main(["simulate", str(corpus / "anna.eml"), "--corpus", str(corpus)])
    assert both.value.code == 2
    with pytest.raises(SystemExit) as neither:
        main(["simulate", "--json"])
    assert neither.value.code == 2
    assert main(["simulate", "--corpus", str(env / "missing")]) == 2
    assert main(["simulate", "--corpus", str(corpus), "--at", "yesterday"]) == 2


def test_at_without_an_offset_is_in_the_rules_time_zone(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anna = str(corpus / "anna.eml")
    naive = run_json(capsys, "simulate", anna, "--at", "2026-11-23T10:00")
    assert naive == run_json(capsys, "simulate", anna, "--at", AT)  # Stockholm: +01:00
    summary = run_json(capsys, "simulate", "--corpus", str(corpus), "--at", "2026-11-23T10:00")
    assert summary["at"] == "2026-11-23T10:00:00+01:00" and summary["errors"] == []


# ---- the whole shared corpus ------------------------------------------------------------

SHIPPED = REPO / "rules.yaml"
TEMPLATES = REPO / "templates"


def _all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _file_of(source: str, files: set[str]) -> str:
    """The file a message came from: itself, or the mbox of ``mbox#N``."""
    if source in files:
        return source
    name, _, number = source.rpartition("#")
    assert number.isdigit() and name in files, source
    return name


def test_whole_corpus_without_an_error_and_diffs_show_exactly_each_edit(tmp_path: Path) -> None:
    """One pass (each message parsed once) under the shipped rules and five copies: an
    identical one and four edits. The command line around run_corpus is tested above."""
    root = require_corpus()
    shipped = SHIPPED.read_text(encoding="utf-8")
    edits = {
        "identical": shipped,
        # The default plan's how-to questions are acknowledged instead of redirected.
        "core-acknowledges": changed(shipped, "    howto: wiki\n", "    howto: acknowledge\n"),
        # Everyone without a customer entry is an Ultimate customer (howto: acknowledge).
        "default-ultimate": changed(shipped, "default_plan: core", "default_plan: ultimate"),
        # A new English article that mail about mail matches.
        "mail-article": changed(
            shipped,
            "\nwiki:\n",
            "\nwiki:\n  - title: Mail and mailing lists\n"
            "    url: https://docs.example.com/en/mail\n    language: en\n"
            "    keywords: [mail, email, mailing list, message, patch]\n",
        ),
    }
    if "actions" in Rules.model_fields:
        edits["core-is-paid"] = changed(
            shipped,
            "default_plan: core\n",
            "default_plan: core\n"
            "actions:\n  - {name: core-is-paid, when: {plans: [core]}, do: out_of_scope}\n",
        )
    rulesets = [Ruleset.load(SHIPPED, TEMPLATES)]
    for name, text in edits.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        rulesets.append(Ruleset.load(path, TEMPLATES))

    start = time.perf_counter()
    run = asyncio.run(run_corpus(root, rulesets, datetime.fromisoformat(AT)))
    print(f"{len(rulesets)} rulesets over {len(run.messages)} messages: ", end="")
    print(f"{time.perf_counter() - start:.1f} s")

    # Every file is read, each message (several in an mbox) ends as one counted outcome.
    files = _all_files(root)
    assert run.files == len(files) and len(run.messages) >= len(files)
    assert {_file_of(m.source, files) for m in run.messages} == files
    for index in range(len(rulesets)):
        summary = summarise(run, index)
        assert summary.errors == () and ERROR not in summary.outcomes
        assert sum(summary.outcomes.values()) == summary.messages == len(run.messages)
        assert sum(summary.auto_generated.values()) == summary.outcomes[AUTO_GENERATED]
    base = summarise(run)
    wiki, ack = base.outcomes.get("wiki", 0), base.outcomes["ack"]
    assert wiki >= 1 and ack >= 100

    def diff(name: str) -> tuple[dict[tuple[str, str], int], dict[str, Any]]:
        result = diff_runs(run, after=1 + list(edits).index(name))
        assert result.after.errors == ()
        transitions = {(t.before, t.after): t.count for t in result.transitions}
        changes = {k: {(t.before, t.after): t.count for t in v} for k, v in result.changes.items()}
        return transitions, changes

    transitions, changes = diff("identical")
    assert transitions == {} and changes == {"plan": {}, "language": {}, "severity": {}}
    same = diff_runs(run, after=1)
    as_json = json.loads(json.dumps(diff_json(run, same)))
    assert as_json["changed"] == 0 and as_json["transitions"] == []
    assert as_json["before"]["outcomes"] == as_json["after"]["outcomes"]
    assert "no message changes outcome" in "\n".join(diff_lines(run, same))
    assert "errors:   none" in "\n".join(summary_lines(run, base))

    transitions, changes = diff("core-acknowledges")
    assert transitions == {("wiki", "ack"): wiki}
    assert changes == {"plan": {}, "language": {}, "severity": {}}

    transitions, changes = diff("default-ultimate")
    assert transitions == {("wiki", "ack"): wiki}
    assert changes["plan"] == {("core", "ultimate"): base.plans["core"]}
    assert changes["language"] == {}

    transitions, changes = diff("mail-article")
    assert set(transitions) == {("ack", "wiki")} and transitions["ack", "wiki"] >= 5
    assert changes == {"plan": {}, "language": {}, "severity": {}}

    if "core-is-paid" in edits:
        transitions, changes = diff("core-is-paid")
        assert transitions == {("ack", "out_of_scope"): ack, ("wiki", "out_of_scope"): wiki}
        assert changes == {"plan": {}, "language": {}, "severity": {}}
