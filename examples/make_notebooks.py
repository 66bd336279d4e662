"""Write each example script as a notebook next to it: ``python examples/make_notebooks.py``.

The scripts are the source: cells are marked with ``# %%`` (code) and ``# %% [markdown]``
(a comment block that becomes text), the "percent" format editors and jupytext read. The
notebooks are written without outputs; tests/docs/test_notebooks.py checks that they match
their scripts and runs them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
MARKER = re.compile(r"^# %%( \[markdown\])?\s*$")
NOT_EXAMPLES = {"make_notebooks.py", "helpers.py", "quickstart.py"}


def examples() -> list[Path]:
    """The example scripts that have notebooks."""
    return sorted(p for p in HERE.glob("*.py") if p.name not in NOT_EXAMPLES)


def notebook_of(script: Path) -> nbformat.NotebookNode:
    """The notebook of a percent-format script."""
    cells, kind, lines = [], None, []  # type: ignore[var-annotated]

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append(new_markdown_cell(re.sub(r"(?m)^# ?", "", text)))
        elif kind == "code" and text:
            cells.append(new_code_cell(text))

    for line in script.read_text().splitlines():
        match = MARKER.match(line)
        if match:
            flush()
            kind, lines = ("markdown" if match.group(1) else "code"), []
        else:
            lines.append(line)
    flush()
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{script.stem[:50]}-{i}"  # stable ids: regenerating changes nothing
    return nb


def main() -> None:
    for script in examples():
        target = script.with_suffix(".ipynb")
        target.write_text(nbformat.writes(notebook_of(script)) + "\n")
        print("wrote", target.relative_to(Path.cwd()) if target.is_relative_to(Path.cwd())
              else target, file=sys.stderr)


if __name__ == "__main__":
    main()
