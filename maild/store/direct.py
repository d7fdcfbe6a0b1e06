"""Statements of the hot path, compiled once per database and run on the driver's own cursor.

SQLAlchemy spends about 40 µs of Python on every ``Connection.execute`` of a Core statement
(its compiled cache, parameter processing, a result object); the driver itself needs 2–7 µs.
The pipeline runs some fifteen statements for every message inside the write transaction,
which on SQLite is one writer at a time, so that overhead was most of the time the lock was
held. A :class:`Statement` keeps what SQLAlchemy worked out once per dialect (the SQL text,
the order of its parameters, the type conversions both ways) and then calls the DBAPI cursor
of the session's connection directly, in the same transaction.

Everything else stays SQLAlchemy's: the statement is written with Core, compiled by the
dialect, its values converted by the column types' own processors, a driver error becomes
the same ``sqlalchemy.exc`` error (a lost connection is invalidated as SQLAlchemy would), and
``before_cursor_execute`` listeners still hear every statement. A statement that SQLAlchemy
must still rewrite at execution time (``IN`` with a list the caller gives) or a column default
it computes per execution is simply run by SQLAlchemy.

Left out, as nothing in maild uses them: ``after_cursor_execute`` and ``handle_error``
events, ``echo`` logging of these statements, and invalidating the whole pool (not only this
connection) on a lost connection (PostgreSQL's pool pings every connection it hands out).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Params = Mapping[str, Any]
Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    """One statement as one dialect runs it."""

    sql: str
    names: tuple[str, ...]  # parameter names, in order for a positional paramstyle
    positional: bool
    fixed: Mapping[str, Any]  # values compiled into the statement (a literal, a LIMIT)
    binds: tuple[tuple[str, Processor], ...]  # each name: Python value -> driver value
    results: tuple[Processor, ...]  # driver value -> Python value, by column


_FALLBACK = _Plan("", (), False, {}, (), ())  # run by SQLAlchemy (see the module's doc)


class Statement:
    """A Core statement run straight on the DBAPI cursor (see the module's doc)."""

    def __init__(self, stmt: Executable) -> None:
        self.stmt = stmt
        # By database, driver (its paramstyle) and the parameters given (an INSERT's columns).
        self._plans: dict[tuple[str, str, tuple[str, ...]], _Plan] = {}

    def _plan(self, dialect: Dialect, keys: tuple[str, ...]) -> _Plan:
        key = (dialect.name, dialect.driver, keys)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = _compile(self.stmt, dialect, keys)
        return found

    def execute(self, session: Session | Connection, params: Params | None = None) -> int:
        """Run it once; returns how many rows it changed (the driver's rowcount)."""
        return int(self._run(_connection(session), params or {}, many=False)[0])

    def executemany(self, session: Session | Connection, rows: Sequence[Params]) -> None:
        """Run it once for every row of ``rows`` (which share their keys), as one call."""
        if rows:
            self._run(_connection(session), rows[0], many=True, rows=rows)

    def all(self, session: Session | Connection, params: Params | None = None) -> list[tuple]:
        """Every row, converted by the column types."""
        return self._run(_connection(session), params or {}, many=False, fetch=-1)[1]

    def first(self, session: Session | Connection, params: Params | None = None) -> tuple | None:
        """The first row (the rest are not read), or None."""
        rows = self._run(_connection(session), params or {}, many=False, fetch=1)[1]
        return rows[0] if rows else None

    def scalar(self, session: Session | Connection, params: Params | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.first(session, params)
        return None if row is None else row[0]

    def scalars(self, session: Session | Connection, params: Params | None = None) -> list[Any]:
        """The first column of every row."""
        return [row[0] for row in self.all(session, params)]

    def _run(
        self,
        conn: Connection,
        params: Params,
        *,
        many: bool,
        rows: Sequence[Params] = (),
        fetch: int = 0,
    ) -> tuple[int, list[tuple]]:
        plan = self._plan(conn.dialect, tuple(params))
        if plan is _FALLBACK:
            return _by_sqlalchemy(conn, self.stmt, list(rows) if many else params, fetch)
        assert conn.in_transaction(), "a direct statement runs in the caller's transaction"
        args: Any = [_args(plan, row) for row in rows] if many else _args(plan, params)
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = None
        try:
            cursor = dbapi.cursor()
            for listen in conn.dispatch.before_cursor_execute:
                listen(conn, cursor, plan.sql, args, None, many)
            if many:
                cursor.executemany(plan.sql, args)
            else:
                cursor.execute(plan.sql, args)
            found = _fetch(cursor, plan, fetch) if fetch else []
            count = cursor.rowcount
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _translated(conn, exc, plan.sql, args, cursor) from exc
        finally:
            if cursor is not None:
                cursor.close()
        return count, found


def _connection(session: Session | Connection) -> Connection:
    return session.connection() if isinstance(session, Session) else session


def _args(plan: _Plan, params: Params) -> Any:
    """The driver's parameters: a tuple in order (qmark) or a dict (pyformat), converted."""
    given = {**plan.fixed, **params} if plan.fixed else params
    values = [
        given[name] if convert is None else convert(given[name]) for name, convert in plan.binds
    ]
    return tuple(values) if plan.positional else dict(zip(plan.names, values, strict=True))


def _fetch(cursor: Any, plan: _Plan, fetch: int) -> list[tuple]:
    raw = cursor.fetchall() if fetch < 0 else cursor.fetchmany(fetch)
    if not any(plan.results):
        return [tuple(row) for row in raw]
    return [
        tuple(v if p is None else p(v) for v, p in zip(row, plan.results, strict=True))
        for row in raw
    ]


def _compile(stmt: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan:
    assert isinstance(stmt, ClauseElement)
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler)
    late = compiled.literal_execute_params | compiled.post_compile_params
    if {compiled.bind_names[bind] for bind in late} & set(keys):
        return _FALLBACK  # a list the caller gives (IN): its length changes the SQL
    if compiled.insert_prefetch or compiled.update_prefetch:
        return _FALLBACK  # a column default SQLAlchemy works out per execution
    # The final SQL: what is rendered late is a constant (``status IN ('solved', 'closed')``),
    # rendered now; the caller's parameters get stand-ins, never used.
    state = compiled.construct_expanded_state({key: None for key in keys})
    names = tuple(state.positiontup or ()) if compiled.positional else tuple(state.parameters)
    fixed = {k: v for k, v in state.parameters.items() if k not in keys}
    types = {name: bind.type for bind, name in compiled.bind_names.items()}
    binds = tuple(
        (
            name,
            state.processors.get(name)  # one of a rendered list
            if name not in types
            else dialect.type_descriptor(types[name]).bind_processor(dialect),
        )
        for name in names
    )
    columns = getattr(stmt, "exported_columns", ())
    results = tuple(
        dialect.type_descriptor(col.type).result_processor(dialect, None) for col in columns
    )
    return _Plan(state.statement, names, bool(compiled.positional), fixed, binds, results)


def _by_sqlalchemy(
    conn: Connection, stmt: Executable, params: Any, fetch: int
) -> tuple[int, list[tuple]]:
    result = conn.execute(stmt, params)
    rows = []
    if fetch and result.returns_rows:
        rows = [tuple(r) for r in (result.fetchall() if fetch < 0 else result.fetchmany(fetch))]
    result.close()
    return result.rowcount, rows


def _translated(conn: Connection, exc: Any, sql: str, args: Any, cursor: Any) -> BaseException:
    """The driver's error as SQLAlchemy raises it; a lost connection is invalidated, so the
    pool never hands it out again (what ``Connection.execute`` does)."""
    dialect = conn.dialect
    gone = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if gone:
        conn.invalidate(exc)
    return DBAPIError.instance(
        sql,
        args,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=gone,
        dialect=dialect,
    )
