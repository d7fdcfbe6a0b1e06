"""Signed board links and sessions: HMAC-SHA256 over an agent's address and an expiry (pure).

A link (``/board/login/<token>``) goes into each digest; opening it sets a session cookie
signed the same way under another purpose, so a cookie can never be replayed as a link.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta

from maild.web.links import LinkError

log = logging.getLogger(__name__)

LINK, SESSION = b"maild.board.v1", b"maild.board-session.v1"
LOGIN_PATTERN = r"/board/login/{token:[A-Za-z0-9_.-]{1,600}}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sig(secret_key: str, purpose: bytes, agent: str, expires: int) -> str:
    key = hmac.new(secret_key.encode(), purpose, hashlib.sha256).digest()
    return _b64(hmac.new(key, f"{agent.lower()}|{expires}".encode(), hashlib.sha256).digest())


def make_token(secret_key: str, purpose: bytes, agent: str, expires: datetime) -> str:
    stamp = int(expires.timestamp())
    agent = agent.lower()
    return f"{_b64(agent.encode())}.{stamp}.{_sig(secret_key, purpose, agent, stamp)}"


def read_token(secret_key: str, purpose: bytes, token: str, now: datetime) -> tuple[str, int]:
    """(agent, expiry as a Unix time) of a token; LinkError "invalid" or "expired" else."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
        raise LinkError("invalid")
    try:
        agent = _unb64(parts[0]).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise LinkError("invalid") from None
    expected = _sig(secret_key, purpose, agent, int(parts[1]))
    if not hmac.compare_digest(expected.encode(), parts[2].encode()):
        raise LinkError("invalid")
    if datetime.fromtimestamp(int(parts[1]), UTC) <= now:
        raise LinkError("expired")
    return agent, int(parts[1])


def board_url(base_url: str, secret_key: str, agent: str, now: datetime, hours: float) -> str:
    """The link a digest carries: valid for ``hours`` from ``now``."""
    token = make_token(secret_key, LINK, agent, now + timedelta(hours=hours))
    return f"{base_url.rstrip('/')}/board/login/{token}"
