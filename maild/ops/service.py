"""The service manager's protocol (sd_notify): READY, RELOADING, STOPPING and the watchdog.

A few lines on a unix datagram socket named by ``$NOTIFY_SOCKET`` (systemd's
``Type=notify``); no library needed. Without the variable every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (e.g. "READY=1") to the service manager; False when there is none."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the event loop: a manager that does not read (its queue is full)
            # loses this datagram instead of stopping the daemon.
            sock.setblocking(False)
            sock.connect(address)
            sock.send(state.encode())
    except BlockingIOError:
        log.debug("sd_notify %s: the manager's queue is full", state.split("=")[0])
        return False
    except OSError as exc:  # the manager went away: nothing to tell, nothing to stop for
        log.warning("sd_notify %s: %s", state.split("=")[0], exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def reloading() -> None:
    """RELOADING=1 with the monotonic time (what Type=notify-reload also expects)."""
    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")


class Watchdog:
    """Sends WATCHDOG=1 while the event loop turns; a stuck loop stops the pings."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        interval = watchdog_interval()
        if interval is not None:
            self.task = asyncio.create_task(self._ping(interval), name="watchdog")

    async def _ping(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
