"""`maild backup DEST`: a consistent copy of the SQLite database and its spool, while it runs.

SQLite's online backup API copies a snapshot page by page; readers and writers carry on (WAL).
The spool is copied first and the database second: a message the pipeline moves from the spool
into the database in between is then in both copies (the import absorbs it by its digest),
whereas the other order could miss it in both.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from maild.ingest.spool import spool_path
from maild.store.db import sqlite_path

log = logging.getLogger(__name__)


class BackupError(Exception):
    """The backup could not be made; the message says why in one line."""


@dataclass(frozen=True)
class BackupResult:
    database: Path
    spool: Path | None


def targets(storage_url: str, dest: Path) -> tuple[Path, Path, Path | None]:
    """(source database, destination database, destination spool or None)."""
    if not storage_url.startswith("sqlite"):
        raise BackupError(
            "the database is PostgreSQL: back it up with pg_dump "
            "(e.g. pg_dump -Fc -f maild.dump DBNAME); maild backup copies SQLite only"
        )
    source = sqlite_path(storage_url)
    if source is None or not source.exists():
        raise BackupError(f"no SQLite database at {source}")
    target = dest / source.name if dest.is_dir() else dest
    spool = spool_path(storage_url)
    spool_target = target.with_name(target.name + ".spool") if spool and spool.exists() else None
    return source, target, spool_target


def copy_sqlite(source: Path, target: Path) -> None:
    """Online backup of ``source`` into ``target`` (replaced atomically), checked afterwards."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        ok = dst.execute("PRAGMA integrity_check").fetchone()
        if not ok or ok[0] != "ok":
            raise BackupError(f"the copy of {source} failed its integrity check: {ok}")
    finally:
        dst.close()
        src.close()
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, target)


def backup(storage_url: str, dest: Path) -> BackupResult:
    source, target, spool_target = targets(storage_url, dest)
    if spool_target is not None:
        spool = spool_path(storage_url)
        assert spool is not None
        copy_sqlite(spool, spool_target)  # first: see the module's docstring
    copy_sqlite(source, target)
    log.info("backup: %s -> %s", source, target)
    return BackupResult(target, spool_target)
