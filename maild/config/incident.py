"""The `[incident]` section of config.toml: when alike requests make a problem, who is told."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from maild.config.table import Table, is_email

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IncidentConfig:
    """Mass incidents: ``threshold`` requests from different customers, alike at
    ``similarity``, opened within ``window_minutes``, make a problem."""

    window_minutes: int = 60
    threshold: int = 5
    similarity: float = 0.6
    notify: tuple[str, ...] = ()  # the on-duty shift, told with the `[desk] lead`
    digest_minutes: int = 15


def incident(t: Table) -> IncidentConfig:
    window = t.get("window_minutes", int, 60)
    t.check("window_minutes", lambda v: 0 < v <= 7 * 24 * 60, "must be 1 to 10080", window)
    threshold = t.get("threshold", int, 5)
    t.check("threshold", lambda v: 2 <= v <= 1000, "must be 2 to 1000", threshold)
    similarity = t.get("similarity", float, 0.6)
    t.check("similarity", lambda v: 0.0 < v <= 1.0, "must be above 0 and at most 1", similarity)
    notify = t.get("notify", list, [])
    t.check(
        "notify",
        lambda v: all(isinstance(a, str) and is_email(a.strip()) for a in v),
        "must be a list of email addresses",
        notify,
    )
    digest = t.get("digest_minutes", int, 15)
    t.check("digest_minutes", lambda v: 0 < v <= 24 * 60, "must be 1 to 1440", digest)
    t.finish()
    addresses = tuple(dict.fromkeys(a.strip().lower() for a in notify))
    return IncidentConfig(window, threshold, similarity, addresses, digest)
