"""Find the code blocks of a Markdown page and run them, as a reader would, in order.

Python blocks run in one namespace per page (so a page reads like a notebook); bash blocks
run with ``bash -euo pipefail`` in the same working directory; TOML and JSON blocks are
parsed; ``text`` blocks are output, not code. A block preceded by
``<!-- not-run: reason -->`` is checked for syntax only. A block that only includes a file
(``--8<-- "examples/x.py"``) is that file, which tests/docs/test_examples.py runs.

``python -m tests.docs.blocks PAGE`` runs a page's blocks (the tests start it in a process of
its own per page, with the environment that reaches a dispatcher).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
NOT_RUN = re.compile(r"^<!-- not-run: (.+?) -->$")
INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')
LANGUAGES = {"python", "bash", "toml", "json", "text"}
# The README's first two commands, kept exactly as written (a fresh machine runs them): they
# install into a new venv, so tests/docs/test_pages.py runs the first after its install step
# and checks that .ci/run does the second.
FRESH = [
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && covalent start && "
    "python examples/quickstart.py; covalent stop\n",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && python -m pytest\n",
]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first line of code (1-based)
    lang: str
    code: str
    not_run: str  # the reason, or "" for a block that runs

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the page runner runs it (else: syntax only, or tested elsewhere)."""
        return not (self.not_run or self.included or self.lang == "text" or self.code in FRESH)

    @property
    def included(self) -> str | None:
        m = INCLUDE.match(self.code.strip())
        return m.group(1) if m else None


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, with the reason it is not run, if it says one."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        prev = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        reason = NOT_RUN.match(prev.strip())
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        out.append(Block(path, i + 2, m.group(1), "\n".join(lines[i + 1:end]) + "\n",
                         reason.group(1) if reason else ""))
        i = end + 1
    return out


def check_syntax(block: Block) -> None:
    """Raise if the block is not valid in its language."""
    if block.lang == "python":
        compile(block.code, block.where, "exec")
    elif block.lang == "bash":
        subprocess.run(["bash", "-n", "-c", block.code], check=True, capture_output=True)
    elif block.lang == "toml":
        tomllib.loads(block.code)
    elif block.lang == "json":
        json.loads(block.code)


def run(block: Block, namespace: dict[str, object]) -> None:
    """Run one block: Python in ``namespace`` (tracebacks name the page and its lines)."""
    if block.lang == "python":
        code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
        exec(code, namespace)  # noqa: S102 - running the documentation is the point
    elif block.lang == "bash":
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], text=True,
                              capture_output=True, check=False)
        print(proc.stdout, end="")
        if proc.returncode:
            raise SystemExit(f"{block.where}: bash exited {proc.returncode}\n{proc.stderr}")
    else:
        check_syntax(block)


def main(page: str) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks(Path(page)):
        if not block.runs:
            continue
        print(f"--- {block.where}", flush=True)
        run(block, namespace)
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
