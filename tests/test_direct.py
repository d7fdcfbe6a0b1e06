"""maild.store.direct: hot statements on the driver's cursor give what SQLAlchemy gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError

from maild.core.clock import as_utc
from maild.store.db import Database
from maild.store.direct import Statement
from maild.store.models import Inbound

INBOUND: Table = Inbound.__table__  # type: ignore[assignment]
AT = datetime(2026, 12, 3, 9, 30, 0, tzinfo=UTC)  # no microseconds: SQLAlchemy still writes them


def _row(n: int, **extra: Any) -> dict[str, Any]:
    row = {
        "received_at": AT,
        "source": "smtp",
        "envelope_from": f"c{n}@example.org",
        "recipients": "help@desk.example",
        "digest": f"d{n}",
        "message_id": f"<{n}@example.org>",
        "size": 3,
        "raw": b"abc",
        "state": "pending",
        "attempts": 0,
    }
    return {**row, **extra}


_READ = select(INBOUND.c.digest, INBOUND.c.received_at, INBOUND.c.raw, INBOUND.c.state).where(
    INBOUND.c.digest == bindparam("digest")
)


def _stored(db: Database, digest: str) -> tuple[Any, ...]:
    """The row as the database keeps it (text, not converted), to compare both writers."""
    with db.engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT CAST(received_at AS TEXT), raw, state, attempts, size FROM inbound "
            f"WHERE digest = '{digest}'"
        ).one()
    return tuple(found)


def test_a_row_written_directly_is_stored_as_sqlalchemy_stores_it(db: Database) -> None:
    direct = Statement(insert(INBOUND))
    with db.write() as s:
        s.connection().execute(insert(INBOUND), _row(1))
        assert direct.execute(s, _row(2)) == 1
    assert _stored(db, "d1") == _stored(db, "d2")
    if db.is_sqlite:  # SQLAlchemy's own text form of a date, microseconds and all
        assert _stored(db, "d2")[0] == "2026-12-03 09:30:00.000000"


def test_rows_read_directly_are_converted_by_the_column_types(db: Database) -> None:
    with db.write() as s:
        Statement(insert(INBOUND)).executemany(s, [_row(1), _row(2)])
        core = s.connection().execute(_READ, {"digest": "d1"}).one()
        direct = Statement(_READ)
        assert direct.first(s, {"digest": "d1"}) == tuple(core)
        got = direct.first(s, {"digest": "d2"})
        assert got is not None and as_utc(got[1]) == AT and got[2] == b"abc"
        assert direct.first(s, {"digest": "none"}) is None
        assert direct.scalar(s, {"digest": "none"}) is None
        assert Statement(select(INBOUND.c.digest).order_by(INBOUND.c.id)).scalars(s) == [
            "d1",
            "d2",
        ]


def test_returning_and_rowcount(db: Database) -> None:
    with db.write() as s:
        ident = Statement(insert(INBOUND).returning(INBOUND.c.id)).scalar(s, _row(1))
        assert isinstance(ident, int)
        claim = Statement(
            update(INBOUND)
            .where(INBOUND.c.id == bindparam("ident"), INBOUND.c.state == "pending")
            .values(state="done")
        )
        assert claim.execute(s, {"ident": ident}) == 1
        assert claim.execute(s, {"ident": ident}) == 0  # no longer pending: nothing changed


def test_a_column_default_is_filled_in_when_the_key_is_left_out(db: Database) -> None:
    row = _row(1)
    del row["state"], row["attempts"], row["recipients"]
    with db.write() as s:
        Statement(insert(INBOUND)).execute(s, row)
    assert _stored(db, "d1")[2:4] == ("pending", 0)


def test_an_expanding_list_is_left_to_sqlalchemy(db: Database) -> None:
    stmt = Statement(
        select(INBOUND.c.digest)
        .where(INBOUND.c.digest.in_(bindparam("digests", expanding=True)))
        .order_by(INBOUND.c.digest)
    )
    with db.write() as s:
        Statement(insert(INBOUND)).executemany(s, [_row(n) for n in range(4)])
        assert stmt.scalars(s, {"digests": ["d3", "d1", "zz"]}) == ["d1", "d3"]


def test_a_driver_error_is_sqlalchemys_error_and_rolls_back(db: Database) -> None:
    direct = Statement(insert(INBOUND))
    with pytest.raises(IntegrityError), db.write() as s:
        direct.execute(s, _row(1))
        direct.execute(s, _row(1))  # the same digest twice: a unique key
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM inbound").scalar() == 0


def test_listeners_hear_every_statement(db: Database) -> None:
    heard: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        heard.append(statement.split()[0])

    event.listen(db.engine, "before_cursor_execute", listen)
    with db.write() as s:
        Statement(insert(INBOUND)).execute(s, _row(1))
        Statement(_READ).all(s, {"digest": "d1"})
    assert heard.count("INSERT") == 1 and heard.count("SELECT") == 1


def test_a_constant_list_is_rendered_once_and_run_directly(db: Database) -> None:
    stmt = Statement(
        select(INBOUND.c.digest)
        .where(INBOUND.c.state.in_(("done", "quarantined")), INBOUND.c.size > bindparam("size"))
        .order_by(INBOUND.c.digest)
    )
    rows = [_row(1, state="done"), _row(2), _row(3, state="quarantined"), _row(4, size=0)]
    rows[3]["state"] = "done"
    with db.write() as s:
        Statement(insert(INBOUND)).executemany(s, rows)
        assert stmt.scalars(s, {"size": 1}) == ["d1", "d3"]
        plan = stmt._plan(s.connection().dialect, ("size",))
    assert "POSTCOMPILE" not in plan.sql and plan.sql.count("IN (") == 1


def test_a_read_keeps_the_statements_postgresql_has_prepared(db: Database) -> None:
    """psycopg prepares a statement run five times on a connection, and forgets them all at
    a ROLLBACK: a read (Database.read) ends with COMMIT, so they stay for the next batch."""
    if db.is_sqlite:
        pytest.skip("prepared statements of the server: PostgreSQL")
    read = Statement(_READ)

    def prepared(s: Any) -> int:
        found = s.connection().exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
        return int(found.scalar())

    with db.read() as s:
        for _ in range(6):
            read.all(s, {"digest": "d1"})
        assert prepared(s) >= 1
    with db.read() as s:  # the same connection, back from the pool
        assert prepared(s) >= 1
    with db.session() as s:  # a session closed with ROLLBACK
        s.connection().exec_driver_sql("SELECT 1")
    with db.read() as s:
        assert prepared(s) == 0
