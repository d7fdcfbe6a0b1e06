"""The pipeline's own loop: in a worker process (the default, the second core) or a thread."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from maild.config import Config
from maild.errors import TemporaryFailure
from maild.ingest.spool import Spool
from maild.pipeline.runner import Pipeline, drain
from maild.store.db import Database

log = logging.getLogger(__name__)

WAKE, OUTBOX, QUIT = b"w", b"o", b"q"


def serve(
    pipeline: Pipeline,
    wait: Callable[[float], bool],
    stopping: Callable[[], bool],
    processed: Callable[[int], None],
) -> None:
    """Drain pending mail, then wait to be woken (or 1 s); retry after temporary failures."""
    delay = 1.0
    while not stopping():
        try:
            drain(pipeline, stopping, processed)
            delay = 1.0
        except TemporaryFailure as exc:
            log.error("pipeline: %s; retrying in %.0f s", exc, delay)
            wait(delay)
            delay = min(delay * 2, 60.0)
            continue
        except Exception:  # the loop never dies; the message-level except is in the runner
            log.exception("pipeline: unexpected error")
            wait(delay)
            continue
        wait(1.0)


def _process_main(config: Config, conn: Connection, log_level: int, shard: tuple[int, int]) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db = Database(config.storage_url)
    spool = Spool.for_storage(config.storage_url)
    quit_flag = threading.Event()

    def wait(timeout: float) -> bool:
        if conn.poll(timeout):
            while conn.poll(0):
                if conn.recv_bytes() == QUIT:
                    quit_flag.set()
            return True
        return False

    def processed(_n: int) -> None:
        conn.send_bytes(OUTBOX)

    try:
        pipeline = Pipeline(config, db, spool=spool, shard=shard)
        serve(pipeline, wait, quit_flag.is_set, processed)
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        db.dispose()
        if spool is not None:
            spool.dispose()


class ProcessWorker:
    """Runs ``serve`` in a child process; the parent wakes it and hears about new outbox mail."""

    def __init__(self, config: Config, shard: tuple[int, int] = (0, 1)) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_process_main,
            name=f"maild-pipeline-{shard[0]}",
            args=(config, child, logging.getLogger().level, shard),
            daemon=True,
        )
        self.proc.start()
        child.close()

    def wake(self) -> None:
        try:
            self.conn.send_bytes(WAKE)
        except (BrokenPipeError, OSError):
            log.error("pipeline worker is gone (exit code %s)", self.proc.exitcode)

    def fileno(self) -> int:
        return self.conn.fileno()

    def read_events(self) -> bool:
        """Drain messages from the child; True when new outbox mail may be waiting."""
        outbox = False
        try:
            while self.conn.poll(0):
                outbox |= self.conn.recv_bytes() == OUTBOX
        except (EOFError, OSError):
            return False
        return outbox

    def stop(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(OSError):
            self.conn.send_bytes(QUIT)
        self.proc.join(timeout)
        if self.proc.is_alive():
            log.error("pipeline worker did not stop in %.0f s; terminating", timeout)
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


class ThreadWorker:
    """The same loop in a thread of this process (``[pipeline] workers = 0``, tests)."""

    def __init__(self, pipeline: Pipeline, on_outbox: Callable[[], None]) -> None:
        self.event = threading.Event()
        self.quit = threading.Event()
        self.on_outbox = on_outbox

        def wait(timeout: float) -> bool:
            woke = self.event.wait(timeout)
            self.event.clear()
            return woke

        self.thread = threading.Thread(
            target=serve,
            name="maild-pipeline",
            daemon=True,
            args=(pipeline, wait, self.quit.is_set, lambda _n: self.on_outbox()),
        )
        self.thread.start()

    def wake(self) -> None:
        self.event.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.quit.set()
        self.event.set()
        self.thread.join(timeout)
