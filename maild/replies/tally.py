"""What this transaction knows of the outbox and the undeliverable marks, kept on its session.

The circuit breaker counts a request's mail and an address's automatic mail of the last hour
several times for one inbound message (the acknowledgement, the agents' notification). Each
count is read from the database once per transaction, as the rows themselves (a handful: the
breaker keeps them few); what this transaction queues afterwards is added here, so a later
count is the database's as this transaction would read it again. A request this transaction
created has no outbox rows but those it queued, so it is never read at all. Likewise, an
address whose undeliverable mark this transaction lifted (it wrote to us) stays deliverable
until this transaction marks it again: the acknowledgement to it is not checked again.

Forgotten at commit and at any rollback (a savepoint's too): the next count reads again.
On SQLite nobody else writes meanwhile (one writer). On PostgreSQL the pipeline and the sweeps
queue a request's mail holding its row (FOR UPDATE), so no other worker adds to its count
meanwhile; an address's count over all requests was never locked against another worker's
(two could each find room for one more), before or now. Read once per transaction, that
count can miss another worker's mail for the length of a slice (pipeline.runner's
SLICE_SECONDS, 0.1 s) where it once missed it for a statement: the race is as wide as before
at worst (about the limit per worker), only more likely.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import Session

from maild.core.clock import as_utc
from maild.store.direct import Statement
from maild.store.models import Outbox

_KEY = "maild_tally"
_EVER = datetime.min.replace(tzinfo=UTC)

# Compiled once: the rows behind the breaker's two counts.
_ON_REQUEST = Statement(
    select(Outbox.rate_key, Outbox.created_at).where(
        Outbox.ticket_id == bindparam("ticket"), Outbox.created_at >= bindparam("since")
    )
)
_TO_ADDRESS = Statement(
    select(Outbox.created_at).where(
        Outbox.rate_key == bindparam("key"), Outbox.created_at >= bindparam("since")
    )
)


@dataclass
class _Read:
    """Outbox rows as read from the database: those created at ``since`` or later, and the
    number of rows this transaction had queued by then (those are among them)."""

    since: datetime
    mark: int
    rows: list[tuple[str | None, datetime]]


@dataclass
class Tally:
    queued: list[tuple[int | None, str | None, datetime]] = field(default_factory=list)
    requests: dict[int, _Read] = field(default_factory=dict)
    addresses: dict[str, _Read] = field(default_factory=dict)
    cleared: set[str] = field(default_factory=set)  # no undeliverable mark: lifted here


def tally(session: Session) -> Tally:
    found = session.info.get(_KEY)
    if not isinstance(found, Tally):
        found = session.info[_KEY] = Tally()
    return found


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    session.info.pop(_KEY, None)


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, _previous: Any) -> None:
    session.info.pop(_KEY, None)


def queued(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Outbox rows this transaction has just inserted."""
    t = tally(session)
    t.queued += [(r["ticket_id"], r["rate_key"], as_utc(r["created_at"])) for r in rows]


def created(session: Session, ticket_id: int) -> None:
    """A request this transaction created: no mail about it but what this transaction queues."""
    tally(session).requests[ticket_id] = _Read(_EVER, 0, [])


def _read(session: Session, found: dict[Any, _Read], key: Any, since: datetime, read: Any) -> _Read:
    """What was read for ``key`` from ``since`` or earlier, else read now."""
    known = found.get(key)
    if known is None or since < known.since:
        rows = [(k, as_utc(at)) for k, at in read()]
        known = found[key] = _Read(since, len(tally(session).queued), rows)
    return known


def on_request(session: Session, ticket_id: int, since: datetime) -> Counter[str | None]:
    """The mails about a request queued at ``since`` or later, by rate key."""
    since = as_utc(since)

    def read() -> Iterable[Any]:
        params = {"ticket": ticket_id, "since": since}
        return _ON_REQUEST.all(session, params)

    known = _read(session, tally(session).requests, ticket_id, since, read)
    counts = Counter(k for k, at in known.rows if at >= since)
    later = tally(session).queued[known.mark :]
    counts.update(k for t, k, at in later if t == ticket_id and at >= since)
    return counts


def to_address(session: Session, address: str, since: datetime) -> int:
    """The automatic mails to ``address`` (its rate key) queued at ``since`` or later."""
    since, key = as_utc(since), address.lower()

    def read() -> Iterable[Any]:
        return [(key, at) for at in _TO_ADDRESS.scalars(session, {"key": key, "since": since})]

    known = _read(session, tally(session).addresses, key, since, read)
    later = tally(session).queued[known.mark :]
    return sum(at >= since for _, at in known.rows) + sum(
        k == key and at >= since for _, k, at in later
    )
