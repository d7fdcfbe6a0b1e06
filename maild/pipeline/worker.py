"""The pipeline's own loop: in a worker process (the default, the second core) or a thread."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from maild.config import Config
from maild.core.errors import TemporaryFailure
from maild.ingest.accept import open_queue
from maild.pipeline.poison import SLOTS, InHand, in_hand, mark, process_cpu
from maild.pipeline.runner import Pipeline, drain
from maild.store.db import Database

log = logging.getLogger(__name__)

WAKE, OUTBOX = b"w", b"o"


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


def send_nowait(conn: Connection, signal_byte: bytes) -> bool:
    """Send a one-byte signal on a non-blocking pipe; False when the pipe is full.

    A full pipe means the other side has plenty of signals waiting to be read, so one more
    adds nothing; blocking here instead is how the daemon and a busy worker could wait for
    each other forever. (A write this small to a pipe is atomic: all of it or none.)
    """
    try:
        conn.send_bytes(signal_byte)
    except BlockingIOError:
        return False
    return True


def _process_main(
    config: Config,
    inbox: Connection,
    outbox: Connection,
    quit_event: Any,
    in_hand: Any,
    log_level: int,
    shard: tuple[int, int],
) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.set_blocking(outbox.fileno(), False)
    db = Database(config.storage_url)
    queue = open_queue(db)

    def wait(timeout: float) -> bool:
        """Wait for a wake-up (or ``timeout``); read every signal that is waiting."""
        if inbox.poll(timeout):
            while inbox.poll(0):
                inbox.recv_bytes()
            return True
        return False

    def processed(_n: int) -> None:
        wait(0)  # keep the pipe from the daemon empty while a long backlog is worked through
        send_nowait(outbox, OUTBOX)

    try:
        pipeline = Pipeline(config, db, queue=queue, shard=shard)

        pipeline.careful = int(in_hand[2])

        def hold(kind: int, ident: int) -> None:
            mark(in_hand, kind, ident, time.process_time())
            in_hand[2] = pipeline.careful

        pipeline.in_hand = hold
        serve(pipeline, wait, quit_event.is_set, processed)
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        queue.dispose()
        db.dispose()


class ProcessWorker:
    """Runs ``serve`` in a child process; the parent wakes it and hears about new outbox mail.

    Two one-way pipes carry one-byte signals, written without blocking on either side; the
    request to stop is an Event, so it never waits behind a full pipe.
    """

    def __init__(
        self, config: Config, shard: tuple[int, int] = (0, 1), *, careful: int = 0
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        child_inbox, self._to_child = ctx.Pipe(duplex=False)
        self._from_child, child_outbox = ctx.Pipe(duplex=False)
        os.set_blocking(self._to_child.fileno(), False)
        self.quit = ctx.Event()
        # What the worker has in hand (kind, queue id), how many more messages it takes one at a
        # time (Pipeline.careful) and its clocks when it took it (maild.pipeline.poison), in
        # shared memory: readable while it is stuck and after it died.
        self.in_hand = ctx.Array("q", SLOTS, lock=False)
        self.in_hand[2] = careful
        self.gone = False  # its pipe reached EOF: it died (or is stopping)
        self._gone_logged = False
        self.proc = ctx.Process(
            target=_process_main,
            name=f"maild-pipeline-{shard[0]}",
            args=(
                config,
                child_inbox,
                child_outbox,
                self.quit,
                self.in_hand,
                logging.getLogger().level,
                shard,
            ),
            daemon=True,
        )
        self.proc.start()
        child_inbox.close()
        child_outbox.close()

    def last_in_hand(self) -> tuple[int, int, bool]:
        """(kind, id) of the message the worker was on (see Pipeline.in_hand), (0, 0) if none,
        and whether it was then taking messages one at a time."""
        return int(self.in_hand[0]), int(self.in_hand[1]), int(self.in_hand[2]) > 0

    def holding(self) -> InHand:
        """The message in hand now and the CPU seconds the worker has spent on it."""
        pid = self.proc.pid
        return in_hand(self.in_hand, process_cpu(pid) if pid is not None else None)

    def wake(self) -> None:
        try:
            send_nowait(self._to_child, WAKE)
        except OSError:
            if not self._gone_logged:  # once: the supervisor replaces it within seconds
                self._gone_logged = True
                log.error("pipeline worker is gone (exit code %s)", self.proc.exitcode)

    def fileno(self) -> int:
        """The pipe the worker signals on (for the event loop's add_reader)."""
        return self._from_child.fileno()

    def read_events(self) -> bool:
        """Drain signals from the child; True when new outbox mail may be waiting."""
        outbox = False
        try:
            while self._from_child.poll(0):
                outbox |= self._from_child.recv_bytes() == OUTBOX
        except (EOFError, OSError):
            self.gone = True
            return False
        return outbox

    def stop(self, timeout: float = 30.0) -> bool:
        """Ask it to stop; kill it after ``timeout``. True when it had to be killed."""
        self.ask_to_stop()
        self.proc.join(timeout)
        killed = self.proc.is_alive()
        if killed:
            # It ignores SIGTERM (the parent decides when it stops); kill -9 is safe: every
            # batch is one transaction and the queue keeps a message until it is committed.
            log.error("pipeline worker did not stop in %.0f s; killing it", timeout)
            self.kill()
        self._to_child.close()
        self._from_child.close()
        return killed

    def ask_to_stop(self) -> None:
        self.quit.set()
        with contextlib.suppress(OSError):
            send_nowait(self._to_child, WAKE)  # out of its wait at once

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)


class ThreadWorker:
    """The same loop in a thread of this process (``[pipeline] workers = 0``, tests)."""

    def __init__(self, pipeline: Pipeline, on_outbox: Callable[[], None]) -> None:
        self.event = threading.Event()
        self.quit = threading.Event()
        self.on_outbox = on_outbox
        self.in_hand = [0] * SLOTS  # as ProcessWorker.in_hand, for the budget check
        # The thread's CPU clock, taken by the thread itself: the kernel answers for it (an
        # error once the thread is gone), never a pthread handle that may be freed.
        self.cpu_clock: int | None = None

        def hold(kind: int, ident: int) -> None:
            if self.cpu_clock is None:
                self.cpu_clock = time.pthread_getcpuclockid(threading.get_ident())
            mark(self.in_hand, kind, ident, time.thread_time())

        pipeline.in_hand = hold
        pipeline.halted = self.quit.is_set

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

    def holding(self) -> InHand:
        """The message in hand now and the CPU seconds this thread has spent on it."""
        if self.cpu_clock is None:
            return InHand(0, 0, 0.0)  # it has not taken a message yet
        try:
            cpu = time.clock_gettime(self.cpu_clock)
        except OSError:  # the thread has ended
            return InHand(0, 0, 0.0)
        return in_hand(self.in_hand, cpu)

    def wake(self) -> None:
        self.event.set()

    def abandon(self) -> None:
        """Stop after the message in hand, which cannot be interrupted; leave the rest."""
        self.quit.set()
        self.event.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.abandon()
        self.thread.join(timeout)
