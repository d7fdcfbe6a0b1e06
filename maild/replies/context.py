"""What a reply needs from a pipeline or sweep context: session, configuration, templates, clock."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.orm import Session

from maild.config import Config
from maild.core.clock import Clock
from maild.replies.render import Renderer


class MailContext(Protocol):
    """The part of a pipeline or sweep context a reply kind needs."""

    @property
    def session(self) -> Session: ...
    @property
    def config(self) -> Config: ...
    @property
    def renderer(self) -> Renderer: ...
    @property
    def clock(self) -> Clock: ...
