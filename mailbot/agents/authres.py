"""Authentication-Results (RFC 8601): did our own mail server see DKIM or SPF pass? Pure.

Agents' replies may be required to show that the mail really comes from their domain. The
receiving server records its checks in ``Authentication-Results`` header fields::

    Authentication-Results: mx.example.com; dkim=pass header.d=example.com;
        spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=anna@example.com

Parsing (:func:`parse_authentication_results`)
    A small scanner, not a regular expression over the whole value: comments in parentheses
    (nested, with ``\\`` escapes) become white space, quoted strings are kept whole (a ``;``
    or ``(`` inside one is text), folded lines are unfolded, and the value is split at the
    ``;`` outside them. The first part is the authserv-id (a token or quoted string) with an
    optional version; each further part is ``method[/version]=result`` followed by
    ``ptype.property=value`` pairs and ``reason=...``. Non-standard bare pairs such as
    Microsoft's ``action=none`` are kept as properties too. Method, result and property
    names are lowercased, values keep their case; the first of repeated properties wins.
    ``none`` (no checks done) gives no results. A value that cannot be read (an unclosed
    comment or quote, no authserv-id) gives None.

Trust (:func:`authenticated`)
    Any sender can put an Authentication-Results field in a mail, so only fields whose
    authserv-id is our server's (case-insensitive) count, and of those only the topmost run:
    servers prepend their fields, so ours are above everything the sender wrote. A field
    with our id *below* a field of another server was already in the mail when it reached
    us and is ignored. (RFC 8601 §5 asks the receiving server to remove such forged fields;
    this is a second line of defence, not a replacement: configure the MTA to do it.)

    The mail passes when one of ``methods`` has result ``pass``. With ``from_domain`` the
    pass must also be for the author's domain: for DKIM the signing domain ``header.d`` (or
    the domain of ``header.i``, which is all Gmail reports) must be the From domain or a
    parent of it; for SPF the domain of ``smtp.mailfrom`` must be the From domain or one of
    its subdomains (bounce addresses such as ``bounces.example.com``); for DMARC
    ``header.from`` must be the From domain. A pass of any other method cannot be tied to a
    domain and does not count when ``from_domain`` is given. Methods are tried in the order
    given, so the reason names the first that passed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_FOLD = re.compile(r"\r?\n(?=[ \t])|\r\n|\r|\n")
_AUTHSERV = re.compile(r'^\s*(?P<id>"(?:[^"\\]|\\.)*"|[^\s"=;/]+)(?:\s+(?P<version>[0-9]+))?\s*$')
_METHOD = re.compile(
    r"^\s*(?P<method>[a-z0-9_-]+)\s*(?:/\s*(?P<version>[0-9]+)\s*)?=\s*(?P<result>[a-z0-9_-]+)",
    re.IGNORECASE,
)
_PROPERTY = re.compile(
    r"""\s*
        (?P<key>[a-z0-9_-]+(?:\s*\.\s*[a-z0-9_-]+)?)
        \s*=\s*
        (?P<value>"(?:[^"\\]|\\.)*"(?:@[^\s"]*)?|[^\s"]+)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_QUOTED_PAIR = re.compile(r"\\(.)")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r'\s*(?:"(?:[^"\\]|\\.)*"|[^\s"]+|")')


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One ``method=result`` with its properties (keys like ``"header.d"``)."""

    method: str
    result: str
    properties: Mapping[str, str] = field(default_factory=dict, hash=False)
    reason: str | None = None
    version: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    def describe(self) -> str:
        """``dkim=pass header.d=example.com``: the result and its identifying property."""
        key = _IDENTITY.get(self.method)
        shown = next((k for k in key or () if k in self.properties), None)
        suffix = f" {shown}={self.properties[shown]}" if shown is not None else ""
        return f"{self.method}={self.result}{suffix}"


@dataclass(frozen=True, slots=True)
class AuthResults:
    """One Authentication-Results field: who checked, and what they found."""

    authserv_id: str
    version: int | None
    results: tuple[MethodResult, ...]

    def matches(self, authserv_id: str) -> bool:
        return _normal_id(self.authserv_id) == _normal_id(authserv_id)


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    ok: bool
    reason: str


#: The properties that name the identity each method checked (tried in this order).
_IDENTITY: dict[str, tuple[str, ...]] = {
    "dkim": ("header.d", "header.i"),
    "spf": ("smtp.mailfrom", "smtp.helo"),
    "dmarc": ("header.from",),
}


class _Unreadable(ValueError):
    """The value breaks the grammar (unclosed comment or quoted string)."""


def parse_authentication_results(value: str) -> AuthResults | None:
    """The parsed field value, or None when it cannot be read (see the module docstring)."""
    try:
        parts = _split(_FOLD.sub(" ", value))
    except _Unreadable:
        return None
    head = _AUTHSERV.match(parts[0])
    if head is None:
        return None
    authserv_id = _unquote(head.group("id"))
    if not authserv_id:
        return None
    version = int(head.group("version")) if head.group("version") else None
    resinfo = [part for part in parts[1:] if part.strip()]
    if len(resinfo) == 1 and resinfo[0].strip().lower() == "none":
        return AuthResults(authserv_id, version, ())
    results = tuple(r for r in (_parse_result(part) for part in resinfo) if r is not None)
    return AuthResults(authserv_id, version, results)


def authenticated(
    headers: Iterable[str],
    *,
    authserv_id: str,
    methods: Collection[str] = ("dkim", "spf"),
    from_domain: str | None = None,
) -> AuthVerdict:
    """Whether our server (``authserv_id``) saw a pass of one of ``methods`` (see above).

    ``headers`` are the raw values of every Authentication-Results field in message order
    (topmost first).
    """
    wanted = [method.lower() for method in methods]
    if not wanted:
        return AuthVerdict(False, "no authentication methods are configured")
    ours, ignored = _our_fields(headers, authserv_id)
    if not ours:
        note = f" (ignored {ignored} from other or unknown servers)" if ignored else ""
        return AuthVerdict(False, f"no Authentication-Results from {authserv_id}{note}")
    domain = _normal_domain(from_domain) if from_domain is not None else None
    results = [r for fields in ours for r in fields.results]
    for method in wanted:
        for result in results:
            passed = result.method == method and result.result == "pass"
            if passed and (domain is None or _aligned(result, domain)):
                return AuthVerdict(True, f"{result.describe()} by {authserv_id}")
    relevant = [r for r in results if r.method in wanted]
    if not relevant:
        return AuthVerdict(False, f"no {' or '.join(wanted)} result from {authserv_id}")
    shown = ", ".join(r.describe() for r in relevant)
    passed = any(r.result == "pass" for r in relevant)
    mismatch = f", but not for the From domain {domain}" if passed and domain else ""
    return AuthVerdict(False, f"{shown} by {authserv_id}{mismatch}")


# --- trust -----------------------------------------------------------------------------------


def _our_fields(headers: Iterable[str], authserv_id: str) -> tuple[list[AuthResults], int]:
    """Our server's topmost run of fields, and how many other fields were ignored."""
    ours: list[AuthResults] = []
    ignored = 0
    run_ended = False
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed is not None and parsed.matches(authserv_id) and not run_ended:
            ours.append(parsed)
            continue
        ignored += 1
        if ours:
            run_ended = True
    return ours, ignored


def _aligned(result: MethodResult, domain: str) -> bool:
    props = result.properties
    if result.method == "dkim":
        signer = props.get("header.d") or _after_at(props.get("header.i", ""))
        signer = _normal_domain(signer)
        return bool(signer) and (domain == signer or domain.endswith("." + signer))
    if result.method == "spf":
        sender = _normal_domain(_after_at(props.get("smtp.mailfrom", "")))
        return bool(sender) and (sender == domain or sender.endswith("." + domain))
    if result.method == "dmarc":
        return _normal_domain(props.get("header.from", "")) == domain
    return False


def _after_at(value: str) -> str:
    return value.rpartition("@")[2]


def _normal_domain(value: str) -> str:
    return value.strip().strip("<>").lower().rstrip(".")


def _normal_id(value: str) -> str:
    return value.strip().lower().rstrip(".")


# --- scanning ----------------------------------------------------------------------------------


def _split(value: str) -> list[str]:
    """Comments replaced by a space, split at ``;`` outside quoted strings."""
    parts: list[str] = []
    current: list[str] = []
    index, length = 0, len(value)
    while index < length:
        char = value[index]
        if char == '"':
            end = _quoted_end(value, index)
            current.append(value[index:end])
            index = end
        elif char == "(":
            index = _comment_end(value, index)
            current.append(" ")
        elif char == ";":
            parts.append("".join(current))
            current = []
            index += 1
        else:
            current.append(char)
            index += 1
    parts.append("".join(current))
    return parts


def _quoted_end(value: str, start: int) -> int:
    index = start + 1
    while index < len(value):
        if value[index] == "\\":
            index += 2
        elif value[index] == '"':
            return index + 1
        else:
            index += 1
    raise _Unreadable("unclosed quoted string")


def _comment_end(value: str, start: int) -> int:
    depth, index = 0, start
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise _Unreadable("unclosed comment")


def _parse_result(part: str) -> MethodResult | None:
    head = _METHOD.match(part)
    if head is None:
        return None
    properties: dict[str, str] = {}
    reason: str | None = None
    rest = part[head.end() :]
    position = 0
    while position < len(rest):
        match = _PROPERTY.match(rest, position)
        if match is None:  # a word that is no property: skip it, read on
            word = _WORD.match(rest, position)
            position = word.end() if word else len(rest)
            continue
        position = match.end()
        key = _SPACE.sub("", match.group("key")).lower()
        value = _unquote(match.group("value"))
        if key == "reason":
            reason = reason if reason is not None else value
        else:
            properties.setdefault(key, value)
    version = int(head.group("version")) if head.group("version") else None
    return MethodResult(
        head.group("method").lower(), head.group("result").lower(), properties, reason, version
    )


def _unquote(value: str) -> str:
    """A quoted string's content (``"a\\"b"`` -> ``a"b``); ``"x"@d`` -> ``x@d``."""
    if not value.startswith('"'):
        return value
    end = _quoted_end(value, 0)
    return _QUOTED_PAIR.sub(r"\1", value[1 : end - 1]) + value[end:]
