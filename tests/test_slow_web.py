"""The HTTP side against slow and broken clients: deadline, per-address cap, one-line errors."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import RunningDaemon

from maild.config import Config
from maild.core.errors import ConfigError
from maild.store.db import Database

GUARDED = {"read_timeout": 1, "max_connections_per_address": 2}


def web_port(d: RunningDaemon) -> int:
    assert d.daemon is not None
    return d.daemon.web_port


@contextmanager
def connect(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def trickle(sock: socket.socket, data: bytes, pause: float, limit: float) -> None:
    start = time.monotonic()
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return
        time.sleep(pause)
        if time.monotonic() - start > limit:
            return


@pytest.fixture
def guarded(
    make_config: Callable[..., Config],
    db: Database,  # noqa: ARG001 (set up before this fixture)
    running: Callable[..., RunningDaemon],
) -> int:
    return web_port(running(make_config(web=GUARDED)))


def test_trickled_headers_get_408(guarded: int) -> None:
    with connect(guarded) as sock:
        start = time.monotonic()
        trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: desk\r\nX-Slow: " + b"a" * 40, 0.1, 3)
        reply = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 408 Request Timeout"), reply
        assert time.monotonic() - start < 3


def test_trickled_body_gets_408(guarded: int) -> None:
    with connect(guarded) as sock:
        sock.sendall(
            b"POST /rate/1/good/1/x HTTP/1.1\r\nHost: desk\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
        )
        start = time.monotonic()
        trickle(sock, b"comment=" + b"a" * 92, 0.1, 3)
        reply = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert time.monotonic() - start < 3


def test_a_normal_request_is_served_and_the_connection_closed(guarded: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{guarded}/healthz", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Connection"] == "close"


def test_too_many_connections_from_one_address_get_429(guarded: int) -> None:
    with connect(guarded), connect(guarded):
        time.sleep(0.2)
        with connect(guarded) as third:
            reply = read_all(third)
            assert reply.startswith(b"HTTP/1.1 429 Too Many Requests"), reply
            assert b"Too many connections from your address" in reply
    time.sleep(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{guarded}/healthz", timeout=10) as resp:
        assert resp.status == 200


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
]


@pytest.mark.usefixtures("db")
def test_malformed_requests_log_one_line_each(
    make_config: Callable[..., Config],
    running: Callable[..., RunningDaemon],
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = web_port(running(make_config()))
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    for payload in MALFORMED:
        with connect(port) as sock:
            sock.sendall(payload)
            assert read_all(sock).startswith(b"HTTP/1.")
    time.sleep(0.2)
    web = [r for r in caplog.records if r.name.startswith(("aiohttp", "maild.web"))]
    assert not [r for r in web if r.exc_info or r.levelno >= logging.ERROR], [
        r.getMessage() for r in web
    ]
    lines = [r for r in web if r.getMessage().startswith("web: bad request from")]
    assert len(lines) == len(MALFORMED), [r.getMessage() for r in web]
    assert all("\n" not in r.getMessage() and r.levelno == logging.INFO for r in lines)


@pytest.mark.parametrize(
    ("key", "value"), [("read_timeout", 0), ("max_connections_per_address", 0)]
)
def test_web_guard_keys_are_validated(
    make_config: Callable[..., Config], key: str, value: object
) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(web={key: value})
    assert f"web.{key}" in str(err.value)
