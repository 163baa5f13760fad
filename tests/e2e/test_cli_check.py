"""``mailbot check [--strict]`` warnings and ``mailbot schema``, as an operator runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mailbot.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from tests.e2e.conftest import REPO, RULES


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped rules.yaml and templates, copied; no servers configured."""
    shutil.copy(REPO / "rules.yaml", tmp_path / "rules.yaml")
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(tmp_path / "rules.yaml"))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(REPO / "templates"))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_the_shipped_rules_pass_check_strict(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--strict"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK" in out and "warning" not in out


def test_warnings_follow_the_ok_lines_and_strict_fails_on_them(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = env / "rules.yaml"
    # The e2e rules: plan core answers from the wiki, which has no Italian article.
    rules.write_text(RULES, encoding="utf-8")
    warning = (
        f"warning: {rules}:12:12: plans.core.howto: plan 'core' answers how-to questions from"
        " the wiki, but no wiki article is in 'it': such questions are matched against the"
        " keywords of other languages"
    )
    assert main(["check"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == warning
    assert lines[0].startswith("rules:") and "OK" in lines[0]
    assert all(not line.startswith("warning:") for line in lines[:-1])

    assert main(["check", "--strict"]) == EXIT_FAILURE
    assert capsys.readouterr().out.splitlines()[-1] == warning

    # Errors stay errors (exit 2), before any warning.
    rules.write_text(RULES.replace("plan: pro", "plan: prp"), encoding="utf-8")
    assert main(["check", "--strict"]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert "customers[0].plan" in captured.err and "warning" not in captured.out


def test_schema_prints_the_shipped_rules_schema_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Needs no settings: a broken environment does not matter.
    monkeypatch.setenv("MAILBOT_IMAP_URL", "not a url")
    assert main(["schema"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out == (REPO / "rules.schema.json").read_text(encoding="utf-8")
    schema = json.loads(out)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["$id"] == "urn:mailbot:rules:1"
    assert schema["title"] == "mailbot rules.yaml (version 1)"
    assert {"version", "identity", "plans", "customers", "wiki"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
