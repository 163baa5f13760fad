"""The new part of a reply: quoted history and signature removed. Pure.

:func:`new_text` wraps the maintained ``mail-parser-reply`` package (import name
``mailparser_reply``), which splits a body at the quote headers of many mail clients and
languages ("On ... wrote:", "Am ... schrieb", "Den ... skrev", "Il ... ha scritto:",
Outlook's "From:/Sent:" blocks, "-----Original Message-----") and finds signatures.

What this module adds around it
    * Input is normalised first: CRLF/CR to LF, white space at line ends removed, runs of
      more than two blank lines collapsed. (The library's signature regex is quadratic in
      runs of blank lines: 20,000 newlines took 40 s.)
    * Size caps, because some of the library's header regexes are quadratic in the length of
      a line ("On " followed by 10,000 characters took 2.5 s): only the first
      ``MAX_SCAN_CHARS`` characters are searched for a quote header, and lines longer than
      ``MAX_LINE_CHARS`` are searched in a shortened form (the full line is put back in the
      result). When no quote header is found within the scanned part, the whole text is new.
      The 767 KB ``email_long_quote.txt`` of github/email_reply_parser takes milliseconds.
    * The library's signature cut runs to the end of the text and starts at any line that
      begins with "Thanks," / "Best," / "-word" etc., which would drop a customer's sentence
      like "Thanks, but the scanner still fails ...". The cut is kept only when its first
      line is short (at most ``MAX_SIGNATURE_LINE`` characters, as sign-offs are) and it is
      not a bulleted list (two or more lines starting with "-"). Disclaimers are not removed
      separately: the library's disclaimer regex also matches ordinary text such as
      "Warning: the mail server ...".
    * Attribution lines the library does not know are cut as well: Italian "In data ...
      ha scritto:" and "-- Original Message --" separators in de/sv/it/fr/es; quoted blocks
      (lines starting with ``>``) at the very start or end are dropped, together with an
      attribution line ending in ``:`` right above a trailing block, and so are separator
      lines (``-----``, ``_____``) left at the end. Quoted lines between new lines (inline
      answers) are kept.
    * Never empty when the input had text: when the library fails or leaves nothing, the
      input stripped is returned. Never raises.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from mailparser_reply import EmailReplyParser

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("en", "sv", "it", "de")
MAX_SCAN_CHARS = 32_000
MAX_LINE_CHARS = 500
MAX_SIGNATURE_LINE = 60

_BLANK_RUN = re.compile(r"\n{4,}")
_TRAILING_SPACE = re.compile(r"[ \t\f\v\u00a0\u200b]+$", re.MULTILINE)
_MARKER = re.compile(r"\ue000(\d+)\ue001")
_QUOTED = re.compile(r"^\s*>")
_SEPARATOR = re.compile(r"^\s*[-_=*~]{3,}\s*$")
_BULLET = re.compile(r"^-(?!-)")
_EXTRA_SPLIT = re.compile(
    r"""^(?:>\s*)*(?:
        in\ data\ .{1,300}?\ ha\ scritto\s*:
      | -{2,}\s*(?:original\ message|ursprüngliche\ nachricht|messaggio\ originale
                 |ursprungligt\ meddelande|originalmeddelande|message\ d'origine
                 |mensaje\ original)\s*-{2,}
    )\s*$""",
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_ATTRIBUTION_HINT = re.compile(r"@|\d|wrote|schrieb|skrev|scritto|écrit|escribió", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Probe:
    """The text the library searches: capped, long lines shortened and tagged."""

    text: str
    long_lines: tuple[str, ...]
    capped: bool


def new_text(text: str, *, languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> str:
    """The new part of a reply body; the stripped input when nothing better is found."""
    original = _normalise(text)
    if not original:
        return ""
    try:
        result = _new_part(original, languages)
    except Exception:  # the library, or our own bug: never lose the text
        log.warning("quote stripping failed; keeping the whole text", exc_info=True)
        return original
    return result if result.strip() else original


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_RUN.sub("\n\n\n", text).strip()


def _new_part(original: str, languages: tuple[str, ...]) -> str:
    probe = _make_probe(original)
    parser = EmailReplyParser(languages=list(languages))
    message = parser.read(probe.text)
    replies = message.replies
    split = len(replies) > 1 or bool(replies and replies[0].headers)
    if not replies or (probe.capped and not split):
        candidate = original
    else:
        first = replies[0]
        candidate = _restore(_without_signature(first.full_body, first.signatures or ""), probe)
    return _trim_quote_blocks(_cut_extra_attribution(candidate))


def _make_probe(text: str) -> _Probe:
    long_lines: list[str] = []
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if len(line) > MAX_LINE_CHARS:
            lines[index] = f"{line[:MAX_LINE_CHARS]}\ue000{len(long_lines)}\ue001"
            long_lines.append(line)
    probe = "\n".join(lines)
    capped = len(probe) > MAX_SCAN_CHARS
    if capped:
        cut = probe.rfind("\n", 0, MAX_SCAN_CHARS)
        probe = probe[: cut if cut > 0 else MAX_SCAN_CHARS]
    return _Probe(probe, tuple(long_lines), capped)


def _restore(text: str, probe: _Probe) -> str:
    """Put the full lines back where the probe had shortened ones."""
    if not probe.long_lines:
        return text
    lines = text.split("\n")
    for index, line in enumerate(lines):
        match = _MARKER.search(line)
        if match:
            lines[index] = probe.long_lines[int(match.group(1))]
    return _MARKER.sub("", "\n".join(lines))


def _without_signature(body: str, signature: str) -> str:
    """Cut the library's signature only when it looks like one.

    Its first line must be short (a sign-off), and two or more lines starting with a
    hyphen are a bulleted list, not a "-Name" signature.
    """
    signature = signature.strip()
    if not signature:
        return body
    lines = signature.split("\n")
    if len(lines[0].strip()) > MAX_SIGNATURE_LINE:
        return body
    if _BULLET.match(lines[0]) and sum(1 for line in lines if _BULLET.match(line)) >= 2:
        return body
    position = body.rfind(signature)
    return body[:position].rstrip() if position > 0 else body


def _cut_extra_attribution(text: str) -> str:
    match = _EXTRA_SPLIT.search(text)
    if match and text[: match.start()].strip():
        return text[: match.start()].rstrip()
    return text


def _trim_quote_blocks(text: str) -> str:
    """Drop quoted lines at the very start and end (and separator lines at the end), and an
    attribution line right above a trailing quoted block."""
    lines = text.split("\n")
    if not any(line.strip() and not _QUOTED.match(line) for line in lines):
        return text
    start, end = 0, len(lines)
    while start < end and (not lines[start].strip() or _QUOTED.match(lines[start])):
        start += 1
    trailing_quote = False
    while end > start and _is_trailing_noise(lines[end - 1]):
        trailing_quote = trailing_quote or bool(_QUOTED.match(lines[end - 1]))
        end -= 1
    if trailing_quote and end - 1 > start:
        last = lines[end - 1].strip()
        if last.endswith(":") and _ATTRIBUTION_HINT.search(last):
            end -= 1
    return "\n".join(lines[start:end]).strip()


def _is_trailing_noise(line: str) -> bool:
    return not line.strip() or bool(_QUOTED.match(line) or _SEPARATOR.match(line))
