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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clockkit import write_toml
from conftest import config_mapping, free_port, make_mail, wait_for
from sqlalchemy import select

from maild.security.signing import board_url
from maild.store.db import Database
from maild.store.models import Outbox, Ticket


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def now() -> datetime:
    return datetime.now(UTC)


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


class Manager:
    """A service manager's notify socket, read by a thread as systemd would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def wait_for(self, wanted: str, after: int = 0) -> int:
        """The index of the first datagram from ``after`` on that contains ``wanted``."""

        def found() -> int | None:
            return next(
                (i + 1 for i, s in enumerate(self.seen[after:], after) if wanted in s), None
            )

        return int(wait_for(found, timeout=60))

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path / "notify.sock")
    yield m
    m.close()


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
    tmp_path: Path, manager: Manager
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
            _exercise(proc, path, data, port, manager, tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def _exercise(
    proc: subprocess.Popen[bytes],
    path: Path,
    data: dict[str, Any],
    port: int,
    manager: Manager,
    tmp_path: Path,
) -> None:
    ready = manager.wait_for("READY=1")
    manager.wait_for("WATCHDOG=1", ready)
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
    reloading = manager.wait_for("RELOADING=1", ready)
    assert "MONOTONIC_USEC=" in manager.seen[reloading - 1]
    manager.wait_for("READY=1", reloading)
    assert client.noop()[0] == 250
    client.sendmail("c2@client.org", ["support@example.com"], make_mail(sender="c2@client.org"))
    client.quit()
    wait_for(lambda: "vera@example.com" in recipients("c2@client.org"))
    assert "anna@example.com" in recipients("c2@client.org")
    assert "vera@example.com" not in recipients("c1@client.org")
    db.dispose()
    proc.send_signal(signal.SIGTERM)
    manager.wait_for("STOPPING=1", reloading)
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

        base = f"http://127.0.0.1:{daemon.daemon.web_port}"
        vera_link = board_url(base, data["security"]["secret_key"], "vera@example.com", now(), 1)
        assert _status(vera_link) == 403  # not an agent yet
        path.write_text("[desk]\nname = \n")
        assert reloaded() is False
        assert daemon.daemon.config.sla.targets["question"] == 4.0
        override = tmp_path / "mytemplates" / "en"
        override.mkdir(parents=True)
        (override / "ack.txt.j2").write_text("Request {{ ticket.id }}: we are on it.\n")
        data["desk"]["templates"] = str(override.parent)
        data["sla"] = {"question": 40}
        data["agents"] = [*data["agents"], {"email": "vera@example.com", "name": "Vera"}]
        write_toml(data, path)
        assert reloaded() is True
        assert _status(vera_link) == 200  # the board knows the new agent
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


def test_a_manager_that_does_not_read_never_stops_the_daemon(tmp_path: Path) -> None:
    """The watchdog's datagrams fill a notify socket nobody reads: the daemon goes on."""
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # a few datagrams fill it
    deaf.bind(str(tmp_path / "notify.sock"))
    data = _config(tmp_path, free_port(), [{"email": "anna@example.com", "name": "Anna"}])
    web = data["web"]["listen"]
    path = write_toml(data, tmp_path / "config.toml")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "maild", "--config", str(path), "run"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up at all (start-up may take a while on a busy machine)
            try:
                urllib.request.urlopen(f"http://{web}/healthz", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        time.sleep(1.0)  # hundreds of pings: the socket's queue is long full
        for _ in range(3):
            with urllib.request.urlopen(f"http://{web}/healthz", timeout=5) as response:
                assert response.status == 200
    finally:
        proc.terminate()
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:  # stuck (the old blocking send): do not leave it
            proc.kill()
            proc.wait(10)
            raise
        deaf.close()
    assert code == 0
