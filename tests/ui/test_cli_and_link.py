"""What ``covalent start`` prints, used as a person would: the Web UI link lets a browser in
(and nothing else does), the Dask dashboard answers, and ``covalent list / watch / cancel /
status`` show and steer dispatches. Real processes, stopped by PID at teardown.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import covalent as ct
from covalent.config import client_config
from tests import tasks
from tests.conftest import free_port, wait_until
from tests.faults.conftest import REPO, Cli

pytestmark = pytest.mark.slow


@ct.lattice
def failing(x):
    return tasks.fail(x)


@ct.lattice
def gated(x, started, release_file):
    return tasks.gate(x, started, release_file)


def start(cli: Cli) -> tuple[str, str]:
    """``covalent start``; the Web UI link and the dashboard link it printed."""
    out = cli("start", "--port", str(free_port()), "--workers", "1",
              "--dashboard-address", f"127.0.0.1:{free_port()}")
    assert out.returncode == 0, out.stderr + out.stdout
    cli.server_pid()
    link = re.search(r"Web UI: (\S+)", out.stdout)
    dashboard = re.search(r"Dask dashboard: (\S+)", out.stdout)
    assert link and dashboard, out.stdout
    return link.group(1), dashboard.group(1)


async def test_the_printed_link_lets_a_browser_in_and_the_dashboard_answers(cli: Cli, page: Any) -> None:
    link, dashboard = start(cli)
    root, ticket = link.split("/?ticket=")
    token = client_config().token  # what the SDK sends; never in the link
    assert len(ticket) > 40 and token and token not in link

    with urllib.request.urlopen(dashboard, timeout=30) as resp:  # bokeh is installed
        assert resp.status == 200 and b"needs bokeh" not in resp.read()

    resp = await page.goto(root + "/")
    assert resp.status == 401 and "open its link" in await page.inner_text("h1")
    for wrong in ("/?token=not-the-token", "/?ticket=not-a-ticket", f"/?ticket={token}"):
        resp = await page.goto(root + wrong)
        assert resp.status == 401, wrong
    resp = await page.goto(link)
    assert page.url == root + "/" and resp.status == 200  # the ticket left the address bar
    assert await page.inner_text("h1") == "Dispatches"
    [cookie] = await page.context.cookies()
    assert cookie["name"].startswith("covalent_session_") and cookie["value"] not in (token, ticket)
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert await page.evaluate("document.cookie") == ""  # no script can read it
    resp = await page.goto(root + "/logs")  # the cookie opens every page
    assert resp.status == 200 and "server.log" in await page.inner_text("main")
    api = await page.context.request.get(root + "/api/v1/listing")
    assert api.status == 200  # the UI's own requests carry it
    made = await page.context.request.post(root + "/api/v1/ui/tickets", data="{}",
                                            headers={"Content-Type": "application/json"})
    assert made.status == 403  # a session makes no links: only the token does
    fresh = await page.context.browser.new_context()
    try:
        assert (await fresh.request.get(root + "/api/v1/listing")).status == 401
        # The link opens the UI while its server runs, not after: what a process squatting
        # the port while it was stopped could take from a click is worth nothing.
        assert cli("restart", timeout=120).returncode == 0
        cli.server_pid()
        later = await fresh.new_page()
        assert (await later.goto(link)).status == 401
        assert "not this dispatcher's" in await later.inner_text("h1")
        status = cli("status")
        again = re.search(r"Web UI: (\S+)", status.stdout)
        assert again and again.group(1) != link and token not in status.stdout
        assert (await later.goto(again.group(1))).status == 200
        assert await later.inner_text("h1") == "Dispatches"
    finally:
        await fresh.close()


async def test_list_watch_cancel_and_status(cli: Cli, tmp_path: Path) -> None:
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    done = await asyncio.to_thread(ct.dispatch(tasks.two_node, dispatcher_addr=addr), 1, 2)
    out = cli("watch", done)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "add: 1/1 completed" in out.stdout and f"{done}: COMPLETED" in out.stdout

    failed = await asyncio.to_thread(ct.dispatch(failing, dispatcher_addr=addr), 1)
    assert cli("watch", failed).returncode == 1

    started, release = tmp_path / "started", tmp_path / "release"
    running = await asyncio.to_thread(ct.dispatch(gated, dispatcher_addr=addr), 1, str(started), str(release))
    await wait_until(started.exists, timeout=30)
    status = cli("status")
    assert f"{running}  gated  0/1 electrons" in status.stdout and "Web UI: http://" in status.stdout

    listing = cli("list")
    lines = {ln.split()[0]: ln.split() for ln in listing.stdout.splitlines()[1:]}
    assert lines[done][1:4] == ["two_node", "COMPLETED", "2/2"]
    assert lines[failed][2] == "FAILED" and lines[running][2:4] == ["RUNNING", "0/1"]

    # Ctrl-C stops watching, not the dispatch.
    # As from a terminal: Ctrl-C at its default (a suite started in the background with `&`
    # ignores SIGINT, and its children would inherit that).
    watcher = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "watch", running], env=cli.env,
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        await asyncio.to_thread(watcher.stdout.readline)  # it is watching
        watcher.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(watcher.communicate, timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 130 and "goes on" in err
    assert ct.get_result(running, dispatcher_addr=addr, status_only=True)["status"] == "RUNNING"

    out = cli("cancel", running)  # its one electron, not the hidden node gathering the result
    assert out.returncode == 0 and f"Cancelled dispatch {running} (1 unfinished electron)." in out.stdout
    assert cli("watch", running).returncode == 2
    out = cli("cancel", done)  # as ct.cancel: says so, changes nothing
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Dispatch {done} already ended COMPLETED; nothing to cancel." in out.stdout
    release.touch()


async def test_watch_in_a_terminal_draws_bars(cli: Cli) -> None:
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    dispatch_id = await asyncio.to_thread(ct.dispatch(tasks.two_node, dispatcher_addr=addr), 1, 2)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "dispatcher.cli", "watch", dispatch_id],
                              env=dict(cli.env, COLUMNS="100"), cwd=REPO, stdout=follower,
                              stderr=follower, timeout=60, check=False)
        os.close(follower)
        follower = -1
        chunks = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the other end is closed: all read
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "multiply" in text and "1/1" in text and "━" in text  # rich's bar


@ct.electron
def an_electron_whose_name_goes_on_and_on_for_quite_a_while(x):
    return x


@ct.lattice
def _long_names(n):
    return [an_electron_whose_name_goes_on_and_on_for_quite_a_while(i) for i in range(n)]


async def test_watch_in_a_narrow_terminal_cuts_a_long_name_never_the_counts(cli: Cli) -> None:
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    dispatch_id = await asyncio.to_thread(ct.dispatch(_long_names, dispatcher_addr=addr), 2)
    await asyncio.to_thread(ct.get_result, dispatch_id, True, addr)
    leader, follower = pty.openpty()
    chunks: list[bytes] = []
    try:
        proc = subprocess.run([sys.executable, "-m", "dispatcher.cli", "watch", dispatch_id],
                              env=dict(cli.env, COLUMNS="40"), cwd=REPO, stdout=follower,
                              stderr=follower, timeout=60, check=False)
    finally:
        os.close(follower)
        _read_all(leader, chunks)
        os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    bar = [ln for ln in text.splitlines() if "an_electron" in ln][-1]
    assert "2/2" in bar and "…" in bar, text  # it showed "an_electron_whose_na… 1…"


@ct.lattice
def _one_gate(started, release):
    return tasks.gate(1, started, release)


async def test_watch_in_a_terminal_ticks_a_running_nodes_time_between_answers(
        cli: Cli, tmp_path: Path) -> None:
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    started, release = tmp_path / "started", tmp_path / "release"
    dispatch_id = await asyncio.to_thread(ct.dispatch(_one_gate, dispatcher_addr=addr),
                                          str(started), str(release))
    await wait_until(started.exists, timeout=30)
    leader, follower = pty.openpty()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(leader, chunks), daemon=True)
    proc = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "watch", dispatch_id],
                            env=dict(cli.env, COLUMNS="100"), cwd=REPO, stdout=follower,
                            stderr=follower)
    try:
        reader.start()

        def shown() -> list[float]:  # every time the gate's bar has shown, in order
            text = b"".join(chunks).decode(errors="replace")
            return [float(t) for t in re.findall(r"1 running\s+([0-9]+\.[0-9]) s", text)]

        # the node runs and nothing changes on the server: the time still goes on
        await wait_until(lambda: len(shown()) > 1 and shown()[-1] - shown()[0] >= 1.0,
                         timeout=20, interval=0.1)
        release.touch()
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(follower)
        reader.join(10)
        os.close(leader)


async def test_watching_a_stored_dispatch_says_it_is_not_started_then_follows_it(
        cli: Cli) -> None:
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    pending = await asyncio.to_thread(
        ct.dispatch(tasks.two_node, dispatcher_addr=addr, disable_run=True), 1, 2)
    watcher = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "watch", pending],
                               env=cli.env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(watcher.stdout.readline), 30)
        assert first.startswith(f"{pending} is stored, not started (disable_run=True)")
        assert "is_pending=True" in first  # how to start it (it printed 0/1 and waited)
        await asyncio.to_thread(ct.redispatch(pending, dispatcher_addr=addr, is_pending=True))
        assert await asyncio.to_thread(watcher.wait, 60) == 0
        assert f"{pending}: COMPLETED" in watcher.stdout.read()
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.communicate()


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # closed
            return
        if not data:
            return
        into.append(data)


@ct.lattice
def _two_gates(a_started, a_release, b_started, b_release):
    return tasks.gate(1, a_started, a_release), tasks.gate(2, b_started, b_release)


async def test_watch_into_a_pipe_prints_a_change_late_never_drops_it(cli: Cli, tmp_path: Path) -> None:
    # Into a pipe it prints a line a second at most: a change within a second of the last line
    # was dropped, and shown only at the next change (15 s later in the report) or the end.
    link, _ = start(cli)
    addr = link.split("//")[1].split("/")[0]
    files = [tmp_path / n for n in ("a-started", "a-release", "b-started", "b-release")]
    running = await asyncio.to_thread(ct.dispatch(_two_gates, dispatcher_addr=addr),
                                      *map(str, files))
    await wait_until(lambda: files[0].exists() and files[2].exists(), timeout=30)
    watcher = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "watch", running],
                               env=cli.env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout), daemon=True)
    try:
        reader.start()
        await wait_until(lambda: lines, timeout=30)
        assert lines[0].startswith("gate: 0/2 completed, 2 running"), lines
        files[1].touch()  # within the second: the next line is due later, not never
        await wait_until(lambda: any(ln.startswith("gate: 1/2 completed") for ln in lines),
                         timeout=15)
        assert watcher.poll() is None  # the other gate still runs
        files[3].touch()
        assert await asyncio.to_thread(watcher.wait, 60) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        reader.join(10)  # the pipe is at its end once the process is gone
        watcher.stdout.close()  # type: ignore[union-attr]
