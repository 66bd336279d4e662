"""Time the web UI on a 10,000-node fan-out dispatch in headless Chromium (issue #15).

``python -m benchmarks.ui_render [--quick] [--nodes N] [--repeats R]``: starts a dispatcher (an
in-process Dask cluster, a fresh data dir) in this process, runs ``total([inc(i) for i in
range(N)])`` to the end through the SDK, then opens its page R times in Debian's chromium
(Playwright, a fresh context each time) and measures:

- ``first_render_ms``: from navigation start to the graph drawn (the page's own clock,
  ``performance.now()`` when the canvas was first painted; summary and node table come first);
- ``box_open_ms``: a click on the ``inc`` box until its N nodes are drawn (server layout of the
  opened view, JSON, paint);
- ``frame_ms``: with the N nodes drawn, a zoom until the next frame is painted (is it usable).

Prints one JSON line (median, p90, every sample, cores, versions). ``--quick`` uses 2,100 nodes
(just above the aggregation threshold) and one repeat (the smoke test runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import covalent as ct

from .workloads import fan_out

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 1),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
            "samples": [round(s, 1) for s in samples]}


async def measure_page(browser: Any, url: str, n: int) -> dict[str, float]:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    try:
        await page.goto(url)
        await page.wait_for_selector("#dispatch[data-graph-drawn]", state="attached", timeout=60_000)
        first = float(await page.get_attribute("#dispatch", "data-graph-drawn") or "nan")
        await page.locator("#graph").scroll_into_view_if_needed()
        box = await page.evaluate("""() => {
            const it = covalentGraph.layout.items.find((i) => i[8] > 1);
            const r = document.getElementById('graph').getBoundingClientRect(), v = covalentGraph.view;
            return {x: r.left + (it[3] - v.x) * v.k, y: r.top + (it[4] - v.y) * v.k};
        }""")
        drawn_before = await page.get_attribute("#dispatch", "data-graph-drawn")
        await page.mouse.click(box["x"], box["y"])
        await expect(page.locator("#dispatch")).not_to_have_attribute(
            "data-graph-drawn", drawn_before or "", timeout=60_000)
        opened = await page.evaluate("""() => Number(document.getElementById('dispatch').dataset.graphDrawn)
                                           - Number(document.getElementById('dispatch').dataset.expandedAt)""")
        items = int(await page.get_attribute("#dispatch", "data-graph-items") or 0)
        assert items >= n, f"the box opened into {items} items, not {n}"
        frame = await page.evaluate("""() => new Promise((done) => {
            const c = document.getElementById('graph'), r = c.getBoundingClientRect();
            const t0 = performance.now();
            c.dispatchEvent(new WheelEvent('wheel', {deltaY: -300, clientX: r.left + r.width / 2,
                                                      clientY: r.top + r.height / 2, cancelable: true}));
            requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
        })""")
        return {"first_render_ms": first, "box_open_ms": float(opened), "frame_ms": float(frame)}
    finally:
        await context.close()


async def run(n: int, repeats: int) -> dict[str, Any]:
    from aiohttp import web
    from playwright.async_api import async_playwright

    from dispatcher.app import create_app
    from dispatcher.settings import ClusterSettings, Settings

    data = Path(tempfile.mkdtemp(prefix="covalent-ui-bench-"))
    os.environ["COVALENT_CONFIG_DIR"] = str(data / "config")  # never the user's config
    settings = Settings(data_dir=data / "data", port=0, cluster=ClusterSettings(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None))
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        addr = f"127.0.0.1:{port}"
        started = time.perf_counter()
        workload = fan_out(n)  # total([inc(i) for i in range(n)])
        dispatch_id = await asyncio.to_thread(
            ct.dispatch(workload.lattice, dispatcher_addr=addr), *workload.args)
        result: Any = await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
        assert result.result == n * (n + 1) // 2, result.error
        run_s = time.perf_counter() - started
        samples: dict[str, list[float]] = {"first_render_ms": [], "box_open_ms": [], "frame_ms": []}
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            version = browser.version
            for _ in range(repeats):
                for key, value in (await measure_page(
                        browser, f"http://{addr}/dispatches/{dispatch_id}", n)).items():
                    samples[key].append(value)
            await browser.close()
    finally:
        await runner.cleanup()
        shutil.rmtree(data, ignore_errors=True)
    from importlib import metadata

    return {"benchmark": "ui_render", "fan_out": n, "graph_nodes": 2 * n + 3, "repeats": repeats,
            "dispatch_run_s": round(run_s, 2), **{k: summary(v) for k, v in samples.items()},
            "cores": os.cpu_count(), "chromium": version,
            "playwright": metadata.version("playwright"), "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ui_render", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,100 nodes (just aggregated), one repeat")
    p.add_argument("--nodes", type=int, default=10_000, help="width of the fan-out")
    p.add_argument("--repeats", type=int, default=5)
    ns = p.parse_args(argv)
    n, repeats = (2100, 1) if ns.quick else (ns.nodes, ns.repeats)
    print(json.dumps(asyncio.run(run(n, repeats))), flush=True)


if __name__ == "__main__":
    main()
