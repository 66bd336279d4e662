"""The dispatch list in Chromium (issue #24): bulk delete (chosen rows, or everything a filter
matches) with counts that follow, the age filter, Start and Delete of a pending dispatch, a
page past the end, a row that finishes getting its Delete without a reload, words for people.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from dispatcher.keys import STORE
from dispatcher.state import Status
from dispatcher.store import NewDispatch
from tests.conftest import wait_until
from tests.ui.conftest import screenshot_path
from tests.ui.test_pages import broken, cross_site_post, dispatch, squares, waits

pytestmark = pytest.mark.slow


def accept_dialogs(page: Any) -> list[str]:
    """Accept every confirm() and keep its message."""
    seen: list[str] = []

    def on_dialog(d: Any) -> None:
        seen.append(d.message)
        asyncio.ensure_future(d.accept())

    page.on("dialog", on_dialog)
    return seen


async def test_bulk_delete_of_chosen_rows_and_of_a_filter_and_the_counts_follow(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    done = [await dispatch(squares, addr, 2) for _ in range(3)]
    failed = [await dispatch(broken, addr, i) for i in range(2)]
    store = dispatcher.app[STORE]
    await page.goto(str(dispatcher.make_url("/")))
    asked = accept_dialogs(page)
    await expect(page.locator("#dispatches tbody tr")).to_have_count(5)
    await page.check(f'tr[data-id="{done[0]}"] .pick-row')
    await page.check(f'tr[data-id="{done[1]}"] .pick-row')
    assert await page.locator("#selected-count").inner_text() == "2"
    await page.screenshot(path=screenshot_path("list-bulk-select"))
    await page.click("[data-action=delete-selected]")
    await expect(page.locator("#dispatches tbody tr")).to_have_count(3)
    assert "Delete 2 dispatches" in asked[-1]
    await expect(page.locator("[data-filter=ALL] b")).to_have_text("3")  # no reload needed
    await expect(page.locator("[data-filter=COMPLETED] b")).to_have_text("1")
    assert await store.get_status(done[0]) is None and await store.get_status(done[2]) is not None

    await page.click("[data-filter=FAILED]")
    await expect(page.locator("#dispatches tbody tr")).to_have_count(2)
    button = page.locator("[data-action=delete-matching]")
    assert "Delete all 2 finished dispatches matching this filter" in await button.inner_text()
    await button.click()
    await expect(page.locator("[data-filter=FAILED] b")).to_have_text("0")
    await expect(page.locator("[data-filter=ALL] b")).to_have_text("1")
    assert "all 2 finished dispatches this filter matches" in asked[-1]
    assert [await store.get_status(i) for i in failed] == [None, None]
    assert await store.get_status(done[2]) == Status.COMPLETED  # outside the filter: kept


async def test_the_age_filter_keeps_dispatches_of_that_age(dispatcher: TestClient, addr: str,
                                                           page: Any) -> None:
    recent = await dispatch(squares, addr, 1)
    old = str(uuid.uuid4())
    long_ago = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    await dispatcher.app[STORE].create_dispatch(NewDispatch(
        old, old, "last_month", Status.COMPLETED, long_ago, json.dumps({"nodes": [], "edges": []}), [],
        start_time=long_ago), [], {})
    await page.goto(str(dispatcher.make_url("/")))
    await expect(page.locator("#dispatches tbody tr")).to_have_count(2)
    rows = page.locator("#dispatches tbody tr")
    await page.select_option("#age", "older-30d")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-id", old)
    assert "age=older-30d" in page.url
    await page.select_option("#age", "1d")
    # the previous filter's table has one row too: wait for the new table's row, not a count
    await expect(rows).to_have_attribute("data-id", recent)
    await expect(rows).to_have_count(1)
    assert "1 dispatch" in await page.locator(".pager").inner_text()  # not "1 dispatches"


async def test_a_filter_changed_the_moment_the_table_is_replaced_is_not_lost(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    # The controls are inside the table they replace. A change made as soon as the new table is
    # in the page (before a timer could run: htmx bound the new controls' handlers 20 ms after
    # a swap, so a quick hand, or CI's Playwright, changed a filter that did nothing) must act.
    recent = await dispatch(squares, addr, 1)
    await page.goto(str(dispatcher.make_url("/?age=older-30d")))
    await expect(page.locator("#dispatches tbody tr.empty")).to_have_count(1)
    await page.evaluate("""() => {
      const table = document.getElementById("table");
      const seen = new MutationObserver(() => {
        seen.disconnect();
        const age = document.getElementById("age");
        age.value = "1d";
        age.dispatchEvent(new Event("change", {bubbles: true}));
      });
      seen.observe(table, {childList: true});
      const age = document.getElementById("age");
      age.value = "older-7d";
      age.dispatchEvent(new Event("change", {bubbles: true}));
    }""")
    await expect(page.locator("#dispatches tbody tr")).to_have_attribute("data-id", recent)
    await expect(page.locator("#age")).to_have_value("1d")
    await expect(page).to_have_url(re.compile(r"age=1d"))


async def test_a_pending_dispatch_can_be_started_or_deleted_from_the_list(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    pending = [await asyncio.to_thread(ct.dispatch(squares, dispatcher_addr=addr, disable_run=True), 3)
               for _ in range(2)]
    store = dispatcher.app[STORE]
    await page.goto(str(dispatcher.make_url("/")))
    accept_dialogs(page)
    row = page.locator(f'tr[data-id="{pending[0]}"]')
    badge = row.locator("[data-role=status]")
    assert await badge.text_content() == "Not started" and await badge.get_attribute("title") == "NEW_OBJECT"
    await page.screenshot(path=screenshot_path("list-pending"))
    await row.locator("button[data-action=start]").click()

    async def started() -> bool:
        return await store.get_status(pending[0]) != Status.NEW_OBJECT

    await wait_until(started, timeout=10)
    result = await asyncio.to_thread(ct.get_result, pending[0], True, addr)
    assert result.result == 5
    await page.locator(f'tr[data-id="{pending[1]}"] button[data-action=delete]').click()
    await expect(page.locator(f'tr[data-id="{pending[1]}"]')).to_have_count(0)
    assert await store.get_status(pending[1]) is None
    await page.reload()
    await expect(row.locator("[data-role=status]")).to_have_attribute("data-status", "COMPLETED")


async def test_a_page_past_the_end_shows_the_last_page(dispatcher: TestClient, addr: str, page: Any) -> None:
    await dispatch(squares, addr, 1)
    await page.goto(str(dispatcher.make_url("/?page=99")))
    await expect(page.locator("#dispatches tbody tr[data-id]")).to_have_count(1)
    assert "No dispatches" not in await page.locator("#dispatches").inner_text()
    assert "There is no page 99" in await page.locator("#page-note").inner_text()


async def test_a_row_that_finishes_gets_its_delete_without_a_reload(dispatcher: TestClient, addr: str,
                                                                    page: Any) -> None:
    running = await dispatch(waits, addr, 1, wait=False)
    await page.goto(str(dispatcher.make_url("/")))
    row = page.locator(f'tr[data-id="{running}"]')
    await expect(row.locator("[data-role=status]")).to_have_attribute("data-status", "RUNNING")
    assert await row.locator("button[data-action=delete]").count() == 0
    await page.evaluate("window.__samePage = true")
    await asyncio.to_thread(ct.cancel, running, dispatcher_addr=addr)
    await expect(row.locator("[data-role=status]")).to_have_attribute("data-status", "CANCELLED")
    await expect(row.locator("[data-role=status]")).to_have_text("Cancelled")
    await expect(row.locator("button[data-action=delete]")).to_have_count(1)
    assert await page.evaluate("window.__samePage === true")
    accept_dialogs(page)
    await row.locator("button[data-action=delete]").click()
    await expect(row).to_have_count(0)


async def test_a_page_on_another_site_cannot_bulk_delete(dispatcher: TestClient, addr: str, page: Any) -> None:
    done = await dispatch(squares, addr, 1)
    status = await cross_site_post(page, str(dispatcher.make_url("/api/v1/listing/delete")),
                                   '{\"filter\": {\"q\": \"\", \"x\":\"', '{"dispatch_ids": ["' + done + '"]}')
    assert status is None or status in (401, 403, 415)
    assert await dispatcher.app[STORE].get_status(done) == Status.COMPLETED  # nothing was deleted
