"""The Timeline tab in Chromium (issue #24): electrons as bars over time in rows by the worker
that ran them, the critical path, and the statistics (slowest, per name, queued vs running).
Durations are never asserted; which node waited for which is.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from dispatcher.keys import STORE
from dispatcher.ui.timeline import worker_label
from tests.conftest import auth_headers
from tests.ui.conftest import screenshot_path
from tests.ui.test_pages import dispatch

pytestmark = pytest.mark.slow


@ct.electron
def step(x):
    time.sleep(0.3)  # the chain is the long way through the dispatch
    return x + 1


@ct.electron
def quick(x):
    return x


@ct.electron
def join(xs):
    return sum(xs)


@ct.lattice
def chain_and_fan(n):
    return join([step(step(step(0)))] + [quick(i) for i in range(n)])


async def test_the_timeline_shows_bars_by_worker_the_critical_path_and_statistics(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(chain_and_fan, addr, 6)
    rows = await dispatcher.app[STORE].node_rows(dispatch_id)
    steps = [r.node_id for r in rows if r.name == "step"]
    joined = next(r.node_id for r in rows if r.name == "join")
    record = await (await dispatcher.get(f"/api/v1/dispatches/{dispatch_id}/nodes/{steps[0]}",
                                         headers=auth_headers())).json()
    assert record["worker"] and "://" in record["worker"]  # the worker that ran it is recorded

    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await page.click("#tab-timeline")
    await page.wait_for_selector("#dispatch[data-timeline-drawn]", state="attached")
    assert "view=timeline" in page.url  # a link to this tab opens it
    assert await page.locator("#view-graph").is_hidden()
    data = await page.evaluate("covalentTimelineState.data")
    assert len(data["bars"]) == 3 + 6 + 1  # every electron that ran, parameters and gathers not
    groups = {g for g, _ in data["lanes"]}
    assert worker_label(record["worker"]) in groups  # "worker pid N" for a Unix socket
    critical = [b[0] for b in data["bars"] if b[6]]
    assert sorted(critical) == sorted(steps + [joined])  # the chain decided the runtime, not the fan
    bars = {b[0]: b for b in data["bars"]}
    assert all(bars[a][4] <= bars[b][3] + 1e-3 for a, b in zip(steps, steps[1:]))  # one after another
    assert all(bars[b][5] < len(data["lanes"]) for b in bars)

    summary = page.locator("#stats-summary")
    assert "4 electrons" in await summary.locator("#stats-critical").inner_text()
    per_name = page.locator("#stats-per-name tbody tr")
    await expect(per_name).to_have_count(3)
    first = await per_name.first.locator("td").all_inner_texts()
    assert first[:2] == ["step", "3"]  # most time running first
    slowest = page.locator("#stats-slowest tbody tr").first
    assert (await slowest.inner_text()).startswith("step #") and "critical" in await slowest.inner_text()
    await page.screenshot(path=screenshot_path("timeline"), full_page=True)

    # A bar is a way to a node: hover says what it is, a click opens its drawer.
    canvas = await page.locator("#timeline").bounding_box()
    lane = bars[steps[1]][5]
    where = await page.evaluate(f"""() => {{
        const d = covalentTimelineState.data, w = document.getElementById('timeline').parentElement.clientWidth;
        const b = d.bars.find((b) => b[0] === {steps[1]});
        return 170 + (w - 170 - 12) * ((b[3] + b[4]) / 2) / d.span;
    }}""")
    await page.mouse.move(canvas["x"] + where, canvas["y"] + 26 + lane * 18 + 9)
    await expect(page.locator("#timeline-tip")).to_contain_text(f"step #{steps[1]}")
    await page.mouse.click(canvas["x"] + where, canvas["y"] + 26 + lane * 18 + 9)
    await expect(page.locator("#drawer-node")).to_have_attribute("data-node", str(steps[1]))
