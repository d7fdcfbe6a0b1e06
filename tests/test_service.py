"""systemd: the unit file verifies; READY/WATCHDOG/RELOADING arrive; SIGHUP reloads safely."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clockkit import write_toml
from conftest import config_mapping, free_port, make_mail, wait_for
from sqlalchemy import select

from maild.store.db import Database
from maild.store.models import Outbox, Ticket

UNIT = Path(__file__).resolve().parents[1] / "contrib" / "maild.service"


def test_unit_file_asks_for_notify_hardening_and_its_own_user() -> None:
    lines = set(UNIT.read_text().splitlines())
    for wanted in (
        "Type=notify",
        "WatchdogSec=60",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "User=maild",
        "StateDirectory=maild",
        "WorkingDirectory=/var/lib/maild",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
    ):
        assert wanted in lines, wanted


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # The unit names /opt/maild; point it at this checkout's maild so the command exists.
    venv = Path(sys.executable).parent.parent
    unit = tmp_path / "maild.service"
    unit.write_text(UNIT.read_text().replace("/opt/maild/.venv", str(venv)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # A misspelt value is only a warning for systemd: any line about our unit is a failure.
    assert "maild.service" not in done.stderr, done.stderr


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(30)
    yield sock
    sock.close()


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams until one contains ``wanted`` (30 s at most)."""
    seen: list[str] = []
    while not any(wanted in s for s in seen):
        seen.append(sock.recv(4096).decode())
    return seen


def _config(tmp_path: Path, port: int, agents: list[dict[str, str]]) -> dict[str, Any]:
    return config_mapping(
        f"sqlite:///{tmp_path / 'maild.db'}",
        tmp_path,
        smtp={"listen": f"127.0.0.1:{port}"},
        web={"listen": f"127.0.0.1:{free_port()}"},
        pipeline={"workers": 1},
        agents=agents,
    )


def test_notify_watchdog_and_sighup_reload_in_a_real_daemon(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    port = free_port()
    anna = [{"email": "anna@example.com", "name": "Anna"}]
    data = _config(tmp_path, port, anna)
    path = write_toml(data, tmp_path / "config.toml")
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "400000",
    }
    with (tmp_path / "maild.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maild", "--config", str(path), "run"], env=env, stderr=log
        )
        try:
            _exercise(proc, path, data, port, notify_socket, tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def _exercise(
    proc: subprocess.Popen[bytes],
    path: Path,
    data: dict[str, Any],
    port: int,
    sock: socket.socket,
    tmp_path: Path,
) -> None:
    assert "READY=1" in receive_until(sock, "READY=1")
    assert "WATCHDOG=1" in receive_until(sock, "WATCHDOG=1")
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)  # stays open across both reloads
    client.sendmail("c1@client.org", ["support@example.com"], make_mail(sender="c1@client.org"))
    db = Database(f"sqlite:///{tmp_path / 'maild.db'}")

    def recipients(requester: str) -> list[str]:
        with db.session() as s:
            number = s.scalar(select(Ticket.id).where(Ticket.requester == requester))
            rows = s.scalars(select(Outbox.recipients).where(Outbox.ticket_id == number))
            return list(rows) if number else []

    wait_for(lambda: "anna@example.com" in recipients("c1@client.org"))
    # An invalid file is refused and the old config stays.
    path.write_text(path.read_text().replace('"Example Support"', '""'))
    proc.send_signal(signal.SIGHUP)
    log = tmp_path / "maild.log"
    refused = "reload refused, the running config stays: config error: desk.name"
    wait_for(lambda: refused in log.read_text())
    assert client.noop()[0] == 250
    # A valid one with a second agent: the pipeline worker (another process) gets it too.
    data["agents"] = [*data["agents"], {"email": "vera@example.com", "name": "Vera"}]
    write_toml(data, path)
    proc.send_signal(signal.SIGHUP)
    seen = receive_until(sock, "RELOADING=1")
    assert any("MONOTONIC_USEC=" in s for s in seen)
    receive_until(sock, "READY=1")
    assert client.noop()[0] == 250
    client.sendmail("c2@client.org", ["support@example.com"], make_mail(sender="c2@client.org"))
    client.quit()
    wait_for(lambda: "vera@example.com" in recipients("c2@client.org"))
    assert "anna@example.com" in recipients("c2@client.org")
    assert "vera@example.com" not in recipients("c1@client.org")
    db.dispose()
    proc.send_signal(signal.SIGTERM)
    receive_until(sock, "STOPPING=1")
    assert proc.wait(60) == 0
    assert "reloaded" in log.read_text()


def test_reload_applies_sla_targets_and_templates_and_refuses_a_broken_file(
    tmp_path: Path, db_url: str
) -> None:
    from conftest import RunningDaemon

    from maild.config import load

    data = config_mapping(db_url, tmp_path)
    path = write_toml(data, tmp_path / "config.toml")
    daemon = RunningDaemon(load(path)).start()
    try:
        assert daemon.daemon is not None
        reload = daemon.daemon.reload

        def reloaded() -> bool:
            return asyncio.run_coroutine_threadsafe(reload(), daemon.loop).result(60)

        path.write_text("[desk]\nname = \n")
        assert reloaded() is False
        assert daemon.daemon.config.sla.targets["question"] == 4.0
        override = tmp_path / "mytemplates" / "en"
        override.mkdir(parents=True)
        (override / "ack.txt.j2").write_text("Request {{ ticket.id }}: we are on it.\n")
        data["desk"]["templates"] = str(override.parent)
        data["sla"] = {"question": 40}
        write_toml(data, path)
        assert reloaded() is True
        assert daemon.daemon.config.sla.targets["question"] == 40.0
        assert daemon.daemon.scheduler is not None
        assert daemon.daemon.scheduler.config.sla.targets["question"] == 40.0
        daemon.send(make_mail())
        db = Database(db_url)

        def ack() -> bytes | None:
            with db.session() as s:
                return s.scalar(select(Outbox.raw).where(Outbox.kind == "ack"))

        assert b"we are on it." in wait_for(ack)
        with db.session() as s:
            t = s.scalars(select(Ticket)).one()
            # 40 business hours (9-18, five days a week) are most of a working week and more.
            assert (t.due_at - t.created_at).days >= 4
        db.dispose()
    finally:
        daemon.stop()
