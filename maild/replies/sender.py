"""The outbox sender: leases due mail, delivers it, records each outcome at once, backs off.

Each mail's outcome is committed as soon as it is known, and the final DATA of one mail and
the commit of its outcome happen one mail at a time (see HandOff): a kill -9 while sending
leaves at most one mail delivered but not recorded, which the next start sends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError, OperationalError

from maild.core.clock import Clock, system_clock
from maild.core.errors import TemporaryFailure
from maild.replies import leases
from maild.replies.leases import Attempt, Claimed, claim_due, lease_for, record
from maild.replies.transport import HandOff, SendError, Transport
from maild.store.db import Database

log = logging.getLogger(__name__)

DEFAULT_LEASE = lease_for(30.0)
POLL_SECONDS = 5.0  # without a wake-up, the sender looks for due mail this often
PROBE_SECONDS = 15.0  # while the relay is unreachable, it is asked this often if it is back
_DB_ERRORS = (OperationalError, DBAPIError)


def db_error_text(exc: BaseException) -> str:
    """The first line of a database error, for a one-line log entry."""
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200] if text.strip() else type(exc).__name__


class OutboxSender:
    def __init__(
        self,
        db: Database,
        transport: Transport,
        *,
        max_attempts: int = 30,
        batch: int = 50,
        concurrency: int = 8,
        lease: timedelta = DEFAULT_LEASE,
        clock: Clock = system_clock,
    ) -> None:
        self.db = db
        self.concurrency = concurrency
        self.transport = transport
        self.max_attempts = max_attempts
        self.batch = batch
        self.lease = lease
        self.clock = clock
        self.wake = asyncio.Event()
        self.instance = leases.new_instance()
        self._registered = False
        self._beat_at = datetime.min.replace(tzinfo=UTC)
        self._in_hand: set[int] = set()
        self._unrecorded: list[Attempt] = []  # delivered, but the database would not take it
        self._relay_down = True  # the first delivery after a start retries what waited
        self.probe_every = PROBE_SECONDS
        self._probed_at = 0.0

    async def send_due(self, now: datetime | None = None) -> int:
        """Deliver every mail due at ``now``; returns how many were attempted."""
        at = now or self.clock()
        if self._unrecorded:
            await self._record(self._unrecorded[:], at, raise_errors=True)
        items = await asyncio.to_thread(
            claim_due, self.db, at, self.batch, self.instance, self.lease
        )
        if not items:
            return 0
        self._in_hand.update(i.id for i in items)
        renewer = asyncio.create_task(self._renew_while_sending())
        try:
            outcomes = await self._deliver(items, at)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        await self._after_outcomes(outcomes, at)
        return len(items)

    async def _deliver(self, items: Sequence[Claimed], at: datetime) -> list[Attempt]:
        many = getattr(self.transport, "send_many", None)
        if many is not None:  # a local Maildir: one thread hop for the batch, then one commit
            errors = await many([(i.envelope_from, i.recipients, i.raw) for i in items])
            attempts: list[Attempt] = [(i, e, None) for i, e in zip(items, errors, strict=True)]
            await self._record(attempts, at)
            return attempts
        gate = asyncio.Semaphore(self.concurrency)
        handoff = asyncio.Lock()
        return list(await asyncio.gather(*(self._attempt(i, gate, handoff, at) for i in items)))

    async def _attempt(
        self, item: Claimed, gate: asyncio.Semaphore, lock: asyncio.Lock, at: datetime
    ) -> Attempt:
        async with gate:
            handoff = HandOff(lock)
            try:
                outcome = await self._send_one(item, handoff)
                await self._record([outcome], at)
            finally:
                handoff.release()
            return outcome

    async def _send_one(self, item: Claimed, handoff: HandOff) -> Attempt:
        try:
            warning = await self.transport.send(
                item.envelope_from, item.recipients, item.raw, handoff
            )
        except SendError as exc:
            return item, exc, None
        except Exception as exc:  # never lose the other outcomes of the batch
            log.exception("outbox: mail %d: unexpected error", item.id)
            return item, SendError(f"{type(exc).__name__}: {exc}", permanent=False), None
        return item, None, warning

    async def _record(
        self, attempts: list[Attempt], at: datetime, *, raise_errors: bool = False
    ) -> None:
        """Commit outcomes now; if the database is away, keep them and try again later."""
        later = max(at, self.clock())
        try:
            states = await asyncio.to_thread(record, self.db, attempts, later, self.max_attempts)
        except _DB_ERRORS as exc:
            fresh = [a for a in attempts if a not in self._unrecorded]
            self._unrecorded.extend(fresh)
            if raise_errors:
                raise
            log.warning(
                "outbox: %d outcome(s) not recorded yet: %s", len(fresh), db_error_text(exc)
            )
            return
        for attempt in attempts:
            self._in_hand.discard(attempt[0].id)
            if attempt in self._unrecorded:
                self._unrecorded.remove(attempt)
        for (item, error, _), state in zip(attempts, states, strict=True):
            if error is not None:
                what = "failed" if state == "failed" else "deferred"
                log.warning("outbox: mail %d %s: %s", item.id, what, error)

    async def _after_outcomes(self, outcomes: Sequence[Attempt], at: datetime) -> None:
        """The relay was unreachable and a delivery just worked: retry what waited, now."""
        if any(err is not None and err.unreachable for _, err, _ in outcomes):
            self._relay_down = True
        elif self._relay_down and any(err is None for _, err, _ in outcomes):
            await self._relay_back(max(at, self.clock()))

    async def _relay_back(self, now: datetime) -> None:
        self._relay_down = False
        due = await asyncio.to_thread(leases.retry_now, self.db, now)
        if due:
            log.info("outbox: the relay takes mail again: %d waiting mail(s) go now", due)
            self.wake.set()

    async def _probe(self) -> None:
        """While the relay is unreachable, ask it now and then (no mail, no attempt counted)
        whether it is back, so waiting mail goes at once even when no new mail comes."""
        probe = getattr(self.transport, "probe", None)
        loop = asyncio.get_running_loop()
        if (
            not self._relay_down
            or probe is None
            or loop.time() - self._probed_at < self.probe_every
        ):
            return
        self._probed_at = loop.time()
        if await probe():
            await self._relay_back(self.clock())

    async def _renew_while_sending(self) -> None:
        every = self.lease.total_seconds() / 4
        while True:
            await asyncio.sleep(every)
            try:
                ids = sorted(self._in_hand)
                await asyncio.to_thread(
                    leases.renew, self.db, self.instance, ids, self.clock(), self.lease
                )
            except _DB_ERRORS as exc:
                log.warning("outbox: could not renew leases: %s", db_error_text(exc))

    async def _register(self) -> None:
        """Once: record this sender and free the leases of senders that are gone; then a
        heartbeat now and then, also while idle, so that others never take it for gone."""
        now = self.clock()
        if not self._registered:
            await asyncio.to_thread(leases.register, self.db, self.instance, now, self.lease)
            self._registered = True
            self._beat_at = now
        elif now - self._beat_at >= self.lease / 4:
            await asyncio.to_thread(leases.renew, self.db, self.instance, [], now, self.lease)
            self._beat_at = now

    async def run(self, stopping: asyncio.Event) -> None:
        """Send until ``stopping`` is set; woken early by ``wake``, else every POLL_SECONDS.

        The wake-up flag is cleared before looking for mail, so a wake-up that arrives while
        a batch is being sent starts the next look at once.
        """
        try:
            while not stopping.is_set():
                self.wake.clear()
                sent = await self._round()
                if sent >= self.batch:
                    continue
                await self._probe_safely()
                with contextlib.suppress(TimeoutError):
                    wait = min(POLL_SECONDS, self.probe_every) if self._relay_down else POLL_SECONDS
                    await asyncio.wait_for(self.wake.wait(), timeout=wait)
        finally:
            if self._registered:
                with contextlib.suppress(*_DB_ERRORS):
                    await asyncio.to_thread(leases.retire, self.db, self.instance)

    async def _probe_safely(self) -> None:
        try:
            await self._probe()
        except _DB_ERRORS as exc:
            log.warning("outbox: database unavailable, will retry: %s", db_error_text(exc))

    async def _round(self) -> int:
        try:
            await self._register()
            return await self.send_due()
        except TemporaryFailure as exc:
            log.warning("outbox: temporary failure, will retry: %s", exc)
        except _DB_ERRORS as exc:  # one line: an outage is expected, its traceback is not
            log.warning("outbox: database unavailable, will retry: %s", db_error_text(exc))
        except Exception:  # one broad except: the sender never dies
            log.exception("outbox: unexpected error")
        return 0
