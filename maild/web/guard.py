"""The HTTP listener's guards: a read deadline, a cap per client address, one-line client errors.

Every connection carries one request (no keep-alive: the pages are few and small), and that
request (headers and body) must arrive within `[web] read_timeout` of the connection, or the
client gets `408 Request Timeout` and is disconnected, however steadily it trickles bytes. An
address with `[web] max_connections_per_address` connections open gets `429 Too Many Requests`.
A malformed request is the client's fault: one line at INFO, not a traceback at ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from maild.security.peers import PeerLimit, address_of

log = logging.getLogger(__name__)


def _plain(status: str, text: str, extra: str = "") -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


TOO_SLOW = _plain("408 Request Timeout", "The request did not arrive in time.\n")
TOO_MANY = _plain(
    "429 Too Many Requests", "Too many connections from your address.\n", "Retry-After: 10\r\n"
)


@dataclass(frozen=True)
class WebGuard:
    read_timeout: float
    peers: PeerLimit


class GuardedConnection(asyncio.Protocol):
    """Sits between the socket and aiohttp's protocol: counts the address, runs the deadline."""

    def __init__(self, make_inner: Callable[[], asyncio.Protocol], guard: WebGuard) -> None:
        self.make_inner, self.guard = make_inner, guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.address: str | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        address = address_of(transport.get_extra_info("peername"))
        if address is not None and not self.guard.peers.enter(address):
            log.warning("web: %s: refused, %d connections open", address, self.guard.peers.limit)
            transport.write(TOO_MANY)
            transport.close()
            return
        self.address = address
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.read_timeout, self.too_slow)
        self.inner = self.make_inner()
        self.inner.connection_made(transport)

    def request_read(self) -> None:
        """The whole request is in: the deadline is met."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def too_slow(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            log.info("web: %s: request not complete in %g s", self.address, self.guard.read_timeout)
            self.transport.write(TOO_SLOW)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.request_read()
        if self.address is not None:
            self.guard.peers.leave(self.address)
            self.address = None
        if self.inner is not None:
            self.inner.connection_lost(exc)
            self.inner = None


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite with every connection wrapped in a GuardedConnection."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: WebGuard) -> None:
        super().__init__(runner, host, port)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GuardedConnection(server, self._guard), self._host, self._port
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


@web.middleware
async def read_whole_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Read the body before the handler runs (the deadline covers it), then one request only."""
    try:
        await request.read()
    except HttpProcessingError as exc:  # a broken body (chunking, length): the client's fault
        log.info("web: %s: bad request body: %s", request.remote, type(exc).__name__)
        raise web.HTTPBadRequest(text="The request body is malformed.\n") from None
    protocol = request.transport.get_protocol() if request.transport is not None else None
    if isinstance(protocol, GuardedConnection):
        protocol.request_read()
    response = await handler(request)
    response.force_close()
    return response


class OneLineClientErrors(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger: a malformed request (HttpProcessingError) is one INFO line;
    anything else, a failure of ours, keeps its traceback at ERROR."""

    def __init__(self) -> None:
        super().__init__(log, {})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs

    def _client_error(self, args: tuple[Any, ...], exc: object) -> bool:
        if not isinstance(exc, HttpProcessingError):
            return False
        first = (exc.message or "").strip().splitlines()[:1]
        what = first[0].rstrip(":") if first else type(exc).__name__
        self.info("web: bad request from %s: %d %s", args[0] if args else "?", exc.code, what)
        return True

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if not self._client_error(args, exc_info):
            self.error(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self._client_error(args, kwargs.get("exc_info")):
            super().debug(msg, *args, **kwargs)
