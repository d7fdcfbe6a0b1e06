"""Claiming due requests one transaction each, so two sweepers never do the same work."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from maild.store.db import Database
from maild.store.models import Ticket

log = logging.getLogger(__name__)

BATCH = 200

# Does the work for one claimed request inside its transaction; True when it did something.
Action = Callable[[Session, Ticket], bool]


def locked(stmt: Select[Any], db: Database) -> Select[Any]:
    """PostgreSQL: lock the row, skipping one another sweeper holds. SQLite: BEGIN IMMEDIATE
    has already serialised all writers, so the re-checked condition is enough."""
    return stmt if db.is_sqlite else stmt.with_for_update(skip_locked=True)


def claim(session: Session, db: Database, ticket_id: int, where: Sequence[Any]) -> Ticket | None:
    """The request, locked, if it still matches ``where`` now that we are in the transaction."""
    stmt = select(Ticket).where(Ticket.id == ticket_id, *where)
    return session.scalar(locked(stmt, db))


def _due(db: Database, where: Sequence[ColumnElement[bool]], after: int) -> list[Ticket]:
    stmt = select(Ticket).where(Ticket.id > after, *where).order_by(Ticket.id).limit(BATCH)
    with db.session() as s:
        return list(s.scalars(stmt))


def _one(db: Database, name: str, ticket_id: int, where: Sequence[Any], action: Action) -> bool:
    try:
        with db.write() as s:
            ticket = claim(s, db, ticket_id, where)
            return ticket is not None and action(s, ticket)
    except DBAPIError:
        raise  # the database is in trouble: stop this sweep, the next run tries again
    except Exception:  # one broken request (a bad address, a template error) must not stop us
        log.exception("sweep %s: request #%d failed, will retry next run", name, ticket_id)
        return False


def for_each_due(
    db: Database,
    name: str,
    where: Sequence[ColumnElement[bool]],
    action: Action,
    ready: Callable[[Ticket], bool] | None = None,
) -> int:
    """Run ``action`` on every request matching ``where`` (and ``ready``, a check in Python on
    an unlocked copy, so that nothing is locked for requests that are not due); returns how
    many it acted on."""
    done, after = 0, 0
    while True:
        rows = _due(db, where, after)
        ids = [t.id for t in rows if ready is None or ready(t)]
        done += sum(_one(db, name, tid, where, action) for tid in ids)
        if len(rows) < BATCH:
            return done
        after = rows[-1].id
