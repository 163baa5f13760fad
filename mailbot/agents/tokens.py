"""Signed ticket tokens: how an agent's reply proves which ticket it answers. Pure.

A token is ``<ticket id>-<signature>``, e.g. ``1042-k3j5q2x7m4n6p8r2``: the decimal ticket
id, a hyphen, and the first 16 characters (80 bits) of the lowercase, unpadded base32 form
of ``HMAC-SHA256(secret, b"mailbot-ticket:" + id)``. Only the holder of the secret can make
one, so a reply that carries a valid token answers a notification mailbot sent for that
ticket. Whether the sender is an agent is checked elsewhere (``mailbot.agents.verdict``).

Design choices
    * Base32 lowercase, no padding: it survives every mail system unchanged, including the
      ones that lowercase addresses or Message-IDs; verification is case-insensitive.
    * The id is part of the signed message, so a signature cannot be moved to another ticket;
      ids are 1-12 digits with no leading zero (one ticket, one token text), and the
      signatures are compared with :func:`hmac.compare_digest`.
    * Tokens are deterministic per ticket (no expiry): a notification answered weeks later
      still works. Changing the secret invalidates all of them.

Carriers (every notification carries all three; one suffices on the reply)
    (a) the ``Reply-To`` plus address ``support+mb-1042-<sig>@example.com``;
    (b) the notification's Message-ID ``<mb.1042.<sig>.<random hex>@example.com>``, which
        comes back in ``In-Reply-To`` / ``References``;
    (c) a footer line ``[ref:mb-1042-<sig>]`` in the notification text, found anywhere in the
        reply, also inside ``>`` quotes, broken over lines, or wrapped in ``<...>`` by a mail
        client that took ``ref:`` for a link.

The extractors return *candidates*: anything shaped like a token (digits, hyphen, letters
and digits), normalised to lowercase. :func:`find_ticket_token` verifies them and reports
the ones that fail, so a reply with an altered or outdated token is recognised as an
attempt to answer a notification and not mistaken for a customer's mail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

#: The minimum length of the signing key.
MIN_SECRET_BYTES = 16
#: Characters of the base32 signature kept (80 bits).
SIGNATURE_CHARS = 16
#: The longest ticket id a token may carry.
MAX_ID_DIGITS = 12

CARRIER_ADDRESS = "reply-to address"
CARRIER_BODY = "body"

_DOMAIN_TAG = b"mailbot-ticket:"
_TOKEN = re.compile(
    rf"([1-9][0-9]{{0,{MAX_ID_DIGITS - 1}}})-([a-z2-7]{{{SIGNATURE_CHARS}}})",
    re.IGNORECASE | re.ASCII,
)
# Candidates are looser than tokens (bounded, so nothing pathological is scanned): a reply
# with a damaged token must still be recognised as one.
_CANDIDATE = r"[0-9]{1,20}-[a-z0-9]{1,64}"
_ADDRESS_TAG = re.compile(rf"\+mb-({_CANDIDATE})@", re.IGNORECASE | re.ASCII)
_MESSAGE_ID = re.compile(
    r"^\s*<?\s*mb\.([0-9]{1,20})\.([a-z0-9]{1,64})\.[0-9a-z]*@", re.IGNORECASE | re.ASCII
)
# In the body the text is compacted first (quote markers and all white space removed), so
# the signature is taken as exactly SIGNATURE_CHARS characters: what follows may be the
# next line's text.
_FOOTER = re.compile(
    rf"""ref:mb-([0-9]{{1,20}})-(
        [a-z0-9]{{{SIGNATURE_CHARS}}}                       # a full-length signature
      | [a-z0-9]{{1,{SIGNATURE_CHARS - 1}}}(?![a-z0-9])     # a shortened one (damaged)
    )""",
    re.IGNORECASE | re.ASCII | re.VERBOSE,
)
_MESSAGE_IDS = re.compile(r"<[^<>\s]*>")
_LINE_START_QUOTES = re.compile(r"^[ \t>|]+", re.MULTILINE)
_WHITE = re.compile(r"\s+")


class TokenSigner:
    """Signs and verifies ticket tokens with one secret key."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes):
            raise TypeError("the token secret must be bytes")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the token secret is too short ({len(secret)} bytes): "
                f"use at least {MIN_SECRET_BYTES}"
            )
        self._key = secret

    def __repr__(self) -> str:
        return "TokenSigner(<secret>)"

    def sign(self, ticket_id: int) -> str:
        """``"1042-k3j5..."``: the token of one ticket."""
        return f"{ticket_id}-{self._signature(_check_id(ticket_id))}"

    def verify(self, token: str) -> int | None:
        """The ticket id of a valid token (any case), else None. Never raises."""
        if not isinstance(token, str):
            return None
        match = _TOKEN.fullmatch(token.strip())
        if match is None:
            return None
        ticket_id = int(match.group(1))
        expected = self._signature(ticket_id)
        if hmac.compare_digest(expected, match.group(2).lower()):
            return ticket_id
        return None

    def _signature(self, ticket_id: int) -> str:
        message = _DOMAIN_TAG + str(ticket_id).encode("ascii")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.b32encode(digest).decode("ascii").rstrip("=").lower()[:SIGNATURE_CHARS]


def _check_id(ticket_id: int) -> int:
    if isinstance(ticket_id, bool) or not isinstance(ticket_id, int):
        raise TypeError(f"a ticket id must be an int, not {type(ticket_id).__name__}")
    if not 0 < ticket_id < 10**MAX_ID_DIGITS:
        raise ValueError(f"ticket id {ticket_id} is outside 1..{10**MAX_ID_DIGITS - 1}")
    return ticket_id


def _token_parts(ticket_id: int, token: str) -> tuple[str, str]:
    """The id and signature of a well-formed ``token`` for ``ticket_id``; ValueError if not."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"{token!r} is not a ticket token (expected <id>-<16 characters>)")
    if int(match.group(1)) != _check_id(ticket_id):
        raise ValueError(f"token {token!r} is not for ticket {ticket_id}")
    return match.group(1), match.group(2).lower()


# --- (a) the Reply-To plus address ----------------------------------------------------------


def reply_address(support: str, ticket_id: int, token: str) -> str:
    """``support+mb-1042-<sig>@example.com``: the Reply-To of a notification.

    The local part keeps its case, the domain is lowercased. A support address that already
    has a ``+tag`` is refused: two tags are not understood by every mail server.
    """
    ticket, signature = _token_parts(ticket_id, token)
    local, at, domain = support.strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in support.strip()):
        raise ValueError(f"{support!r} is not an e-mail address")
    if "+" in local:
        raise ValueError(f"support address must not contain +: {support!r}")
    return f"{local}+mb-{ticket}-{signature}@{domain.lower()}"


def token_from_address(address: str) -> str | None:
    """The token candidate in a ``+mb-...`` tagged address (any case, display name allowed)."""
    match = _ADDRESS_TAG.search(address)
    return match.group(1).lower() if match else None


# --- (b) the notification's Message-ID ------------------------------------------------------


def notification_message_id(
    domain: str, ticket_id: int, token: str, *, nonce: str | None = None
) -> str:
    """``<mb.1042.<sig>.<random hex>@domain>``: unique per notification, token inside.

    ``nonce`` (lowercase hex) replaces the random part, for tests.
    """
    ticket, signature = _token_parts(ticket_id, token)
    host = domain.strip().lower()
    if not host or any(c.isspace() or c in "<>@" for c in host):
        raise ValueError(f"{domain!r} is not a domain name")
    unique = secrets.token_hex(8) if nonce is None else nonce
    if not re.fullmatch(r"[0-9a-f]{1,64}", unique):
        raise ValueError(f"nonce {nonce!r} must be lowercase hex")
    return f"<mb.{ticket}.{signature}.{unique}@{host}>"


def token_from_message_id(message_id: str) -> str | None:
    """The token candidate in a notification's Message-ID (with or without ``<>``)."""
    match = _MESSAGE_ID.match(message_id)
    return f"{match.group(1)}-{match.group(2)}".lower() if match else None


# --- (c) the footer line -------------------------------------------------------------------


def footer_line(token: str) -> str:
    """``[ref:mb-1042-<sig>]``: the last line of a notification's text."""
    if _TOKEN.fullmatch(token) is None:
        raise ValueError(f"{token!r} is not a ticket token (expected <id>-<16 characters>)")
    return f"[ref:mb-{token.lower()}]"


def tokens_in_text(text: str) -> tuple[str, ...]:
    """Token candidates of footer lines anywhere in ``text``, in order, without repeats.

    Quote markers at line starts and all white space are removed first, so a footer that a
    mail client quoted (``> > [ref:mb-...]``), broke over lines or wrapped in ``<...>`` is
    found as well.
    """
    compact = _WHITE.sub("", _LINE_START_QUOTES.sub("", text))
    found = (f"{m.group(1)}-{m.group(2)}".lower() for m in _FOOTER.finditer(compact))
    return tuple(dict.fromkeys(found))


# --- all carriers together ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenFinding:
    """What the tokens of one mail say.

    ``ticket_id`` is set when the valid tokens all name one ticket; ``carriers`` names where
    valid tokens were found; ``invalid`` lists the candidates that failed verification;
    ``conflict`` is true when valid tokens name different tickets (``ticket_id`` is then
    None and ``tickets`` lists them).
    """

    ticket_id: int | None
    carriers: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()
    conflict: bool = False
    tickets: tuple[int, ...] = ()


def find_ticket_token(
    signer: TokenSigner,
    *,
    recipients: Iterable[str],
    ids: Iterable[tuple[str, str]],
    text: str,
) -> TokenFinding:
    """Verify every token candidate of a mail.

    ``recipients`` are the addresses it was sent to (carrier ``"reply-to address"``; a raw
    header value with several addresses is fine), ``ids`` are ``(carrier name, message id)``
    pairs such as ``("In-Reply-To", "<mb.1042...>")`` (a raw References value with several
    ids is fine too), and ``text`` is its body (carrier ``"body"``).
    """
    candidates: list[tuple[str, str]] = []
    for address in recipients:
        candidates.extend(
            (CARRIER_ADDRESS, m.group(1).lower()) for m in _ADDRESS_TAG.finditer(address)
        )
    for carrier, value in ids:
        for message_id in _MESSAGE_IDS.findall(value) or [value]:
            token = token_from_message_id(message_id)
            if token is not None:
                candidates.append((carrier, token))
    candidates.extend((CARRIER_BODY, token) for token in tokens_in_text(text))

    carriers: dict[str, None] = {}
    tickets: dict[int, None] = {}
    invalid: dict[str, None] = {}
    for carrier, token in candidates:
        ticket_id = signer.verify(token)
        if ticket_id is None:
            invalid[token] = None
        else:
            tickets[ticket_id] = None
            carriers[carrier] = None
    conflict = len(tickets) > 1
    return TokenFinding(
        ticket_id=next(iter(tickets)) if len(tickets) == 1 else None,
        carriers=tuple(carriers),
        invalid=tuple(invalid),
        conflict=conflict,
        tickets=tuple(tickets),
    )
