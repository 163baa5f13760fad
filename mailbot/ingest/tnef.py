"""A bounded reader for TNEF streams (``winmail.dat``, ``application/ms-tnef``).

Outlook sends attachments and the body inside one such part. This reader (MS-OXTNEF) lists
the files in it and reads its plain and HTML body; every count read from the stream is
checked against the bytes left, so the work is linear in the payload whatever the stream
says. (tnefparse 1.4.0, the one pure-Python library, loops 2**32 times on a 45-byte stream
whose MAPI property count is 0xFFFFFFFF, so it is not used.) Public: :func:`read_tnef`,
:class:`Tnef`, :class:`TnefFile`, :class:`TnefError`.
"""

from __future__ import annotations

import mimetypes
import re
import struct
from dataclasses import dataclass, field

from mailbot.ingest.mime_headers import _clean_text, _decode_bytes

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
TNEF_NAME = "winmail.dat"
MAX_TNEF_OBJECTS = 10_000
MAX_TNEF_FILES = 200
MAX_TNEF_PROPERTIES = 10_000

_TNEF_SIGNATURE = 0x223E9F78
_IMESSAGE_SIGNATURE = bytes.fromhex("0703020000000000c000000000000046")
_LVL_ATTACHMENT = 2
# Attributes (the low 16 bits of the attribute id).
_ATT_BODY = 0x800C
_ATT_ATTACH_DATA = 0x800F
_ATT_ATTACH_TITLE = 0x8010
_ATT_ATTACH_REND_DATA = 0x9002
_ATT_MAPI_PROPS = 0x9003
_ATT_ATTACHMENT = 0x9005
_ATT_OEM_CODEPAGE = 0x9007
# MAPI property ids.
_PR_BODY = 0x1000
_PR_RTF_COMPRESSED = 0x1009
_PR_BODY_HTML = 0x1013
_PR_DISPLAY_NAME = 0x3001
_PR_ATTACH_DATA_OBJ = 0x3701
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_LONG_FILENAME = 0x3707
_PR_ATTACH_MIME_TAG = 0x370E
_PR_INTERNET_CPID = 0x3FDE
# MAPI property types: fixed value sizes, and the variable-length ones.
_PT_FIXED = {
    0x0002: 4,  # short, padded
    0x000B: 4,  # boolean, padded
    0x0003: 4,
    0x0004: 4,
    0x000A: 4,
    0x0005: 8,
    0x0006: 8,
    0x0007: 8,
    0x0014: 8,
    0x0040: 8,
    0x0048: 16,
}
_PT_SHORTS = frozenset({0x0002, 0x000B})
_PT_STRING8 = 0x001E
_PT_UNICODE = 0x001F
_PT_VARIABLE = frozenset({0x0000, 0x000D, _PT_STRING8, _PT_UNICODE, 0x0102})
_PT_MULTI = 0x1000
_MIME_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[\w.+-]+")
_GUESS = mimetypes.MimeTypes()  # the built-in table only: the same answer on every machine


class TnefError(ValueError):
    """The bytes are not a TNEF stream that can be read."""


@dataclass
class TnefFile:
    """One attachment inside a TNEF stream."""

    long_name: str | None = None
    short_name: str | None = None
    title: str | None = None
    display_name: str | None = None
    mime_tag: str | None = None
    #: The file's bytes (attAttachData, else a binary PR_ATTACH_DATA_OBJ); None when the
    #: stream had none or the attachment is an embedded Outlook message.
    data: bytes | None = None
    object_size: int | None = None
    embedded_message: bool = False

    def name(self) -> str | None:
        """The long file name, else the 8.3 one, the title, the display name."""
        return self.long_name or self.short_name or self.title or self.display_name

    def size(self) -> int:
        """The size of the file: its data object (OLE, embedded message), else its data."""
        if self.object_size is not None:
            return self.object_size
        return len(self.data or b"")

    def content_type(self) -> str:
        if self.mime_tag and _MIME_TYPE.fullmatch(self.mime_tag):
            return self.mime_tag.lower()
        if self.embedded_message:
            return "application/vnd.ms-outlook"
        guessed = _GUESS.guess_type(self.name() or "", strict=False)[0]
        return guessed or "application/octet-stream"


@dataclass
class Tnef:
    """What a TNEF stream holds: its files, its body, and what was wrong with it."""

    files: list[TnefFile] = field(default_factory=list)
    text: str | None = None
    html: str | None = None
    rtf: bool = False
    defects: list[str] = field(default_factory=list)


def read_tnef(data: bytes) -> Tnef:
    """Read a TNEF stream; raise :class:`TnefError` when it is none (wrong signature, too
    short). A stream that breaks off later keeps what was read (``tnef-truncated``)."""
    if len(data) < 6 or struct.unpack_from("<I", data)[0] != _TNEF_SIGNATURE:
        raise TnefError(f"not a TNEF stream (starts with {data[:4]!r})")
    result = Tnef()
    codepage = "cp1252"
    current: TnefFile | None = None
    offset, objects = 6, 0
    while offset < len(data):
        if len(data) - offset < 11:
            result.defects.append("tnef-truncated")
            break
        objects += 1
        if objects > MAX_TNEF_OBJECTS:
            result.defects.append("tnef-too-many-objects")
            break
        level, name, length = struct.unpack_from("<BHxxI", data, offset)
        start = offset + 9
        value = data[start : start + length]
        offset = start + length + 2
        if offset > len(data):  # the last object breaks off: what there is of it is read
            result.defects.append("tnef-truncated")
        elif (
            sum(value) & 0xFFFF != struct.unpack_from("<H", data, offset - 2)[0]
            and "tnef-bad-checksum" not in result.defects
        ):
            result.defects.append("tnef-bad-checksum")
        if name == _ATT_OEM_CODEPAGE and len(value) >= 4:
            codepage = f"cp{struct.unpack_from('<I', value)[0]}"
        elif level == _LVL_ATTACHMENT:
            if name == _ATT_ATTACH_REND_DATA or current is None:
                if len(result.files) >= MAX_TNEF_FILES:
                    result.defects.append("tnef-too-many-files")
                    break
                current = TnefFile()
                result.files.append(current)
            _attachment_attribute(current, name, value, codepage)
        elif name == _ATT_BODY:
            result.text = _tnef_text(value, codepage)
        elif name == _ATT_MAPI_PROPS:
            _message_properties(result, _mapi_properties(value, codepage))
    return result


def _attachment_attribute(file: TnefFile, name: int, value: bytes, codepage: str) -> None:
    if name == _ATT_ATTACH_TITLE:
        file.title = _tnef_name(_tnef_text(value, codepage))
    elif name == _ATT_ATTACH_DATA:
        file.data = value
    elif name == _ATT_ATTACHMENT:
        props = _mapi_properties(value, codepage)
        file.long_name = _tnef_name(props.get(_PR_ATTACH_LONG_FILENAME))
        file.short_name = _tnef_name(props.get(_PR_ATTACH_FILENAME))
        file.display_name = _tnef_name(props.get(_PR_DISPLAY_NAME))
        mime_tag = props.get(_PR_ATTACH_MIME_TAG)
        if isinstance(mime_tag, str):
            file.mime_tag = mime_tag.strip() or None
        data = props.get(_PR_ATTACH_DATA_OBJ)
        if isinstance(data, bytes):
            file.embedded_message = data.startswith(_IMESSAGE_SIGNATURE)
            file.object_size = len(data) - (16 if file.embedded_message else 0)
            if file.embedded_message:
                file.data = None
            elif file.data is None:
                file.data = data


def _message_properties(result: Tnef, props: dict[int, str | bytes]) -> None:
    cpid = props.get(_PR_INTERNET_CPID)
    charset = None
    if isinstance(cpid, bytes) and len(cpid) >= 4:
        number = struct.unpack_from("<I", cpid)[0]
        charset = "utf-8" if number == 65001 else f"cp{number}"
    body = props.get(_PR_BODY)
    if isinstance(body, bytes):
        body = _decode_bytes(body, charset)[0]
    if body is not None:
        result.text = body
    html = props.get(_PR_BODY_HTML)
    if isinstance(html, bytes):
        html = _decode_bytes(html.rstrip(b"\x00"), charset)[0]
    if html is not None:
        result.html = html
    result.rtf = _PR_RTF_COMPRESSED in props


def _mapi_properties(data: bytes, codepage: str) -> dict[int, str | bytes]:
    """The properties of one MAPI block: strings decoded, fixed values and binary data as
    bytes (the first value of a multi-valued one). Stops at the first malformed one."""
    props: dict[int, str | bytes] = {}
    if len(data) < 4:
        return props
    (count,) = struct.unpack_from("<I", data)
    offset = 4
    for _ in range(min(count, MAX_TNEF_PROPERTIES)):
        if offset + 4 > len(data):
            break
        ptype, pid = struct.unpack_from("<HH", data, offset)
        offset += 4
        if pid >= 0x8000:  # a named property: GUID, then an id or a name
            if offset + 20 > len(data):
                break
            (kind,) = struct.unpack_from("<I", data, offset + 16)
            offset += 20
            if kind == 0:
                offset += 4
            elif offset + 4 <= len(data):
                (size,) = struct.unpack_from("<I", data, offset)
                offset += 4 + size + (-size % 4)
            else:
                break
        parsed = _property_values(data, offset, ptype, codepage)
        if parsed is None:
            break
        value, offset = parsed
        if value is not None:
            props.setdefault(pid, value)
    return props


def _property_values(
    data: bytes, offset: int, ptype: int, codepage: str
) -> tuple[str | bytes | None, int] | None:
    """The first value of one property and the offset after all of them; None: malformed."""
    multi = bool(ptype & _PT_MULTI)
    base = ptype & ~_PT_MULTI
    count = 1
    if multi or base in _PT_VARIABLE:
        if offset + 4 > len(data):
            return None
        (count,) = struct.unpack_from("<I", data, offset)
        offset += 4
    if base in _PT_FIXED:
        size = 2 if multi and base in _PT_SHORTS else _PT_FIXED[base]
        end = offset + count * size
        if multi and base in _PT_SHORTS and count % 2:
            end += 2
        if end > len(data):
            return None
        return (data[offset : offset + size] if count else None), end
    if base not in _PT_VARIABLE:
        return None  # an unknown type: its size is unknown, nothing after it can be read
    first: str | bytes | None = None
    for index in range(count):
        if offset + 4 > len(data):
            return None
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            return None
        if index == 0:
            raw = data[offset : offset + size]
            if base == _PT_UNICODE:
                first = raw.decode("utf-16-le", "replace").split("\x00", 1)[0]
            elif base == _PT_STRING8:
                first = _tnef_text(raw, codepage)
            else:
                first = raw
        offset += size + (-size % 4)
    return first, offset


def _tnef_text(data: bytes, codepage: str) -> str:
    return _decode_bytes(data.split(b"\x00", 1)[0], codepage)[0]


def _tnef_name(value: object) -> str | None:
    return _clean_text(value.replace("\x00", "")) or None if isinstance(value, str) else None
