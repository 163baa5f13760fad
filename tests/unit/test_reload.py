"""The ruleset version (a content hash) and the reloader's file watching, without servers."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from mailbot.errors import RulesError
from mailbot.policy import Policy, content_version, load_policy
from mailbot.reload import RulesReloader, error_text, stat_signature
from tests.e2e.conftest import REPO, RULES


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A copy of the shipped templates: the test may edit it."""
    return Path(shutil.copytree(REPO / "templates", tmp_path / "templates"))


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def test_version_is_12_hex_digits_of_the_files_and_load_policy_carries_it(
    rules_file: Path, templates: Path
) -> None:
    version = content_version([rules_file], templates)
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    policy = load_policy(rules_file, templates)
    assert policy.version == version
    assert policy.files == (rules_file,)
    assert policy.loaded_at is not None and policy.loaded_at.tzinfo is not None


def test_version_is_the_content_not_the_place_or_the_time(
    tmp_path: Path, rules_file: Path, templates: Path
) -> None:
    version = content_version([rules_file], templates)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(rules_file, elsewhere / "rules.yaml")
    shutil.copytree(templates, elsewhere / "templates")
    os.utime(elsewhere / "rules.yaml", (0, 0))
    assert content_version([elsewhere / "rules.yaml"], elsewhere / "templates") == version
    # An editor's swap file in the templates is not a template.
    (templates / "en" / ".ack.txt.j2.swp").write_bytes(b"\x00junk")
    assert content_version([rules_file], templates) == version


def test_every_byte_of_rules_and_templates_counts(rules_file: Path, templates: Path) -> None:
    version = content_version([rules_file], templates)
    rules_file.write_text(RULES + "# a comment\n", encoding="utf-8")
    with_comment = content_version([rules_file], templates)
    assert with_comment != version
    ack = templates / "sv" / "ack.txt.j2"
    ack.write_text(ack.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert content_version([rules_file], templates) not in (version, with_comment)
    (templates / "en" / "extra.txt.j2").write_text("new\n", encoding="utf-8")
    assert len({version, with_comment, content_version([rules_file], templates)}) == 3
    # Moving bytes from one file to another is another version.
    assert content_version([rules_file], templates) != content_version(
        [rules_file, templates / "en" / "extra.txt.j2"], templates
    )


def test_a_missing_file_has_a_version_and_a_signature(tmp_path: Path, templates: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert re.fullmatch(r"[0-9a-f]{12}", content_version([missing], templates))
    assert stat_signature([missing], templates)[0] == (str(missing), -1, -1, -1)


def test_error_text_is_one_line_with_file_line_and_field(rules_file: Path) -> None:
    problems = [
        f"{rules_file}:14:11: customers[2].plan: unknown plan 'prp'",
        f"{rules_file}:2:1: x",
    ]
    assert error_text(RulesError(problems)) == "; ".join(problems)
    assert "\n" not in error_text(RulesError(problems))


class Holder:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.swaps = 0

    def swap(self, policy: Policy) -> None:
        self.policy = policy
        self.swaps += 1


def _reloader(holder: Holder, rules_file: Path, templates: Path) -> RulesReloader:
    return RulesReloader(rules_file, templates, current=lambda: holder.policy, swap=holder.swap)


async def test_check_reloads_changed_files_once_and_reports_a_broken_file_once(
    rules_file: Path, templates: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder(load_policy(rules_file, templates))
    first = holder.policy.version
    reloader = _reloader(holder, rules_file, templates)
    assert await reloader.check() is None  # nothing changed since the load

    write(rules_file, RULES.replace("plan: pro", "plan: ultimate"))
    outcome = await reloader.check()
    assert outcome is not None and outcome.ok and outcome.changed
    assert outcome.trigger == "file change"
    assert holder.policy.version == outcome.version != first
    assert holder.policy.rules.customers[0].plan == "ultimate"
    assert await reloader.check() is None

    good = holder.policy
    caplog.clear()
    write(rules_file, RULES.replace("plan: pro", "plan: prp"))
    failed = await reloader.check()
    assert failed is not None and not failed.ok and not failed.changed
    assert holder.policy is good and failed.version == good.version
    assert failed.error is not None
    assert re.search(rf"{re.escape(str(rules_file))}:\d+:\d+: customers\[0\]\.plan", failed.error)
    assert "did you mean 'pro'" in failed.error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and failed.error in errors[0].getMessage()
    # The same broken file is not tried (nor reported) again at every poll.
    assert await reloader.check() is None
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert (reloader.succeeded, reloader.failed, holder.swaps) == (1, 1, 1)

    # Back to the running content: a successful reload that changes nothing.
    write(rules_file, RULES.replace("plan: pro", "plan: ultimate"))
    back = await reloader.check()
    assert back is not None and back.ok and not back.changed and holder.swaps == 1


async def test_check_sees_an_edit_that_keeps_size_and_mtime(
    rules_file: Path, templates: Path
) -> None:
    holder = Holder(load_policy(rules_file, templates))
    reloader = _reloader(holder, rules_file, templates)
    assert await reloader.check() is None
    before = os.stat(rules_file)
    # Same length, same mtime: only the content hash can tell (the mtime is recent).
    write(rules_file, RULES.replace("name: Core", "name: Kore"))
    os.utime(rules_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(rules_file).st_size == before.st_size
    outcome = await reloader.check()
    assert outcome is not None and outcome.changed
    assert holder.policy.rules.plans["core"].name == "Kore"


async def test_a_template_change_is_a_reload_and_a_broken_template_keeps_the_old(
    rules_file: Path, templates: Path
) -> None:
    holder = Holder(load_policy(rules_file, templates))
    reloader = _reloader(holder, rules_file, templates)
    ack = templates / "en" / "ack.txt.j2"
    text = read(ack)
    write(ack, text + "{# a note #}\n")
    outcome = await reloader.check()
    assert outcome is not None and outcome.ok and outcome.changed
    good = holder.policy
    write(ack, text + "{% if %}\n")
    failed = await reloader.reload("SIGHUP")
    assert not failed.ok and holder.policy is good
    assert failed.error is not None and f"{ack}:" in failed.error
    assert "template syntax error" in failed.error
