"""The node drawer in Chromium (issue #24; #20 item 5): a node's inputs, what a running node
prints while it runs, a failed node's traceback once and without our frames, a reused node's
output and where it came from, a bad ``#node=``, and the drawer as a keyboard user meets it.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import expect

import covalent as ct
from dispatcher.keys import STORE
from dispatcher.procinfo import children
from tests import tasks
from tests.conftest import auth_headers
from tests.faults.conftest import Cli
from tests.ui.conftest import screenshot_path
from tests.ui.test_cli_and_link import start
from tests.ui.test_pages import dispatch, graph_drawn

pytestmark = pytest.mark.slow


@ct.electron
def square(x):
    return x * x


@ct.electron
def add(x, y):
    return x + y


@ct.lattice
def sum_of_square(x, y):
    return add(square(x), y=y)


@ct.electron
def chatty(x):
    print(f"step 1 of {x}", flush=True)
    print("warming up", file=sys.stderr, flush=True)
    tasks.release.wait(30)
    print("done")
    return x


@ct.lattice
def talks(x):
    return chatty(x)


@ct.electron
def fails_inside(x):
    raise ValueError(f"no good: {x}")


@ct.lattice
def fails(x):
    return fails_inside(x)


@ct.lattice
def squares(n):
    return add([square(i) for i in range(n)], 0)


async def open_node(page: Any, node: int) -> None:
    await page.click(f'#node-table [data-open-node="{node}"]')
    await expect(page.locator("#drawer-node")).to_have_attribute("data-node", str(node))


async def test_a_nodes_inputs_show_their_values_and_lead_to_the_nodes_they_came_from(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(sum_of_square, addr, 3, 4)
    nodes = {n.name: n.node_id for n in await dispatcher.app[STORE].node_rows(dispatch_id)}
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    await open_node(page, nodes["add"])
    rows = page.locator("#drawer-inputs tr")
    await expect(rows).to_have_count(2)
    assert [await r.locator("th").inner_text() for r in await rows.all()] == ["x", "y"]
    assert await rows.nth(0).locator("code").inner_text() == "9"  # square(3), computed upstream
    assert await rows.nth(1).locator("code").inner_text() == "4"
    assert "a value passed in" in await rows.nth(1).inner_text()
    await page.screenshot(path=screenshot_path("drawer-inputs"))
    await rows.nth(0).locator("a").click()  # "square #0": the node x came from
    await expect(page.locator("#drawer-node")).to_have_attribute("data-node", str(nodes["square"]))
    assert await page.locator("#drawer-inputs code").inner_text() == "3"


async def test_a_running_nodes_output_shows_while_it_runs(dispatcher: TestClient, addr: str,
                                                          page: Any) -> None:
    dispatch_id = await dispatch(talks, addr, 5, wait=False)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node=0")))
    await expect(page.locator("#drawer-status")).to_have_attribute("data-status", "RUNNING", timeout=10_000)
    await expect(page.locator("#drawer-stdout")).to_have_text("step 1 of 5\n", timeout=10_000)
    await expect(page.locator("#drawer-stderr")).to_have_text("warming up\n")
    assert "updated live" in await page.locator("#drawer-live-note").inner_text()
    await page.screenshot(path=screenshot_path("drawer-running-node-output"))
    tasks.release.set()
    await expect(page.locator("#drawer-status")).to_have_attribute("data-status", "COMPLETED", timeout=10_000)
    await expect(page.locator("#drawer-stdout")).to_have_text("step 1 of 5\ndone\n")  # its stored record


async def test_a_failed_nodes_traceback_is_shown_once_without_our_frames(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(fails, addr, 1)
    stored = await (await dispatcher.get(f"/api/v1/dispatches/{dispatch_id}/nodes/0",
                                         headers=auth_headers())).json()
    assert "call_with_hooks" in stored["error"]  # the record keeps everything; the page does not
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node=0")))
    error = await page.locator("#drawer-error").inner_text()
    assert error.startswith("Traceback (most recent call last):") and error.rstrip().endswith(
        "ValueError: no good: 1")
    assert 'raise ValueError(f"no good: {x}")' in error  # the user's own frame and line
    assert "call_with_hooks" not in error and "/dispatcher/" not in error and "/covalent/" not in error
    drawer = await page.locator("#drawer").inner_text()
    assert drawer.count("Traceback (most recent call last)") == 1  # not again under stderr
    assert "its traceback is under Error" in await page.locator("#drawer-stderr-empty").inner_text()
    await page.screenshot(path=screenshot_path("drawer-traceback-once"))


async def test_a_reused_nodes_drawer_shows_its_output_and_where_it_came_from(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    first = await dispatch(squares, addr, 4)
    again = await asyncio.to_thread(ct.redispatch(first, dispatcher_addr=addr, reuse_previous_results=True))
    result = await asyncio.to_thread(ct.get_result, again, True, addr)
    nodes = await dispatcher.app[STORE].get_nodes(again)
    reused = [n for n in nodes if n.reused_from == first and n.name == "square"]
    assert reused, "the redispatch reused the squares"
    node = reused[-1]
    sdk_value = await asyncio.to_thread(lambda: result.get_node_result(node.node_id)["output"])
    record = await (await dispatcher.get(f"/api/v1/dispatches/{again}/nodes/{node.node_id}",
                                         headers=auth_headers())).json()
    assert record["preview"] == repr(sdk_value) and record["status"] == "COMPLETED"  # record == SDK
    await page.goto(str(dispatcher.make_url(f"/dispatches/{again}#node={node.node_id}")))
    await expect(page.locator("#drawer-preview")).to_have_text(repr(sdk_value))
    reused_note = page.locator("#drawer-reused")
    assert "reused" in await reused_note.inner_text() and first[:8] in await reused_note.inner_text()
    assert await reused_note.locator("a").get_attribute("href") == f"/dispatches/{first}"
    assert "redispatch of squares" in await page.locator("#redispatch-of").inner_text()
    await page.screenshot(path=screenshot_path("drawer-reused-node"))


async def test_a_bad_node_address_says_what_is_wrong(dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(sum_of_square, addr, 1, 2)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node=999")))
    missing = page.locator("#drawer-missing")
    await expect(missing).to_contain_text("This dispatch has no node 999")
    text = await page.locator("#drawer").inner_text()
    assert "{" not in text and "NodeNotFound" not in text  # not the raw JSON error
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}#node=abc")))
    await page.reload()
    await expect(missing).to_contain_text("is not a node id")


async def test_the_drawer_is_a_dialog_that_takes_and_gives_back_the_focus(
        dispatcher: TestClient, addr: str, page: Any) -> None:
    dispatch_id = await dispatch(sum_of_square, addr, 2, 1)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    link = page.locator("#node-table [data-open-node]").first
    await link.focus()
    await page.keyboard.press("Enter")
    drawer = page.locator("#drawer")
    await expect(drawer).to_be_visible()
    assert await drawer.get_attribute("role") == "dialog"
    assert await drawer.get_attribute("aria-labelledby") == "drawer-title"
    assert await page.evaluate("document.getElementById('drawer').contains(document.activeElement)")
    await page.keyboard.press("Tab")  # the next stop is inside the drawer: its close button
    assert await page.evaluate("document.activeElement.matches('[data-close-drawer]')")
    await page.keyboard.press("Escape")
    await expect(drawer).to_be_hidden()
    assert await page.evaluate("document.activeElement.matches('#node-table [data-open-node]')")


async def test_focus_stays_on_its_link_while_live_updates_redraw_the_node_table(
        dispatcher: TestClient, addr: str, page: Any, tmp_path: Path) -> None:
    """A keyboard user in a running dispatch's table: the rows are redrawn as nodes finish,
    with the drawer open or not, and the focus is still on the same node's link."""
    first, second = tmp_path / "first", tmp_path / "second"
    dispatch_id = await dispatch(talk_twice, addr, str(first), str(second), wait=False)
    await page.goto(str(dispatcher.make_url(f"/dispatches/{dispatch_id}")))
    await graph_drawn(page)
    link = '#node-table [data-open-node="0"]'

    def redrawn_since(count: int) -> Any:
        return page.wait_for_function(
            "(n) => Number(document.getElementById('node-table').dataset.refreshed || 0) > n",
            arg=count, timeout=20_000)

    async def redraws() -> int:
        return int(await page.locator("#node-table").get_attribute("data-refreshed") or 0)

    await page.locator(link).focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#drawer")).to_be_visible()
    redrawn = await redraws()
    first.touch()  # node 0 completes: the table is redrawn under the open drawer
    await redrawn_since(redrawn)
    await page.keyboard.press("Escape")
    await expect(page.locator("#drawer")).to_be_hidden()
    assert await page.evaluate(f"document.activeElement.matches('{link}')")
    redrawn = await redraws()
    second.touch()  # the dispatch ends: redrawn again, the focus on the link
    await redrawn_since(redrawn)
    assert await page.evaluate(f"document.activeElement.matches('{link}')")


@ct.electron
def chatty_until(x, release_file):
    import os
    import time

    print(f"working on {x}", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(release_file) and time.monotonic() < deadline:
        time.sleep(0.05)  # a worker process: a file is what reaches it
    return x


@ct.lattice
def talks_until(x, release_file):
    return chatty_until(x, release_file)


@ct.lattice
def talk_twice(first, second):
    return chatty_until(1, first), chatty_until(2, second)


async def test_a_running_nodes_output_is_read_from_its_worker_process(cli: Cli, page: Any,
                                                                       tmp_path: Path) -> None:
    link, _ = start(cli)  # `covalent start`: worker processes, as people run it
    addr = link.split("//")[1].split("/")[0]
    release = tmp_path / "release"
    dispatch_id = await asyncio.to_thread(ct.dispatch(talks_until, dispatcher_addr=addr), 3, str(release))
    await page.goto(link)
    await page.goto(link.split("/?")[0] + f"/dispatches/{dispatch_id}#node=0")
    await expect(page.locator("#drawer-stdout")).to_have_text("working on 3\n", timeout=20_000)
    note = page.locator("#drawer-live-note")
    said = re.fullmatch(r"printed so far on worker process (\d+) on this machine, updated live",
                        await note.inner_text())
    assert said is not None, await note.inner_text()
    assert int(said[1]) in children(cli.server_pid())  # one of this dispatcher's workers
    assert (await note.get_attribute("title") or "").startswith("unix:///")  # the address
    await page.screenshot(path=screenshot_path("drawer-running-on-a-worker-process"))
    release.touch()
    await expect(page.locator("#drawer-status")).to_have_attribute("data-status", "COMPLETED", timeout=20_000)
