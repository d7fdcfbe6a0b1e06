#!/usr/bin/env python3
"""maild benchmark: throughput (messages/s accepted and processed) and accept-to-ack latency.

One command: ``.venv/bin/python bench/throughput.py`` starts a throw-away daemon (temporary
folder, SQLite, outgoing mail to a Maildir, free ports on 127.0.0.1), pushes a realistic mix
of mail through its SMTP listener, watches the database read-only, stops the daemon with
SIGTERM and prints the figures. ``--smtp HOST:PORT --db-url URL`` measures a running daemon
instead. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mailgen import MailFactory, Outgoing, Request, add_alike_share

REPO = Path(__file__).resolve().parent.parent
TARGET_RATE = 200.0  # messages/s end to end (issue 2)
TARGET_P99_MS = 250.0  # accept-to-ack p99 at 50 messages/s


# --------------------------------------------------------------------------- configuration


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


_SECTION = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def derive_config(text: str, overrides: dict[str, dict[str, object]]) -> str:
    """The same TOML with some keys replaced (or added to their table), comments kept."""
    pending = {sec: dict(kv) for sec, kv in overrides.items()}
    out: list[str] = []
    section = ""

    def flush(sec: str) -> None:
        for key, value in pending.get(sec, {}).items():
            out.append(f"{key} = {_toml_value(value)}")
        pending[sec] = {}

    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            flush(section)
            section = m.group(1)
            out.append(line)
            continue
        k = _KEY.match(line)
        if k and k.group(1) in pending.get(section, {}):
            out.append(f"{k.group(1)} = {_toml_value(pending[section].pop(k.group(1)))}")
            continue
        out.append(line)
    flush(section)
    for sec, kv in pending.items():
        if kv:
            out.append(f"\n[{sec}]")
            out.extend(f"{key} = {_toml_value(value)}" for key, value in kv.items())
    result = "\n".join(out) + "\n"
    parsed = tomllib.loads(result)
    for sec, kv in overrides.items():
        for key, value in kv.items():
            assert parsed[sec][key] == value, f"config override {sec}.{key} did not take"
    return result


@dataclass
class Target:
    smtp_host: str
    smtp_port: int
    db_url: str
    desk_address: str
    tag: str
    workdir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    config_path: Path | None = None
    workers: int = 1


def _setting(text: str) -> tuple[str, str, object]:
    """'pipeline.batch_size=8' -> ('pipeline', 'batch_size', 8)."""
    key, _, raw = text.partition("=")
    section, _, name = key.strip().rpartition(".")
    if not section or not name or not _:
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {text!r}")
    try:
        value: object = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, name, value


def write_config(
    base: Path, workdir: Path, workers: int | None, extra: Sequence[tuple[str, str, object]] = ()
) -> tuple[Path, dict[str, Any]]:
    text = base.read_text(encoding="utf-8")
    cfg = tomllib.loads(text)
    smtp_port, web_port = free_port(), free_port()
    overrides: dict[str, dict[str, object]] = {
        "storage": {"url": f"sqlite:///{workdir / 'maild.db'}"},
        "smtp": {"listen": f"127.0.0.1:{smtp_port}"},
        "outbound": {"url": f"maildir:{workdir / 'outbox'}"},
        "web": {
            "listen": f"127.0.0.1:{web_port}",
            "base_url": f"http://127.0.0.1:{web_port}",
        },
    }
    if workers is not None:
        overrides["pipeline"] = {"workers": workers}
    for section, name, value in extra:
        overrides.setdefault(section, {})[name] = value
    templates = cfg.get("desk", {}).get("templates")
    if templates and not Path(templates).is_absolute():
        overrides["desk"] = {"templates": str((base.parent / templates).resolve())}
    path = workdir / "config.toml"
    path.write_text(derive_config(text, overrides), encoding="utf-8")
    return path, tomllib.loads(path.read_text(encoding="utf-8"))


def wait_for_smtp(host: str, port: int, proc: subprocess.Popen[bytes] | None, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"maild exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no SMTP greeting on {host}:{port} within {limit:.0f} s")


def start_daemon(args: argparse.Namespace) -> Target:
    workdir = Path(tempfile.mkdtemp(prefix="maild-bench-"))
    config_path, cfg = write_config(Path(args.config), workdir, args.workers, args.set)
    host, _, port = cfg["smtp"]["listen"].rpartition(":")
    log_path = workdir / "maild.log"
    env = dict(os.environ)
    env.pop("MAILD_CONFIG", None)
    launcher = [str(Path(args.launcher).resolve())] if args.launcher else ["-m", "maild"]
    cmd = [sys.executable, *launcher, "--config", str(config_path), "run"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    target = Target(
        host,
        int(port),
        cfg["storage"]["url"],
        cfg["desk"]["address"],
        cfg["desk"]["tag"],
        workdir,
        proc,
        log_path,
        config_path,
        int(cfg.get("pipeline", {}).get("workers", 2)),
    )
    try:
        wait_for_smtp(host, int(port), proc, 60)
    except RuntimeError:
        print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        stop_daemon(target)
        raise
    settled = wait_settled(target)
    print(f"daemon settled {settled:.1f} s after its SMTP greeting", file=sys.stderr)
    return target


def wait_settled(target: Target, limit: float = 30.0) -> float:
    """Wait until the freshly started daemon and its workers are idle (their imports and
    start-up done: about 1.2 CPU s per worker process on a slow hour), so that phase 1
    measures a running desk, not its start; returns the seconds waited."""
    t0 = time.monotonic()
    last = sum(v for k, v in cpu_snapshot(target).items() if k not in ("bench client", "machine"))
    while time.monotonic() - t0 < limit:
        time.sleep(0.25)
        now = sum(
            v for k, v in cpu_snapshot(target).items() if k not in ("bench client", "machine")
        )
        if now - last < 0.02 and "pipeline workers" in cpu_snapshot(target):
            break
        last = now
    return time.monotonic() - t0


def stop_daemon(target: Target, timeout: float = 60) -> tuple[int | None, float]:
    proc = target.proc
    if proc is None:
        return None, 0.0
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"maild did not stop within {timeout:.0f} s of SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()
        code = None
    return code, time.monotonic() - t0


# --------------------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def cpu_snapshot(target: Target) -> dict[str, float]:
    """CPU seconds so far: the daemon, its children (the pipeline workers), and this client."""
    snap: dict[str, float] = {}
    if target.proc is not None:
        pid = target.proc.pid
        own = _cpu_of(pid)
        if own is not None:
            snap["daemon"] = own
        for kid in _children(pid):
            try:
                name = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "resource_tracker" in name:
                label = "resource tracker"
            elif "spawn_main" in name:
                label = "pipeline workers"
            else:
                label = f"child {kid}"
            value = _cpu_of(kid)
            if value is not None:
                snap[label] = snap.get(label, 0.0) + value
    t = os.times()
    snap["bench client"] = t.user + t.system
    with contextlib.suppress(OSError):
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        snap["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / _TICK  # all but idle, iowait
    return snap


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds used between two snapshots; "other processes" is the rest of the machine."""
    d = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    machine = d.pop("machine", None)
    if machine is not None:
        d["other processes"] = round(max(0.0, machine - sum(d.values())), 2)
    return d


def daemon_pids(target: Target) -> dict[str, int]:
    if target.proc is None:
        return {}
    pids = {"daemon": target.proc.pid}
    n = 0
    for kid in sorted(_children(target.proc.pid)):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{kid}/cmdline").read_bytes():
                n += 1
                pids["worker" if n == 1 else f"worker{n}"] = kid
    return pids


class Profiler:
    """py-spy record (raw collapsed stacks, every thread, idle included) of the daemon and the
    pipeline workers for one phase; summarise with bench/profile_summary.py."""

    def __init__(self, outdir: Path | None, target: Target, phase: str, idle: bool = True) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        if outdir is None:
            return
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        outdir.mkdir(parents=True, exist_ok=True)
        for label, pid in daemon_pids(target).items():
            path = outdir / f"{phase}-{label}.txt"
            cmd = [
                exe,
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--output",
                str(path),
                "--rate",
                "250",
                "--threads",
                "--nonblocking",
            ]
            if idle:
                cmd.append("--idle")
            log = (outdir / f"{phase}-{label}.log").open("wb")
            self.procs.append((str(path), subprocess.Popen(cmd, stdout=log, stderr=log)))
        time.sleep(1.0)  # let py-spy attach before the traffic starts

    def stop(self) -> None:
        for path, proc in self.procs:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(f"  profile: {path}")


# --------------------------------------------------------------------------- watching the DB


class Reader:
    """Read-only queries against the daemon's database (sqlite3 for SQLite, else SQLAlchemy)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite_path: str | None = None
        if url.startswith("sqlite"):
            self.sqlite_path = url.split("///", 1)[1].split("?", 1)[0]
        else:
            from sqlalchemy import create_engine

            self.engine = create_engine(url, pool_size=4)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]]:
        """One read transaction (one consistent snapshot) per use."""
        if self.sqlite_path is not None:
            con = self._sqlite()
            con.execute("BEGIN")

            def run_sqlite(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return con.execute(sql, tuple(params)).fetchall()

            try:
                yield run_sqlite
            finally:
                con.execute("COMMIT")
        else:
            from sqlalchemy import text

            with self.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():

                    def run(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                        names = {f"p{i}": v for i, v in enumerate(params)}
                        i = iter(range(len(params)))
                        sql2 = re.sub(r"\?", lambda _m: f":p{next(i)}", sql)
                        return [tuple(r) for r in conn.execute(text(sql2), names)]

                    yield run

    _local = threading.local()

    def _sqlite(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                f"file:{self.sqlite_path}?mode=ro", uri=True, isolation_level=None, timeout=30
            )
            con.execute("PRAGMA query_only=1")
            self._local.con = con
        return con

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self.snapshot() as q:
            rows = q(sql, params)
        return rows[0][0] if rows else None


@dataclass
class Sent:
    out: Outgoing
    phase: str
    start: float
    end: float = 0.0
    error: str | None = None
    due: float | None = None  # scheduled start (latency phase)


@dataclass
class Seen:
    """What the poller saw, with the wall (monotonic) time it first saw it."""

    done: dict[str, tuple[float, str]] = field(default_factory=dict)  # inbound Message-ID
    acks: dict[str, tuple[float, int, str]] = field(default_factory=dict)  # request Message-ID
    polls: int = 0
    poll_seconds: float = 0.0


class Poller(threading.Thread):
    """Polls inbound (state) and outbox acks every ``interval`` and records first sightings."""

    def __init__(
        self, reader: Reader, interval: float, on_ack: Callable[[str, int, str], None]
    ) -> None:
        super().__init__(name="bench-poller", daemon=True)
        self.reader = reader
        self.interval = interval
        self.on_ack = on_ack
        self.seen = Seen()
        self.stop = threading.Event()
        self.base_inbound = int(reader.one("SELECT coalesce(max(id), 0) FROM inbound"))
        self.base_outbox = int(reader.one("SELECT coalesce(max(id), 0) FROM outbox"))
        self.base_ticket = int(reader.one("SELECT coalesce(max(id), 0) FROM tickets"))
        self.base_message = int(reader.one("SELECT coalesce(max(id), 0) FROM messages"))
        self.error: BaseException | None = None

    def run(self) -> None:
        lo_in, lo_out = self.base_inbound, self.base_outbox
        seen = self.seen
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                with self.reader.snapshot() as q:
                    pend = q(
                        "SELECT min(id) FROM inbound WHERE state = 'pending' AND id > ?", (lo_in,)
                    )[0][0]
                    rows = q(
                        "SELECT id, message_id, state FROM inbound "
                        "WHERE id > ? AND state != 'pending'",
                        (lo_in,),
                    )
                    acks = q(
                        "SELECT o.id, o.message_id, t.id, t.root_message_id FROM outbox o "
                        "JOIN tickets t ON t.id = o.ticket_id WHERE o.id > ? "
                        "AND o.kind IN ('ack', 'incident-ack')",  # incident-ack: joined a problem
                        (lo_out,),
                    )
                now = time.monotonic()
                for _iid, mid, state in rows:
                    if mid is not None and mid not in seen.done:
                        seen.done[mid] = (now, state)
                top = max((r[0] for r in rows), default=lo_in)
                lo_in = max(lo_in, pend - 1 if pend is not None else top)
                for oid, ack_mid, ticket, root in acks:
                    lo_out = max(lo_out, oid)
                    if root is not None and root not in seen.acks:
                        seen.acks[root] = (now, int(ticket), ack_mid)
                        self.on_ack(root, int(ticket), ack_mid)
                seen.polls += 1
                seen.poll_seconds += now - t0
                self.stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))
        except BaseException as exc:  # reported by the main thread
            self.error = exc


# --------------------------------------------------------------------------- the traffic


class Traffic:
    """Decides each message (new or reply, attachment or not) and tracks requests and sends."""

    def __init__(self, factory: MailFactory, seed: int) -> None:
        self.factory = factory
        self.rng = random.Random(seed + 1)
        self.lock = threading.Lock()
        self.requests: dict[str, Request] = {}
        self.accepted: list[Request] = []  # requests that got 250 (may be replied to untagged)
        self.known: list[Request] = []  # requests whose number we saw (replied to with the tag)
        self.tickets: dict[str, tuple[int, str]] = {}
        self.sent: list[Sent] = []

    def on_ack(self, root: str, ticket: int, ack_mid: str) -> None:
        with self.lock:
            self.tickets[root] = (ticket, ack_mid)
            req = self.requests.get(root)
            if req is not None:
                self.known.append(req)

    @staticmethod
    def plan(n: int, seed: int) -> list[tuple[bool, bool]]:
        """(reply?, attachment?) for n messages: 40 % replies, 10 % with an attachment."""
        rng = random.Random(seed)
        replies = [i < round(n * 0.4) for i in range(n)]
        atts = [i < round(n * 0.1) for i in range(n)]
        rng.shuffle(replies)
        rng.shuffle(atts)
        return list(zip(replies, atts, strict=True))

    def _pick(self, pool: list[Request]) -> Request | None:
        while pool:
            i = self.rng.randrange(len(pool))
            req = pool[i]
            if req.replies < 3:
                return req
            pool[i] = pool[-1]
            pool.pop()
        return None

    def build(self, reply: bool, attachment: bool) -> Outgoing:
        with self.lock:
            if reply:
                req = self._pick(self.known)
                if req is not None:
                    ticket, ack = self.tickets[req.message_id]
                    return self.factory.reply(req, attachment, ticket, ack)
                req = self._pick(self.accepted)
                if req is not None:
                    return self.factory.reply(req, attachment, None, None)
                # nothing accepted yet to reply to: this one becomes a new request
            out, req = self.factory.new_request(attachment)
            self.requests[out.message_id] = req
            return out

    def record(self, rec: Sent) -> None:
        with self.lock:
            self.sent.append(rec)
            if rec.error is None and rec.out.kind == "new":
                req = self.requests[rec.out.message_id]
                self.accepted.append(req)
                if req.message_id in self.tickets:  # ack seen before sendmail returned
                    self.known.append(req)


class Client:
    """One SMTP session, reused for many messages (reconnects after a broken session)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.smtp: smtplib.SMTP | None = None

    def send(self, out: Outgoing) -> str | None:
        try:
            if self.smtp is None:
                self.smtp = smtplib.SMTP(self.host, self.port, timeout=120)
                self.smtp.ehlo("bench.client.example.org")
            self.smtp.sendmail(out.sender, [out.recipient], out.raw)
            return None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            text = exc.smtp_error
            text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            return f"{exc.smtp_code} {text}"
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            return f"{type(exc).__name__}: {exc}"

    def _drop(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(Exception):
                self.smtp.close()
        self.smtp = None

    def close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(Exception):
                self.smtp.quit()
        self.smtp = None


def push(
    target: Target,
    traffic: Traffic,
    plan: list[tuple[bool, bool]],
    phase: str,
    connections: int,
    rate: float | None,
) -> tuple[float, float]:
    """Send every planned message over ``connections`` sessions; as fast as possible, or on
    an open-loop schedule of ``rate`` messages/s. Returns (first start, last end)."""
    lock = threading.Lock()
    counter = iter(range(len(plan)))
    t0 = time.monotonic() + 0.05

    def worker() -> None:
        client = Client(target.smtp_host, target.smtp_port)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                due = None
                if rate is not None:
                    due = t0 + i / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                out = traffic.build(*plan[i])
                rec = Sent(out, phase, time.monotonic(), due=due)
                rec.error = client.send(out)
                rec.end = time.monotonic()
                traffic.record(rec)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"smtp-{k}") for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = [s for s in traffic.sent if s.phase == phase]
    return min(s.start for s in mine), max(s.end for s in mine)


def wait_processed(
    poller: Poller, recs: list[Sent], timeout: float, stall: float = 30.0
) -> float | None:
    """Wait until every accepted message is out of 'pending' and every new request has its ack
    (or nothing moved for ``stall`` s). Returns the wall time of the last sighting, or None."""
    want_done = [s.out.message_id for s in recs if s.error is None]
    want_ack = [s.out.message_id for s in recs if s.error is None and s.out.kind == "new"]
    deadline = time.monotonic() + timeout
    last_progress, last_count = time.monotonic(), -1
    seen = poller.seen
    while time.monotonic() < deadline:
        if poller.error is not None:
            raise RuntimeError(f"database poller failed: {poller.error!r}")
        missing = sum(m not in seen.done for m in want_done)
        missing_ack = sum(m not in seen.acks for m in want_ack)
        if missing == 0 and missing_ack == 0:
            times = [seen.done[m][0] for m in want_done] + [seen.acks[m][0] for m in want_ack]
            return max(times, default=time.monotonic())
        count = missing + missing_ack
        if count != last_count:
            last_count, last_progress = count, time.monotonic()
        elif time.monotonic() - last_progress > stall:
            break
        time.sleep(0.05)
    return None


def wait_outbox(reader: Reader, base: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = reader.one(
            "SELECT count(*) FROM outbox WHERE id > ? AND state = 'queued'", (base,)
        )
        if not queued:
            return time.monotonic()
        time.sleep(0.05)
    return None


# --------------------------------------------------------------------------- figures


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def dist(values_s: Sequence[float]) -> dict[str, float | int]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p90_ms": round(pct(ms, 90), 1),
        "p99_ms": round(pct(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
    }


def fmt_dist(d: dict[str, float | int]) -> str:
    return (
        f"n={d['n']:<5} p50 {d['p50_ms']:7.1f} ms  p90 {d['p90_ms']:7.1f} ms  "
        f"p99 {d['p99_ms']:7.1f} ms  max {d['max_ms']:7.1f} ms"
    )


def mix_of(recs: list[Sent]) -> dict[str, int]:
    ok = [s for s in recs if s.error is None]
    return {
        "sent": len(recs),
        "accepted": len(ok),
        "refused": len(recs) - len(ok),
        "new": sum(s.out.kind == "new" for s in ok),
        "replies_tagged": sum(s.out.kind == "reply" and s.out.tagged for s in ok),
        "replies_in_reply_to_only": sum(s.out.kind == "reply" and not s.out.tagged for s in ok),
        "with_attachment": sum(s.out.attachment for s in ok),
        "bytes": sum(len(s.out.raw) for s in ok),
    }


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    rev = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": mem,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
        "git": rev,
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def check_threading(reader: Reader, poller: Poller, traffic: Traffic) -> dict[str, int]:
    """Did every new request get its own ticket, and every reply land on its request's?"""
    with reader.snapshot() as q:
        tickets = dict(
            q("SELECT root_message_id, id FROM tickets WHERE id > ?", (poller.base_ticket,))
        )
        placed = dict(
            q(
                "SELECT message_id, ticket_id FROM messages WHERE id > ? AND direction = 'in'",
                (poller.base_message,),
            )
        )
        states = Counter(
            r[0] for r in q("SELECT state FROM inbound WHERE id > ?", (poller.base_inbound,))
        )
        outbox = Counter(
            f"{r[0]}:{r[1]}"
            for r in q("SELECT kind, state FROM outbox WHERE id > ?", (poller.base_outbox,))
        )
    ok = [s for s in traffic.sent if s.error is None]
    new_ok = sum(s.out.message_id in tickets for s in ok if s.out.kind == "new")
    right = wrong = 0
    for s in ok:
        if s.out.kind != "reply":
            continue
        expect = tickets.get(s.out.parent or "")
        got = placed.get(s.out.message_id)
        if expect is not None and got == expect:
            right += 1
        else:
            wrong += 1
    result = {
        "new_requests_with_ticket": new_ok,
        "new_requests": sum(s.out.kind == "new" for s in ok),
        "replies_on_right_request": right,
        "replies_misthreaded_or_missing": wrong,
        "tickets_created": len(tickets),
    }
    result.update({f"inbound_{k}": v for k, v in states.items()})
    result.update({f"outbox_{k}": v for k, v in outbox.items()})
    return result


# --------------------------------------------------------------------------- phases


def phase_throughput(
    args: argparse.Namespace, target: Target, reader: Reader, poller: Poller, traffic: Traffic
) -> dict[str, Any]:
    n = args.messages
    print(f"\nPhase 1: throughput, {n} messages as fast as {args.connections} SMTP sessions go")
    profiler = Profiler(args.profile, target, "throughput", not args.profile_cpu)
    cpu0 = cpu_snapshot(target)
    out_base = int(reader.one("SELECT coalesce(max(id), 0) FROM outbox"))
    start, last_accept = push(
        target, traffic, Traffic.plan(n, args.seed), "throughput", args.connections, None
    )
    recs = [s for s in traffic.sent if s.phase == "throughput"]
    finished = wait_processed(poller, recs, timeout=max(120.0, n / 10))
    cpu1 = cpu_snapshot(target)
    profiler.stop()
    delivered = wait_outbox(reader, out_base, timeout=60)
    mix = mix_of(recs)
    accept_s = last_accept - start
    res: dict[str, Any] = {
        "mix": mix,
        "accept_seconds": round(accept_s, 3),
        "accept_rate": round(mix["accepted"] / accept_s, 1),
        "processed_seconds": round(finished - start, 3) if finished else None,
        "end_to_end_rate": round(mix["accepted"] / (finished - start), 1) if finished else None,
        "outbox_delivered_seconds": round(delivered - start, 3) if delivered else None,
        "cpu_seconds": cpu_delta(cpu0, cpu1),
        "errors": Counter(s.error for s in recs if s.error),
    }
    print(
        f"  mix: {mix['new']} new, {mix['replies_tagged']} replies with the tag + "
        f"{mix['replies_in_reply_to_only']} with In-Reply-To only, "
        f"{mix['with_attachment']} with a 100 KB attachment; {mix['bytes'] / 1e6:.1f} MB"
    )
    if mix["refused"]:
        print(f"  REFUSED: {mix['refused']}: {dict(res['errors'])}")
    print(
        f"  accepted (250):          {mix['accepted']} in {accept_s:6.2f} s = "
        f"{res['accept_rate']:7.1f} msg/s  (accept only, pipeline running alongside)"
    )
    if finished:
        print(
            f"  processed (inbound done, acks in outbox): {finished - start:6.2f} s = "
            f"{res['end_to_end_rate']:7.1f} msg/s end to end"
        )
    else:
        print("  NOT all processed before the time limit")
    if delivered:
        print(f"  outbox delivered to the Maildir by {delivered - start:.2f} s")
    wall = (finished or time.monotonic()) - start
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in res["cpu_seconds"].items())
    print(f"  CPU seconds over {wall:.1f} s wall: {cpu}")
    res["errors"] = dict(res["errors"])
    return res


def phase_latency(
    args: argparse.Namespace, target: Target, reader: Reader, poller: Poller, traffic: Traffic
) -> dict[str, Any]:
    m = int(args.rate * args.duration)
    print(
        f"\nPhase 2: latency, {m} messages at a steady {args.rate:g} msg/s "
        f"for {args.duration:g} s ({args.connections} sessions, open loop)"
    )
    profiler = Profiler(args.profile, target, "latency", not args.profile_cpu)
    out_base = int(reader.one("SELECT coalesce(max(id), 0) FROM outbox"))
    cpu0 = cpu_snapshot(target)
    start, last = push(
        target, traffic, Traffic.plan(m, args.seed + 7), "latency", args.connections, args.rate
    )
    recs = [s for s in traffic.sent if s.phase == "latency"]
    finished = wait_processed(poller, recs, timeout=60)
    cpu1 = cpu_snapshot(target)
    profiler.stop()
    wait_outbox(reader, out_base, timeout=30)  # leave nothing queued (not part of the figures)
    seen = poller.seen
    ok = [s for s in recs if s.error is None]
    ack_lat = [
        max(0.0, seen.acks[s.out.message_id][0] - s.end)
        for s in ok
        if s.out.kind == "new" and s.out.message_id in seen.acks
    ]
    reply_lat = [
        max(0.0, seen.done[s.out.message_id][0] - s.end)
        for s in ok
        if s.out.kind == "reply" and s.out.message_id in seen.done
    ]
    done_lat = [
        max(0.0, seen.done[s.out.message_id][0] - s.end)
        for s in ok
        if s.out.message_id in seen.done
    ]
    accept = [s.end - s.start for s in ok]
    late = [s.start - s.due for s in recs if s.due is not None]
    mix = mix_of(recs)
    res: dict[str, Any] = {
        "mix": mix,
        "offered_rate": args.rate,
        "achieved_rate": round(len(recs) / (last - start), 1),
        "smtp_transaction": dist(accept),
        "accept_to_ack_new": dist(ack_lat),
        "accept_to_done_reply": dist(reply_lat),
        "accept_to_done_all": dist(done_lat),
        "missing_acks": sum(s.out.kind == "new" and s.out.message_id not in seen.acks for s in ok),
        "start_late_over_20ms": sum(x > 0.02 for x in late),
        "start_late_max_ms": round(max(late, default=0) * 1000, 1),
        "all_processed": finished is not None,
        "cpu_seconds": cpu_delta(cpu0, cpu1),
        "errors": dict(Counter(s.error for s in recs if s.error)),
    }
    print(
        f"  mix: {mix['new']} new, {mix['replies_tagged']} tagged + "
        f"{mix['replies_in_reply_to_only']} In-Reply-To-only replies, "
        f"{mix['with_attachment']} with attachment; offered {res['achieved_rate']} msg/s, "
        f"{res['start_late_over_20ms']} sends started >20 ms late "
        f"(max {res['start_late_max_ms']} ms)"
    )
    if mix["refused"]:
        print(f"  REFUSED: {mix['refused']}: {res['errors']}")
    print(f"  SMTP transaction (MAIL..250):  {fmt_dist(res['smtp_transaction'])}")
    print(f"  accept-to-ack (new requests):  {fmt_dist(res['accept_to_ack_new'])}")
    print(f"  accept-to-done (replies):      {fmt_dist(res['accept_to_done_reply'])}")
    print(f"  accept-to-done (all):          {fmt_dist(res['accept_to_done_all'])}")
    if res["missing_acks"]:
        print(f"  MISSING acks: {res['missing_acks']}")
    print("  CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in res["cpu_seconds"].items()))
    return res


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Throughput and accept-to-ack latency of maild over SMTP, on 127.0.0.1."
    )
    p.add_argument("--messages", "-n", type=int, default=2000, help="phase 1 size (2000)")
    p.add_argument("--rate", type=float, default=50.0, help="phase 2 offered msg/s (50)")
    p.add_argument("--duration", type=float, default=20.0, help="phase 2 seconds (20)")
    p.add_argument("--connections", type=int, default=8, help="concurrent SMTP sessions (8)")
    p.add_argument(
        "--config",
        default=str(REPO / "config.toml"),
        help="config to copy for the throw-away daemon (storage, ports and outbound are "
        "replaced); with --smtp, only read for the desk address and tag",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="[pipeline] workers (default: the config's)"
    )
    p.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key of the throw-away daemon's config (repeatable), "
        "e.g. --set pipeline.batch_size=8",
    )
    p.add_argument(
        "--launcher",
        help="run this Python file instead of `-m maild` (experiments: bench/patched_maild.py)",
    )
    p.add_argument("--smtp", help="HOST:PORT of a running daemon (needs --db-url)")
    p.add_argument("--db-url", help="its [storage] url, read-only (needs --smtp)")
    p.add_argument("--phases", default="throughput,latency", help="which phases, in order")
    p.add_argument("--poll-interval", type=float, default=0.005, help="DB poll period (5 ms)")
    p.add_argument("--seed", type=int, default=1)
    add_alike_share(p)
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the daemon and the pipeline workers with py-spy during each phase",
    )
    p.add_argument(
        "--profile-cpu",
        action="store_true",
        help="with --profile: sample only threads on the CPU (default: wall time, idle too)",
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if bool(args.smtp) != bool(args.db_url):
        p.error("--smtp and --db-url go together")
    if args.smtp:
        host = args.smtp.rpartition(":")[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error("the benchmark only talks to 127.0.0.1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine_facts()
    print(
        f"maild benchmark: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']}, "
        f"Python {facts['python']}, SQLite {facts['sqlite']}, {facts['os']}, git {facts['git']}"
    )
    print(
        f"load average before the run: {facts['loadavg']} (other work on the machine skews "
        "the figures)"
    )
    if args.smtp:
        cfg = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        host, _, port = args.smtp.rpartition(":")
        target = Target(
            host.strip("[]"), int(port), args.db_url, cfg["desk"]["address"], cfg["desk"]["tag"]
        )
        wait_for_smtp(target.smtp_host, target.smtp_port, None, 10)
        print(f"target: running daemon at {args.smtp}, database {args.db_url}")
    else:
        target = start_daemon(args)
        print(
            f"target: maild started by the benchmark (pid {target.proc.pid if target.proc else 0}"
            f", pipeline workers={target.workers}) in {target.workdir}, SMTP "
            f"127.0.0.1:{target.smtp_port}, {target.db_url}"
        )
    results: dict[str, Any] = {"machine": facts, "args": vars(args)}
    results["database"] = "PostgreSQL" if target.db_url.startswith("postgres") else "SQLite"
    ok = True
    code: int | None = None
    try:
        reader = Reader(target.db_url)
        run = uuid.uuid4().hex[:8]
        traffic = Traffic(
            MailFactory(run, target.desk_address, target.tag, args.seed, args.alike_share / 100),
            args.seed,
        )
        poller = Poller(reader, args.poll_interval, traffic.on_ack)
        poller.start()
        try:
            for phase in [p.strip() for p in args.phases.split(",") if p.strip()]:
                if phase == "throughput":
                    results["throughput"] = phase_throughput(args, target, reader, poller, traffic)
                elif phase == "latency":
                    results["latency"] = phase_latency(args, target, reader, poller, traffic)
                else:
                    raise SystemExit(f"unknown phase {phase!r}")
        finally:
            poller.stop.set()
            poller.join()
        checks = check_threading(reader, poller, traffic)
        results["checks"] = checks
        seen = poller.seen
        results["poller"] = {
            "polls": seen.polls,
            "mean_poll_ms": round(1000 * seen.poll_seconds / max(seen.polls, 1), 2),
        }
        print(
            f"\nChecks: {checks['new_requests_with_ticket']}/{checks['new_requests']} new "
            f"requests got a ticket, {checks['replies_on_right_request']} replies on the right "
            f"request, {checks['replies_misthreaded_or_missing']} misthreaded or missing; "
            "inbound "
            + ", ".join(f"{k[8:]} {v}" for k, v in checks.items() if k.startswith("inbound_"))
            + "; outbox "
            + ", ".join(f"{k[7:]} {v}" for k, v in checks.items() if k.startswith("outbox_"))
        )
        print(f"DB poller: {seen.polls} polls, {results['poller']['mean_poll_ms']} ms each")
        ok = (
            checks["replies_misthreaded_or_missing"] == 0
            and checks["new_requests_with_ticket"] == checks["new_requests"]
        )
    finally:
        if target.proc is not None:
            code, took = stop_daemon(target)
            results["daemon_exit"] = code
            print(f"maild stopped with SIGTERM in {took:.2f} s, exit code {code}")
            if code != 0:
                ok = False
            if target.log_path is not None:
                log = target.log_path.read_text(errors="replace").splitlines()
                bad = [ln for ln in log if " ERROR " in ln or "Traceback" in ln]
                warn = [ln for ln in log if " WARNING " in ln]
                print(f"daemon log: {len(log)} lines, {len(bad)} errors, {len(warn)} warnings")
                for ln in (bad + warn)[:5]:
                    print("   ", ln[:200])
    summary = summarize(results)
    print("\nSUMMARY: " + summary)
    results["summary"] = summary
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if target.workdir is not None:
        if args.keep or not ok:
            print(f"kept {target.workdir}")
        else:
            shutil.rmtree(target.workdir, ignore_errors=True)
    met = results.get("met_targets", True)
    return 0 if ok and (met or not args.check) else 1


def summarize(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [f"{m['nproc']} CPUs, Python {m['python']}, {results.get('database', 'SQLite')}"]
    met = True
    tp = results.get("throughput")
    if tp:
        rate = tp["end_to_end_rate"]
        met &= bool(rate and rate >= TARGET_RATE)
        parts.append(
            f"{tp['mix']['accepted']} msgs end to end {rate} msg/s "
            f"(accept only {tp['accept_rate']} msg/s)"
        )
    lat = results.get("latency")
    if lat:
        d = lat["accept_to_ack_new"]
        met &= bool(d["p99_ms"] < TARGET_P99_MS) and lat["missing_acks"] == 0
        parts.append(
            f"at {lat['offered_rate']:g} msg/s accept-to-ack p50 {d['p50_ms']} ms, "
            f"p99 {d['p99_ms']} ms, max {d['max_ms']} ms"
        )
    results["met_targets"] = met
    verdict = "targets met" if met else "target MISSED"
    return "; ".join(parts) + f" [{verdict}: >= {TARGET_RATE:g} msg/s, p99 < {TARGET_P99_MS:g} ms]"


if __name__ == "__main__":
    sys.exit(main())
