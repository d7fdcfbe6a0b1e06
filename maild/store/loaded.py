"""ORM objects without a query: the one the session holds already, or one built from a row
the caller read itself (maild.store.direct), as if a query had loaded it."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import Session, configure_mappers, make_transient_to_detached

from maild.store.models import Base

_Model = TypeVar("_Model", bound=Base)


def in_session(session: Session, cls: type[_Model], ident: int) -> _Model | None:
    """The object of primary key ``ident`` if ``session`` holds it already (no SQL)."""
    found = session.identity_map.get(cls.__mapper__.identity_key_from_primary_key((ident,)))
    assert found is None or isinstance(found, cls)
    return found


def attached(session: Session, cls: type[_Model], values: dict[str, Any]) -> _Model:
    """An object of ``values`` (every column) in ``session`` as if a query had loaded it: no
    SQL, no change to flush; what it does not have (relationships) loads when asked for."""
    configure_mappers()  # as the first query or constructor would (a no-op once done)
    obj = cls.__mapper__.class_manager.new_instance()
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    session.add(obj)
    return obj
