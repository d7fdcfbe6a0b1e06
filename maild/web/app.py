"""The small HTTP side of the daemon: health now, signed survey links later."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy import func, select

from maild.store.db import Database
from maild.store.models import Inbound, Outbox

DB_KEY = web.AppKey("db", Database)


def _counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        pending = s.scalar(select(func.count(Inbound.id)).where(Inbound.state == "pending"))
        quarantined = s.scalar(select(func.count(Inbound.id)).where(Inbound.state == "quarantined"))
        queued = s.scalar(select(func.count(Outbox.id)).where(Outbox.state == "queued"))
    return {
        "inbound_pending": int(pending or 0),
        "quarantined": int(quarantined or 0),
        "outbox_queued": int(queued or 0),
    }


async def health(request: web.Request) -> web.Response:
    try:
        counts = await asyncio.to_thread(_counts, request.app[DB_KEY])
    except Exception as exc:  # any database trouble is "unhealthy", never a 500 page
        return web.json_response({"status": "error", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ok", **counts})


def make_app(db: Database) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[DB_KEY] = db
    app.router.add_get("/healthz", health)
    return app


async def start_web(db: Database, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(db), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
