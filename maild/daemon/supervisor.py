"""The pipeline workers, watched: started, replaced when they die, held to their budget.

A mixin of :class:`maild.daemon.Daemon`: the daemon owns the workers, the queue and the
config; this part decides what happens to a worker and to the message it had in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from maild.config import Config
from maild.core.clock import Clock
from maild.ingest.queue import InboundQueue
from maild.pipeline.poison import over_budget_reason
from maild.pipeline.runner import Pipeline
from maild.pipeline.worker import ProcessWorker, ThreadWorker
from maild.replies.sender import OutboxSender
from maild.store.db import Database

log = logging.getLogger("maild.daemon")

SUPERVISE_SECONDS = 2.0  # how often the daemon checks its pipeline workers (alive, in budget)
POISON_DEATHS = 3  # a message careful workers died on this many times goes to quarantine
STOP_SECONDS = 20.0  # at most this long for a worker to finish at stop (SIGTERM: exit in 30 s)
CAREFUL_MESSAGES = 64  # after a death, the successor takes this many messages one at a time


class Supervision:
    """The daemon's pipeline workers and what it does when one dies or overruns."""

    config: Config
    clock: Clock
    db: Database
    queue: InboundQueue
    sender: OutboxSender
    workers: list[ProcessWorker | ThreadWorker]
    _supervisor: asyncio.Task[None] | None
    _abandoned: list[ThreadWorker]
    _check_workers: asyncio.Event
    _closing: bool
    _workers_lock: asyncio.Lock

    def _wake_pipeline(self) -> None:
        for worker in self.workers:
            worker.wake()

    def _start_workers(self) -> None:
        count = self.config.pipeline.workers
        if count == 0:
            self.workers.append(self._thread_worker())
        else:
            self.workers.extend(self._spawn(index, count) for index in range(count))
        self._supervisor = asyncio.create_task(self._supervise(count), name="supervisor")

    def _thread_worker(self) -> ThreadWorker:
        loop = asyncio.get_running_loop()

        def on_outbox() -> None:
            loop.call_soon_threadsafe(self.sender.wake.set)

        pipeline = Pipeline(self.config, self.db, clock=self.clock, queue=self.queue)
        return ThreadWorker(pipeline, on_outbox)

    def _spawn(self, index: int, count: int, careful: int = 0) -> ProcessWorker:
        worker = ProcessWorker(self.config, (index, count), careful=careful)
        loop = asyncio.get_running_loop()

        def on_events() -> None:
            if worker.read_events():
                self.sender.wake.set()
            if worker.gone:  # EOF: it died; stop watching its pipe, replace it now
                loop.remove_reader(worker.fileno())
                self._check_workers.set()

        loop.add_reader(worker.fileno(), on_events)
        return worker

    async def _supervise(self, count: int) -> None:
        """Start a pipeline worker again when it dies: its share of the mail would wait.

        It ends when ``_closing`` is set, not by cancellation: on Python 3.11 ``wait_for``
        can swallow a cancel that meets the event it waits for (a worker dying of the same
        SIGTERM), and the supervisor would then start new workers while the daemon stops.
        """
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_workers.wait(), SUPERVISE_SECONDS)
            self._check_workers.clear()
            async with self._workers_lock:
                await self._check_all(count)

    async def _check_all(self, count: int) -> None:
        for index in range(len(self.workers)):
            if self._closing:
                break
            try:
                await self._check(index, count)
            except Exception:  # the supervisor never dies: try again at the next check
                log.exception("could not check pipeline worker %d", index + 1)

    async def _check(self, index: int, count: int) -> None:
        worker = self.workers[index]
        if isinstance(worker, ProcessWorker) and (worker.gone or not worker.proc.is_alive()):
            await self._replace_dead(index, count)
            return
        held = worker.holding()
        budget = self.config.limits.message_seconds
        if held.kind and held.seconds > budget:
            await self._over_budget(index, count, held.ident)

    async def _over_budget(self, index: int, count: int, ident: int) -> None:
        """The message in hand had more than ``[limits] message_seconds``: to quarantine, and
        its worker is replaced. A thread (``workers = 0``) cannot be interrupted: its message
        is quarantined all the same (its result is then dropped), a new thread takes over the
        queue, and the old one stops once it is through with that message."""
        worker = self.workers[index]
        reason = over_budget_reason(self.config.limits.message_seconds)
        what = self.queue.prefix
        if isinstance(worker, ThreadWorker):
            log.error(
                "pipeline: message %s%d: %s; a new pipeline thread takes over (the old one,"
                " which cannot be interrupted, stops when it is through with it; use"
                " [pipeline] workers >= 1 where hostile mail can arrive)",
                what,
                ident,
                reason,
            )
            worker.abandon()
            self._abandoned.append(worker)
            self.workers[index] = self._thread_worker()
        else:
            log.error(
                "pipeline worker %d: message %s%d: %s; replacing it",
                index + 1,
                what,
                ident,
                reason,
            )
            asyncio.get_running_loop().remove_reader(worker.fileno())
            await asyncio.to_thread(worker.kill)
        if await asyncio.to_thread(self.queue.quarantine, ident, reason, self.clock()):
            log.error("message %s%d quarantined: %s", what, ident, reason)
        if isinstance(worker, ProcessWorker):
            self.workers[index] = self._spawn(index, count)
            self.workers[index].wake()
            await asyncio.to_thread(worker.stop, 1.0)  # reap it and close its pipes

    async def _replace_dead(self, index: int, count: int) -> None:
        """Replace dead worker ``index``.

        A worker that died with a message in hand is followed by one that takes messages one
        at a time for a while (CAREFUL_MESSAGES), so a death then names its message for sure;
        a message such careful workers died on POISON_DEATHS times (a crash no ``except``
        catches: a segfault, the OOM killer) goes to quarantine, or the worker would die on it
        again and again and its share of the queue would never move.
        """
        worker = self.workers[index]
        assert isinstance(worker, ProcessWorker)
        await asyncio.to_thread(worker.proc.join, 1.0)
        kind, ident, careful = worker.last_in_hand()
        log.error(
            "pipeline worker %d of %d died (exit code %s)%s; starting it again",
            index + 1,
            count,
            worker.proc.exitcode,
            f" on message {self.queue.prefix}{ident}" if kind else "",
        )
        asyncio.get_running_loop().remove_reader(worker.fileno())
        if kind and careful:
            await asyncio.to_thread(self._count_death, ident)
        self.workers[index] = self._spawn(index, count, CAREFUL_MESSAGES if kind else 0)
        self.workers[index].wake()
        await asyncio.to_thread(worker.stop, 1.0)  # reap it and close its pipes

    def _count_death(self, ident: int) -> None:
        """One more death on this message, counted in its queue row (a restart of the whole
        daemon keeps it); at POISON_DEATHS the message goes to quarantine."""
        deaths = self.queue.attempt(ident)
        if deaths >= POISON_DEATHS:
            reason = f"the pipeline worker died {deaths} times on this message"
            if self.queue.quarantine(ident, reason, self.clock()):
                log.error("message %s%d quarantined: %s", self.queue.prefix, ident, reason)

    async def _stop_worker(self, worker: ProcessWorker | ThreadWorker) -> None:
        """Let a worker finish its batch, for STOP_SECONDS at most (less when its message is
        over the budget). Killed with a message in hand, that message is quarantined if it
        was over the budget, else the attempt is counted: a restart does not start it afresh."""
        if isinstance(worker, ThreadWorker):
            await asyncio.to_thread(worker.stop, STOP_SECONDS)  # a daemon thread: exit anyway
            return
        budget = self.config.limits.message_seconds
        worker.ask_to_stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_SECONDS
        held = worker.holding()
        while worker.proc.is_alive() and loop.time() < deadline and held.seconds <= budget:
            await asyncio.to_thread(worker.proc.join, 0.5)
            held = worker.holding() if worker.proc.is_alive() else held
        killed = worker.proc.is_alive()
        if killed:
            log.error("pipeline worker still busy at stop; killing it")
            await asyncio.to_thread(worker.kill)
        await asyncio.to_thread(worker.stop, 0)  # reaped: closes its pipes
        if not killed or not held.kind:
            return
        try:
            if held.seconds > budget:
                reason = over_budget_reason(budget)
                args = (held.ident, reason, self.clock())
                if await asyncio.to_thread(self.queue.quarantine, *args):
                    log.error("message %s%d quarantined: %s", self.queue.prefix, held.ident, reason)
            else:
                await asyncio.to_thread(self._count_death, held.ident)
        except Exception as exc:  # stopping goes on: the message is still waiting, not lost
            log.error("could not record the message a stopped worker was on: %s", exc)
