"""``mailbot check [--strict] [--connect]`` and ``mailbot schema``, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from mailbot.cli import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, main
from mailbot.devservers.smtp_sink import SmtpSink
from mailbot.mailbox.imap import ImapSession, append_messages
from tests.e2e.conftest import REPO, RULES
from tests.servers import ImapTestServer


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


async def test_connect_logs_in_to_both_servers_and_reads_the_database(
    env: Path,
    imap_server: ImapTestServer,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILBOT_IMAP_URL", imap_server.url)
    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", imap_server.password)
    monkeypatch.setenv("MAILBOT_SMTP_URL", smtp_sink.url)
    waiting = (
        b"From: a@shop.example\r\nSubject: waiting\r\nMessage-ID: <w@shop.example>\r\n\r\nhi\r\n"
    )
    await append_messages(imap_server.endpoint(), [waiting])

    async def check(*args: str) -> tuple[int, list[str]]:
        code = await asyncio.to_thread(main, ["check", "--connect", *args])
        return code, capsys.readouterr().out.splitlines()

    code, lines = await check()
    assert code == EXIT_OK, lines
    assert lines[-3].startswith("imap:      login OK; INBOX: UIDVALIDITY ")
    assert lines[-2] == f"smtp:      login OK ({smtp_sink.host}:{smtp_sink.port})"
    assert lines[-1] == "database:  not created yet (`mailbot run` or `mailbot migrate` creates it)"
    assert not (env / "state" / "mailbot.sqlite3").exists()  # check creates nothing

    assert await asyncio.to_thread(main, ["migrate"]) == EXIT_OK
    capsys.readouterr()
    code, lines = await check()
    assert code == EXIT_OK and lines[-1].startswith("database:  OK (schema at 0003_"), lines

    monkeypatch.setenv("MAILBOT_IMAP_PASSWORD", "a-rotated-password")
    code, lines = await check()
    assert code == EXIT_FAILURE
    assert lines[-3].startswith("imap:      FAILED: ImapPermanentError: "), lines
    assert lines[-2].startswith("smtp:      login OK") and lines[-1].startswith("database:  OK")
    assert "a-rotated-password" not in "\n".join(lines)

    # Only looked: nothing was fetched, flagged or sent.
    session = await ImapSession.open(imap_server.endpoint())
    try:
        assert await session.search("UNSEEN") == await session.search_uids(1) != []
    finally:
        await session.close()
    assert smtp_sink.messages == []


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
