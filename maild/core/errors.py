"""One error family for maild: every failure the daemon reasons about is a MaildError."""

import errno
import os


class MaildError(Exception):
    """Base of every error maild raises on purpose."""


class ConfigError(MaildError):
    """The configuration is wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


class TemporaryFailure(MaildError):
    """Something outside the message failed (database down, disk full): try again later."""


class RejectedMessage(MaildError):
    """Input that can never be accepted (empty, not a mail, over the size limit)."""


class QuarantineError(MaildError):
    """A message failed a pipeline step; it goes to quarantine with this reason."""


class LimitExceeded(QuarantineError):
    """A message is over a structural limit (parts, nesting, header size)."""


class HeaderInjection(MaildError):
    """A value bound for an outgoing header or the SMTP envelope carries CR or LF."""


class CannotListen(MaildError):
    """A listener could not bind its address (in use, or not ours to take)."""

    def __init__(self, key: str, address: str, exc: OSError) -> None:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        super().__init__(f"cannot listen on {address} ({key}): {reason}")
        self.in_use = exc.errno == errno.EADDRINUSE


class UnsafeStorage(MaildError):
    """A database connection was opened with less durability than maild promises."""


class CannotCreate(MaildError):
    """A file or folder maild must write (database, spool, outbox) cannot be created."""

    def __init__(self, what: str, path: object, reason: str) -> None:
        super().__init__(f"cannot create or write the {what} {path}: {reason}")
