"""Reading config.toml tables key by key, so that every error can name its full key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from maild.core.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


class Table:
    """A TOML table read key by key, so that every error can name its full key."""

    def __init__(self, data: object, prefix: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(prefix, "must be a table")
        self.data: dict[str, Any] = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name: str, kind: type[T], default: Any = _MISSING) -> T:
        self.seen.add(name)
        if name not in self.data:
            if default is _MISSING:
                raise ConfigError(self.key(name), "is missing")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.key(name), f"must be {kind.__name__}, not {value!r}")
        return value

    def check(self, name: str, ok: Callable[[Any], bool], problem: str, value: Any) -> None:
        if not ok(value):
            raise ConfigError(self.key(name), problem)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


def is_email(value: str) -> bool:
    local, at, domain = value.partition("@")
    return bool(local and at and "." in domain) and not any(c in value for c in " \r\n\t<>,;")


def hostport(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 <= int(port) < 65536


def positive(value: int) -> bool:
    return value > 0


def resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)
