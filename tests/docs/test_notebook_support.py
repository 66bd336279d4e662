"""What makes notebooks (and scripts beside helper modules) a place to work: HTML views of a
dispatch, and code that reaches the workers whether it is in the notebook, in a module next to
it, or in a module elsewhere (with a message that says what to do)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import covalent as ct
from covalent._notebook import DispatchId
from tests.docs.conftest import Shared


@ct.electron
def fails_with_markup(x):
    raise ValueError(f"<b>{x}</b> is not allowed")


@ct.electron
def double(x):
    return 2 * x


@ct.lattice
def half_fails(x):
    return [double(x), fails_with_markup(x)]


def test_a_failed_result_renders_its_error_escaped_with_counts_and_link(shared: Shared) -> None:
    dispatch_id = ct.dispatch(half_fails)(3)
    assert isinstance(dispatch_id, DispatchId) and isinstance(dispatch_id, str)
    result = ct.get_result(dispatch_id, wait=True)
    html = result._repr_html_()
    assert ">FAILED</span>" in html
    assert "2: 1 completed, 1 failed" in html
    assert "&lt;b&gt;3&lt;/b&gt; is not allowed" in html and "<b>3</b>" not in html
    assert f'href="http://{shared.server.addr}/dispatches/{dispatch_id}"' in html
    assert "token" not in html  # a saved notebook must not carry the token

    shown = dispatch_id._repr_html_()
    assert ">FAILED</span>" in shown
    assert "<th" in shown and "fails_with_markup" in shown and "0/1 completed, 1 failed" in shown


def test_a_dispatch_id_says_when_its_server_cannot_be_reached(config_dir: Path) -> None:
    shown = DispatchId("0d9e", "127.0.0.1:1")._repr_html_()
    assert "<code>0d9e</code>" in shown and "unknown (DispatcherUnavailableError" in shown


def test_a_dispatch_id_pickles_and_compares_as_its_string() -> None:
    import pickle

    d = DispatchId("abc", "127.0.0.1:9")
    back = pickle.loads(pickle.dumps(d))
    assert back == "abc" and back.dispatcher_url == "127.0.0.1:9" and {back: 1}["abc"] == 1


FARAWAY = '''
import covalent as ct

@ct.electron
def far(x):
    return x + 1
'''

SCRIPT = '''
import sys
sys.path.insert(0, sys.argv[1])   # a module from another folder: sent by reference
import cloudpickle
import covalent as ct
import faraway

@ct.lattice
def wf(x):
    return faraway.far(x)

first = ct.dispatch_sync(wf)(1)
print("first:", first.status)
print("error:", first.error)
cloudpickle.register_pickle_by_value(faraway)
second = ct.dispatch_sync(wf)(1)
print("second:", second.status, second.result)
'''


@pytest.mark.slow
def test_a_module_the_workers_cannot_import_fails_saying_what_to_do(shared: Shared,
                                                                   tmp_path: Path) -> None:
    """A module neither installed nor next to the script goes by reference: its node fails
    with a message naming the two ways out, and the second one works."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "faraway.py").write_text(FARAWAY)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.run([sys.executable, "main.py", str(tmp_path / "lib")], env=shared.env,
                          cwd=tmp_path / "app", capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "first: FAILED" in proc.stdout
    assert "ModuleNotFoundError: No module named 'faraway'" in proc.stdout
    assert "Install it where the workers run" in proc.stdout
    assert "cloudpickle.register_pickle_by_value(faraway)" in proc.stdout
    assert "second: COMPLETED 2" in proc.stdout
