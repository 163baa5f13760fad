"""``templates.extends``: an operator's templates directory customises a few templates and
inherits every other file from another directory (the shipped templates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.errors import ConfigError
from mailbot.policy import load_policy
from tests.e2e.conftest import REPO, RULES


def _setup(tmp_path: Path, extends: str) -> Path:
    own = tmp_path / "site" / "templates" / "en"
    own.mkdir(parents=True)
    (own / "ack.subject.j2").write_text("Received: {{ subject }}\n", encoding="utf-8")
    (own / "ack.txt.j2").write_text("Our own text for {{ ticket_ref }}.\n", encoding="utf-8")
    rules = tmp_path / "site" / "rules.yaml"
    rules.write_text(RULES + f"templates:\n  extends: {extends}\n", encoding="utf-8")
    return rules


def test_own_templates_win_and_the_rest_is_inherited(tmp_path: Path) -> None:
    rules = _setup(tmp_path, str(REPO / "templates"))
    policy = load_policy(rules, rules.parent / "templates")
    context = {
        "ticket_ref": "#7",
        "ticket_token": "[#7]",
        "subject": "Hello",
        "customer_name": "",
        "plan_name": "Core",
        "promise": "soon",
        "deadline_text": "",
        "support_name": "S",
        "support_address": "s@example.com",
        "articles": [{"title": "T", "url": "https://x.example/t"}],
        "paid_option": "",
    }
    ack = policy.renderer.render("ack", "en", context)
    assert (ack.subject, ack.text, ack.html) == ("Received: Hello", "Our own text for #7.\n", None)
    wiki = policy.renderer.render("wiki", "sv", context)  # not customised: the shipped one
    assert "https://x.example/t" in wiki.text
    # The inherited files are part of the ruleset: its version and what a reload watches.
    assert REPO / "templates" / "sv" / "wiki.txt.j2" in policy.files


def test_a_relative_extends_is_read_from_the_rules_files_directory(tmp_path: Path) -> None:
    shipped = tmp_path / "shipped"
    shipped.symlink_to(REPO / "templates", target_is_directory=True)
    rules = _setup(tmp_path, "../shipped")
    layers = load_policy(rules, rules.parent / "templates").renderer.directories
    assert layers[1] == shipped.resolve()


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    rules = _setup(tmp_path, "../nowhere")
    with pytest.raises(ConfigError) as info:
        load_policy(rules, rules.parent / "templates")
    assert "templates.extends: '../nowhere' is not a directory" in str(info.value)


def test_without_extends_a_missing_template_is_still_an_error(tmp_path: Path) -> None:
    rules = _setup(tmp_path, str(REPO / "templates"))
    rules.write_text(RULES, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(rules, rules.parent / "templates")
    assert "wiki" in str(info.value) and "template missing" in str(info.value)
