"""The IMAP source against a real private Dovecot and a real SQLite database."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest_dovecot import require_dovecot
from dovecot import Dovecot
from sqlalchemy import func, select

from maild.core.errors import ConfigError
from maild.ingest.accept import store_raw
from maild.ingest.imap import ImapError, ImapSource
from maild.ingest.imap_config import ImapConfig, imap_configs_from_toml
from maild.store.db import Database, open_database
from maild.store.migrate import upgrade
from maild.store.models import Inbound

# -- helpers -------------------------------------------------------------------------------


def make_mail(n: int, body_bytes: int = 0, tag: str = "") -> bytes:
    body = f"Hello, message {n}.\r\n" + ("x" * 76 + "\r\n") * (body_bytes // 78)
    return (
        f"From: Customer {n} <c{n}@example.org>\r\n"
        "To: support@example.com\r\n"
        f"Subject: Help {tag}{n}\r\n"
        f"Message-ID: <imap-{tag}{n}@example.org>\r\n"
        "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
        "\r\n" + body
    ).encode()


def wait_for(what: Callable[[], bool], timeout: float = 20.0, step: float = 0.02) -> float:
    started = time.monotonic()
    while not what():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def inbound_count(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Inbound)) or 0)


def config(server: Dovecot, **kw: object) -> ImapConfig:
    base: dict[str, object] = {
        "host": server.host, "port": server.port, "tls": "none", "username": server.user,
        "password": server.password, "processed_folder": "Processed", "poll_seconds": 1.0,
    }  # fmt: skip
    base.update(kw)
    return ImapConfig(**base)  # type: ignore[arg-type]


class Wakeups:
    """The on_stored callback: counts calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()


def count_is(db: Database, n: int) -> Callable[[], bool]:
    return lambda: inbound_count(db) == n


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database("sqlite:///" + str(tmp_path / "maild.db"))
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def sources() -> Iterator[list[ImapSource]]:
    made: list[ImapSource] = []
    yield made
    for source in made:
        source.stop()


# -- configuration -------------------------------------------------------------------------


def test_config_defaults_and_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILD_TEST_IMAP_PW", "s3cret")
    cfgs = imap_configs_from_toml(
        [
            {"host": "imap.example.com", "username": "desk", "password": "pw"},
            {"host": "h", "username": "u", "password_env": "MAILD_TEST_IMAP_PW",
             "tls": "starttls", "processed_folder": "Done", "poll_seconds": 5, "idle": False},
        ]
    )  # fmt: skip
    first, second = cfgs
    assert (first.port, first.tls, first.folder, first.processed_folder) == (
        993, "implicit", "INBOX", None)  # fmt: skip
    assert (first.idle, first.tls_verify, first.batch_size, first.keyword) == (
        True, True, 100, "MaildProcessed")  # fmt: skip
    assert (second.port, second.password, second.poll_seconds) == (143, "s3cret", 5.0)
    assert "s3cret" not in repr(second)
    assert imap_configs_from_toml(None) == ()


OK = {"host": "h", "username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({**OK, "port": "143"}, "port"),
        ({**OK, "port": 0}, "port"),
        ({**OK, "port": True}, "port"),
        ({**OK, "tls": "ssl"}, "tls"),
        ({"username": "u", "password": "p"}, "host"),
        ({**OK, "username": " "}, "username"),
        ({"host": "h", "username": "u"}, "password"),
        ({"host": "h", "username": "u", "password_env": "MAILD_NOT_SET_X"}, "password_env"),
        ({**OK, "password_env": "HOME"}, "password_env"),
        ({**OK, "idle": "yes"}, "idle"),
        ({**OK, "tls_verify": 0}, "tls_verify"),
        ({**OK, "poll_seconds": 0}, "poll_seconds"),
        ({**OK, "batch_size": 0}, "batch_size"),
        ({**OK, "keyword": "a b"}, "keyword"),
        ({**OK, "processed_folder": "INBOX"}, "processed_folder"),
        ({**OK, "colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        imap_configs_from_toml([table])
    assert err.value.key == f"imap[0].{key}"


def test_config_must_be_array_of_tables() -> None:
    with pytest.raises(ConfigError) as err:
        imap_configs_from_toml({"host": "h"})
    assert err.value.key == "imap"
    with pytest.raises(ConfigError) as err:
        imap_configs_from_toml([{"host": "h", "username": "u", "password": "p"}, "x"])
    assert err.value.key == "imap[1]"


# -- storing and acknowledging -------------------------------------------------------------


def test_appended_message_is_stored_then_moved(dovecot: Dovecot, db: Database) -> None:
    dovecot.append(make_mail(1))
    wake = Wakeups()
    source = ImapSource(config(dovecot), db, wake)
    try:
        assert source.run_once() == 1
    finally:
        source.stop()
    with db.session() as s:
        row = s.scalars(select(Inbound)).one()
    assert row.source == "imap"
    assert row.message_id == "<imap-1@example.org>"
    assert b"Hello, message 1." in row.raw
    assert dovecot.folder_uids("INBOX") == []
    assert len(dovecot.folder_uids("Processed")) == 1
    assert wake.calls == 1


def test_flag_variant_marks_seen_and_keyword(dovecot: Dovecot, db: Database) -> None:
    dovecot.append(make_mail(1))
    dovecot.append(make_mail(2))
    source = ImapSource(config(dovecot, processed_folder=None), db, Wakeups())
    try:
        assert source.run_once() == 2
        assert source.run_once() == 0  # flagged messages are not taken again
        dovecot.append(make_mail(3))
        assert source.run_once() == 1
    finally:
        source.stop()
    assert inbound_count(db) == 3
    flags = dovecot.folder_flags("INBOX")
    assert len(flags) == 3
    for got in flags.values():
        assert b"\\Seen" in got and b"MaildProcessed" in got


def test_stored_but_not_acknowledged_is_absorbed(dovecot: Dovecot, db: Database) -> None:
    """A crash after the commit and before the move: seen again, one inbound row only."""
    dovecot.append(make_mail(1))
    with dovecot.client() as c:
        c.select_folder("INBOX", readonly=True)
        raw = next(iter(c.fetch(c.search("ALL"), ["BODY.PEEK[]"]).values()))[b"BODY[]"]
    first = store_raw(db, raw, source="imap")  # the "crashed" run got this far
    wake = Wakeups()
    source = ImapSource(config(dovecot), db, wake)
    try:
        assert source.run_once() == 1
    finally:
        source.stop()
    assert inbound_count(db) == 1
    assert dovecot.folder_uids("INBOX") == []
    assert len(dovecot.folder_uids("Processed")) == 1
    assert wake.calls == 0  # nothing new for the pipeline
    assert store_raw(db, raw, source="imap").ident == first.ident


def test_rejected_message_is_flagged_and_left(dovecot: Dovecot, db: Database) -> None:
    dovecot.append(b"this is not a mail at all\r\n\r\nbody\r\n")
    dovecot.append(make_mail(1))
    source = ImapSource(config(dovecot), db, Wakeups())
    try:
        assert source.run_once() == 1
        assert source.run_once() == 0  # not retried forever
    finally:
        source.stop()
    assert inbound_count(db) == 1
    flags = dovecot.folder_flags("INBOX")
    assert [b"MaildRejected" in f for f in flags.values()] == [True]
    assert b"\\Seen" not in next(iter(flags.values()))


def test_database_failure_leaves_mail_on_server(dovecot: Dovecot, tmp_path: Path) -> None:
    """TemporaryFailure: nothing is acknowledged; once the database works, all is taken."""
    broken = open_database("sqlite:///" + str(tmp_path / "empty.db"))  # no schema yet
    dovecot.append(make_mail(1))
    dovecot.append(make_mail(2))
    source = ImapSource(config(dovecot, processed_folder=None), broken, Wakeups())
    try:
        with pytest.raises(Exception, match="database unavailable"):
            source.run_once()
        assert all(b"\\Seen" not in f for f in dovecot.folder_flags("INBOX").values())
        upgrade(broken)
        assert source.run_once() == 2
    finally:
        source.stop()
        broken.dispose()
    assert inbound_count(broken) == 2


def test_server_without_move_or_idle(db: Database, sources: list[ImapSource]) -> None:
    """COPY + \\Deleted + UID EXPUNGE instead of MOVE; polling instead of IDLE."""
    require_dovecot()
    plain = "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS NAMESPACE"
    server = Dovecot(Path(tempfile.mkdtemp(prefix="maild-dovecot-")),
                     extra_conf=f"imap_capability = {plain}\n")  # fmt: skip
    server.start()
    try:
        source = ImapSource(config(server, poll_seconds=0.5), db, Wakeups())
        sources.append(source)
        server.append(make_mail(1))
        assert source.run_once() == 1
        source.stop()
        source.start()
        server.append(make_mail(2))
        wait_for(count_is(db, 2), timeout=10)
        wait_for(lambda: len(server.folder_uids("Processed")) == 2, timeout=10)
        source.stop()
        assert server.folder_uids("INBOX") == []
    finally:
        server.cleanup()


# -- IDLE, restarts, UIDVALIDITY -----------------------------------------------------------


def test_idle_pickup_latency(dovecot: Dovecot, db: Database, sources: list[ImapSource]) -> None:
    wake = Wakeups()
    source = ImapSource(config(dovecot), db, wake)
    sources.append(source)
    source.start()
    time.sleep(1.0)  # connected and in IDLE
    latencies = []
    for n in range(5):
        wake.event.clear()
        started = time.monotonic()
        dovecot.append(make_mail(n))
        assert wake.event.wait(10), "IDLE did not pick the message up"
        latencies.append(time.monotonic() - started)
        wait_for(count_is(db, n + 1))
    print(f"\nIDLE pickup latency: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert max(latencies) < 10
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 3, "stop() must break IDLE promptly"


def test_mail_arriving_mid_scan_is_not_missed(
    dovecot: Dovecot, db: Database, sources: list[ImapSource]
) -> None:
    """Its EXISTS comes with a FETCH/MOVE reply, not during IDLE; it must still be seen."""
    dovecot.append(make_mail(1))
    dovecot.append(make_mail(2))
    arrived: list[bool] = []

    def on_stored() -> None:  # between the first and the second batch of the first scan
        if not arrived:
            arrived.append(True)
            dovecot.append(make_mail(3))

    source = ImapSource(config(dovecot, batch_size=1), db, on_stored)
    sources.append(source)
    source.start()
    wait_for(count_is(db, 3), timeout=10)


def test_poll_without_idle(dovecot: Dovecot, db: Database, sources: list[ImapSource]) -> None:
    source = ImapSource(config(dovecot, idle=False, poll_seconds=1.0), db, Wakeups())
    sources.append(source)
    source.start()
    time.sleep(0.3)
    dovecot.append(make_mail(1))
    print(f"\npoll pickup: {wait_for(lambda: inbound_count(db) == 1, 10) * 1000:.0f} ms")


def test_server_restart_loses_nothing(
    dovecot: Dovecot, db: Database, sources: list[ImapSource], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="maild.ingest.imap")
    source = ImapSource(config(dovecot), db, Wakeups())
    sources.append(source)
    source.start()
    for n in range(3):
        dovecot.append(make_mail(n, tag="before"))
    wait_for(lambda: inbound_count(db) == 3)
    dovecot.stop()
    time.sleep(4)  # several failed reconnects while the server is down
    dovecot.start()
    for n in range(20):
        dovecot.append(make_mail(n, tag="after"))
    wait_for(lambda: inbound_count(db) == 23, timeout=90)
    wait_for(lambda: dovecot.folder_uids("INBOX") == [], timeout=30)
    assert len(dovecot.folder_uids("Processed")) == 23
    lines = [r.getMessage() for r in caplog.records]
    assert sum("connection lost" in m for m in lines) == 1, lines
    assert sum("connection is back" in m for m in lines) == 1, lines
    assert not any("cannot connect" in m for m in lines), lines


def test_uidvalidity_change_rescans_and_dedups(
    dovecot: Dovecot, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder is deleted and restored (new UIDVALIDITY, keywords lost): no new rows."""
    mails = [make_mail(n) for n in range(3)]
    for raw in mails:
        dovecot.append(raw, "Support")
    source = ImapSource(config(dovecot, folder="Support", processed_folder=None), db, Wakeups())
    try:
        assert source.run_once() == 3
        source.stop()  # Dovecot ends sessions whose selected folder is deleted
        dovecot.recreate_folder("Support")
        for raw in [*mails, make_mail(99)]:
            dovecot.append(raw, "Support")
        with caplog.at_level(logging.WARNING, logger="maild.ingest.imap"):
            assert source.run_once() == 4
    finally:
        source.stop()
    assert any("UIDVALIDITY changed" in r.getMessage() for r in caplog.records)
    assert inbound_count(db) == 4
    assert all(b"MaildProcessed" in f for f in dovecot.folder_flags("Support").values())


# -- volume --------------------------------------------------------------------------------


def test_backlog_of_2000_drains(dovecot: Dovecot, db: Database) -> None:
    dovecot.append_many([make_mail(n, body_bytes=1500) for n in range(2000)])
    wake = Wakeups()
    source = ImapSource(config(dovecot), db, wake)
    try:
        started = time.monotonic()
        assert source.run_once() == 2000
        elapsed = time.monotonic() - started
    finally:
        source.stop()
    print(f"\nbacklog: 2000 messages in {elapsed:.1f} s = {2000 / elapsed:.0f} messages/s")
    assert inbound_count(db) == 2000
    assert dovecot.folder_uids("INBOX") == []
    assert wake.calls == 20  # one wake-up per batch of 100


def test_backlog_memory_stays_flat(dovecot: Dovecot, db: Database) -> None:
    """1,000 messages of 16 KB (16 MB) drain with a Python heap peak far below that."""
    dovecot.append_many([make_mail(n, body_bytes=16_000) for n in range(1000)])
    source = ImapSource(config(dovecot, batch_size=50), db, Wakeups())
    tracemalloc.start()
    try:
        assert source.run_once() == 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        source.stop()
    print(f"\nbacklog heap peak: {peak / 1e6:.1f} MB for 16 MB of mail")
    assert peak < 8_000_000


# -- TLS -----------------------------------------------------------------------------------


def _logins(server: Dovecot) -> int:
    time.sleep(0.3)  # the log process writes asynchronously
    return server.log_text.count("Login: user=<desk>")


def test_starttls_refused_never_logs_in_plaintext(dovecot: Dovecot, db: Database) -> None:
    before = _logins(dovecot)
    source = ImapSource(config(dovecot, tls="starttls"), db, Wakeups())
    with pytest.raises(ImapError, match="STARTTLS"):
        source.run_once()
    source.stop()
    assert _logins(dovecot) == before


def test_tls_verification_is_on_by_default(dovecot_tls: Dovecot, db: Database) -> None:
    before = _logins(dovecot_tls)
    for tls, port in (("implicit", dovecot_tls.ssl_port), ("starttls", dovecot_tls.port)):
        source = ImapSource(config(dovecot_tls, tls=tls, port=port), db, Wakeups())
        with pytest.raises((ImapError, OSError), match="CERTIFICATE_VERIFY_FAILED"):
            source.run_once()
        source.stop()
    assert _logins(dovecot_tls) == before


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_without_verification_works_and_warns(
    dovecot_tls: Dovecot, db: Database, caplog: pytest.LogCaptureFixture, tls: str
) -> None:
    dovecot_tls.append(make_mail(1))
    port = dovecot_tls.ssl_port if tls == "implicit" else dovecot_tls.port
    source = ImapSource(config(dovecot_tls, tls=tls, port=port, tls_verify=False), db, Wakeups())
    with caplog.at_level(logging.WARNING, logger="maild.ingest.imap"):
        try:
            assert source.run_once() == 1
        finally:
            source.stop()
    assert any("VERIFICATION IS OFF" in r.getMessage() for r in caplog.records)
    time.sleep(0.3)
    last_login = [line for line in dovecot_tls.log_text.splitlines() if "Login: user=" in line][-1]
    assert ", TLS," in last_login
