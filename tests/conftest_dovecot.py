"""The `dovecot` fixture: a private Dovecot per test, skipped (or failed in CI) when absent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import DOVECOT, Dovecot

MISSING = (
    "Dovecot not installed: apt-get install dovecot-imapd "
    "(or set MAILD_REQUIRE_DOVECOT=1 to make this a failure)"
)


def require_dovecot() -> None:
    """Skip when /usr/sbin/dovecot is missing; fail instead under MAILD_REQUIRE_DOVECOT=1."""
    if os.access(DOVECOT, os.X_OK):
        return
    if os.environ.get("MAILD_REQUIRE_DOVECOT") == "1":
        pytest.fail(f"MAILD_REQUIRE_DOVECOT=1 but {DOVECOT} is missing", pytrace=False)
    pytest.skip(MISSING)


def _private(*, tls: bool) -> Iterator[Dovecot]:
    require_dovecot()
    # Not pytest's tmp_path: its parents are 0700, and as root Dovecot's auth and mail
    # processes run as other users that must reach the passwd file and the maildirs.
    server = Dovecot(Path(tempfile.mkdtemp(prefix="maild-dovecot-")), tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A running plaintext Dovecot (no STARTTLS) on a free 127.0.0.1 port, user desk/secret."""
    yield from _private(tls=False)


@pytest.fixture
def dovecot_tls() -> Iterator[Dovecot]:
    """The same with a self-signed certificate: STARTTLS on `port`, implicit TLS on `ssl_port`."""
    yield from _private(tls=True)
