"""Wires the sources, the pipeline worker, the outbox sender and the web side into one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

from aiohttp import web

from maild.clock import Clock, system_clock
from maild.config import Config
from maild.errors import CannotListen
from maild.ingest.accept import Acceptor
from maild.ingest.smtp import Handler, start_server, start_unix_server
from maild.ingest.smtp_guard import smtp_guard
from maild.ingest.spool import Spool, import_spool
from maild.ops.metrics import Metrics
from maild.ops.reload import reread
from maild.ops.service import Watchdog, notify, reloading
from maild.pipeline.poison import count_attempt, over_budget_reason
from maild.pipeline.runner import INBOUND, MAX_BATCH_BYTES, Pipeline, quarantine_in_hand
from maild.pipeline.worker import ProcessWorker, ThreadWorker
from maild.replies.leases import lease_for
from maild.replies.sender import OutboxSender
from maild.replies.transport import transport_from_config
from maild.scheduler.digest import sweep_digest
from maild.scheduler.jobs import SWEEPS
from maild.scheduler.runner import SweepScheduler
from maild.store.db import Database
from maild.store.migrate import upgrade
from maild.web import board
from maild.web.app import start_web

log = logging.getLogger(__name__)

SUPERVISE_SECONDS = 2.0  # how often the daemon checks its pipeline workers (alive, in budget)
POISON_DEATHS = 3  # a message careful workers died on this many times goes to quarantine
STOP_SECONDS = 20.0  # at most this long for a worker to finish at stop (SIGTERM: exit in 30 s)
CAREFUL_MESSAGES = 64  # after a death, the successor takes this many messages one at a time
T = TypeVar("T")
DAEMON_SWEEPS = (*SWEEPS, ("digest", sweep_digest))  # `maild digest` runs the last one alone


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


async def _listen(key: str, address: str, opening: Awaitable[T]) -> T:
    """Bind a listener; a busy or forbidden address is a CannotListen naming ``key``."""
    try:
        return await opening
    except OSError as exc:
        raise CannotListen(key, address, exc) from exc


class Daemon:
    def __init__(self, config: Config, *, clock: Clock = system_clock) -> None:
        self.config = config
        self.clock = clock
        self.db = Database(config.storage_url)
        self.stopping = asyncio.Event()
        self.workers: list[ProcessWorker | ThreadWorker] = []
        self.servers: list[asyncio.Server] = []
        self.handlers: list[Handler] = []
        self.imap_sources: list[Any] = []
        self.web: web.AppRunner | None = None
        self.scheduler: SweepScheduler | None = None
        self.sender = OutboxSender(
            self.db,
            transport_from_config(config.outbound),
            max_attempts=config.outbound.max_attempts,
            lease=lease_for(config.outbound.timeout),
            clock=clock,
        )
        # SQLite: SMTP/LMTP commit into a spool file of their own (see maild/ingest/spool.py).
        self.spool = Spool.for_storage(config.storage_url)
        self.acceptor = Acceptor(
            self.db, spool=self.spool, on_stored=self._wake_pipeline, clock=clock
        )
        self.metrics = Metrics(self.db, [self.spool] if self.spool is not None else [])
        self._sender_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._abandoned: list[ThreadWorker] = []  # over budget, finishing in the background
        self._check_workers = asyncio.Event()  # set when a worker's pipe reaches EOF
        self._closing = False  # stop() has begun: the supervisor starts no more workers
        self._workers_lock = asyncio.Lock()  # the supervisor and a reload take turns

    def _wake_pipeline(self) -> None:
        for worker in self.workers:
            worker.wake()

    @property
    def smtp_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

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

        pipeline = Pipeline(self.config, self.db, clock=self.clock, spool=self.spool)
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
            await self._over_budget(index, count, held.kind, held.ident)

    async def _over_budget(self, index: int, count: int, kind: int, ident: int) -> None:
        """The message in hand had more than ``[limits] message_seconds``: to quarantine, and
        its worker is replaced. A thread (``workers = 0``) cannot be interrupted: its message
        is quarantined all the same (its result is then dropped), a new thread takes over the
        queue, and the old one stops once it is through with that message."""
        worker = self.workers[index]
        reason = over_budget_reason(self.config.limits.message_seconds)
        what = "spooled" if kind != INBOUND else "inbound"
        if isinstance(worker, ThreadWorker):
            log.error(
                "pipeline: %s message %d: %s; a new pipeline thread takes over (the old one,"
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
                "pipeline worker %d: %s message %d: %s; replacing it",
                index + 1,
                what,
                ident,
                reason,
            )
            asyncio.get_running_loop().remove_reader(worker.fileno())
            await asyncio.to_thread(worker.kill)
        done = await asyncio.to_thread(
            quarantine_in_hand, self.db, self.spool, kind, ident, reason, self.clock()
        )
        if done:
            log.error("%s message %d quarantined: %s", what, ident, reason)
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
        what = "spooled" if kind != INBOUND else "inbound"
        log.error(
            "pipeline worker %d of %d died (exit code %s)%s; starting it again",
            index + 1,
            count,
            worker.proc.exitcode,
            f" on {what} message {ident}" if kind else "",
        )
        asyncio.get_running_loop().remove_reader(worker.fileno())
        if kind and careful:
            await asyncio.to_thread(self._count_death, kind, ident)
        self.workers[index] = self._spawn(index, count, CAREFUL_MESSAGES if kind else 0)
        self.workers[index].wake()
        await asyncio.to_thread(worker.stop, 1.0)  # reap it and close its pipes

    def _count_death(self, kind: int, ident: int) -> None:
        """One more death on this message, counted in ``inbound.attempts`` (a restart of the
        whole daemon keeps it); at POISON_DEATHS the message goes to quarantine."""
        iid, deaths = count_attempt(self.db, self.spool, kind, ident)
        if iid and deaths >= POISON_DEATHS:
            reason = f"the pipeline worker died {deaths} times on this message"
            if quarantine_in_hand(self.db, self.spool, INBOUND, iid, reason, self.clock()):
                log.error("inbound message %d quarantined: %s", iid, reason)

    async def start(self) -> None:
        await asyncio.to_thread(upgrade, self.db)
        self._start_workers()
        host, port = split_hostport(self.config.smtp.listen)
        handler = Handler(
            self.acceptor,
            max_size=self.config.smtp.max_message_size,
            max_recipients=self.config.smtp.max_recipients,
        )
        handler.on_reply = self.metrics.mail_reply
        self.handlers.append(handler)
        guard = smtp_guard(self.config)
        self.servers.append(
            await _listen(
                "smtp.listen",
                self.config.smtp.listen,
                start_server(handler, host, port, hostname=socket.getfqdn(), guard=guard),
            )
        )
        await self._start_lmtp()
        self._start_imap()
        self._sender_task = asyncio.create_task(self.sender.run(self.stopping), name="outbox")
        whost, wport = split_hostport(self.config.web.listen)
        self.web = await _listen(
            "web.listen",
            self.config.web.listen,
            start_web(
                self.db,
                whost,
                wport,
                self.config,
                self.clock,
                self.sender.wake.set,
                spool=self.spool,
                metrics=self.metrics,
            ),
        )
        self.scheduler = SweepScheduler(
            self.db, self.config, self.clock, self.sender.wake.set, sweeps=DAEMON_SWEEPS
        )
        self.scheduler.start()
        self._wake_pipeline()  # accepted before a crash, not yet processed
        log.info(
            "maild ready: smtp on %s:%d, web on %s, outbound %s",
            host,
            self.smtp_port,
            self.config.web.listen,
            self.config.outbound.url.split("@")[-1],
        )

    def _start_imap(self) -> None:
        from maild.ingest.imap import ImapSource

        loop = asyncio.get_running_loop()

        def on_stored() -> None:
            loop.call_soon_threadsafe(self._wake_pipeline)

        for cfg in self.config.imap:
            source = ImapSource(cfg, self.db, on_stored)
            source.start()
            self.imap_sources.append(source)

    async def _start_lmtp(self) -> None:
        listen = self.config.lmtp_listen
        if listen is None:
            return
        handler = Handler(
            self.acceptor,
            source="lmtp",
            max_size=self.config.smtp.max_message_size,
            max_recipients=self.config.smtp.max_recipients,
        )
        handler.on_reply = self.metrics.mail_reply
        self.handlers.append(handler)
        guard = replace(smtp_guard(self.config), peers=None)  # the operator's own MTA
        if listen.startswith("/"):
            opening = start_unix_server(handler, listen, hostname=socket.getfqdn(), guard=guard)
        else:
            host, port = split_hostport(listen)
            opening = start_server(
                handler, host, port, hostname=socket.getfqdn(), lmtp=True, guard=guard
            )
        self.servers.append(await _listen("lmtp.listen", listen, opening))
        log.info("lmtp on %s", listen)

    @property
    def web_port(self) -> int:
        assert self.web is not None
        return int(self.web.addresses[0][1])

    @property
    def lmtp_port(self) -> int:
        return int(self.servers[1].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        log.info("maild stopping: finishing messages in hand")
        self._closing = True
        if self._supervisor is not None and not self._supervisor.done():
            self._check_workers.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._supervisor), 10.0)
            except TimeoutError:  # busy replacing a worker for too long: stop it the hard way
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._supervisor
        if self.scheduler is not None:
            await self.scheduler.stop()
        for server in self.servers:
            server.close()
        for source in self.imap_sources:
            await asyncio.to_thread(source.stop)
        await self._finish_sessions()
        await self.acceptor.close()  # stores what was handed in; later DATA gets a 451
        await self._finish_sessions()  # and the replies to those are written
        for worker in self.workers:
            if isinstance(worker, ProcessWorker):
                with contextlib.suppress(OSError, ValueError):
                    asyncio.get_running_loop().remove_reader(worker.fileno())
        await asyncio.gather(*(self._stop_worker(w) for w in self.workers))
        if self.spool is not None:
            await asyncio.to_thread(self._empty_spool, self.spool)
        self.stopping.set()
        self.sender.wake.set()
        if self._sender_task is not None:
            await self._sender_task
        if self.web is not None:
            await self.web.cleanup()
        self.db.dispose()
        if self.spool is not None:
            self.spool.dispose()
        log.info("maild stopped")

    async def _finish_sessions(self) -> None:
        """Wait until every SMTP/LMTP session that has sent DATA has its reply written."""
        for handler in self.handlers:
            try:
                await asyncio.wait_for(handler.idle.wait(), timeout=30)
            except TimeoutError:
                log.error("gave up waiting for %d SMTP transaction(s)", handler.in_flight)

    async def reload(self) -> bool:
        """SIGHUP: the new config's agents, departments, SLA, hours and templates, at once.

        An invalid file is refused with a log line and the running config stays. Listeners
        stay open (no connection is dropped); the pipeline workers are restarted one at a time
        after the message in hand, so that they run with the new config too.
        """
        new = await asyncio.to_thread(reread, self.config)
        if new is None or self._closing:
            return False
        reloading()
        self.config = new
        if self.scheduler is not None:
            self.scheduler.config = new
        if self.web is not None:
            board.refresh(self.web.app, new)
        async with self._workers_lock:
            for index in range(len(self.workers)):
                if self._closing:
                    break
                try:
                    await self._restart_worker(index)
                except Exception:  # the supervisor starts it again if it is gone
                    log.exception("reload: could not restart pipeline worker %d", index + 1)
        notify("READY=1")
        log.info(
            "reloaded %s: %d agent(s), %d department(s)",
            new.path,
            len(new.agents),
            len(new.departments),
        )
        return True

    async def _restart_worker(self, index: int) -> None:
        old = self.workers[index]
        if isinstance(old, ThreadWorker):
            await asyncio.to_thread(old.stop)
            self.workers[index] = self._thread_worker()
        else:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(old.fileno())
            await asyncio.to_thread(old.stop)
            self.workers[index] = self._spawn(index, len(self.workers))
        self.workers[index].wake()

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
                args = (self.db, self.spool, held.kind, held.ident, reason, self.clock())
                if await asyncio.to_thread(quarantine_in_hand, *args):
                    log.error("%s message %d quarantined: %s", held.what, held.ident, reason)
            else:
                await asyncio.to_thread(self._count_death, held.kind, held.ident)
        except Exception as exc:  # stopping goes on: the message is still waiting, not lost
            log.error("could not record the message a stopped worker was on: %s", exc)

    def _empty_spool(self, spool: Spool) -> None:
        """Move what is still spooled into ``inbound`` (no processing: that waits for the next
        start), so that a stopped desk keeps all its mail in the one database."""
        try:
            while import_spool(self.db, spool, limit=256, max_bytes=MAX_BATCH_BYTES):
                pass
        except Exception as exc:  # it stays in the spool, and the next start imports it
            log.error("could not empty the spool on stop: %s", exc)

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        reloads: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            if self.web is None or self._closing:  # still starting, or stopping
                log.warning("SIGHUP ignored: the daemon is starting or stopping")
                return
            task = asyncio.create_task(self.reload(), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            await self.start()
        except BaseException:
            await self._abandon_start()
            raise
        watchdog = Watchdog()
        watchdog.start()
        notify("READY=1")
        await done.wait()
        notify("STOPPING=1")
        await asyncio.gather(*reloads, return_exceptions=True)
        await self.stop()
        await watchdog.stop()

    async def _abandon_start(self) -> None:
        """Start-up failed (a busy port, say): undo what it began, quietly, so that the process
        can end with the one line that says why."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for server in self.servers:
            server.close()
        for source in self.imap_sources:
            await asyncio.to_thread(source.stop)
        if self.web is not None:
            await self.web.cleanup()
        for worker in self.workers:
            if isinstance(worker, ProcessWorker):
                with contextlib.suppress(OSError, ValueError):
                    asyncio.get_running_loop().remove_reader(worker.fileno())
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.workers))
        if self._sender_task is not None:
            self.stopping.set()
            self.sender.wake.set()
            await self._sender_task
        self.db.dispose()
        if self.spool is not None:
            self.spool.dispose()
