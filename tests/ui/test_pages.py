"""The web UI in a real headless Chromium against a live dispatcher and real dispatches.

Each test asserts what a person sees; the pages' screenshots go to ``screenshots/``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from dispatcher.keys import RUNNER, STORE
from tests import tasks
from tests.conftest import wait_until
from dispatcher.ui.views import duration as _duration
from tests.ui.conftest import screenshot_path

pytestmark = pytest.mark.slow


@ct.electron
def square(x):
    print(f"squaring {x}")
    return x * x


@ct.electron
def total(xs):
    return sum(xs)


@ct.lattice
def squares(n):
    return total([square(i) for i in range(n)])


@ct.electron
def noisy_fail(x):
    print(f"about to fail on {x}")
    raise ValueError(f"bad value {x}")


@ct.lattice
def broken(x):
    return total([square(x), noisy_fail(x)])


@ct.lattice
def waits(x):
    return total([tasks.block(x), square(x)])


async def dispatch(lattice: Any, addr: str, *args: Any, wait: bool = True) -> str:
    dispatch_id: str = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=addr), *args)
    if wait:
        await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    return dispatch_id


async def graph_drawn(page: Any) -> int:
    """Wait until the graph is drawn; the number of items drawn."""
    await page.wait_for_selector("#dispatch[data-graph-drawn]", state="attached")
    return int(await page.get_attribute("#dispatch", "data-graph-items"))


async def test_dispatch_list_rows_counts_filter_and_search(dispatcher: TestClient, addr: str,
                                                           page: Any) -> None:
    big = await dispatch(squares, addr, 28)
    failed = await dispatch(broken, addr, 1)
    await dispatch(squares, addr, 3)
    await page.goto(str(dispatcher.make_url("/")))
    rows = page.locator("#dispatches tbody tr")
    assert await rows.count() == 3
    big_row = page.locator(f'tr[data-id="{big}"]')
    assert (await big_row.locator("td.count").inner_text()).strip() == "29/29"  # 28 squares + total
    assert await big_row.locator("[data-role=status]").inner_text() == "COMPLETED"
    assert "1/3" in await page.locator(f'tr[data-id="{failed}"] td.count').inner_text()
    assert await page.locator("[data-filter=FAILED] b").inner_text() == "1"
    assert await page.locator("[data-filter=COMPLETED] b").inner_text() == "2"
    await page.screenshot(path=screenshot_path("list"), full_page=True)

    await page.click("[data-filter=FAILED]")
    await expect(page.locator("#dispatches tbody tr")).to_have_count(1)
    assert await page.locator("#dispatches tbody tr").get_attribute("data-id") == failed
    assert "status=FAILED" in page.url  # the filter is in the address: a link to it works

    await page.click("[data-filter=ALL]")
    await page.fill("#q", failed[:8])
    await expect(page.locator("#dispatches tbody tr")).to_have_count(1)
    await page.fill("#q", "squares")
    await expect(page.locator("#dispatches tbody tr")).to_have_count(2)

    await page.fill("#q", "")
    await expect(page.locator("#dispatches tbody tr")).to_have_count(3)
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))  # "Delete this dispatch?"
    await page.click(f'tr[data-id="{failed}"] button[data-action=delete]')
    await expect(page.locator("#dispatches tbody tr")).to_have_count(2)
    assert await dispatcher.app[STORE].get_status(failed) is None


async def test_graph_of_a_30_node_workflow_and_the_hidden_nodes_toggle(dispatcher: TestClient, addr: str,
                                                                      page: Any) -> None:
    dispatch_id = await dispatch(squares, addr, 28)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    assert await graph_drawn(page) == 30  # 28 squares, total, the result; no parameters
    assert await page.locator("#d-status").inner_text() == "COMPLETED"
    assert await page.locator("#d-done").inner_text() == "29"
    assert await page.locator("#result-preview").inner_text() == str(sum(i * i for i in range(28)))
    await page.screenshot(path=screenshot_path("graph-30-nodes"), full_page=True)
    await page.check("#show-all")
    await expect(page.locator("#dispatch")).to_have_attribute("data-graph-items", "59")  # + 28 params, 1 list
    # The node table works without the graph: filter by name.
    await page.fill("#nodes input[name=q]", "total")
    await expect(page.locator("#node-table tbody tr")).to_have_count(1)


async def test_drawer_of_a_failed_node_shows_stdout_error_and_source(dispatcher: TestClient, addr: str,
                                                                     page: Any) -> None:
    dispatch_id = await dispatch(broken, addr, 7)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    assert await page.locator("#d-status").inner_text() == "FAILED"
    assert "bad value 7" in await page.locator(".error-box").inner_text()
    await page.select_option("#nodes select[name=status]", "FAILED")
    await expect(page.locator("#node-table tbody tr")).to_have_count(1)
    await page.click("#node-table [data-open-node]")
    await page.wait_for_selector("#drawer-error")
    assert "about to fail on 7" in await page.locator("#drawer-stdout").inner_text()
    assert "ValueError" in await page.locator("#drawer-error").inner_text()
    assert "def noisy_fail" in await page.locator("#drawer-source").inner_text()
    assert await page.locator("#drawer-attempts").inner_text() == "1"  # ran once, no retries
    assert "none (failed)" in await page.locator("#drawer-node").inner_text()
    await page.screenshot(path=screenshot_path("drawer-failed-node"))
    # The drawer of a completed node shows its output preview, made on the worker.
    square_node = next(n for n in await dispatcher.app[STORE].node_rows(dispatch_id) if n.name == "square")
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node={square_node.node_id}")))
    await page.wait_for_selector("#drawer-preview")
    assert await page.locator("#drawer-preview").inner_text() == "49"


async def test_a_running_dispatch_turns_completed_without_a_reload(dispatcher: TestClient, addr: str,
                                                                   page: Any) -> None:
    dispatch_id = await dispatch(waits, addr, 5, wait=False)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    await expect(page.locator("#d-done")).to_have_text("1")
    assert await page.locator("#d-status").inner_text() == "RUNNING"
    await page.evaluate("window.__samePage = true")
    list_page = await page.context.new_page()
    await list_page.goto(str(dispatcher.make_url("/")))
    assert await list_page.locator(f'tr[data-id="{dispatch_id}"] [data-role=status]').inner_text() == "RUNNING"
    chips = "() => Object.fromEntries([...document.querySelectorAll('[data-filter] b')].map(b => [b.parentElement.dataset.filter, Number(b.textContent)]))"
    counted = await list_page.evaluate(chips)

    released = time.monotonic()
    tasks.release.set()
    await expect(page.locator("#d-status")).to_have_attribute("data-status", "COMPLETED", timeout=5000)
    shown_after = time.monotonic() - released
    assert await page.evaluate("window.__samePage === true")  # updated in place
    assert await page.locator("#d-done").inner_text() == "3"
    await page.wait_for_selector("#result-preview")  # the summary refreshed when it ended
    assert await page.locator("#result-preview").inner_text() == "30"
    await expect(list_page.locator(f'tr[data-id="{dispatch_id}"] [data-role=status]')).to_have_attribute("data-status", "COMPLETED")
    assert (await list_page.locator(f'tr[data-id="{dispatch_id}"] td.count').inner_text()).strip() == "3/3"
    # The rest of the page follows too (they kept what the page was drawn with): the list's
    # counts and the row's runtime, the node table's times.
    ended = {**counted, "RUNNING": counted["RUNNING"] - 1, "COMPLETED": counted["COMPLETED"] + 1}

    async def counts_moved() -> bool:
        return bool(await list_page.evaluate(chips) == ended)

    await wait_until(counts_moved, timeout=5)
    runtime = list_page.locator(f'tr[data-id="{dispatch_id}"] td.rt')
    assert await runtime.get_attribute("data-end")  # the server's end, not the clock's last tick
    result = await asyncio.to_thread(ct.get_result, dispatch_id, False, addr)
    def ms(t: Any) -> Any:  # the browser's Date.parse keeps milliseconds: 1.065 s is 1.06 there
        return t.replace(microsecond=t.microsecond // 1000 * 1000)

    shown = _duration((ms(result.end_time) - ms(result.start_time)).total_seconds())
    assert (await runtime.inner_text()).strip() == shown
    await expect(page.locator("#dispatch")).to_have_attribute("data-ended", "1")
    rows = await page.evaluate("""() => [...document.querySelectorAll('#node-table tr[data-node]')].map(
        tr => [tr.querySelector('td.name a').textContent.trim(), tr.children[4].textContent.trim(),
               tr.children[5].textContent.trim()])""")
    assert {name for name, _, _ in rows} >= {"block", "square", "total"}, rows
    assert all(started and took for _, started, took in rows), rows  # total started after load
    print(f"\nCOMPLETED shown {shown_after:.2f} s after the task was released")


async def cross_site_post(page: Any, target: str, form_name: str, fetch_body: str) -> int | None:
    """What a page on evil.example does: a no-cors fetch of ``fetch_body``, then a text/plain
    form posting JSON-looking text (``form_name`` + ``"}``) to ``target``; the answer's status."""
    evil = ("<html><body><form id=f method=post enctype=text/plain action='" + target + "'>"
            "<input name='" + form_name + "' value='\"}'></form>"
            "<script>fetch('" + target + "', {method: 'POST', mode: 'no-cors', credentials: 'include',"
            " body: '" + fetch_body + "'}).finally(() => document.getElementById('f').submit())</script>"
            "</body></html>")
    await page.route("http://evil.example/", lambda route: route.fulfill(
        status=200, content_type="text/html", body=evil))
    async with page.expect_navigation(url=target) as nav:
        await page.goto("http://evil.example/")
    response = await nav.value
    return None if response is None else int(response.status)


async def test_a_cross_site_form_post_is_refused(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(waits, addr, 1, wait=False)
    store = dispatcher.app[STORE]
    await wait_until(lambda: dispatch_id in dispatcher.app[RUNNER].runs, timeout=5)
    status = await cross_site_post(page, str(dispatcher.make_url(f"/api/v1/dispatches/{dispatch_id}/cancel")),
                                   '{\"task_ids\": [], \"x\":\"', "{}")
    assert status is None or status in (401, 403, 415)
    assert await store.get_status(dispatch_id) == ct.status.RUNNING  # nothing was cancelled
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))  # "Cancel this dispatch?"
    await page.click("button[data-action=cancel]")  # the page's own button does cancel
    await expect(page.locator("#d-status")).to_have_attribute("data-status", "CANCELLED")


async def test_logs_page_is_searchable(dispatcher: TestClient, page: Any) -> None:
    import logging

    log = logging.getLogger("covalent.dispatcher")
    log.setLevel(logging.INFO)
    try:
        for i in range(5):
            log.info("ui-test line %d", i)
    finally:
        log.setLevel(logging.NOTSET)
    await page.goto(str(dispatcher.make_url("/logs")))
    lines = page.locator(".log-lines li")
    assert "ui-test line 4" in await lines.first.inner_text()  # newest first
    await page.fill("#log-q", "line 2")
    await expect(page.locator(".log-lines li")).to_have_count(1)
    assert "ui-test line 2" in await lines.first.inner_text()
    await page.screenshot(path=screenshot_path("logs"))


async def test_redispatch_button_runs_it_again(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(squares, addr, 3)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await page.click("button[data-action=redispatch]")
    await page.wait_for_url(lambda url: "/dispatches/" in url and dispatch_id not in url)
    await expect(page.locator("#d-status")).to_have_attribute("data-status", "COMPLETED", timeout=10_000)
    await expect(page.locator("#result-preview")).to_have_text("5")
    assert f"redispatch of squares {dispatch_id[:8]}" in await page.locator("#redispatch-of").inner_text()
    # Its page shows what it ran on, as the original's does (it said "Inputs: none", no source)
    assert (await page.locator(".io pre").first.inner_text()).strip() == "3"
    assert "def squares" in await page.locator("details.source code").first.text_content()


async def test_a_short_id_as_the_list_shows_it_opens_its_dispatch(dispatcher: TestClient,
                                                                  addr: str, page: Any) -> None:
    dispatch_id = await dispatch(squares, addr, 2)
    resp = await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id[:8]}?view=timeline")))
    assert resp.status == 200 and page.url.endswith(f"/dispatches/{dispatch_id}?view=timeline")
    assert await page.locator("#d-status").inner_text() == "COMPLETED"
    resp = await page.goto(str(dispatcher.make_url("/dispatches/00000000")))
    assert resp.status == 404  # none starts so
