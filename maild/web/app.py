"""The small HTTP side of the daemon: health, the signed survey links, the request pages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from sqlalchemy import func, select

from maild.config import Config, WebConfig
from maild.core.clock import Clock, system_clock
from maild.ingest.inbound import TableQueue
from maild.ingest.queue import InboundQueue
from maild.ops.metrics import Metrics
from maild.replies.render import Renderer
from maild.security.peers import PeerLimit
from maild.store.db import Database
from maild.store.models import Inbound, Outbox
from maild.web.board import BoardSite, add_board_routes
from maild.web.guard import GuardedSite, OneLineClientErrors, WebGuard, read_whole_request
from maild.web.kb import add_kb_routes
from maild.web.ops import add_ops_routes
from maild.web.page import add_page_routes
from maild.web.survey import SurveySite, add_routes

DB_KEY = web.AppKey("db", Database)
CONFIG_KEY = web.AppKey("config", Config)
QUEUE_KEY = web.AppKey("queue", InboundQueue)


def _counts(db: Database, queue: InboundQueue) -> dict[str, int]:
    waiting = queue.count()
    with db.session() as s:
        quarantined = s.scalar(select(func.count(Inbound.id)).where(Inbound.state == "quarantined"))
        queued = s.scalar(select(func.count(Outbox.id)).where(Outbox.state == "queued"))
    return {
        "inbound_pending": waiting,
        "quarantined": int(quarantined or 0),
        "outbox_queued": int(queued or 0),
    }


async def health(request: web.Request) -> web.Response:
    try:
        counts = await asyncio.to_thread(_counts, request.app[DB_KEY], request.app[QUEUE_KEY])
    except Exception as exc:  # any database trouble is "unhealthy", never a 500 page
        return web.json_response({"status": "error", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ok", **counts})


def make_app(
    db: Database,
    config: Config | None = None,
    clock: Clock = system_clock,
    on_outbox: Callable[[], None] | None = None,
    *,
    queue: InboundQueue | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[read_whole_request])
    app[DB_KEY] = db
    app[QUEUE_KEY] = queue = queue or TableQueue(db)
    app.router.add_get("/healthz", health)
    desk = (config.desk.name, config.desk.address) if config else ("maild", "")
    add_ops_routes(app, metrics or Metrics(db, queue), *desk)
    if config is not None:  # the survey links need the key, the templates and the clock
        app[CONFIG_KEY] = config
        renderer = Renderer(config.desk.templates)
        add_routes(app, SurveySite(db, config, clock, renderer, on_outbox))
        add_page_routes(app)
        add_board_routes(app, BoardSite(db, config, clock, renderer))
        add_kb_routes(app)
    return app


async def start_web(
    db: Database,
    host: str,
    port: int,
    config: Config | None = None,
    clock: Clock = system_clock,
    on_outbox: Callable[[], None] | None = None,
    *,
    queue: InboundQueue | None = None,
    metrics: Metrics | None = None,
) -> web.AppRunner:
    app = make_app(db, config, clock, on_outbox, queue=queue, metrics=metrics)
    runner = web.AppRunner(app, access_log=None, logger=OneLineClientErrors())
    await runner.setup()
    web_config = config.web if config is not None else WebConfig()
    guard = WebGuard(web_config.read_timeout, PeerLimit(web_config.max_connections_per_address))
    await GuardedSite(runner, host, port, guard).start()
    return runner
