"""Operator routes: `/metrics` (Prometheus), a small landing page at `/`, response counting."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from maild.ops.metrics import CONTENT_TYPE, Metrics
from maild.web.survey import HEADERS

log = logging.getLogger(__name__)

METRICS_KEY = web.AppKey("metrics", Metrics)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>{name}</h1>
<p>This help desk works by email: write to <strong>{address}</strong>.</p>
<p>There is nothing to sign in to here.</p>
</body></html>
"""


@web.middleware
async def count_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every response by status (errors raised as HTTPException included)."""
    metrics = request.app[METRICS_KEY]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.http.labels(str(exc.status)).inc()
        raise
    except Exception:
        metrics.http.labels("500").inc()
        raise
    metrics.http.labels(str(response.status)).inc()
    return response


async def metrics_page(request: web.Request) -> web.Response:
    try:
        body = await asyncio.to_thread(request.app[METRICS_KEY].render)
    except Exception as exc:  # database trouble: say so to the scraper, never a 500 page
        log.error("metrics: %s: %s", type(exc).__name__, exc)
        return web.Response(status=503, text="database unavailable\n")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def landing(name: str, address: str) -> Handler:
    page = LANDING.format(name=html.escape(name), address=html.escape(address))

    async def show(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=HEADERS)

    return show


def add_ops_routes(app: web.Application, metrics: Metrics, name: str, address: str) -> None:
    """`/metrics`, `/` and the response counter; the metrics start counting at start-up."""
    app[METRICS_KEY] = metrics
    app.middlewares.append(count_responses)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/", landing(name, address))

    async def prime(_app: web.Application) -> None:
        try:
            await asyncio.to_thread(metrics.prime)
        except Exception as exc:  # no schema yet (tests): the first scrape primes instead
            log.debug("metrics: not primed at start: %s", exc)

    app.on_startup.append(prime)
