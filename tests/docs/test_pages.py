"""Every code block of the documentation (docs/, README.md, benchmarks/README.md) runs, or
says why it cannot and is checked for syntax, so the docs cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.make_notebooks import examples
from tests.conftest import free_port
from tests.docs.blocks import FRESH, LANGUAGES, Block, blocks, check_syntax
from tests.docs.conftest import EXAMPLES, Shared
from tests.faults.conftest import REPO, Cli

PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md", REPO / "benchmarks" / "README.md"]

INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page)]


def starts_a_server(page: Path) -> bool:
    return any(b.runs and b.lang == "bash" and "covalent start" in b.code
               for b in blocks(page))


def rel(page: Path) -> str:
    return str(page.relative_to(REPO))


def test_every_block_is_in_a_known_language_and_valid() -> None:
    found = all_blocks()
    assert len(found) > 50
    for block in found:
        assert block.lang in LANGUAGES, f"{block.where}: say the block's language ({block.lang!r})"
        if not block.included:
            check_syntax(block)


def test_included_files_are_examples_the_tests_run() -> None:
    included = {b.included for b in all_blocks() if b.included}
    assert included == {f"examples/{p.name}" for p in examples()} | {"examples/helpers.py"}


def test_the_fresh_machine_commands_come_first_in_the_readme_and_in_getting_started() -> None:
    readme = [b.code for b in blocks(REPO / "README.md")]
    assert readme[:2] == FRESH
    assert [b.code for b in blocks(REPO / "docs" / "getting-started.md")][:2] == FRESH
    # the second is what .ci/run does: install the test extra, then pytest
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test" in ci and "\npython -m pytest\n" in ci


@pytest.fixture
def private_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A data dir, config dir and port of its own, for a page that runs `covalent start`;
    whatever server holds the data dir at the end is stopped."""
    env = _base_env()
    env.update(COVALENT_CONFIG_DIR=str(tmp_path / "config"), COVALENT_DATA_DIR=str(tmp_path / "data"),
               COVALENT_SERVER_PORT=str(free_port()))
    cli = Cli(env, tmp_path / "data")
    yield env
    cli.stop_server()


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COVALENT_DISPATCHER_ADDR", "COVALENT_TOKEN")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_page(page: Path, env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "tests.docs.blocks", str(page)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"{rel(page)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


SHARED_PAGES = [p for p in PAGES if any(b.runs for b in blocks(p)) and not starts_a_server(p)]
OWN_SERVER_PAGES = [p for p in PAGES if starts_a_server(p)]


@pytest.mark.slow
@pytest.mark.parametrize("page", SHARED_PAGES, ids=rel)
def test_page_runs(page: Path, shared: Shared, tmp_path: Path) -> None:
    env = dict(_base_env(), COVALENT_DATA_DIR=str(shared.server.data_dir))
    env.update({k: shared.env[k] for k in ("COVALENT_CONFIG_DIR", "COVALENT_DISPATCHER_ADDR",
                                           "COVALENT_TOKEN")})
    (tmp_path / "tmp").mkdir()  # the page's temporary files (ct.fs.File()) stay in tmp_path
    env["TMPDIR"] = str(tmp_path / "tmp")
    out = run_page(page, env, tmp_path)
    ran = [b for b in blocks(page) if b.runs]
    assert out.count("--- ") == len(ran), out


@pytest.mark.slow
@pytest.mark.parametrize("page", OWN_SERVER_PAGES, ids=rel)
def test_page_with_its_own_server_runs(page: Path, private_env: dict[str, str],
                                       tmp_path: Path) -> None:
    run_page(page, private_env, tmp_path)


@pytest.mark.slow
def test_the_first_fresh_machine_command_runs_the_quickstart(private_env: dict[str, str]) -> None:
    """Everything after the install (which .ci/run does), as written, from the repository."""
    assert FRESH[0].startswith(INSTALL)
    proc = subprocess.run(["bash", "-c", FRESH[0][len(INSTALL):]], env=private_env, cwd=REPO,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: total = 55" in proc.stdout
    assert (EXAMPLES / "quickstart.py").exists()
