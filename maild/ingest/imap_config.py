"""The ``[[imap]]`` tables: one validated, frozen ImapConfig per mailbox."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from maild.core.errors import ConfigError

TLS_MODES = ("implicit", "starttls", "none")
REJECTED_KEYWORD = "MaildRejected"  # set on mail that can never be accepted
_ATOM = re.compile(r"^[A-Za-z0-9_.$&+-]+$")


@dataclass(frozen=True)
class ImapConfig:
    """One ``[[imap]]`` table; the password is already resolved from ``password_env``."""

    host: str
    username: str
    password: str = field(repr=False)
    port: int = 993
    tls: str = "implicit"
    folder: str = "INBOX"
    processed_folder: str | None = None
    poll_seconds: float = 60.0
    idle: bool = True
    tls_verify: bool = True
    batch_size: int = 100
    keyword: str = "MaildProcessed"

    @property
    def label(self) -> str:
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"


_TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,), "port": (int,), "tls": (str,), "username": (str,), "password": (str,),
    "password_env": (str,), "folder": (str,), "processed_folder": (str,),
    "poll_seconds": (int, float), "idle": (bool,), "tls_verify": (bool,),
    "batch_size": (int,), "keyword": (str,),
}  # fmt: skip


def imap_configs_from_toml(items: object) -> tuple[ImapConfig, ...]:
    """Validate the ``[[imap]]`` array of tables; every error names its exact key."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ConfigError("imap", "must be an array of tables ([[imap]])")
    return tuple(_imap_config(item, f"imap[{i}]") for i, item in enumerate(items))


def _imap_config(item: object, prefix: str) -> ImapConfig:
    if not isinstance(item, dict):
        raise ConfigError(prefix, "must be a table")
    for key, value in item.items():
        kinds = _TYPES.get(key)
        if kinds is None:
            raise ConfigError(f"{prefix}.{key}", "unknown key")
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{prefix}.{key}", f"must be {names}, not {value!r}")
    for key in ("host", "username"):
        _require(prefix, key, key in item, "is missing")
        _require(prefix, key, bool(item[key].strip()), "must not be empty")
    tls = item.get("tls", "implicit")
    _require(prefix, "tls", tls in TLS_MODES, f"must be one of {', '.join(TLS_MODES)}")
    fields = {k: v for k, v in item.items() if k not in ("password", "password_env")}
    fields.setdefault("port", 993 if tls == "implicit" else 143)
    fields["poll_seconds"] = float(fields.get("poll_seconds", 60.0))
    cfg = ImapConfig(password=_password(item, prefix), **fields)
    _check_values(cfg, prefix)
    return cfg


def _check_values(cfg: ImapConfig, prefix: str) -> None:
    _require(prefix, "port", 0 < cfg.port < 65536, "must be between 1 and 65535")
    _require(prefix, "folder", bool(cfg.folder.strip()), "must not be empty")
    if cfg.processed_folder is not None:
        ok = bool(cfg.processed_folder.strip()) and cfg.processed_folder != cfg.folder
        _require(prefix, "processed_folder", ok, "must be a folder other than `folder`")
    _require(prefix, "poll_seconds", cfg.poll_seconds > 0, "must be positive")
    _require(prefix, "batch_size", 0 < cfg.batch_size <= 10_000, "must be between 1 and 10000")
    ok = bool(_ATOM.match(cfg.keyword)) and cfg.keyword != REJECTED_KEYWORD
    _require(prefix, "keyword", ok, "must be a plain IMAP keyword (letters, digits, _.$&+-)")


def _require(prefix: str, key: str, ok: bool, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{prefix}.{key}", problem)


def _password(t: dict[str, Any], prefix: str) -> str:
    if "password" in t and "password_env" in t:
        raise ConfigError(f"{prefix}.password_env", "give either password or password_env")
    if "password" in t:
        return str(t["password"])
    _require(prefix, "password", "password_env" in t, "is missing (or set password_env)")
    value = os.environ.get(t["password_env"])
    problem = f"names environment variable {t['password_env']!r}, which is not set"
    _require(prefix, "password_env", bool(value), problem)
    return str(value)
