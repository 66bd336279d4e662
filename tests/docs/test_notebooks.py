"""The example notebooks: each matches its script and, executed in a real Jupyter kernel
against a real dispatcher, prints what the script prints and shows dispatches as HTML."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest

from examples.make_notebooks import examples, notebook_of
from tests.docs.conftest import EXAMPLES, Kernel, Shared
from tests.docs.expected import EXPECTED, missing


def texts(nb: Any) -> str:
    """Everything the cells printed, as text."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream" and o["name"] == "stdout":
                out.append(o["text"])
    return "".join(out)


def html_outputs(nb: Any) -> list[str]:
    return [o["data"]["text/html"] for cell in nb.cells for o in cell.get("outputs", [])
            if "text/html" in o.get("data", {})]


@pytest.mark.parametrize("script", examples(), ids=lambda p: p.stem)
def test_the_notebook_is_its_script(script: Any) -> None:
    """Regenerate with ``python examples/make_notebooks.py`` when this fails."""
    stored = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    nbformat.validate(stored)
    assert [(c.cell_type, c.source) for c in stored.cells] == \
        [(c.cell_type, c.source) for c in notebook_of(script).cells]
    assert all(not c.get("outputs") for c in stored.cells), "notebooks are stored without outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name: str, kernel: Kernel, shared: Shared) -> None:
    nb = kernel.run(nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4))
    out = texts(nb)
    assert not missing(EXPECTED[name], out), out


@pytest.mark.slow
def test_a_notebook_shows_dispatches_and_live_bars_as_html(kernel: Kernel, shared: Shared) -> None:
    """The dispatch id and the Result render as HTML with their status and a link to the web
    UI; the progress bars are one display, updated in place to the final counts."""
    nb = kernel.run(nbformat.read(EXAMPLES / "notebook_features.ipynb", as_version=4))
    html = html_outputs(nb)
    ui = f'href="http://{shared.server.addr}/dispatches/'
    dispatch = [h for h in html if 'class="covalent-dispatch"' in h]
    assert len(dispatch) == 1 and ui in dispatch[0]
    result = [h for h in html if 'class="covalent-result"' in h]
    assert len(result) == 1 and ui in result[0] and ">COMPLETED</span>" in result[0]
    assert "12: 12 completed" in result[0]  # electrons: 3 texts x (keywords, count, longest, shout)
    assert "PROGRAMMING!" in result[0]  # the result's preview
    bars = [h for h in html if 'class="covalent-progress"' in h]
    assert len(bars) == 1, "one display, updated in place, not one output per update"
    for name in ("keywords", "count", "longest", "shout"):
        assert f'<td>{name}</td><td><progress value="3" max="3"></progress></td>' in bars[0]
    assert ">COMPLETED</span>" in bars[0]
