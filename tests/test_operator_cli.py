"""The `maild` command as an operator meets it: one line on stderr and the README's exit code.

Every test runs the real command in a subprocess: start-up on a busy port or an unwritable
path, usage errors, a listing piped into `head`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, make_mail

from maild.config import from_mapping
from maild.ingest.accept import store_raw
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.migrate import upgrade

EX_USAGE, EX_CANTCREAT, EX_TEMPFAIL = 64, 73, 75


def write_config(tmp_path: Path, *, db: str = "", outbox: str = "", smtp: int = 0) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[desk]
name = "Test Desk"
address = "support@example.com"
[storage]
url = "sqlite:///{db or tmp_path / "maild.db"}"
[smtp]
listen = "127.0.0.1:{smtp or free_port()}"
[outbound]
url = "maildir:{outbox or tmp_path / "outbox"}"
[web]
listen = "127.0.0.1:{free_port()}"
[security]
secret_key = "operator-test-secret-key"
[pipeline]
workers = 1
""")
    return path


def maild(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_run_on_a_busy_port_is_one_line_and_75(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = maild(write_config(tmp_path, smtp=port), "run")
    assert proc.returncode == EX_TEMPFAIL
    line = one_line(proc)
    assert f"127.0.0.1:{port}" in line and "smtp.listen" in line and "in use" in line


def test_run_with_an_outbox_it_cannot_create_is_one_line_and_73(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    outbox = tmp_path / "a-file" / "outbox"
    proc = maild(write_config(tmp_path, outbox=str(outbox)), "run")
    assert proc.returncode == EX_CANTCREAT
    assert f"outbox {outbox}" in one_line(proc)


@pytest.mark.parametrize("where", ["under-a-file", "a-folder"])
def test_run_with_a_database_it_cannot_create_names_its_path(tmp_path: Path, where: str) -> None:
    if where == "under-a-file":
        (tmp_path / "a-file").write_text("not a folder")
        db = tmp_path / "a-file" / "maild.db"
    else:
        db = tmp_path / "maild.db"
        db.mkdir()
    proc = maild(write_config(tmp_path, db=str(db)), "run")
    assert proc.returncode == EX_CANTCREAT
    assert str(db) in one_line(proc)


def test_run_with_a_spool_it_cannot_create_names_its_path(tmp_path: Path) -> None:
    (tmp_path / "maild.db.spool").mkdir()
    proc = maild(write_config(tmp_path), "run")
    assert proc.returncode == EX_CANTCREAT
    assert f"spool {tmp_path / 'maild.db.spool'}" in one_line(proc)


@pytest.mark.parametrize(
    "args",
    [
        ("deliver", "--bogus"),
        ("show", "abc"),
        ("tickets", "--status", "bogus"),
        ("sweep", "--now", "yesterday"),
        ("quarantine", "show"),
        (),
    ],
    ids=["deliver-bogus", "show-abc", "tickets-status-bogus", "sweep-now", "no-id", "nothing"],
)
def test_usage_errors_exit_64_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = maild(write_config(tmp_path), *args)
    assert proc.returncode == EX_USAGE
    assert "maild" in one_line(proc)


def test_tickets_json_into_head_ends_quietly(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'maild.db'}")
    upgrade(db)
    config = from_mapping(
        {
            "desk": {"name": "Desk", "address": "support@example.com"},
            "storage": {"url": db.url},
            "outbound": {"url": f"maildir:{tmp_path / 'outbox'}"},
            "security": {"secret_key": "operator-test-secret-key"},
        },
        tmp_path,
    )
    ids = [
        store_raw(db, make_mail(f"{i} " + "long subject " * 70), source="test").ident
        for i in range(120)
    ]
    Pipeline(config, db).process(ids=ids)
    db.dispose()
    proc = subprocess.Popen(
        [sys.executable, "-m", "maild", "--config", str(config_path), "tickets", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b"[")  # `| head -c 100`
    proc.stdout.close()
    assert proc.wait(60) == 0
    assert proc.stderr.read() == b""
