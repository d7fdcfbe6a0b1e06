"""One error family for maild: every failure the daemon reasons about is a MaildError."""


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
