"""A headless Chromium driven over the DevTools protocol (aiohttp's websocket client)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from browser import CHROMIUM, HEADLESS

FLAGS = (*HEADLESS, "--remote-debugging-port=0")


@contextmanager
def chromium(profile: Path) -> Iterator[str]:
    """Start Chromium; yields the DevTools HTTP address (http://127.0.0.1:PORT)."""
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Page:
    """One tab: navigate, then read what it shows."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.receive_str(timeout=30))
            if msg.get("id") == ident:
                return dict(msg.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def open(self, url: str, path: str, timeout: float = 30) -> str:
        """Go to ``url``; wait until the page's path is ``path`` and loaded; its text."""
        await self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = await self.evaluate(
                "[location.pathname, document.readyState, document.body ? "
                "document.body.innerText : '']"
            )
            if state and state[0] == path and state[1] == "complete":
                return str(state[2])
            await asyncio.sleep(0.1)
        raise AssertionError(f"the browser did not reach {path}: {state}")


async def new_page(session: aiohttp.ClientSession, devtools: str) -> Page:
    async with session.put(f"{devtools}/json/new?about:blank") as response:
        target = await response.json()
    ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
    return Page(ws)
