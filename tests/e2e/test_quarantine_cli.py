"""`mailbot quarantine list | show | retry | release` as an operator uses them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from mailbot.cli import EXIT_CONFIG, main
from mailbot.settings import load_settings
from mailbot.tickets.database import close_database, open_database
from mailbot.tickets.models import Message, MessageState
from mailbot.tickets.service import Origin, sha256_hex, store_quarantined
from tests.e2e.conftest import REPO, RULES
from tests.e2e.test_cli import eml

# What the parser really refuses (mailbot.ingest.parse): input without a single header field.
GARBAGE = b"\x01\x02 not mail\r\n"
BINARY = b"\x01\x02 not a mail at all \xff\xfe\r\n\r\n\xff\xfe binary tail\r\n"
TRANSIENT = "intake failed: OperationalError('database is locked')"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    for name in ("MAILBOT_IMAP_URL", "MAILBOT_SMTP_URL", "MAILBOT_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILBOT_RULES", str(rules))
    monkeypatch.setenv("MAILBOT_TEMPLATES", str(REPO / "templates"))
    monkeypatch.setenv("MAILBOT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    capsys.readouterr()
    assert main(list(argv)) == code
    return capsys.readouterr().out


def listing(capsys: pytest.CaptureFixture[str], *flags: str) -> list[dict[str, object]]:
    result = json.loads(run(capsys, "quarantine", "list", "--json", *flags))
    assert isinstance(result, list)
    return result


def import_files(env: Path, capsys: pytest.CaptureFixture[str], **files: bytes) -> None:
    paths = []
    for name, raw in files.items():
        path = env / f"{name}.eml"
        path.write_bytes(raw)
        paths.append(str(path))
    assert f"quarantined {len(files)}" in run(capsys, "import", *paths, "--no-send")


def quarantine_directly(raw: bytes, error: str, message_id: str | None = None) -> int:
    """A row as intake leaves it after a transient failure: good bytes, an error."""

    async def store() -> int:
        await open_database(load_settings().db_url)
        try:
            async with in_transaction() as conn:
                return await store_quarantined(
                    conn,
                    raw=raw,
                    origin=Origin(label="INBOX uid 7"),
                    content_hash=sha256_hex(raw),
                    error=error,
                    now=datetime.now(UTC),
                    message_id=message_id,
                )
        finally:
            await close_database()

    return asyncio.run(store())


def stored_row(row_id: int) -> Message | None:
    async def read() -> Message | None:
        await open_database(load_settings().db_url)
        try:
            return await Message.filter(id=row_id).first()
        finally:
            await close_database()

    return asyncio.run(read())


def test_list_text_and_json(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "quarantine", "list").strip() == "quarantine is empty"
    assert listing(capsys) == []
    import_files(env, capsys, bad=GARBAGE, binary=BINARY)

    lines = run(capsys, "quarantine", "list").strip().splitlines()
    assert len(lines) == 2  # one line per message, no header
    first = lines[0].split()
    assert first[0] == "1" and first[2:4] == [str(len(GARBAGE)), "B"]
    assert datetime.fromisoformat(first[1]).tzinfo is not None
    assert f"file:{env / 'bad.eml'}" in lines[0] and "unparseable" in lines[0]
    assert "\x01" not in lines[0] and "\r" not in lines[0]  # the reason shown on one line
    # The bare `quarantine` still lists, as before.
    assert run(capsys, "quarantine").strip().splitlines() == lines

    entries = listing(capsys)
    assert [e["id"] for e in entries] == [1, 2]
    entry = entries[1]
    assert {"id", "message_id", "reason", "received", "size", "source", "from"} <= set(entry)
    assert entry["size"] == len(BINARY)
    assert entry["source"] == f"file:{env / 'binary.eml'}"
    assert entry["message_id"] is None and entry["from"] is None
    assert str(entry["reason"]).startswith("unparseable: ")
    received = datetime.fromisoformat(str(entry["received"]))
    assert received.tzinfo is not None
    assert abs((datetime.now(UTC) - received).total_seconds()) < 600
    assert listing(capsys, "--released") == []


def test_show_reads_headers_leniently_and_never_fails(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_files(env, capsys, bad=GARBAGE)
    text = run(capsys, "quarantine", "show", "1")
    assert "state:       quarantined" in text
    assert f"size:        {len(GARBAGE)} B" in text
    assert f"source:      file:{env / 'bad.eml'}" in text
    assert "From:        -" in text and "Message-ID:  -" in text
    assert "reason:      unparseable: no header field found" in text

    raw = (
        b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n"
        b"To: =?x-unknown?q?x?= <support@example.com>\r\n"
        b"Subject: red \x1b[31malert\r\n folded \xe5\r\n"
        b"Message-ID: <q1@example.org>\r\n"
        b"\r\n"
        b"From: a body line, not a header\r\n"
    )
    row = quarantine_directly(raw, "parser crashed: RuntimeError('boom')\nsecond line")
    text = run(capsys, "quarantine", "show", str(row))
    assert "From:        Jörg <joerg@example.org>" in text
    assert "To:          =?x-unknown?q?x?= <support@example.com>" in text
    assert "Subject:     red \\x1b[31malert folded å" in text  # escaped, unfolded, Latin-1
    assert "Date:        -" in text and "Message-ID:  <q1@example.org>" in text
    assert "reason:      parser crashed: RuntimeError('boom')\n             second line" in text
    (entry,) = [e for e in listing(capsys) if e["id"] == row]
    assert entry["from"] == "Jörg <joerg@example.org>"
    assert entry["message_id"] == "<q1@example.org>"  # from the header: none was stored
    line = run(capsys, "quarantine", "list").strip().splitlines()[1]
    assert "<q1@example.org>" in line and line.endswith("RuntimeError('boom') second line")


def test_show_raw_writes_the_exact_stored_bytes(
    env: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = env / "binary.eml"
    path.write_bytes(BINARY)
    assert main(["import", str(path), "--no-send"]) == 0
    capsysbinary.readouterr()
    assert main(["quarantine", "show", "1", "--raw"]) == 0
    assert capsysbinary.readouterr().out == path.read_bytes()
    # Released, it keeps its bytes.
    assert main(["quarantine", "release", "1", "--reason", "garbage"]) == 0
    capsysbinary.readouterr()
    assert main(["quarantine", "show", "1", "--raw"]) == 0
    assert capsysbinary.readouterr().out == BINARY


def test_retry_of_still_unparseable_mail_reports_it_quarantined_again(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_files(env, capsys, bad=GARBAGE)
    out = run(capsys, "quarantine", "retry", "1")
    assert out.strip().startswith("1: quarantined again as id 2: unparseable: ")
    entries = listing(capsys)
    assert [e["id"] for e in entries] == [2]  # one entry, not two, and never none
    assert run(capsys, "quarantine", "retry", "--all").startswith("2: quarantined again as id 3")
    # The deprecated spellings still work, and say so.
    capsys.readouterr()
    assert main(["quarantine", "--retry", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("3: quarantined again as id 4")
    assert "deprecated" in captured.err
    assert main(["quarantine", "--retry-all"]) == 0
    assert capsys.readouterr().out.startswith("4: quarantined again as id 5")
    assert [e["id"] for e in listing(capsys)] == [5]


def test_retry_after_a_transient_failure_stores_a_ticket(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = eml("Anna <anna@butiken.se>", "Kassan", "Kassan ger fel.", "<a1@butiken.se>")
    row = quarantine_directly(raw, TRANSIENT, message_id="<a1@butiken.se>")
    (entry,) = listing(capsys)
    assert entry["id"] == row and entry["from"] == "Anna <anna@butiken.se>"
    assert entry["message_id"] == "<a1@butiken.se>" and entry["reason"] == TRANSIENT

    out = run(capsys, "quarantine", "retry", str(row))
    assert out.strip() == f"{row}: stored on #1 (new: no known reference or token)"
    assert run(capsys, "quarantine", "list").strip() == "quarantine is empty"
    assert stored_row(row) is None
    tickets = json.loads(run(capsys, "tickets", "--json"))
    assert len(tickets) == 1 and tickets[0]["message_ids"][0] == "<a1@butiken.se>"
    # The same mail again is a duplicate of the stored one.
    (env / "again.eml").write_bytes(raw)
    assert "duplicate 1" in run(capsys, "import", str(env / "again.eml"), "--no-send")


def test_release_keeps_the_message_out_of_the_list_and_known(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_files(env, capsys, bad=GARBAGE, binary=BINARY)
    assert run(capsys, "quarantine", "release", "1", "--reason", "spam,\n obviously").strip() == (
        "1: released"
    )
    assert [e["id"] for e in listing(capsys)] == [2]
    (released,) = listing(capsys, "--released")
    assert released["id"] == 1 and released["state"] == "released"
    reason = str(released["reason"])
    assert reason.startswith("unparseable: ") and "; released: spam, obviously (by " in reason
    line = run(capsys, "quarantine", "list", "--released").strip()
    assert line.split()[0] == "1" and "released: spam" in line
    row = stored_row(1)
    assert row is not None and row.state is MessageState.RELEASED and row.raw_bytes == GARBAGE
    assert row.content_hash == sha256_hex(GARBAGE)
    assert "state:       released" in run(capsys, "quarantine", "show", "1")

    # Decided: the same mail fetched or imported again is a duplicate of the released one.
    out = run(capsys, "import", str(env / "bad.eml"), "--no-send")
    assert "duplicate 1" in out and "quarantined 0" in out
    assert [e["id"] for e in listing(capsys)] == [2]

    assert run(capsys, "quarantine", "release", "1").strip() == "1: already released"
    assert run(capsys, "quarantine", "release", "2").strip() == "2: released"
    assert "no reason given" in str(listing(capsys, "--released")[1]["reason"])
    assert run(capsys, "quarantine", "list").strip() == "quarantine is empty"
    assert run(capsys, "quarantine", "retry", "--all").strip() == "quarantine is empty"


def test_retrying_a_released_message_undoes_the_release(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = eml("Anna <anna@butiken.se>", "Kassan", "Kassan ger fel.", "<a1@butiken.se>")
    row = quarantine_directly(raw, TRANSIENT, message_id="<a1@butiken.se>")
    run(capsys, "quarantine", "release", str(row), "--reason", "looked like spam")
    assert run(capsys, "quarantine", "retry", str(row)).startswith(f"{row}: stored on #1")
    assert listing(capsys, "--released") == [] and listing(capsys) == []


def test_unknown_ids_are_exit_2_and_change_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_files(env, capsys, bad=GARBAGE)
    good = env / "good.eml"
    good.write_bytes(eml("Anna <anna@butiken.se>", "Kassan", "Kassan ger fel.", "<a1@x.se>"))
    assert "stored 1" in run(capsys, "import", str(good), "--no-send")  # row 2, not quarantined
    for argv in (
        ["quarantine", "show", "99"],
        ["quarantine", "show", "2", "--raw"],
        ["quarantine", "retry", "1", "99"],
        ["quarantine", "release", "1", "2"],
        ["quarantine", "--retry", "99"],
    ):
        capsys.readouterr()
        assert main(argv) == EXIT_CONFIG, argv
        captured = capsys.readouterr()
        assert "no quarantined or released message with id" in captured.err
        assert captured.out == ""
    (entry,) = listing(capsys)
    assert entry["id"] == 1 and "released" not in str(entry["reason"])  # nothing half done
    # Usage errors are argparse's (exit 2 as well).
    for argv in (["quarantine", "retry"], ["quarantine", "retry", "1", "--all"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert main(["quarantine", "--retry", "1", "list"]) == EXIT_CONFIG


def test_retry_of_a_message_too_big_to_download_fails_by_name_only(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = quarantine_directly(b"", "message of 90000000 bytes exceeds MAILBOT_MAX_MESSAGE_BYTES")
    out = run(capsys, "quarantine", "retry", str(row), code=1)
    assert out.startswith(f"{row}: not retried, no bytes were stored: message of 90000000")
    assert run(capsys, "quarantine", "retry", "--all").startswith(f"{row}: not retried")
    assert [e["id"] for e in listing(capsys)] == [row]
    assert "(no bytes were stored)" in run(capsys, "quarantine", "show", str(row))
