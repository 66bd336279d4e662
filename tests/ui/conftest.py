"""Fixtures for the browser tests: Debian's chromium, headless, driven by Playwright's async API.

One browser per session (a second to start); each test gets a fresh context (no cookies).
No pytest-playwright plugin and no downloaded browser: ``executable_path`` is the system
chromium (``.ci/run`` installs it with apt). Screenshots go to ``screenshots/`` at the repo root.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


def chromium_missing() -> bool:
    return not Path(CHROMIUM).exists()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    if chromium_missing():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # Playwright gives each launch a fresh temporary profile (its user-data dir).
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    p = await context.new_page()
    p.set_default_timeout(10_000)
    yield p
    await context.close()


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


# Real processes (`covalent start`, the CLI) for the token link and the CLI tests.
from tests.faults.conftest import cli, server_env  # noqa: E402,F401  (fixtures)
