"""APScheduler 3.x inside `maild run`: every sweep as a coalesced job with one instance."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from maild.config import Config
from maild.core.clock import Clock, system_clock
from maild.scheduler.jobs import SWEEPS, Sweep
from maild.store.db import Database

log = logging.getLogger(__name__)

INTERVAL = 60.0


class SweepScheduler:
    """Runs the sweeps in a thread each, one at a time, and wakes the outbox when they queued.

    State lives in the rows (survey_sent_at, reminded_at...), never in the scheduler: a
    restart or a second instance neither loses nor repeats a mail.
    """

    def __init__(
        self,
        db: Database,
        config: Config,
        clock: Clock,
        on_outbox: Callable[[], None] | None = None,
        interval: float = INTERVAL,
        sweeps: tuple[tuple[str, Sweep], ...] = SWEEPS,
    ) -> None:
        self.db, self.config, self.clock = db, config, clock
        self.on_outbox = on_outbox
        self.interval = interval
        self.sweeps = sweeps
        self.scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()  # one sweep at a time; stop() waits for the one in hand
        self._stopping = False
        self._tasks: set[asyncio.Future[None]] = set()

    def start(self) -> None:
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        now = system_clock()  # APScheduler keeps real time; the sweeps read self.clock
        for name, sweep in self.sweeps:
            self.scheduler.add_job(
                self._run,
                "interval",
                args=(name, sweep),
                id=name,
                name=f"sweep-{name}",
                seconds=self.interval,
                next_run_time=now,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        self.scheduler.start()
        log.info("scheduler: %d sweeps every %.0f s", len(self.sweeps), self.interval)

    async def _run(self, name: str, sweep: Sweep) -> None:
        """The APScheduler job. Its shutdown cancels job tasks, so the sweep runs in a task of
        our own that stop() waits for: a transaction in hand is never abandoned."""
        task = asyncio.ensure_future(self._sweep(name, sweep))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(asyncio.CancelledError):  # shutdown; stop() awaits the task
            await asyncio.shield(task)

    async def _sweep(self, name: str, sweep: Sweep) -> None:
        async with self._lock:
            if self._stopping:  # queued behind the lock when stop() came
                return
            try:
                done = await asyncio.to_thread(sweep, self.db, self.config, self.clock())
            except Exception:  # a failing sweep is logged and tried again next time
                log.exception("sweep %s failed", name)
                return
        if done:
            log.info("sweep %s: %d request(s)", name, done)
            if self.on_outbox is not None:
                self.on_outbox()

    async def stop(self) -> None:
        self._stopping = True
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._tasks:  # let a sweep in hand finish its transaction
            await asyncio.gather(*self._tasks, return_exceptions=True)
