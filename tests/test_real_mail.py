"""Real mail the front doors used to refuse: long lines, an mbox "From " line, bare LF.

Every door is used as its peer uses it: smtplib against the daemon's SMTP and LMTP listeners,
`maild deliver` as a subprocess fed on stdin.
"""

from __future__ import annotations

import smtplib
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CORPUS, RunningDaemon, fixture_bytes, make_mail, wait_for
from sqlalchemy import func, select
from test_deliver import write_config

from maild.config import Config
from maild.ingest.queue import digest
from maild.ingest.spool import SpoolQueue
from maild.store.db import Database
from maild.store.migrate import upgrade
from maild.store.models import Inbound, Ticket

LONG = 64 * 1024  # "accept lines up to at least 64 KB"
MBOX = b"From MAILER-DAEMON Mon Nov 23 10:00:00 2026\n"


def count(db: Database, model: type) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def raws(db: Database) -> list[bytes]:
    with db.session() as s:
        return [bytes(r) for r in s.scalars(select(Inbound.raw).order_by(Inbound.id))]


def bounce_with_long_lines() -> bytes:
    """An SES-style bounce: a null sender and header and body lines of 64 KB."""
    return make_mail(
        "Delivery Status Notification (Failure)",
        sender="MAILER-DAEMON@amazonses.com",
        body="x" * LONG,
        extra=f"X-SES-Outgoing: {'a' * LONG}\r\n",
    )


def deliver(config: Path, raw: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config), "deliver"],
        input=raw,
        capture_output=True,
        timeout=120,
    )


def test_long_lines_are_accepted_over_smtp_and_lmtp(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(lmtp={"listen": "127.0.0.1:0"}))
    assert d.daemon is not None
    raw = bounce_with_long_lines()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        assert client.sendmail("", ["support@example.com"], raw) == {}
    lmtp_raw = raw.replace(b"Message-ID: <", b"Message-ID: <lmtp.")
    with smtplib.LMTP("127.0.0.1", d.daemon.lmtp_port) as client:
        assert client.sendmail("", ["support@example.com"], lmtp_raw) == {}
    wait_for(lambda: count(db, Inbound) == 2)
    assert sorted(raws(db)) == sorted([raw, lmtp_raw])


def test_long_lines_are_accepted_by_deliver(tmp_path: Path, db_url: str) -> None:
    raw = bounce_with_long_lines().replace(b"\r\n", b"\n")
    proc = deliver(write_config(tmp_path, db_url), raw)
    assert proc.returncode == 0, proc.stderr
    db = Database(db_url)
    try:
        assert raws(db) == [raw]
    finally:
        db.dispose()


def test_mbox_from_line_is_stripped_and_the_mail_accepted(
    make_config: Callable[..., Config], db: Database, running: Callable[..., RunningDaemon]
) -> None:
    d = running(make_config(lmtp={"listen": "127.0.0.1:0"}))
    assert d.daemon is not None
    first, second = make_mail("Via procmail"), make_mail("Via Postfix pipe flag F")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        assert client.sendmail("a@example.org", ["support@example.com"], MBOX + first) == {}
    with smtplib.LMTP("127.0.0.1", d.daemon.lmtp_port) as client:
        assert client.sendmail("a@example.org", ["support@example.com"], MBOX + second) == {}
    wait_for(lambda: count(db, Ticket) == 2)
    assert sorted(raws(db)) == sorted([first, second])


def test_same_mail_through_deliver_and_the_readme_smtplib_line_is_one_request(
    make_config: Callable[..., Config],
    db: Database,
    db_url: str,
    running: Callable[..., RunningDaemon],
    tmp_path: Path,
) -> None:
    """The README's `python -c "...smtplib..."` sends the file as it lies on disk (bare LF)
    and smtplib adds a final CRLF; a pipe hands over the same bare-LF bytes."""
    raw = fixture_bytes("new_plain_en.eml").replace(b"\nThanks,", b"\n.signed\n..dots\nThanks,")
    assert b"\r" not in raw and raw.endswith(b"\n")
    assert deliver(write_config(tmp_path, db_url), raw).returncode == 0
    d = running(make_config())
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as client:
        client.sendmail("you@example.org", ["support@example.com"], raw)
    wait_for(lambda: count(db, Inbound) >= 1 and count(db, Ticket) == 1)
    d.stop()
    assert count(db, Inbound) == 1 and count(db, Ticket) == 1


@pytest.mark.parametrize(
    "form",
    [
        lambda raw: raw,
        lambda raw: raw.replace(b"\n", b"\r\n"),
        lambda raw: raw + b"\r\n",
        lambda raw: raw.rstrip(b"\n"),
        lambda raw: raw + b"\n\n",
        lambda raw: b"Received: from relay by mx; Mon, 23 Nov 2026 10:00:01 +0000\r\n" + raw,
    ],
    ids=["lf", "crlf", "lf-then-crlf", "no-final-eol", "blank-lines-at-end", "relayed"],
)
def test_digest_does_not_depend_on_the_line_ending_form(form: Callable[[bytes], bytes]) -> None:
    raw = fixture_bytes("new_plain_en.eml")
    assert digest(form(raw)) == digest(raw)
    assert digest(raw.replace(b"Thanks", b"Thanks!")) != digest(raw)


def _old_digest(raw: bytes) -> str:
    """What the first versions stored: CRLF read as LF, the end of the message kept as is."""
    import hashlib

    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def test_upgrade_keeps_old_digests_deduplicating(db_url: str) -> None:
    """Rows stored before the upgrade: those that end in one line end keep their digest; the
    others get the new one (unless their copy already holds it), so a copy arriving after the
    upgrade is still a duplicate."""
    from maild.ingest.accept import store_raw

    usual, bare_lf = make_mail("Usual"), make_mail("Bare LF").replace(b"\r\n", b"\n")
    smtp_form = bare_lf + b"\r\n"  # the README's smtplib line: stored apart by the old version
    alone = make_mail("No final line end").rstrip(b"\r\n") + b"\r\n\r\n"
    db = Database(db_url)
    try:
        upgrade(db, "0003")
        with db.engine.begin() as conn:
            for i, raw in enumerate((usual, bare_lf, smtp_form, alone)):
                conn.execute(
                    Inbound.__table__.insert(),  # type: ignore[attr-defined]
                    dict(
                        received_at=datetime.now(UTC),
                        source="smtp",
                        recipients="",
                        digest=_old_digest(raw),
                        size=len(raw),
                        raw=raw,
                        state="done",
                        attempts=1,
                        thread_key=i,
                    ),
                )
        # Nearly all mail ends in one line end: its digest is the same in both forms.
        assert _old_digest(usual) == digest(usual) and _old_digest(bare_lf) == digest(bare_lf)
        upgrade(db)
        with db.session() as s:
            stored = dict(s.execute(select(Inbound.raw, Inbound.digest)).all())
        assert stored[alone] == digest(alone) != _old_digest(alone)  # re-digested
        assert stored[smtp_form] == _old_digest(smtp_form)  # its twin holds the new digest
        for raw in (usual, bare_lf, smtp_form, alone, alone.rstrip(b"\r\n")):
            assert store_raw(db, raw, source="pipe").duplicate
        assert count(db, Inbound) == 4
    finally:
        db.dispose()


def test_spool_written_by_an_old_version_is_re_digested(tmp_path: Path) -> None:
    path = tmp_path / "maild.db.spool"
    raw = make_mail("Spooled before the upgrade").replace(b"\r\n", b"\n") + b"\r\n"
    main = Database(f"sqlite:///{tmp_path}/maild.db")
    SpoolQueue(path, main).dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 0")
    con.execute(
        "INSERT INTO spool (received_at, source, recipients, digest, size, raw, thread_key)"
        " VALUES ('2026-12-02 04:00:00.000000', 'smtp', '', ?, ?, ?, 1)",
        (_old_digest(raw), len(raw), raw),
    )
    con.commit()
    con.close()
    spool = SpoolQueue(path, main)
    try:
        entries, _ = spool.take(10, 1 << 20)
        assert [e.row["digest"] for e in entries] == [digest(raw)]
    finally:
        spool.dispose()
        main.dispose()


@pytest.mark.usefixtures("db")
@pytest.mark.skipif(not CORPUS.is_dir(), reason="corpus missing (set MAILD_CORPUS)")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_real_message_is_accepted_over_smtp(
    make_config: Callable[..., Config], running: Callable[..., RunningDaemon]
) -> None:
    """As an MTA sends it (CRLF): only the empty file and a binary Outlook .msg are refused."""
    files = sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and "BODIES" not in p.parent.name and p.name != "README.md"
    )
    d = running(make_config())
    refused: dict[str, int] = {}
    with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as client:
        for p in files:
            raw = p.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            try:
                client.sendmail("corpus@example.org", ["support@example.com"], raw)
            except smtplib.SMTPResponseException as exc:
                refused[p.name] = exc.smtp_code
                client.rset()
    assert refused == {
        "tests__fixtures__messages__dkim__email.01": 554,  # 0 bytes
        "tests__mails__mail_outlook_1": 554,  # an Outlook .msg file, not a mail
    }
