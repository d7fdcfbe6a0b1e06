"""`maild tickets` (header, columns, filters), `maild check-config`, `maild backup DEST`."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clockkit import write_toml
from conftest import RunningDaemon, config_mapping, make_mail, wait_for
from sqlalchemy import func, select, update

from maild.cli import main
from maild.config import Config
from maild.store.db import Database
from maild.store.models import Inbound, Ticket

Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config_file(db_url: str, tmp_path: Path, db: Database) -> Path:  # noqa: ARG001 (set up before this fixture)
    return write_toml(config_mapping(db_url, tmp_path), tmp_path / "config.toml")


def _three_requests(ingest: Callable[..., int], db: Database) -> None:
    ingest(make_mail("Printer is broken", "ann@client.org", "It prints nothing."))
    ingest(make_mail("VPN drops", "bob@client.org", "Every hour the tunnel falls."))
    ingest(make_mail("Invoice copy", "cid@client.org", "Please resend invoice 42."))
    with db.write() as s:
        s.execute(update(Ticket).where(Ticket.id == 2).values(assignee="anna@example.com"))


def test_tickets_header_columns_and_filters(
    capsys: Capture, config_file: Path, ingest: Callable[..., int], db: Database
) -> None:
    _three_requests(ingest, db)
    code, out, _ = run(capsys, config_file, "tickets")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == [
        "number", "status", "type", "priority", "assignee", "requester", "age", "due",
    ]  # fmt: skip
    assert lines[1].split()[:6] == ["#1", "new", "question", "normal", "-", "ann@client.org"]
    assert lines[2].split()[4] == "anna@example.com"
    assert len(lines) == 4

    def numbers(*args: str) -> list[str]:
        code, out, err = run(capsys, config_file, "tickets", *args)
        assert code == 0, err
        return [line.split()[0] for line in out.splitlines()[1:]]

    assert numbers("--assignee", "anna@example.com") == ["#2"]
    assert numbers("--assignee", "none") == ["#1", "#3"]
    assert numbers("--requester", "CID@client.org") == ["#3"]
    assert numbers("--search", "tunnel") == ["#2"]  # in the message text
    assert numbers("--search", "invoice 42") == ["#3"]
    assert numbers("--search", "100%") == []
    assert numbers("--limit", "2") == ["#2", "#3"]
    assert numbers("--since", "2000-01-01") == ["#1", "#2", "#3"]
    assert numbers("--since", "2999-01-01") == []
    assert numbers("--status", "new", "--limit", "1") == ["#3"]
    # A date without a zone is desk time (Moscow): 00:30 there is still the 22nd in UTC.
    with db.write() as s:
        s.execute(
            update(Ticket)
            .where(Ticket.id == 1)
            .values(created_at=datetime(2026, 11, 22, 21, 30, tzinfo=UTC))
        )
        s.execute(
            update(Ticket)
            .where(Ticket.id.in_((2, 3)))
            .values(created_at=datetime(2026, 11, 22, 20, 30, tzinfo=UTC))
        )
    assert numbers("--since", "2026-11-23") == ["#1"]
    assert numbers("--since", "2026-11-23T00:00:00+00:00") == []
    code, out, _ = run(capsys, config_file, "tickets", "--json", "--requester", "ann@client.org")
    assert [t["id"] for t in json.loads(out)] == [1]
    code, out, _ = run(capsys, config_file, "tickets", "--json", "--unattached")
    assert set(json.loads(out)) == {"tickets", "unattached"}
    code, _, err = run(capsys, config_file, "tickets", "--since", "yesterday")
    assert code == 64 and "ISO-8601" in err


def test_check_config_exits_0_or_78(capsys: Capture, tmp_path: Path, db_url: str) -> None:
    good = write_toml(config_mapping(db_url, tmp_path), tmp_path / "good.toml")
    code, out, _ = run(capsys, good, "check-config")
    assert code == 0 and "config OK" in out
    bad_data = config_mapping(db_url, tmp_path, smtp={"listen": "nowhere"})
    bad = write_toml(bad_data, tmp_path / "bad.toml")
    code, _, err = run(capsys, bad, "check-config")
    assert code == 78
    assert err.strip().splitlines() == [
        "maild: config error: smtp.listen: must be host:port, not 'nowhere'"
    ]


@pytest.mark.usefixtures("db")
def test_backup_while_the_daemon_takes_mail_restores_and_opens(
    capsys: Capture,
    make_config: Callable[..., Config],
    db_url: str,
    tmp_path: Path,
    running: Callable[..., RunningDaemon],
) -> None:
    path = write_toml(config_mapping(db_url, tmp_path), tmp_path / "config.toml")
    daemon = running(make_config())
    stop = threading.Event()
    sent: list[int] = []

    def traffic() -> None:
        while not stop.is_set() and len(sent) < 200:
            daemon.send(make_mail(subject=f"Load {len(sent)}"))
            sent.append(1)

    client = threading.Thread(target=traffic)
    client.start()
    wait_for(lambda: len(sent) >= 20)
    try:
        code, out, err = run(capsys, path, "backup", str(tmp_path / "copy.db"))
    finally:
        stop.set()
        client.join(60)
    if not db_url.startswith("sqlite"):
        assert code == 78 and "pg_dump" in err
        return
    assert code == 0, err
    assert "copy.db.spool" in out
    copy = tmp_path / "copy.db"
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # The copy is a working desk: a daemon on it processes what was spooled, each once.
    restored = make_config(storage={"url": f"sqlite:///{copy}"})
    again = running(restored)
    copy_db = Database(f"sqlite:///{copy}")

    def settled() -> int:
        with copy_db.session() as s:
            pending = s.scalar(select(func.count()).where(Inbound.state == "pending"))
            done = s.scalar(select(func.count()).where(Inbound.state == "done"))
            spooled = again.daemon.queue.count() if again.daemon else 0
        return int(done or 0) if not pending and not spooled else 0

    done = wait_for(settled)
    assert done >= 15  # what had arrived by the time of the copy, each exactly once
    with copy_db.session() as s:
        assert s.scalar(select(func.count(Ticket.id))) == done
    copy_db.dispose()


def test_backup_into_a_directory(
    capsys: Capture, config_file: Path, ingest: Callable[..., int], db_url: str, tmp_path: Path
) -> None:
    if not db_url.startswith("sqlite"):
        code, _, err = run(capsys, config_file, "backup", str(tmp_path))
        assert code != 0 and "pg_dump" in err
        return
    ingest(make_mail())
    target = tmp_path / "backups"
    target.mkdir()
    code, _out, err = run(capsys, config_file, "backup", str(target))
    assert code == 0, err
    with sqlite3.connect(target / "maild.db") as conn:
        assert conn.execute("SELECT count(*) FROM tickets").fetchone() == (1,)


def test_check_config_names_a_missing_template_folder(
    capsys: Capture, tmp_path: Path, db_url: str
) -> None:
    data = config_mapping(db_url, tmp_path)
    data["desk"]["templates"] = str(tmp_path / "nowhere")
    path = write_toml(data, tmp_path / "config.toml")
    code, _, err = run(capsys, path, "check-config")
    assert code == 78
    assert (
        err.strip()
        == f"maild: config error: desk.templates: no such directory {tmp_path / 'nowhere'}"
    )
