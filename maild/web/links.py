"""Signed links: survey (request, rating, expiry) and request page (request, expiry); pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger(__name__)

RATINGS = ("good", "bad")
PATH_PATTERN = (
    r"/rate/{ticket:\d{1,12}}/{rating:[a-z]{1,8}}/{expires:\d{1,12}}/{sig:[A-Za-z0-9_-]{1,100}}"
)
_SIG_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_PURPOSE = b"maild.rate.v1"


@dataclass(frozen=True)
class RatingLink:
    """What a verified link says: this request, this rating, valid until ``expires``."""

    ticket_id: int
    rating: str
    expires: int


class LinkError(Exception):
    """The link was forged, altered or has expired; ``reason`` is ``invalid`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret_key: str) -> bytes:
    # A key of its own for links, so that no other signature of ours can be replayed here.
    return hmac.new(secret_key.encode(), _PURPOSE, hashlib.sha256).digest()


def signature(secret_key: str, ticket_id: int, rating: str, expires: int) -> str:
    message = f"{ticket_id}:{rating}:{expires}".encode()
    digest = hmac.new(_key(secret_key), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


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
    expected = signature(secret_key, int(ticket), rating, int(expires))
    # Constant time: the comparison must not tell a forger how many characters were right.
    if not hmac.compare_digest(expected.encode(), sig.encode()) or rating not in RATINGS:
        raise LinkError("invalid")
    if datetime.fromtimestamp(int(expires), UTC) <= now:
        raise LinkError("expired")
    return RatingLink(int(ticket), rating, int(expires))


# The customer's request page: /r/<number>/<expires>.<signature>, a key of its own.
PAGE_PATTERN = r"/r/{ticket:\d{1,12}}/{token:\d{1,12}\.[A-Za-z0-9_-]{43}}"
_PAGE_PURPOSE = b"maild.page.v1"


def page_token(secret_key: str, ticket_id: int, expires: int) -> str:
    key = hmac.new(secret_key.encode(), _PAGE_PURPOSE, hashlib.sha256).digest()
    digest = hmac.new(key, f"{ticket_id}:{expires}".encode(), hashlib.sha256).digest()
    return f"{expires}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def page_url(base_url: str, secret_key: str, ticket_id: int, expires: datetime) -> str:
    """The link to the read-only page of a request that goes into every mail to its customer."""
    token = page_token(secret_key, ticket_id, int(expires.timestamp()))
    return f"{base_url.rstrip('/')}/r/{ticket_id}/{token}"


def verify_page(secret_key: str, ticket: str, token: str, now: datetime) -> int:
    """The request number a page token proves; LinkError when forged, altered or expired."""
    expires, _, _ = token.partition(".")
    if not (ticket.isdigit() and expires.isdigit()):
        raise LinkError("invalid")
    expected = page_token(secret_key, int(ticket), int(expires))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        raise LinkError("invalid")
    if datetime.fromtimestamp(int(expires), UTC) <= now:
        raise LinkError("expired")
    return int(ticket)
