"""Headless Chromium for the tests: screenshots kept as artefacts, and the DOM it built."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MAILD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Kept after the run (CI artefacts): var/screenshots/ in the worktree unless told otherwise.
SHOTS = Path(
    os.environ.get("MAILD_SCREENSHOTS", Path(__file__).resolve().parents[1] / "var/screenshots")
)
# Headless, offline, no first-run or background traffic (this machine's network is closed).
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_FLAGS = (*HEADLESS, "--hide-scrollbars")


def need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("MAILD_REQUIRE_CHROMIUM"):
            pytest.fail(f"MAILD_REQUIRE_CHROMIUM is set but {CHROMIUM} is missing")
        pytest.skip("chromium is not installed (apt-get install chromium)")


def _run(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="maild-chromium-") as profile:
        cmd = [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args, url]
        return subprocess.run(cmd, capture_output=True, timeout=90, check=False)


def screenshot(url: str, name: str, width: int = 390, height: int = 1100) -> Path:
    """A phone-sized screenshot of ``url`` saved as ``SHOTS/name.png``; returns its path."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    done = _run(url, f"--window-size={width},{height}", f"--screenshot={path}")
    assert path.exists(), done.stderr.decode(errors="replace")[-2000:]
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 3000, f"{path}: not a real screenshot"
    return path


def dom(url: str) -> str:
    """The document Chromium built from ``url`` (after parsing, CSS and all)."""
    done = _run(url, "--dump-dom")
    return done.stdout.decode("utf-8", errors="replace")
