"""Slow SMTP clients: a deadline per command and for DATA, a cap per address (issue 9, item 7)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import RunningDaemon, make_mail, wait_for
from sqlalchemy import func, select

from maild.config import Config
from maild.core.errors import ConfigError
from maild.security.peers import PeerLimit, address_of
from maild.store.db import Database
from maild.store.models import Inbound

GUARDED = {"command_timeout": 1, "data_timeout": 2, "max_connections_per_address": 2}


@pytest.fixture
def daemon(
    make_config: Callable[..., Config],
    db: Database,  # noqa: ARG001 (set up before this fixture)
    running: Callable[..., RunningDaemon],
) -> RunningDaemon:
    return running(make_config(smtp=GUARDED))


@contextmanager
def connect(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def read_reply(sock: socket.socket) -> str:
    """One whole SMTP reply (all its lines), or '' when the server closed the connection."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and lines[-2][3:4] == b" ":
            return data.decode()


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def trickle(sock: socket.socket, data: bytes, pause: float) -> float:
    """Send ``data`` one byte at a time; returns when the server hung up (or all was sent)."""
    start = time.monotonic()
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(pause)
    return time.monotonic() - start


def inbound_count(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count(Inbound.id))) or 0)


def test_a_trickled_command_gets_421_at_its_deadline(daemon: RunningDaemon) -> None:
    with connect(daemon.port) as sock:
        assert read_reply(sock).startswith("220")
        start = time.monotonic()
        trickle(sock, b"EHLO slow.example.org\r\n", 0.2)  # 4.6 s for one command
        sock.settimeout(5)
        reply = read_reply(sock)
        assert reply.startswith("421 4.4.2") and "timeout" in reply, reply
        assert time.monotonic() - start < 3
        assert closed(sock)


def test_a_trickled_message_gets_421_at_the_data_deadline(
    daemon: RunningDaemon, db: Database
) -> None:
    with connect(daemon.port) as sock:
        read_reply(sock)
        for command in (
            b"EHLO x\r\n",
            b"MAIL FROM:<a@x.org>\r\n",
            b"RCPT TO:<support@example.com>\r\n",
        ):
            sock.sendall(command)
            assert read_reply(sock).startswith("250")
        sock.sendall(b"DATA\r\n")
        assert read_reply(sock).startswith("354")
        start = time.monotonic()
        for line in make_mail().split(b"\r\n") * 5:  # whole lines, each in time, never done
            try:
                sock.sendall(line + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.3)
            if time.monotonic() - start > 4:
                break
        sock.settimeout(5)
        reply = read_reply(sock)
        assert reply.startswith("421 4.4.2"), reply
        assert time.monotonic() - start < 4
    time.sleep(0.5)  # what was spooled would reach the database by now
    assert inbound_count(db) == 0


def test_a_slow_but_steady_message_within_the_data_deadline_is_accepted(
    daemon: RunningDaemon, db: Database
) -> None:
    """DATA longer than one command deadline (1 s) but within its own (2 s) is fine."""
    with connect(daemon.port) as sock:
        read_reply(sock)
        for command in (
            b"EHLO x\r\n",
            b"MAIL FROM:<a@x.org>\r\n",
            b"RCPT TO:<support@example.com>\r\n",
        ):
            sock.sendall(command)
            assert read_reply(sock).startswith("250")
        sock.sendall(b"DATA\r\n")
        assert read_reply(sock).startswith("354")
        lines = make_mail().split(b"\r\n")
        for line in lines:
            sock.sendall(line + b"\r\n")
            time.sleep(1.3 / len(lines))
        sock.sendall(b".\r\n")
        assert read_reply(sock).startswith("250")
        sock.sendall(b"NOOP\r\n")  # the command deadline applies again, from now
        assert read_reply(sock).startswith("250")
    wait_for(lambda: inbound_count(db) == 1)  # via the spool on SQLite


def test_too_many_sessions_from_one_address_get_421(daemon: RunningDaemon) -> None:
    with connect(daemon.port) as one, connect(daemon.port) as two:
        assert read_reply(one).startswith("220") and read_reply(two).startswith("220")
        with connect(daemon.port) as three:
            reply = read_reply(three)
            assert reply.startswith("421 4.7.0") and "too many connections" in reply.lower()
            assert closed(three)
        one.sendall(b"QUIT\r\n")
        assert read_reply(one).startswith("221")
    time.sleep(0.2)  # the server sees the closes
    with connect(daemon.port) as again:
        assert read_reply(again).startswith("220")


def test_peer_limit_counts_per_address() -> None:
    peers = PeerLimit(1)
    assert peers.enter("192.0.2.1") and not peers.enter("192.0.2.1")
    assert peers.enter("192.0.2.2")
    peers.leave("192.0.2.1")
    assert peers.enter("192.0.2.1")
    assert address_of(("::1", 25, 0, 0)) == "::1" and address_of("") is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("command_timeout", 0), ("data_timeout", -5), ("max_connections_per_address", 0)],
)
def test_smtp_guard_keys_are_validated(
    make_config: Callable[..., Config], key: str, value: object
) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(smtp={key: value})
    assert f"smtp.{key}" in str(err.value)
