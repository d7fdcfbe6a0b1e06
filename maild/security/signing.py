"""Every signature maild hands out (pure): signed Message-IDs, survey and page links, board links.

Each kind signs with HMAC-SHA256 under a purpose of its own, so that no signature of one kind
can be replayed as another; each comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from maild.tickets.words import RATINGS

# --- Message-IDs that prove, when someone replies to them, who received them -----------------

_SIGNED = re.compile(r"^<([a-z])\.(\d{1,12})\.([0-9a-f]{8})\.([0-9a-f]{24})@([^>]+)>$")


def _mac(secret: str, kind: str, ticket: int, recipient: str, nonce: str) -> str:
    msg = f"{kind}|{ticket}|{recipient.lower()}|{nonce}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:24]


def signed_message_id(
    secret: str, kind: str, ticket: int, recipient: str, domain: str, nonce: str | None = None
) -> str:
    """A Message-ID that proves, when someone replies to it, that ``recipient`` received it.

    ``kind`` is one letter: "n" for an agent notification, "e" for an escalation mail.
    ``nonce`` (8 hex digits) is random unless given: a digest's is its day, so that the
    Message-ID is unique per agent and day and a second one is refused by the outbox.
    """
    nonce = nonce or secrets.token_hex(4)
    return f"<{kind}.{ticket}.{nonce}.{_mac(secret, kind, ticket, recipient, nonce)}@{domain}>"


def verify_message_ids(
    secret: str, kind: str, refs: Iterable[str], sender: str, domain: str
) -> int | None:
    """The request number proven by any of ``refs`` for ``sender``, or None."""
    for ref in refs:
        m = _SIGNED.match(ref.strip())
        if not m or m.group(1) != kind or m.group(5).lower() != domain.lower():
            continue
        ticket, nonce, mac = int(m.group(2)), m.group(3), m.group(4)
        if hmac.compare_digest(mac, _mac(secret, kind, ticket, sender, nonce)):
            return ticket
    return None


# --- Signed links ----------------------------------------------------------------------------


class LinkError(Exception):
    """The link was forged, altered or has expired; ``reason`` is ``invalid`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret_key: str, purpose: bytes, message: str) -> str:
    """HMAC-SHA256 of ``message`` under a key of its own for ``purpose``, base64url."""
    key = hmac.new(secret_key.encode(), purpose, hashlib.sha256).digest()
    return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())


def _check(expected: str, given: str, expires: int, now: datetime) -> None:
    # Constant time: the comparison must not tell a forger how many characters were right.
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise LinkError("invalid")
    if datetime.fromtimestamp(expires, UTC) <= now:
        raise LinkError("expired")


# The survey: /rate/<request>/<rating>/<expires>/<signature>.
PATH_PATTERN = (
    r"/rate/{ticket:\d{1,12}}/{rating:[a-z]{1,8}}/{expires:\d{1,12}}/{sig:[A-Za-z0-9_-]{1,100}}"
)
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_RATE = b"maild.rate.v1"


@dataclass(frozen=True)
class RatingLink:
    """What a verified link says: this request, this rating, valid until ``expires``."""

    ticket_id: int
    rating: str
    expires: int


def signature(secret_key: str, ticket_id: int, rating: str, expires: int) -> str:
    return _sign(secret_key, _RATE, f"{ticket_id}:{rating}:{expires}")


def rating_path(secret_key: str, ticket_id: int, rating: str, expires: datetime) -> str:
    if rating not in RATINGS:
        raise ValueError(f"unknown rating {rating!r}")
    stamp = int(expires.timestamp())
    return f"/rate/{ticket_id}/{rating}/{stamp}/{signature(secret_key, ticket_id, rating, stamp)}"


def rating_url(
    base_url: str, secret_key: str, ticket_id: int, rating: str, expires: datetime
) -> str:
    """The absolute link that goes into the survey mail."""
    return base_url.rstrip("/") + rating_path(secret_key, ticket_id, rating, expires)


def verify(
    secret_key: str, ticket: str, rating: str, expires: str, sig: str, now: datetime
) -> RatingLink:
    """Check the parts of a link as they came in the URL; raise LinkError unless all is well."""
    if not (ticket.isdigit() and expires.isdigit() and _SIG_RE.match(sig)):
        raise LinkError("invalid")
    if rating not in RATINGS:
        raise LinkError("invalid")
    _check(signature(secret_key, int(ticket), rating, int(expires)), sig, int(expires), now)
    return RatingLink(int(ticket), rating, int(expires))


# The customer's request page: /r/<number>/<expires>.<signature>.
PAGE_PATTERN = r"/r/{ticket:\d{1,12}}/{token:\d{1,12}\.[A-Za-z0-9_-]{43}}"
_PAGE = b"maild.page.v1"


def page_token(secret_key: str, ticket_id: int, expires: int) -> str:
    return f"{expires}.{_sign(secret_key, _PAGE, f'{ticket_id}:{expires}')}"


def page_url(base_url: str, secret_key: str, ticket_id: int, expires: datetime) -> str:
    """The link to the read-only page of a request that goes into every mail to its customer."""
    token = page_token(secret_key, ticket_id, int(expires.timestamp()))
    return f"{base_url.rstrip('/')}/r/{ticket_id}/{token}"


def verify_page(secret_key: str, ticket: str, token: str, now: datetime) -> int:
    """The request number a page token proves; LinkError when forged, altered or expired."""
    expires, _, _ = token.partition(".")
    if not (ticket.isdigit() and expires.isdigit()):
        raise LinkError("invalid")
    _check(page_token(secret_key, int(ticket), int(expires)), token, int(expires), now)
    return int(ticket)


# The agents' board: a link (/board/login/<token>) goes into each digest; opening it sets a
# session cookie signed the same way under another purpose, so a cookie is never a link.
LINK, SESSION = b"maild.board.v1", b"maild.board-session.v1"
LOGIN_PATTERN = r"/board/login/{token:[A-Za-z0-9_.-]{1,600}}"


def make_token(secret_key: str, purpose: bytes, agent: str, expires: datetime) -> str:
    stamp = int(expires.timestamp())
    agent = agent.lower()
    return f"{_b64(agent.encode())}.{stamp}.{_sign(secret_key, purpose, f'{agent}|{stamp}')}"


def read_token(secret_key: str, purpose: bytes, token: str, now: datetime) -> tuple[str, int]:
    """(agent, expiry as a Unix time) of a token; LinkError "invalid" or "expired" else."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
        raise LinkError("invalid")
    try:
        agent = _unb64(parts[0]).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise LinkError("invalid") from None
    expires = int(parts[1])
    _check(_sign(secret_key, purpose, f"{agent.lower()}|{expires}"), parts[2], expires, now)
    return agent, expires


def board_url(base_url: str, secret_key: str, agent: str, now: datetime, hours: float) -> str:
    """The link a digest carries: valid for ``hours`` from ``now``."""
    token = make_token(secret_key, LINK, agent, now + timedelta(hours=hours))
    return f"{base_url.rstrip('/')}/board/login/{token}"
