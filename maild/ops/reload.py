"""SIGHUP: read config.toml again and keep what can change while the daemon runs.

Agents, departments, SLA targets, hours, the clock's timings, the desk's texts and templates
change at once; where the daemon listens, its storage, its mail relay and its number of
workers need a restart (a change there is logged and kept for the next start).
"""

from __future__ import annotations

import dataclasses
import logging

from maild.config import Config, load
from maild.core.errors import ConfigError

log = logging.getLogger(__name__)

# (what the log calls it, how to read it): kept from the running config on reload.
FIXED = (
    ("storage.url", lambda c: c.storage_url),
    ("smtp", lambda c: c.smtp),
    ("lmtp.listen", lambda c: c.lmtp_listen),
    ("web.listen", lambda c: c.web.listen),
    ("outbound", lambda c: c.outbound),
    ("pipeline", lambda c: c.pipeline),
    ("imap", lambda c: c.imap),
)


def reread(old: Config) -> Config | None:
    """The config to run with after a reload, or None (logged) when the new one is invalid."""
    if old.path is None:
        log.error("reload refused: the daemon was not started from a config file")
        return None
    try:
        new = load(old.path)
    except ConfigError as exc:
        log.error("reload refused, the running config stays: %s", exc)
        return None
    changed = [name for name, read in FIXED if read(new) != read(old)]
    if changed:
        log.warning("reload: %s change(s) only at the next restart", ", ".join(changed))
    return dataclasses.replace(
        new,
        storage_url=old.storage_url,
        smtp=old.smtp,
        lmtp_listen=old.lmtp_listen,
        web=dataclasses.replace(new.web, listen=old.web.listen),
        outbound=old.outbound,
        pipeline=old.pipeline,
        imap=old.imap,
    )
