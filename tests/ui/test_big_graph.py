"""A 10,000-node fan-out in the browser: aggregated boxes, a box opened on click, live counts.

The dispatch is written through the store (its run is not what is tested here: the page is),
with a mix of statuses; updates then go through the Recorder as the runner's would.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

from dispatcher import state
from dispatcher.keys import RECORDER, STORE
from dispatcher.state import Status
from dispatcher.store import NewDispatch
from tests.ui.conftest import screenshot_path

pytestmark = pytest.mark.slow
N = 10_000


def fan_out_graph(n: int) -> tuple[dict[str, Any], list[tuple[int, str, str]]]:
    """``total([square(i) for i in range(n)])`` numbered as the SDK numbers it."""
    nodes: list[dict[str, Any]] = []
    edges: list[list[Any]] = []
    for i in range(n):
        nodes += [{"id": 2 * i, "name": "square", "kind": "electron", "executor": "dask", "fn_hash": "sq"},
                  {"id": 2 * i + 1, "name": f":parameter:{i}", "kind": "parameter"}]
        edges.append([2 * i + 1, 2 * i, "x", "arg", 0])
    nodes += [{"id": 2 * n, "name": ":electron_list:", "kind": "list"},
              {"id": 2 * n + 1, "name": "total", "kind": "electron", "fn_hash": "tot"},
              {"id": 2 * n + 2, "name": ":postprocess:", "kind": "postprocess"}]
    edges += [[2 * i, 2 * n, "", "arg", i] for i in range(n)]
    edges += [[2 * n, 2 * n + 1, "xs", "arg", 0], [2 * n + 1, 2 * n + 2, "", "arg", 0]]
    return {"nodes": nodes, "edges": edges}, [(x["id"], x["name"], x["kind"]) for x in nodes]


async def test_a_10000_node_fan_out_is_aggregated_opens_on_click_and_stays_live(
        dispatcher: TestClient, page: Any) -> None:
    store, recorder = dispatcher.app[STORE], dispatcher.app[RECORDER]
    dispatch_id = str(uuid.uuid4())
    graph, nodes = fan_out_graph(N)
    now = "2026-01-01T00:00:00+00:00"
    await store.create_dispatch(NewDispatch(
        dispatch_id, dispatch_id, "fan_out_10k", Status.RUNNING, now, json.dumps(graph), nodes,
        start_time=now, meta={"sources": {"sq": "@ct.electron\ndef square(x):\n    return x * x\n"}}), [], {})
    stamp = "2026-01-01T00:00:01+00:00"
    await store.apply(
        [state.node_completed(dispatch_id, 2 * i + 1, b"p", stamp, stamp) for i in range(N)]
        + [state.node_completed(dispatch_id, 2 * i, b"1", stamp, stamp, preview=str(i * i)) for i in range(6000)]
        + [state.node_failed(dispatch_id, 2 * i, "ValueError: no", stamp) for i in range(6000, 6300)]
        + [state.node_running(dispatch_id, 2 * i, stamp) for i in range(6300, 6500)], [])

    started = time.perf_counter()
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await page.wait_for_selector("#dispatch[data-graph-drawn]", state="attached", timeout=20_000)
    first_render = time.perf_counter() - started
    assert await page.get_attribute("#dispatch", "data-graph-items") == "3"  # square box, total, result
    await expect(page.locator("#d-done")).to_have_text("6000")
    assert await page.locator("#d-total").inner_text() == str(N + 1)
    assert "10002 nodes: 1 box" in await page.locator("#graph-note").inner_text()
    await page.screenshot(path=screenshot_path("graph-10000-nodes-aggregated"))

    # Live: the next 1,000 completions reach the page through the recorder's commit.
    recorder.record(*[state.node_completed(dispatch_id, 2 * i, b"1", stamp, stamp)
                      for i in range(6500, 7500)])
    await expect(page.locator("#d-done")).to_have_text("7000", timeout=5000)

    # A click on the box opens it into its 10,000 nodes.
    box = await page.evaluate("""() => {
        const it = covalentGraph.layout.items.find((i) => i[7] < 0);
        const r = document.getElementById('graph').getBoundingClientRect(), v = covalentGraph.view;
        return {x: r.left + (it[3] - v.x) * v.k, y: r.top + (it[4] - v.y) * v.k};
    }""")
    clicked = time.perf_counter()
    await page.mouse.click(box["x"], box["y"])
    await expect(page.locator("#dispatch")).to_have_attribute("data-graph-items", str(N + 2), timeout=20_000)
    opened = time.perf_counter() - clicked
    await page.screenshot(path=screenshot_path("graph-10000-nodes-box-opened"))
    print(f"\n10,000-node page: first render {first_render:.2f} s, box opened in {opened:.2f} s")
