"""Rough edges a first try of the web UI found (issue #24), each as the person met it, in
Chromium: the token page, a closed tab, Cancel, Redispatch, times, the node table's address,
sizes and previews.
"""

from __future__ import annotations

import asyncio
import http.client
import dataclasses
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from dispatcher.app import create_app
from dispatcher.keys import STORE
from dispatcher.ui.keys import LIVE, LOG_BUFFER
from tests import tasks
from tests.conftest import in_process_settings, wait_until
from tests.ui.conftest import screenshot_path
from tests.ui.test_pages import broken, dispatch, graph_drawn, squares, waits

pytestmark = pytest.mark.slow
TOKEN = "a-token-for-the-tests-0123456789"


@ct.electron
def sevenths(n):
    return [i / 7 for i in range(n)]


@ct.electron
def blob(n):
    return b"x" * n


@ct.lattice
def values(n):
    return sevenths(n), blob(5000)


@pytest.fixture
async def guarded(aiohttp_client: Any, tmp_path: Path, config_dir: Path) -> Any:
    """A dispatcher that requires its token (as ``covalent start`` runs it)."""
    settings = dataclasses.replace(in_process_settings(tmp_path / "data"), token=TOKEN)
    return await aiohttp_client(create_app(settings))


async def test_the_token_page_is_styled_names_this_address_and_knows_a_wrong_token(
        guarded: TestClient, page: Any) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None)
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    here = f"http://{guarded.host}:{guarded.port}"
    resp = await page.goto(here + "/")
    assert resp.status == 401
    assert await page.inner_text("h1") == "This dispatcher needs you to open its link"
    help_text = await page.inner_text("#token-help")
    assert f"{here}/?ticket=" in help_text and "48008" not in help_text  # the port it runs on
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(246, 247, 249)"  # ui.css applies before the browser is let in
    font = await page.evaluate("getComputedStyle(document.body).fontFamily")
    assert "system-ui" in font
    seen = await page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    assert seen == [] and errors == [] and failed == []  # nothing it links to is refused
    await page.screenshot(path=screenshot_path("token-page"))

    resp = await page.goto(here + "/?token=an-old-token")
    assert resp.status == 401
    assert await page.inner_text("h1") == "That link is not this dispatcher's"
    assert "did not accept the link" in await page.inner_text("#token-help")
    resp = await page.goto(f"{here}/?token={TOKEN}")
    assert resp.status == 200 and await page.inner_text("h1") == "Dispatches"


@pytest.fixture
async def served(tmp_path: Path, config_dir: Path) -> Any:
    """The app served as ``covalent start`` serves it: a request whose browser went away is not
    cancelled (aiohttp's test server cancels it, which hid #24's error); (app, address)."""
    app = create_app(in_process_settings(tmp_path / "data"))
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app, f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        tasks.release.set()
        await runner.cleanup()


_HIDE = """(hidden) => {
    Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


async def test_any_number_of_tabs_of_a_running_dispatch_can_be_open(served: Any,
                                                                    browser: Any) -> None:
    # Each tab of a running dispatch held one of the browser's 6 connections to the server
    # with its event stream: with the list and 5 such tabs open, no page of the UI loaded.
    app, addr = served
    dispatch_id = await dispatch(waits, addr, 1, wait=False)
    context = await browser.new_context()
    try:
        tabs = []
        for _ in range(7):  # in the background, as tabs a user is not looking at
            tab = await context.new_page()
            await tab.goto(f"http://{addr}/dispatches/{dispatch_id}", timeout=10_000)
            await graph_drawn(tab)
            await tab.evaluate(_HIDE, True)
            tabs.append(tab)
        listing = await context.new_page()
        await listing.goto(f"http://{addr}/", timeout=10_000)  # it timed out
        await expect(listing.locator(f"tr[data-id='{dispatch_id}']")).to_have_count(1)
        await listing.evaluate(_HIDE, True)
        logs = await context.new_page()
        await logs.goto(f"http://{addr}/logs", timeout=10_000)
        await logs.close()
        first = tabs[0]
        await first.evaluate(_HIDE, False)  # looked at again: followed again, up to date
        tasks.release.set()
        await expect(first.locator("#d-status")).to_have_attribute("data-status", "COMPLETED",
                                                                   timeout=15_000)
        await listing.evaluate(_HIDE, False)
        await expect(listing.locator(f"tr[data-id='{dispatch_id}'] .badge")).to_have_attribute(
            "title", "COMPLETED", timeout=15_000)
    finally:
        await context.close()


async def test_a_running_nodes_runtime_in_the_table_goes_on(served: Any, browser: Any) -> None:
    # It stood at what it was when the table was last drawn (4.22 s for a node 10 s in),
    # while the summary's and the drawer's clocks went on.
    app, addr = served
    dispatch_id = await dispatch(waits, addr, 1, wait=False)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"http://{addr}/dispatches/{dispatch_id}")
        running = page.locator("#node-table tbody tr", has=page.locator(".badge[title=RUNNING]"))
        await expect(running).to_have_count(1, timeout=15_000)
        cell = running.locator("td.time").last
        first = await cell.inner_text()
        await expect(cell).not_to_have_text(first, timeout=5_000)  # it ticks, once a second
        tasks.release.set()
        await expect(page.locator("#d-status")).to_have_attribute("data-status", "COMPLETED",
                                                                  timeout=15_000)
    finally:
        await context.close()


async def test_a_closed_tab_leaves_no_error_in_the_log(served: Any, browser: Any) -> None:
    app, addr = served
    dispatch_id = await dispatch(waits, addr, 1, wait=False)
    context = await browser.new_context()
    try:
        listing = await context.new_page()
        await listing.goto(f"http://{addr}/")
        one = await context.new_page()
        await one.goto(f"http://{addr}/dispatches/{dispatch_id}")
        await graph_drawn(one)
        await listing.close()
        await one.close()
        tasks.release.set()  # commits: the closed tabs' streams are written to
        await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
        # More commits after the tabs are gone: a closed tab's stream ends at a write that finds
        # no one, and the first write after a close may still be taken by the socket's buffer.
        async def streams_ended() -> bool:
            if app[LIVE].watchers == 0:
                return True
            await dispatch(squares, addr, 2)  # another write to a stream still open
            return app[LIVE].watchers == 0

        await wait_until(streams_ended, timeout=30)  # both streams ended
        logs = await context.new_page()
        await logs.goto(f"http://{addr}/logs?q=error")
        shown = await logs.locator(".log-lines").inner_text()
    finally:
        await context.close()
    assert "unhandled error" not in shown and "Error handling request" not in shown, shown
    assert not [line for line in app[LOG_BUFFER].lines if "ERROR" in line]


async def test_cancel_asks_first_and_its_notice_stays_off_the_graph(dispatcher: TestClient, addr: str,
                                                                    page: Any) -> None:
    dispatch_id = await dispatch(waits, addr, 1, wait=False)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    redispatch = page.locator("button[data-action=redispatch]")
    assert await redispatch.is_disabled()  # nothing to run again while it runs
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), asyncio.ensure_future(d.dismiss())))
    await page.click("button[data-action=cancel]")
    assert asked and "Cancel this dispatch?" in asked[0]
    assert await dispatcher.app[STORE].get_status(dispatch_id) == ct.status.RUNNING  # said no
    page.once("dialog", lambda d: asyncio.ensure_future(d.accept()))
    await page.click("button[data-action=cancel]")
    toast = page.locator("#toasts .toast")
    await expect(toast).to_have_text("Cancel requested")
    box, graph = await toast.bounding_box(), await page.locator("#graph").bounding_box()
    assert box["y"] + box["height"] <= graph["y"] or box["y"] >= graph["y"] + graph["height"] \
        or box["x"] >= graph["x"] + graph["width"]  # not over the graph
    await expect(page.locator("#d-status")).to_have_attribute("data-status", "CANCELLED")
    await expect(toast).to_have_count(0)  # it said what it had to
    await expect(redispatch).to_be_enabled()
    await page.screenshot(path=screenshot_path("cancelled"))


async def test_times_are_shown_in_the_browsers_zone_and_say_which(dispatcher: TestClient, addr: str,
                                                                  browser: Any) -> None:
    dispatch_id = await dispatch(squares, addr, 2)
    row = await dispatcher.app[STORE].get_dispatch(dispatch_id)
    assert row is not None and row.start_time
    context = await browser.new_context(timezone_id="Asia/Kolkata")
    try:
        page = await context.new_page()
        await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
        started = page.locator("dl.facts time").first
        local = datetime.fromisoformat(row.start_time).astimezone(ZoneInfo("Asia/Kolkata"))
        await expect(started).to_have_text(local.strftime("%Y-%m-%d %H:%M:%S") + " GMT+5:30")
        assert (await started.get_attribute("title")).endswith(" UTC")  # UTC on hover
    finally:
        await context.close()


async def test_the_node_tables_filter_and_sort_are_in_the_address(dispatcher: TestClient, addr: str,
                                                                  page: Any) -> None:
    dispatch_id = await dispatch(broken, addr, 3)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await page.select_option("#nodes select[name=status]", "COMPLETED")
    await expect(page.locator("#node-table tbody tr")).to_have_count(1)
    await page.wait_for_url(lambda url: "status=COMPLETED" in url)
    await page.click("#node-table a.sort[data-sort=name]")
    await page.wait_for_url(lambda url: "sort=name" in url)
    await page.reload()  # a person's bookmark, or a link sent to a colleague
    await expect(page.locator("#node-table tbody tr")).to_have_count(1)
    assert await page.locator("#nodes select[name=status]").input_value() == "COMPLETED"
    assert "on" in (await page.locator("#node-table a.sort[data-sort=name]").get_attribute("class"))


async def test_sizes_and_previews_are_for_people(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(values, addr, 100)
    nodes = {n.name: n.node_id for n in await dispatcher.app[STORE].node_rows(dispatch_id)}
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node={nodes['blob']}")))
    size = await page.locator("#drawer-size").inner_text()
    assert " KiB pickled" in size and "bytes" not in size
    # A page of its own (a hash-only goto and a reload raced twice on CI: the reloaded page
    # still showed the blob's drawer; a drawer opened from the address: test_pages too)
    await page.goto("about:blank")
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node={nodes['sevenths']}")))
    await expect(page.locator("#drawer-title")).to_contain_text("sevenths")
    preview = page.locator("#drawer-preview")
    # visibly cut, between two numbers
    await expect(preview).to_have_text(re.compile(r"^\[0\.0, .*, …$"))
    shown = await preview.inner_text()
    last = shown.removesuffix(", …").rsplit(", ", 1)[-1]
    assert float(last) in [i / 7 for i in range(100)] and repr(float(last)) == last  # a whole number


async def test_a_link_into_a_deeper_page_lets_the_browser_in_and_keeps_its_page(
        guarded: TestClient, page: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # lattice.draw printed /preview/<id> with nothing that let a browser in (the token page),
    # and a ticket on any page but / was refused as "not this dispatcher's".
    here = f"http://{guarded.host}:{guarded.port}"
    monkeypatch.setenv("COVALENT_DISPATCHER_ADDR", f"{guarded.host}:{guarded.port}")
    monkeypatch.setenv("COVALENT_TOKEN", TOKEN)
    await asyncio.to_thread(squares.draw, 3)
    printed = capsys.readouterr().out
    found = re.search(r"visit (\S+/preview/[0-9a-f-]+)\?ticket=(\S+)", printed)
    assert found, printed
    resp = await page.goto(f"{found.group(1)}?ticket={found.group(2)}")
    assert resp.status == 200 and page.url == found.group(1)  # the secret left the address bar
    assert await page.title() == "Preview of squares · Covalent"
    [cookie] = await page.context.cookies()
    assert found.group(2) not in cookie["value"]

    await page.context.clear_cookies()
    dispatch_id = await dispatch(squares, f"{guarded.host}:{guarded.port}", 2)
    made = await (await guarded.post("/api/v1/ui/tickets", data=b"{}", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})).json()
    ticket = made["path"].split("ticket=")[1]
    resp = await page.goto(f"{here}/dispatches/{dispatch_id}?view=timeline&ticket={ticket}")
    assert resp.status == 200 and page.url == f"{here}/dispatches/{dispatch_id}?view=timeline"
    # the API never takes one from an address
    api = await guarded.get(f"/api/v1/status?ticket={ticket}")
    assert api.status == 401


@pytest.mark.parametrize("path", ["//evil.example", "/\\evil.example", "///evil.example/x"])
async def test_a_link_with_the_token_never_redirects_to_another_site(guarded: TestClient,
                                                                     path: str) -> None:
    # GET //evil.example?token=... answered "Location: //evil.example", which a browser
    # follows to another site.
    def get() -> tuple[int, str]:
        conn = http.client.HTTPConnection(guarded.host, guarded.port, timeout=10)
        try:
            conn.request("GET", f"{path}?token={TOKEN}&view=timeline")
            resp = conn.getresponse()
            return resp.status, resp.getheader("Location") or ""
        finally:
            conn.close()

    status, location = await asyncio.to_thread(get)
    if status == 302:
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        assert "token" not in location and "view=timeline" in location
    else:
        assert status == 404
