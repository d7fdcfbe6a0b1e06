"""Every real-world message of ../shared/corpus goes through maild without a crash.

Each one ends stored and processed (`done`: a request, or unattached noise), quarantined with
a reason, or refused at the door by store_raw (empty, not a mail). Run with `-s` to see the
summary printed for the closing note.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CORPUS
from sqlalchemy import select

from maild.config import Config
from maild.core.errors import RejectedMessage
from maild.ingest.accept import store_raw
from maild.pipeline.runner import Pipeline
from maild.store.db import Database
from maild.store.models import Inbound

BODIES_ONLY = "zapier-email-reply-parser-BODIES"  # reply bodies, not whole messages
BATCH = 50
MAILD = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "maild"
ENDLESS = "mailgun-flanker/tests__fixtures__messages__enclosed-endless.eml"

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus folder {CORPUS} is missing (set MAILD_CORPUS to point at it)")
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and BODIES_ONLY not in p.parts and p.name != "README.md"
    )


@dataclass
class Outcome:
    stored: dict[int, Path]
    rejected: dict[Path, str]
    states: dict[Path, tuple[str, str | None]]

    def summary(self) -> str:
        counts = Counter(state for state, _ in self.states.values())
        reasons = Counter(_reason_kind(err or "") for s, err in self.states.values() if s != "done")
        refused = Counter(self.rejected.values())
        lines = [
            f"corpus: {len(self.stored) + len(self.rejected)} files, "
            f"done {counts['done']}, quarantined {counts['quarantined']}, "
            f"rejected by store_raw {len(self.rejected)}"
        ]
        lines += [f"  quarantined x{n}: {r}" for r, n in reasons.most_common()]
        lines += [f"  rejected x{n}: {r}" for r, n in refused.most_common()]
        return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    """Group reasons that differ only in figures ("header is 209869 bytes, ...")."""
    return " ".join("N" if word.strip("(),").isdigit() else word for word in reason.split())


def _run_corpus(config: Config, db: Database) -> Outcome:
    stored: dict[int, Path] = {}
    rejected: dict[Path, str] = {}
    for path in corpus_files():
        try:
            stored[store_raw(db, path.read_bytes(), source="corpus").ident] = path
        except RejectedMessage as exc:
            rejected[path] = str(exc)
    pipeline = Pipeline(config, db)
    ids = list(stored)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        pipeline.process(ids=chunk, limit=len(chunk))
    with db.session() as s:
        rows = s.execute(select(Inbound.id, Inbound.state, Inbound.error)).all()
    states = {stored[i]: (state, error) for i, state, error in rows}
    return Outcome(stored, rejected, states)


@sqlite_only
def test_every_corpus_message_is_stored_or_quarantined_or_refused(
    config: Config, db: Database
) -> None:
    started = time.monotonic()
    outcome = _run_corpus(config, db)
    print(f"\n{outcome.summary()}\n  ({time.monotonic() - started:.1f} s)")
    assert len(outcome.stored) + len(outcome.rejected) > 300
    assert set(outcome.states) == set(outcome.stored.values())
    for path, (state, error) in outcome.states.items():
        assert state in ("done", "quarantined"), f"{path.name} left {state}"
        if state == "quarantined":
            assert error and error.strip(), f"{path.name} quarantined without a reason"
            assert "failed:" not in error, f"{path.name}: a step crashed: {error}"
        else:
            assert error is None, f"{path.name}: done but error {error!r}"
    # The only refusals are input that can never be a mail; the 0-byte file is one.
    for path, reason in outcome.rejected.items():
        assert reason == "empty message" or reason.startswith("not a mail"), (path, reason)
    empty = [p for p in outcome.rejected if p.stat().st_size == 0]
    assert empty and all(outcome.rejected[p] == "empty message" for p in empty)
    # Most of the corpus is ordinary mail: it must be processed, not quarantined.
    done = sum(1 for state, _ in outcome.states.values() if state == "done")
    assert done >= 0.95 * len(outcome.states)


@sqlite_only
def test_flanker_3043_parts_quarantined_by_part_limit(config: Config, db: Database) -> None:
    path = CORPUS / ENDLESS
    if not path.exists():
        pytest.skip(f"{ENDLESS} not in the corpus")
    started = time.monotonic()
    inbound_id = store_raw(db, path.read_bytes(), source="corpus").ident
    Pipeline(config, db).process(ids=[inbound_id])
    elapsed = time.monotonic() - started
    with db.session() as s:
        row = s.get(Inbound, inbound_id)
        assert row is not None
        assert row.state == "quarantined"
        assert row.error == "too many MIME parts (3043 > 1000)"
    assert elapsed < 2.0, f"took {elapsed:.2f} s: the limit must act before MIME parsing"


# A varied set for the real `maild deliver` pipe: charsets, DSNs, ARF, HTML-only, big
# attachments, broken MIME, a header over the limit, and input that is no mail at all.
DELIVER_SAMPLE = [
    ("django-helpdesk/tests__test_files__utf-nondecodable.eml", 0),
    ("mailgun-flanker/tests__fixtures__messages__bounce__office365.eml", 0),
    ("mailgun-flanker/tests__fixtures__messages__complaints__aol.eml", 0),
    ("mailgun-flanker/tests__fixtures__messages__long-header.eml", 0),
    ("mailgun-flanker/tests__fixtures__messages__mailformed-headers.eml", 0),
    ("mailgun-flanker/tests__fixtures__messages__dkim__email.01", 65),
    ("mailgun-talon/tests__fixtures__standard_replies__iphone.eml", 0),
    ("mailgun-talon/tests__fixtures__standard_replies__thunderbird.eml", 0),
    ("mikel-mail/spec__fixtures__emails__multi_charset__japanese_shift_jis.eml", 0),
    ("mikel-mail/spec__fixtures__emails__error_emails__must_supply_encoding.eml", 0),
    ("mikel-mail/spec__fixtures__emails__rfc6532__utf8_headers.eml", 0),
    ("mimekit/UnitTests__TestData__messages__delivery-status2.txt", 0),
    ("mimekit/UnitTests__TestData__messages__stack-overflow.txt", 0),
    ("nodemailer-mailparser/test__fixtures__htmllargecallstack.eml", 0),
    ("nodemailer-mailparser/test__fixtures__large_text.eml", 0),
    ("php-mime-mail-parser/tests__mails__m0004", 0),
    ("php-mime-mail-parser/tests__mails__m0018", 0),
    ("spamscope-mail-parser/tests__mails__mail_malformed_3", 0),
    ("spamscope-mail-parser/tests__mails__mail_outlook_1", 65),
    ("zbateson-mail-mime-parser/tests___data__emails__m0021.txt", 0),
    ("zbateson-mail-mime-parser/tests___data__emails__m2004.txt", 0),
]


def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[desk]
name = "Corpus Desk"
address = "support@example.com"
tag = "Support"
language = "en"
[storage]
url = "sqlite:///{tmp_path / "deliver.db"}"
[smtp]
max_message_size = 26214400
[outbound]
url = "maildir:{tmp_path / "outbox"}"
from = "support@example.com"
[security]
secret_key = "corpus-deliver-secret-key"
"""
    )
    return path


def _deliver(config: Path, path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(MAILD), "--config", str(config), "deliver", "-f", "sender@example.org"],
        input=path.read_bytes(),
        capture_output=True,
        timeout=120,
    )


def test_deliver_subprocess_on_varied_corpus_files(tmp_path: Path) -> None:
    corpus_files()  # skips when the corpus is missing
    config = _write_config(tmp_path)
    missing = [name for name, _ in DELIVER_SAMPLE if not (CORPUS / name).exists()]
    assert not missing, f"sample files gone from the corpus: {missing}"
    init = subprocess.run([str(MAILD), "--config", str(config), "init"], capture_output=True)
    assert init.returncode == 0, init.stderr
    # Several at once, as an MTA runs its pipe transport.
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda item: _deliver(config, CORPUS / item[0]), DELIVER_SAMPLE))
    failures = []
    for (name, expected), proc in zip(DELIVER_SAMPLE, procs, strict=True):
        if proc.returncode != expected:
            failures.append((name, proc.returncode, proc.stderr.decode(errors="replace")[-500:]))
        elif expected == 65:
            assert proc.stderr.count(b"\n") == 1 and b"rejected" in proc.stderr, proc.stderr
    assert not failures, failures
    db = Database(f"sqlite:///{tmp_path / 'deliver.db'}")
    try:
        with db.session() as s:
            states = Counter(s.scalars(select(Inbound.state)))
    finally:
        db.dispose()
    stored = sum(1 for _, code in DELIVER_SAMPLE if code == 0)
    assert sum(states.values()) == stored
    assert states["pending"] == 0, states  # deliver processed what it stored
    print(f"\ndeliver sample: {dict(states)}")
