"""Each example script, run as a reader runs it (``python examples/NAME.py``) against a real
dispatcher, prints what it says it does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.conftest import EXAMPLES, Shared
from tests.docs.expected import EXPECTED, missing

pytestmark = pytest.mark.slow  # a Python process each, with pandas or scikit-learn to import


def run_script(name: str, env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_every_example_has_expectations() -> None:
    from examples.make_notebooks import examples

    assert sorted(p.stem for p in examples()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_script(name: str, shared: Shared, tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()  # the script's temporary files (ct.fs.File()) stay in tmp_path
    out = run_script(name, dict(shared.env, TMPDIR=str(tmp_path / "tmp")), tmp_path)
    assert not missing(EXPECTED[name], out), out
