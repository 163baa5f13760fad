"""TNEF (winmail.dat): the bounded reader, the parse path and the relay.

The real streams are tnefparse's test blobs in ../shared/corpus/tnefparse (read at test
time). The file contents are checked by their magic bytes (PDF, PNG, JPEG, OLE, MP3), which
the reader cannot get right by accident: a wrong offset gives other bytes. Hostile streams
are built here: counts of 2**32-1, lengths past the end, thousands of files, every cut.
"""

from __future__ import annotations

import struct
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbot.errors import ParseError
from mailbot.ingest.parse import parse_message
from mailbot.ingest.tnef import MAX_TNEF_FILES, TnefError, read_tnef
from mailbot.outbound.attachments import relayable_attachments
from tests.corpus import CORPUS, corpus_missing_reason, require_corpus, require_file

pytestmark = pytest.mark.corpus

TNEF_DIR = "tnefparse/attachments"

# (file, [(name, first bytes of its data)]): the magic bytes come from the file formats.
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
EXPECTED_FILES: dict[str, list[tuple[str | None, bytes | None]]] = {
    "two-files.tnef": [("AUTHORS", b"\n"), ("README", b"\n")],
    "one-file.tnef": [("AUTHORS", b"\n")],
    "MAPI_ATTACH_DATA_OBJ.tnef": [
        ("VIA_Nytt_1402.doc", _OLE),
        ("VIA_Nytt_1402.pdf", b"%PDF-"),
        ("VIA_Nytt_14021.htm", b"<html"),
    ],
    "missing-filenames.tnef": [
        ("generpts.src", b"*PROC"),
        ("TechlibDEC99.doc", _OLE),
        ("TechlibDEC99-JAN00.doc", _OLE),
        ("TechlibNOV99.doc", _OLE),
    ],
    "umlaut.tnef": [
        ("TBZ PARIV GmbH.jpg", _JPEG),
        ("image003.jpg", _JPEG),
        ("UmlautAnhang-äüö.txt", b"TEST "),
    ],
    "unicode-mapi-attr-name.tnef": [
        ("spaconsole2.cfg", b"<"),
        ("image001.png", _PNG),
        ("image002.png", _PNG),
        ("image003.png", _PNG),
    ],
    "multi-value-attribute.tnef": [("208225__5_seconds__Voice_Mail.mp3", b"\xff\xf3")],
    "bad_checksum.tnef": [("image001.png", _PNG)],
    # An embedded Outlook item: listed, but it has no file bytes to hand on.
    "IPM-DistList.tnef": [("Untitled Attachment", None)],
}


def _blobs() -> list[Path | None]:
    if corpus_missing_reason() is not None:
        return [None]
    return sorted((CORPUS / TNEF_DIR).glob("*.tnef")) or [None]


def _blob(name: str) -> bytes:
    return require_file(f"{TNEF_DIR}/{name}").read_bytes()


def _ids(path: Path | None) -> str:
    return path.name if path else "no-corpus"


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_files_inside_real_streams(name: str) -> None:
    tnef = read_tnef(_blob(name))
    assert [f.name() for f in tnef.files] == [n for n, _ in EXPECTED_FILES[name]]
    for file, (_, head) in zip(tnef.files, EXPECTED_FILES[name], strict=True):
        if head is None:
            assert file.data is None and file.size() > 0
        else:
            assert file.data is not None and file.data.startswith(head), (
                file.name(),
                file.data[:16],
            )
            assert file.size() == len(file.data)


def test_the_same_file_in_two_streams_has_the_same_bytes() -> None:
    one = read_tnef(_blob("one-file.tnef")).files[0]
    two = read_tnef(_blob("two-files.tnef")).files[0]
    assert one.name() == two.name() == "AUTHORS"
    assert one.data == two.data and one.size() == 244
    renamed = read_tnef(_blob("duplicate_filename.tnef")).files
    original = read_tnef(_blob("MAPI_ATTACH_DATA_OBJ.tnef")).files
    assert [f.data for f in renamed] == [f.data for f in original]


def test_bodies_and_defects_of_real_streams() -> None:
    body = read_tnef(_blob("body.tnef"))
    assert body.html is not None and "<!DOCTYPE HTML" in body.html and body.files == []
    triples = read_tnef(_blob("triples.tnef"))
    assert triples.text is not None and triples.text.startswith("Sample description")
    assert read_tnef(_blob("rtf.tnef")).rtf
    assert "tnef-bad-checksum" in read_tnef(_blob("IPM-DistList.tnef")).defects
    assert "tnef-truncated" in read_tnef(_blob("garbage-at-end.tnef")).defects
    assert read_tnef(_blob("two-files.tnef")).defects == []


@pytest.mark.parametrize("path", _blobs(), ids=_ids)
def test_every_cut_of_every_real_stream_reads_or_refuses(path: Path | None) -> None:
    """A stream cut anywhere (a mail truncated in transit) gives a prefix of what the whole
    stream gives, never an exception other than TnefError for what is no TNEF stream."""
    require_corpus()
    assert path is not None
    data = path.read_bytes()
    whole = [f.name() for f in read_tnef(data).files]
    cuts = sorted({*range(0, min(len(data), 200)), *range(0, len(data), max(len(data) // 97, 1))})
    for cut in cuts:
        try:
            tnef = read_tnef(data[:cut])
        except TnefError:
            assert cut < 6
            continue
        names = [f.name() for f in tnef.files]
        # The last file may have lost its name with the cut; the ones before it may not.
        assert names[:-1] == whole[: max(len(names) - 1, 0)], cut
        assert len(names) <= len(whole), cut


# --- hostile streams built here ---------------------------------------------------------------


def _object(level: int, name: int, value: bytes, kind: int = 0x0006) -> bytes:
    checksum = sum(value) & 0xFFFF
    return struct.pack("<BHHI", level, name, kind, len(value)) + value + struct.pack("<H", checksum)


def _stream(*objects: bytes) -> bytes:
    return struct.pack("<IH", 0x223E9F78, 0x1234) + b"".join(objects)


def test_a_property_count_of_four_billion_costs_nothing() -> None:
    # attMAPIProps whose count says 0xFFFFFFFF and whose body is four bytes: tnefparse 1.4.0
    # loops 2**32 times here.
    data = _stream(_object(1, 0x9003, struct.pack("<I", 0xFFFFFFFF) + b"\x1e\x00\x00\x10"))
    assert len(data) < 50
    tnef = read_tnef(data)
    assert tnef.files == [] and tnef.text is None


def test_a_length_past_the_end_is_truncation_not_a_crash() -> None:
    data = struct.pack("<IH", 0x223E9F78, 0) + struct.pack("<BHHI", 2, 0x800F, 6, 2**31) + b"abc"
    tnef = read_tnef(data)
    assert "tnef-truncated" in tnef.defects
    assert [f.data for f in tnef.files] == [b"abc"]


def test_thousands_of_files_are_capped() -> None:
    one = _object(2, 0x9002, b"\x01\x00" + b"\0" * 12) + _object(2, 0x800F, b"x")
    tnef = read_tnef(_stream(*[one] * (MAX_TNEF_FILES + 50)))
    assert len(tnef.files) == MAX_TNEF_FILES
    assert "tnef-too-many-files" in tnef.defects


def test_not_a_stream() -> None:
    with pytest.raises(TnefError):
        read_tnef(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(TnefError):
        read_tnef(b"")


# --- the parse path and the relay ---------------------------------------------------------------


def _outlook_mail(tnef: bytes, filename: str = "winmail.dat") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Carla <carla@example.com>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Files attached"
    msg["Message-ID"] = "<tnef-1@example.com>"
    msg.set_content("Please see the files.")
    msg.add_attachment(tnef, maintype="application", subtype="ms-tnef", filename=filename)
    return msg.as_bytes()


def test_parse_lists_the_container_and_the_files_inside() -> None:
    parsed = parse_message(_outlook_mail(_blob("two-files.tnef")))
    assert [(a.filename, a.container, a.unpacked_from) for a in parsed.attachments] == [
        ("winmail.dat", True, None),
        ("AUTHORS", False, "winmail.dat"),
        ("README", False, "winmail.dat"),
    ]
    assert [a.size for a in parsed.attachments[1:]] == [244, 893]
    assert parsed.text.strip() == "Please see the files."


def test_a_body_only_in_tnef_becomes_the_text() -> None:
    msg = EmailMessage()
    msg["From"] = "carla@example.com"
    msg["Subject"] = "Only TNEF"
    msg.make_mixed()
    msg.add_attachment(
        _blob("triples.tnef"), maintype="application", subtype="ms-tnef", filename="winmail.dat"
    )
    parsed = parse_message(msg.as_bytes())
    assert parsed.text.startswith("Sample description")


def test_a_winmail_dat_that_is_no_tnef_is_kept_intact() -> None:
    """zbateson's m4006 (Outlook 2000) names a PNG winmail.dat: kept as it is, with a defect."""
    raw = require_file("zbateson-mail-mime-parser/messages/m4006.txt").read_bytes()
    parsed = parse_message(raw)
    assert [(a.filename, a.container) for a in parsed.attachments] == [("winmail.dat", False)]
    assert any(d.startswith("tnef-unreadable") for d in parsed.defects)
    files, skipped = relayable_attachments(raw)
    expected = require_file("zbateson-mail-mime-parser/expected/attachment-contents/winmail.dat")
    assert [(f.filename, f.data) for f in files] == [("winmail.dat", expected.read_bytes())]
    assert skipped == ()


def test_a_relay_hands_on_the_files_not_the_winmail_dat() -> None:
    files, _ = relayable_attachments(_outlook_mail(_blob("umlaut.tnef")))
    assert [f.filename for f in files] == [
        "TBZ PARIV GmbH.jpg",
        "image003.jpg",
        "UmlautAnhang-äüö.txt",
    ]
    assert [f.content_type for f in files] == ["image/jpeg", "image/jpeg", "text/plain"]
    assert files[0].data.startswith(_JPEG)


def test_a_relay_keeps_a_stream_it_cannot_fully_unpack() -> None:
    blob = _blob("IPM-DistList.tnef")
    files, _ = relayable_attachments(_outlook_mail(blob))
    assert [(f.filename, f.data) for f in files] == [("winmail.dat", blob)]


@pytest.mark.parametrize("path", _blobs(), ids=_ids)
def test_every_real_stream_in_a_mail_parses(path: Path | None) -> None:
    require_corpus()
    assert path is not None
    try:
        parsed = parse_message(_outlook_mail(path.read_bytes()))
    except ParseError as exc:
        pytest.fail(f"{path.name}: {exc}")
    assert parsed.attachments[0].filename == "winmail.dat"


def test_two_files_of_one_name_in_a_stream_both_reach_the_customer() -> None:
    files, _ = relayable_attachments(_outlook_mail(_blob("duplicate_filename.tnef")))
    assert [f.filename for f in files] == [
        "file_abcdefgh.txt",
        "file_abcdefgh (2).txt",
        "VIA_Nytt_14021.htm",
    ]
    assert files[0].data != files[1].data
