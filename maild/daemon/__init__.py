"""Wires the sources, the pipeline workers, the outbox sender and the web side into one loop.

The workers' supervision is in maild/daemon/supervisor.py, the listeners in
maild/daemon/listeners.py; ``maild.daemon`` keeps every public name.
"""

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

from maild.config import Config
from maild.core.clock import Clock, system_clock
from maild.core.errors import CannotListen
from maild.daemon.supervisor import CAREFUL_MESSAGES as CAREFUL_MESSAGES
from maild.daemon.supervisor import POISON_DEATHS as POISON_DEATHS
from maild.daemon.supervisor import STOP_SECONDS as STOP_SECONDS
from maild.daemon.supervisor import SUPERVISE_SECONDS as SUPERVISE_SECONDS
from maild.daemon.supervisor import Supervision
from maild.ingest.accept import Acceptor, open_queue
from maild.ingest.smtp import Handler, start_server, start_unix_server
from maild.ingest.smtp_guard import smtp_guard
from maild.ops.metrics import Metrics
from maild.ops.reload import reread
from maild.ops.service import Watchdog, notify, reloading
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


class Daemon(Supervision):
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
        # The store's one inbound queue: the spool file on SQLite (maild/ingest/spool.py).
        self.queue = open_queue(self.db)
        self.acceptor = Acceptor(self.queue, on_stored=self._wake_pipeline, clock=clock)
        self.metrics = Metrics(self.db, self.queue)
        self._sender_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._abandoned: list[ThreadWorker] = []  # over budget, finishing in the background
        self._check_workers = asyncio.Event()  # set when a worker's pipe reaches EOF
        self._closing = False  # stop() has begun: the supervisor starts no more workers
        self._workers_lock = asyncio.Lock()  # the supervisor and a reload take turns

    @property
    def smtp_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def start(self) -> None:
        await asyncio.to_thread(upgrade, self.db)
        await asyncio.to_thread(self.queue.adopt)  # what an older version left waiting
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
                queue=self.queue,
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
            source = ImapSource(cfg, self.queue, on_stored)
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
        self.stopping.set()
        self.sender.wake.set()
        if self._sender_task is not None:
            await self._sender_task
        if self.web is not None:
            await self.web.cleanup()
        self.queue.dispose()
        self.db.dispose()
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
        self.queue.dispose()
        self.db.dispose()
