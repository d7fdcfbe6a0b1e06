"""IMAP source: IDLE on (or poll) a mailbox, commit each message, then move or flag it.

Exactly-once rests on the order of two steps: the inbound queue's ``put`` commits the raw
bytes (a batch at a time), and only then is the message moved to ``processed_folder`` (or
flagged ``\\Seen`` + keyword). A crash between the two leaves the message in the folder; the
next scan stores it again and the store reports a duplicate, so no second request is made.
Every scan searches the whole folder for unprocessed messages rather than trusting a
remembered UID, so a UIDVALIDITY change needs nothing more than a log line: the folder is
simply scanned again.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientError

from maild.core.errors import MaildError, RejectedMessage, TemporaryFailure
from maild.ingest.accept import check_acceptable, put, strip_mbox_line
from maild.ingest.imap_config import REJECTED_KEYWORD, ImapConfig
from maild.ingest.inbound import TableQueue
from maild.ingest.queue import InboundQueue, Incoming
from maild.store.db import Database

log = logging.getLogger(__name__)

SOURCE = "imap"
IDLE_RENEW_SECONDS = 29 * 60
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0
TIMEOUT = SocketTimeout(connect=15, read=60)


class ImapError(MaildError):
    """The IMAP server cannot be used as configured (no STARTTLS, no keywords...)."""


_CONNECTION_ERRORS = (OSError, IMAPClientError, ImapError)


class _Backoff:
    """Exponential back-off from BACKOFF_MIN to BACKOFF_MAX seconds with jitter."""

    def __init__(self) -> None:
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next(self) -> float:
        ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(self.failures, 16))
        self.failures += 1
        return max(BACKOFF_MIN, random.uniform(ceiling / 2, ceiling))


class ImapSource:
    """One mailbox. ``start()`` runs it on a daemon thread; ``run_once()`` drains it inline.

    Use one or the other at a time: the IMAP connection belongs to whichever is running.
    """

    def __init__(
        self, cfg: ImapConfig, queue: InboundQueue | Database, on_stored: Callable[[], None]
    ) -> None:
        self.cfg = cfg
        self._queue = TableQueue(queue) if isinstance(queue, Database) else queue
        self._on_stored = on_stored
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: IMAPClient | None = None
        self._uidvalidity: int | None = None
        self._state = "new"  # new -> up <-> down
        self._db_down = False

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        name = f"imap:{self.cfg.label}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Set the stop flag (IDLE notices within a second), join, then log out."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("IMAP %s: source did not stop within %.0f s", self.cfg.label, timeout)
                return
        self._disconnect()

    def run_once(self) -> int:
        """Connect if needed, store and acknowledge every unprocessed message; return the count."""
        try:
            self._ensure_connected()
            return self._drain()
        except _CONNECTION_ERRORS:
            self._drop()
            raise

    def _run(self) -> None:
        backoff = _Backoff()
        while not self._stop.is_set():
            try:
                self._ensure_connected()
                self._drain()
                self._db_recovered()
                backoff.reset()
                self._wait_for_mail()
            except TemporaryFailure as exc:
                self._db_failed(exc)
                self._stop.wait(backoff.next())
            except _CONNECTION_ERRORS as exc:
                self._connection_lost(exc)
                self._stop.wait(backoff.next())
            except Exception as exc:  # the runner's one broad except: never kill the thread
                self._connection_lost(exc, unexpected=True)
                self._stop.wait(backoff.next())
        self._disconnect()

    def _connection_lost(self, exc: BaseException, *, unexpected: bool = False) -> None:
        self._drop()
        if self._state != "down":
            what = "connection lost" if self._state == "up" else "cannot connect"
            log.log(logging.ERROR if unexpected else logging.WARNING,
                    "IMAP %s: %s (%s: %s); retrying with back-off", self.cfg.label, what,
                    type(exc).__name__, exc, exc_info=unexpected)  # fmt: skip
        self._state = "down"

    def _connected(self) -> None:
        if self.cfg.tls == "none":
            log.warning('IMAP %s: tls = "none": logged in over plaintext', self.cfg.label)
        elif not self.cfg.tls_verify:
            log.warning("IMAP %s: TLS CERTIFICATE VERIFICATION IS OFF (tls_verify = false); "
                        "anyone on the path can read the password", self.cfg.label)  # fmt: skip
        if self._state == "down":
            log.info("IMAP %s: connection is back", self.cfg.label)
        elif self._state == "new":
            log.info("IMAP %s: connected (tls=%s)", self.cfg.label, self.cfg.tls)
        self._state = "up"

    def _db_failed(self, exc: TemporaryFailure) -> None:
        if not self._db_down:
            log.warning("IMAP %s: cannot store (%s); messages stay on the server, retrying",
                        self.cfg.label, exc)  # fmt: skip
        self._db_down = True

    def _db_recovered(self) -> None:
        if self._db_down:
            log.info("IMAP %s: storing again", self.cfg.label)
        self._db_down = False

    def _ensure_connected(self) -> IMAPClient:
        if self._client is None:
            self._client = self._connect()
            self._connected()
        return self._client

    def _connect(self) -> IMAPClient:
        cfg = self.cfg
        context = self._ssl_context() if cfg.tls != "none" else None
        client = IMAPClient(cfg.host, cfg.port, ssl=cfg.tls == "implicit", ssl_context=context,
                            timeout=TIMEOUT)  # fmt: skip
        try:
            if cfg.tls == "starttls":
                _starttls(client, context, cfg.label)
            client.login(cfg.username, cfg.password)
            if cfg.processed_folder and not client.folder_exists(cfg.processed_folder):
                client.create_folder(cfg.processed_folder)
        except BaseException:
            _shutdown(client)
            raise
        return client

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.cfg.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _drop(self) -> None:
        """Forget a broken connection without talking to the server."""
        client, self._client = self._client, None
        if client is not None:
            _shutdown(client)

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except _CONNECTION_ERRORS:
            _shutdown(client)

    def _drain(self) -> int:
        client = self._ensure_connected()
        self._select(client)
        uids = sorted(client.search(self._criteria()))
        size = self.cfg.batch_size
        return sum(
            self._handle_batch(client, uids[i : i + size]) for i in range(0, len(uids), size)
        )

    def _select(self, client: IMAPClient) -> None:
        info = client.select_folder(self.cfg.folder)
        validity = int(info[b"UIDVALIDITY"])
        if self._uidvalidity is not None and validity != self._uidvalidity:
            log.warning("IMAP %s: UIDVALIDITY changed %d -> %d; re-scanning the folder",
                        self.cfg.label, self._uidvalidity, validity)  # fmt: skip
        self._uidvalidity = validity
        _take_exists(client)  # SELECT's own count is not news
        if self.cfg.processed_folder is None:
            allowed = {bytes(f).lower() for f in info.get(b"PERMANENTFLAGS", ())}
            if b"\\*" not in allowed and self.cfg.keyword.encode().lower() not in allowed:
                raise ImapError(f"{self.cfg.folder} does not accept keyword {self.cfg.keyword}; "
                                "set processed_folder instead")  # fmt: skip

    def _criteria(self) -> list[str]:
        skip = ["UNDELETED", "NOT", "KEYWORD", REJECTED_KEYWORD]
        if self.cfg.processed_folder:
            return skip
        return [*skip, "NOT", "KEYWORD", self.cfg.keyword]

    def _handle_batch(self, client: IMAPClient, uids: Sequence[int]) -> int:
        """Commit each message of the batch, then acknowledge the committed ones."""
        fetched = client.fetch(uids, ["BODY.PEEK[]"])
        batch: list[tuple[int, Incoming]] = []
        done: list[int] = []
        rejected: list[int] = []
        new = 0
        for uid in uids:
            raw = fetched.get(uid, {}).get(b"BODY[]")
            if raw is None:  # expunged by someone else meanwhile
                continue
            try:
                raw = strip_mbox_line(raw)
                check_acceptable(raw)
            except RejectedMessage as exc:
                log.warning("IMAP %s: UID %d rejected (%s); flagged %s", self.cfg.label,
                            uid, exc, REJECTED_KEYWORD)  # fmt: skip
                rejected.append(uid)
                continue
            batch.append((uid, Incoming(raw, SOURCE)))
        try:
            # One transaction (one fsync) for the whole batch; nothing is acknowledged before.
            results = put(self._queue, [item for _, item in batch]) if batch else []
            done = [uid for uid, _ in batch]
            new = sum(not r.duplicate for r in results)
        finally:  # on TemporaryFailure only the rejected ones are flagged
            self._acknowledge(client, done, rejected)
            if new:
                self._on_stored()
        return len(done)

    def _acknowledge(self, client: IMAPClient, done: list[int], rejected: list[int]) -> None:
        if rejected:
            client.add_flags(rejected, [REJECTED_KEYWORD])
        if not done:
            return
        target = self.cfg.processed_folder
        if target is None:
            client.add_flags(done, [b"\\Seen", self.cfg.keyword])
        elif client.has_capability("MOVE"):
            client.move(done, target)
        else:
            client.copy(done, target)
            client.add_flags(done, [b"\\Deleted"])
            if client.has_capability("UIDPLUS"):
                client.uid_expunge(done)

    def _wait_for_mail(self) -> None:
        client = self._ensure_connected()
        if _take_exists(client):
            return  # mail arrived during the scan: scan again before waiting
        if self.cfg.idle and client.has_capability("IDLE"):
            self._idle(client)
        else:
            self._stop.wait(self.cfg.poll_seconds)

    def _idle(self, client: IMAPClient) -> None:
        """IDLE until new mail, the stop flag, or poll_seconds (at most the 29-minute renewal).

        Leaving IDLE every poll_seconds for a fresh scan costs one SEARCH and covers a
        notification the server never sent (a message appended between SEARCH and IDLE).
        """
        client.idle()
        deadline = time.monotonic() + min(IDLE_RENEW_SECONDS, self.cfg.poll_seconds)
        quick_empty = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            responses = client.idle_check(timeout=1)
            if _new_mail(responses):
                break
            # idle_check swallows EOF and returns [] at once: a dead socket spins.
            quick = not responses and time.monotonic() - started < 0.5
            quick_empty = quick_empty + 1 if quick else 0
            if quick_empty >= 3:
                raise ImapError("server closed the connection during IDLE")
        client.idle_done()


def _take_exists(client: IMAPClient) -> bool:
    """Pop an EXISTS the server sent along with an earlier command's reply.

    imapclient keeps such unsolicited responses in imaplib's table and IDLE will not repeat
    them, so without this a message arriving mid-scan would wait for the next one.
    """
    pending = getattr(getattr(client, "_imap", None), "untagged_responses", None)
    return bool(isinstance(pending, dict) and pending.pop("EXISTS", None))


def _new_mail(responses: list[Any]) -> bool:
    for response in responses:
        if response and response[0] == b"BYE":
            text = b" ".join(p if isinstance(p, bytes) else str(p).encode() for p in response[1:])
            raise ImapError(f"server said BYE: {text.decode(errors='replace')}")
        if len(response) > 1 and response[1] in (b"EXISTS", b"RECENT"):
            return True
    return False


def _starttls(client: IMAPClient, context: ssl.SSLContext | None, label: str) -> None:
    """Upgrade to TLS or raise: never go on to log in over plaintext."""
    if not client.has_capability("STARTTLS"):
        raise ImapError(f"{label}: server does not offer STARTTLS; refusing plaintext login")
    try:
        client.starttls(context)
    except (OSError, IMAPClientError) as exc:
        raise ImapError(f"{label}: STARTTLS failed ({exc}); refusing plaintext login") from exc


def _shutdown(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except (OSError, IMAPClientError):
        log.debug("IMAP shutdown failed", exc_info=True)
