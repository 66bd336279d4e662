"""The triggers page in Chromium (issue #24): what is registered, for which dispatch, how often
it fired and what it started, and Stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from covalent.triggers import DirTrigger, TimeTrigger
from dispatcher.keys import TRIGGERS
from tests.conftest import wait_until
from tests.ui.conftest import screenshot_path
from tests.ui.test_pages import squares

pytestmark = pytest.mark.slow


async def test_the_triggers_page_lists_them_with_their_fires_and_stops_them(
        dispatcher: TestClient, addr: str, page: Any, tmp_path: Path) -> None:
    pending = await asyncio.to_thread(ct.dispatch(squares, dispatcher_addr=addr, disable_run=True), 2)
    hourly = TimeTrigger(time_gap=3600, dispatcher_addr=addr)
    hourly.lattice_dispatch_id = pending
    watched = tmp_path / "in"
    watched.mkdir()
    on_files = DirTrigger(str(watched), ["created"], dispatcher_addr=addr)
    on_files.lattice_dispatch_id = pending
    await asyncio.to_thread(hourly.register)
    await asyncio.to_thread(on_files.register)
    (watched / "a.csv").write_text("1")
    service = dispatcher.app[TRIGGERS]

    async def fired() -> bool:
        return any(t["fire_count"] >= 1 for t in await service.listing())

    await wait_until(fired, timeout=20)

    await page.goto(str(dispatcher.make_url("/triggers")))
    rows = page.locator("#triggers tbody tr")
    await expect(rows).to_have_count(2)
    assert await page.locator("#trigger-count").inner_text() == "2 active triggers, 2 in all"
    by_kind = {await r.locator("td b").first.inner_text(): r for r in await rows.all()}
    time_row, dir_row = by_kind["TimeTrigger"], by_kind["DirTrigger"]
    assert "every 60 min" in await time_row.inner_text()
    assert f"created in {watched}" in await dir_row.inner_text()
    assert await dir_row.locator("[data-role=fired]").inner_text() == "1"
    assert await time_row.locator("[data-role=fired]").inner_text() == "0"
    cells = await time_row.locator("td").all_inner_texts()
    assert cells[4] == "—" and cells[6] == "—" and cells[7] == "—"  # never fired, no error
    # the file's fire found the dispatch pending and started it: that is the one it names
    started = dir_row.locator("[data-role=started] a")
    await expect(started).to_have_count(1)
    assert await started.get_attribute("href") == f"/dispatches/{pending}"
    assert await started.inner_text() == pending[:8]
    link = time_row.locator(f'a[href="/dispatches/{pending}"]')
    assert "squares" in await link.inner_text()
    await page.screenshot(path=screenshot_path("triggers"), full_page=True)

    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))  # "Stop all 2 triggers?"
    await time_row.locator("button[data-action=stop-triggers]").click()
    await expect(page.locator("#triggers tbody tr[data-active='0']")).to_have_count(2)  # reloaded
    assert await page.locator("#trigger-count").inner_text() == "0 active triggers, 2 in all"
    assert not any(t["active"] for t in await service.listing())
    assert await page.locator("button[data-action=stop-triggers]").count() == 0
