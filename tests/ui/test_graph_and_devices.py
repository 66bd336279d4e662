"""The graph as a keyboard, mouse and touch user meets it, and the pages on a phone and in
dark mode, in Chromium (issue #24): arrows/+/-/0/Enter, a tooltip that tells nodes apart,
sublattices drawn apart, a minimap on a big graph, pinch and pan with two fingers, a 375 px
screen where nothing is cut off, and the system's dark scheme.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from dispatcher import state
from dispatcher.keys import STORE
from dispatcher.state import Status
from dispatcher.store import NewDispatch
from tests.ui.conftest import screenshot_path
from tests.ui.test_big_graph import fan_out_graph
from tests.ui.test_pages import broken, dispatch, graph_drawn, square, squares, total

pytestmark = pytest.mark.slow

sub = ct.electron(ct.lattice(squares))


@ct.lattice
def nested(n):
    return total([sub(n), square(n)])


async def view(page: Any) -> dict[str, float]:
    return await page.evaluate("({...covalentGraph.view})")  # type: ignore[no-any-return]


async def screen_point(page: Any, item: int) -> Any:
    """Where item ``item`` of the layout is on the screen."""
    return await page.evaluate("""(i) => {
        const it = covalentGraph.layout.items[i];
        const r = document.getElementById('graph').getBoundingClientRect(), v = covalentGraph.view;
        return {x: r.left + (it[3] - v.x) * v.k, y: r.top + (it[4] - v.y) * v.k};
    }""", item)


async def test_the_keyboard_moves_zooms_fits_and_opens(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(squares, addr, 5)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    await page.focus("#graph")
    fitted = await view(page)
    await page.keyboard.press("+")
    zoomed = await view(page)
    assert zoomed["k"] > fitted["k"] * 1.2
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowDown")
    moved = await view(page)
    assert moved["x"] > zoomed["x"] and moved["y"] > zoomed["y"]
    await page.keyboard.press("-")
    assert (await view(page))["k"] < moved["k"]
    await page.keyboard.press("0")
    assert await view(page) == fitted
    aim = await page.evaluate("covalentGraph.aim")
    assert aim >= 0  # the item at the centre is marked: Enter opens it
    node = await page.evaluate("(i) => covalentGraph.layout.items[i][7]", aim)
    await page.keyboard.press("Enter")
    await expect(page.locator("#drawer-node")).to_have_attribute("data-node", str(node))


async def test_hovering_a_node_names_it_and_its_status(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(broken, addr, 2)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    items = await page.evaluate("covalentGraph.layout.items.map((it) => [it[1], it[7]])")
    failed = next(i for i, (name, _) in enumerate(items) if name == "noisy_fail")
    p = await screen_point(page, failed)
    await page.mouse.move(p["x"], p["y"])
    tip = page.locator("#graph-tip")
    await expect(tip).to_be_visible()
    assert (await tip.inner_text()).startswith(f"noisy_fail #{items[failed][1]} · Failed")
    await page.screenshot(path=screenshot_path("graph-tooltip"))
    await page.mouse.move(p["x"], p["y"] - 200)  # off every node
    await expect(tip).to_be_hidden()


async def test_a_sublattice_is_framed_apart_from_electrons(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(nested, addr, 2)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    sampled = await page.evaluate("""() => {
        const c = document.getElementById('graph'), g = c.getContext('2d'), v = covalentGraph.view;
        const dpr = window.devicePixelRatio || 1;
        const at = (wx, wy) => Array.from(g.getImageData(Math.round((wx - v.x) * v.k * dpr),
                                                          Math.round((wy - v.y) * v.k * dpr), 1, 1).data);
        const frame = (it) => at(it[3] - it[5] / 2 - 4, it[4]);  // where a sublattice's frame is drawn
        const items = covalentGraph.layout.items;
        return {sub: frame(items.find((it) => it[2] === 'sublattice')),
                electron: frame(items.find((it) => it[2] === 'electron'))};
    }""")
    r, g, b, a = sampled["sub"]
    assert a > 100 and b > r + 40 and b > g + 80  # the sublattice colour (violet) is there
    assert sampled["electron"][3] < 60  # and nothing around a plain electron
    await page.screenshot(path=screenshot_path("graph-sublattice"))


async def stored_fan_out(dispatcher: TestClient, n: int) -> str:
    store = dispatcher.app[STORE]
    dispatch_id = str(uuid.uuid4())
    graph, nodes = fan_out_graph(n)
    now = "2026-01-01T00:00:00+00:00"
    await store.create_dispatch(NewDispatch(dispatch_id, dispatch_id, "fan_out", Status.RUNNING, now,
                                            json.dumps(graph), nodes, start_time=now), [], {})
    await store.apply([state.node_completed(dispatch_id, 2 * i, b"1", now, now) for i in range(n // 2)], [])
    return dispatch_id


async def test_a_big_graph_has_a_minimap_that_moves_the_view(dispatcher: TestClient, page: Any) -> None:
    dispatch_id = await stored_fan_out(dispatcher, 400)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    minimap = page.locator("#minimap")
    await expect(minimap).to_be_visible()
    for _ in range(4):
        await page.focus("#graph")
        await page.keyboard.press("+")
    before = await view(page)
    box = await minimap.bounding_box()
    await page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5)
    after = await view(page)
    assert after["x"] > before["x"] and after["k"] == before["k"]  # moved right, same zoom
    await page.screenshot(path=screenshot_path("graph-minimap"))


async def pinch(page: Any, cx: float, cy: float, start: float, end: float) -> None:
    """Two fingers on (cx +- start, cy), moved apart to (cx +- end, cy), lifted."""
    cdp = await page.context.new_cdp_session(page)

    def points(d: float) -> list[dict[str, float]]:
        return [{"x": cx - d, "y": cy, "id": 0}, {"x": cx + d, "y": cy, "id": 1}]

    await cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(start)})
    for step in range(1, 6):
        await cdp.send("Input.dispatchTouchEvent",
                       {"type": "touchMove", "touchPoints": points(start + (end - start) * step / 5)})
    await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


async def test_on_a_phone_nothing_is_cut_off_and_fingers_move_the_graph(
        dispatcher: TestClient, addr: str, browser: Any) -> None:
    pending = await asyncio.to_thread(ct.dispatch(squares, dispatcher_addr=addr, disable_run=True), 2)
    dispatch_id = await dispatch(broken, addr, 4)
    context = await browser.new_context(viewport={"width": 375, "height": 812}, has_touch=True,
                                        is_mobile=True, device_scale_factor=2)
    try:
        page = await context.new_page()
        await page.goto(str(dispatcher.make_url("/")))
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll
        for button in await page.locator("#dispatches button:visible, .bulk button:visible").all():
            box = await button.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375, await button.inner_text()
        assert await page.locator(f'tr[data-id="{pending}"] button[data-action=start]').is_visible()
        await page.screenshot(path=screenshot_path("phone-list"), full_page=True)

        await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
        await graph_drawn(page)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375
        await page.screenshot(path=screenshot_path("phone-dispatch"), full_page=True)
        await page.locator("#graph").scroll_into_view_if_needed()
        graph = await page.locator("#graph").bounding_box()
        cx, cy = graph["x"] + graph["width"] / 2, graph["y"] + graph["height"] / 2
        before = await view(page)
        await pinch(page, cx, cy, 40, 120)
        after = await view(page)
        assert after["k"] > before["k"] * 2  # fingers apart: zoomed in
        await page.touchscreen.tap(cx, graph["y"] + 5)  # a tap on nothing opens nothing
        await pinch(page, cx, cy, 120, 40)
        assert (await view(page))["k"] < after["k"]

        await page.locator("#node-table [data-open-node]").first.tap()
        drawer = page.locator("#drawer")
        await expect(drawer).to_be_visible()
        box = await drawer.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375  # the whole drawer on screen
        close = await page.locator("#drawer [data-close-drawer]").bounding_box()
        assert close["x"] + close["width"] <= 375
        await page.screenshot(path=screenshot_path("phone-drawer"))
    finally:
        await context.close()


async def test_dark_mode_follows_the_system(dispatcher: TestClient, addr: str, browser: Any) -> None:
    dispatch_id = await dispatch(broken, addr, 5)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="dark")
    try:
        page = await context.new_page()
        await page.goto(str(dispatcher.make_url("/")))
        dark = "getComputedStyle(document.body).backgroundColor"
        assert await page.evaluate(dark) == "rgb(17, 20, 24)"
        assert await page.evaluate("getComputedStyle(document.querySelector('table.grid')).backgroundColor") \
            == "rgb(26, 30, 36)"
        await page.screenshot(path=screenshot_path("dark-list"))
        await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node=2")))
        await graph_drawn(page)
        await expect(page.locator("#drawer-error")).to_be_visible()
        assert await page.evaluate("getComputedStyle(document.getElementById('drawer')).backgroundColor") \
            == "rgb(26, 30, 36)"
        edge = await page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--edge').trim()")
        assert edge.startswith("rgba(160")  # what the canvas draws edges with
        await page.screenshot(path=screenshot_path("dark-dispatch"))
    finally:
        await context.close()
    light = await browser.new_context(color_scheme="light")
    try:
        page = await light.new_page()
        await page.goto(str(dispatcher.make_url("/")))
        assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
    finally:
        await light.close()
