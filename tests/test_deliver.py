"""`maild deliver` as an MTA pipe transport: 0 once stored, 65 never acceptable, 75 try later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fixture_bytes, make_mail
from sqlalchemy import func, select

from maild.store.db import Database
from maild.store.models import Inbound, Ticket


def write_config(tmp_path: Path, db_url: str, size: int = 1_000_000) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[desk]
name = "Test Desk"
address = "support@example.com"
[storage]
url = "{db_url}"
[smtp]
max_message_size = {size}
[outbound]
url = "maildir:{tmp_path / "outbox"}"
[security]
secret_key = "deliver-test-secret-key"
""")
    return path


def deliver(config: Path, raw: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config), "deliver", *args],
        input=raw,
        capture_output=True,
        timeout=120,
    )


def test_stored_processed_and_deduplicated(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path, db_url)
    raw = fixture_bytes("new_koi8r_subject.eml")
    assert deliver(config, raw, "-f", "customer@example.org", "support@example.com").returncode == 0
    assert deliver(config, raw).returncode == 0
    db = Database(db_url)
    with db.session() as s:
        assert s.scalar(select(func.count(Inbound.id))) == 1
        (ticket,) = s.scalars(select(Ticket))
        assert ticket.status == "new" and ticket.language == "ru"
    db.dispose()
    assert len(list((tmp_path / "outbox").glob("*"))) >= 0  # the daemon's sender sends later


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\r\n\r\n   \n", "empty"),
        (b"\x89PNG\r\n\x1a\nbinary junk that is no mail", "not a mail"),
        (make_mail(body=("x" * 70 + "\n") * 200), "over the limit"),
    ],
)
def test_never_acceptable_input_exits_65(tmp_path: Path, raw: bytes, reason: str) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", size=4096)
    proc = deliver(config, raw)
    assert proc.returncode == 65
    line = proc.stderr.decode().strip()
    assert reason in line and len(line.splitlines()) == 1


def test_database_unreachable_exits_75(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql+psycopg://postgres@127.0.0.1:1/none")
    proc = deliver(config, make_mail())
    assert proc.returncode == 75, proc.stderr
    assert b"temporary" in proc.stderr


def test_bad_config_exits_75_so_the_mta_keeps_the_mail(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[desk]\nname = 'x'\naddress = 'broken'\n")
    proc = deliver(path, make_mail())
    assert proc.returncode == 75 and b"desk.address" in proc.stderr


def test_quarantine_list_show_retry(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'm.db'}"
    config = write_config(tmp_path, db_url)
    raw = fixture_bytes("many_parts.eml")
    (tmp_path / "config.toml").write_text(config.read_text() + "[limits]\nmax_parts = 100\n")
    assert deliver(config, raw).returncode == 0  # stored: accepted means safe
    cli = [sys.executable, "-m", "maild", "--config", str(config), "quarantine"]
    listing = subprocess.run([*cli, "list", "--json"], capture_output=True, timeout=60)
    import json

    (item,) = json.loads(listing.stdout)
    assert "too many MIME parts" in item["error"]
    shown = subprocess.run([*cli, "show", str(item["id"])], capture_output=True, timeout=60)
    assert b"too many MIME parts" in shown.stdout and raw[:200] in shown.stdout
    # Still over the limit: retry reports it and keeps it quarantined.
    again = subprocess.run([*cli, "retry", str(item["id"])], capture_output=True, timeout=60)
    assert again.returncode == 65 and b"quarantined again" in again.stderr
    # The operator raises the limit; retry now processes it into a request.
    (tmp_path / "config.toml").write_text(
        config.read_text().replace("max_parts = 100", "max_parts = 5000")
    )
    ok = subprocess.run([*cli, "retry", str(item["id"])], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config), "show", "1", "--json"],
        capture_output=True,
        timeout=60,
    )
    data = json.loads(shown.stdout)
    for key in ("id", "status", "subject", "requester", "created_at", "messages"):
        assert key in data
    for key in ("direction", "kind", "from", "subject", "message_id", "text"):
        assert key in data["messages"][0]
