"""``lattice.draw`` (#22): the graph built, not run; inline in a real Jupyter kernel (no server),
else on the dispatcher's preview page, in a real browser, with every name escaped."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import covalent as ct
from tests.conftest import JSON, free_port

HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'


@ct.electron
def split(text):
    return text.split()


@ct.electron
def count(words):
    return len(words)


@ct.lattice
def words(text):
    return count(split(text))


@pytest.mark.slow
async def test_draw_prints_a_link_to_a_page_that_shows_the_graph_escaped(
        dispatcher: TestClient, addr: str, page: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COVALENT_DISPATCHER_ADDR", addr)
    await asyncio.to_thread(words.draw, HOSTILE)
    printed = capsys.readouterr().out
    found = re.search(r"To preview the transport graph of the lattice, visit (\S+)", printed)
    assert found, printed
    listing = await (await dispatcher.get("/api/v1/dispatches")).json()
    assert listing["dispatches"] == []  # drawn, not run
    alerts: list[str] = []
    page.on("dialog", lambda d: alerts.append(d.message))
    await page.goto(found.group(1))
    labels = await page.locator("#preview svg g.node text").all_text_contents()
    assert labels == ["split", ":parameter:<img src=x o…", "count", ":postprocess:reconstruct"]
    titles = await page.locator("#preview svg g.node > title").all_text_contents()
    assert f":parameter:{HOSTILE}" in titles  # the whole name, as text
    assert await page.locator("#preview svg img").count() == 0 and alerts == []
    assert await page.title() == "Preview of words · Covalent"


async def test_previews_refuse_bad_graphs_and_unknown_ids(dispatcher: TestClient) -> None:
    cycle = {"name": "c", "graph": {"nodes": [{"id": 0, "name": "a", "kind": "electron"},
                                              {"id": 1, "name": "b", "kind": "electron"}],
                                    "edges": [[0, 1], [1, 0]]}}
    resp = await dispatcher.post("/api/v1/previews", json=cycle, headers=JSON)
    assert resp.status == 400 and "cycle" in (await resp.json())["message"]
    bad = {"name": "x", "graph": {"nodes": [{"id": 0, "name": "a", "kind": "rocket"}], "edges": []}}
    resp = await dispatcher.post("/api/v1/previews", json=bad, headers=JSON)
    assert resp.status == 400 and "kind" in (await resp.json())["message"]
    resp = await dispatcher.get("/preview/no-such-preview")
    assert resp.status == 404 and "No such preview" in await resp.text()


def test_draw_without_a_dispatcher_writes_the_picture_to_a_file(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COVALENT_DISPATCHER_ADDR", f"127.0.0.1:{free_port()}")
    words.draw("a b")
    printed = capsys.readouterr().out
    path = Path(printed.rsplit(" ", 1)[-1].strip())
    assert "the transport graph of the lattice is drawn in" in printed
    svg = path.read_text()
    path.unlink()
    assert svg.startswith("<svg") and svg.count('class="node') == 4


@pytest.mark.slow
def test_draw_in_a_notebook_shows_an_inline_svg_with_no_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
            "import os; os.environ['COVALENT_DISPATCHER_ADDR'] = '127.0.0.1:9'  # nothing there\n"
            "from tests.ui.test_preview import words\n"
            "words.draw('one two three')")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    # this venv's Python as the kernel (not whatever "python3" kernel the machine registers)
    spec = tmp_path / "jupyter" / "kernels" / "covalent-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "covalent-test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nbclient.NotebookClient(nb, kernel_name="covalent-test", timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    svgs = [o["data"]["image/svg+xml"] for o in outputs if "image/svg+xml" in o.get("data", {})]
    assert len(svgs) == 1 and svgs[0].count('class="node') == 4
    assert not [o for o in outputs if o.get("name") == "stdout"]  # no link, no file: a picture
