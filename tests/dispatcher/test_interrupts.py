"""A cancelled node's thread and processes (dispatcher/worker/interrupts.py), in this process:
what an interrupted node started is killed and its pipes closed; a node that ends keeps them;
a node is interrupted once, so its own clean-up runs to its end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from covalent.api import ClientConfig
from dispatcher.worker.interrupts import TaskInterrupted, interrupts
from dispatcher.worker.run import _leave
from dispatcher.worker.sublattice import _wait_seceded


def _node(box: dict[str, Any], started: threading.Event, cmd: list[str]) -> None:
    """What run_node does around user code that starts a process and then keeps busy."""
    try:
        interrupts.enter("d-interrupts", 1)
        try:
            box["popen"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            started.set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # pure Python: the exception lands here
                time.sleep(0.01)
        finally:
            _leave()
        box["ended"] = "ran out"
    except TaskInterrupted:
        box["ended"] = "interrupted"


def test_an_interrupted_node_leaves_its_processes_killed_and_their_pipes_closed() -> None:
    # The exception can land inside subprocess's own clean-up and skip the close of a pipe:
    # left to the garbage collector, it surfaced as a ResourceWarning in whatever ran then.
    box: dict[str, Any] = {}
    started = threading.Event()
    thread = threading.Thread(target=_node, args=(box, started, ["sleep", "30"]))
    thread.start()
    assert started.wait(10)
    assert thread.ident is not None and interrupts.interrupt(thread.ident)
    thread.join(10)
    assert box["ended"] == "interrupted"
    popen = box["popen"]
    assert popen.wait(5) == -9  # killed with its node
    assert popen.stdout.closed and popen.stderr.closed


def test_a_node_that_ends_keeps_the_pipes_of_what_it_started() -> None:
    interrupts.enter("d-interrupts", 2)
    try:
        popen = subprocess.Popen([sys.executable, "-c", "print('still mine')"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        _leave()
    assert not popen.stdout.closed
    out, _ = popen.communicate(timeout=10)
    assert out.strip() == b"still mine"


def _cleans_up(box: dict[str, Any], started: threading.Event, cleaning: threading.Event,
               go_on: threading.Event) -> None:
    """User code whose ``finally`` takes a while (writes a file, closes a connection)."""
    try:
        interrupts.enter("d-interrupts", 3)
        try:
            try:
                started.set()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                cleaning.set()
                go_on.wait(10)  # the cancel reaches this worker again meanwhile
                for _ in range(100):
                    time.sleep(0.001)  # Python bytecode: a second exception would land here
                box["cleaned"] = True
        finally:
            _leave()
    except TaskInterrupted:
        box["ended"] = "interrupted"


def test_a_second_cancel_of_an_interrupted_node_does_not_cut_its_clean_up_short() -> None:
    box: dict[str, Any] = {}
    started, cleaning, go_on = threading.Event(), threading.Event(), threading.Event()
    thread = threading.Thread(target=_cleans_up, args=(box, started, cleaning, go_on))
    thread.start()
    assert started.wait(10)
    assert thread.ident is not None and interrupts.interrupt(thread.ident)
    assert cleaning.wait(10)
    assert not interrupts.interrupt(thread.ident)  # interrupted already: not again
    go_on.set()
    thread.join(10)
    assert box == {"cleaned": True, "ended": "interrupted"}
    assert not interrupts.interrupt(thread.ident)  # it left user code


def test_a_node_asleep_in_time_sleep_is_woken_by_its_interrupt() -> None:
    """Covalent's cancel examples sleep: ``time.sleep`` is a C call no exception reaches, so a
    cancelled ``sleep(600)`` kept its worker's slot until the grace period restarted the
    worker (14 s, and the next dispatch waited for it). A node's sleep is woken instead."""
    box: dict[str, Any] = {}
    entered, go = threading.Event(), threading.Event()

    def node() -> None:
        try:
            interrupts.enter("d-sleep", 6)
            try:
                entered.set()
                go.wait(10)
                time.sleep(600)
                box["ended"] = "slept"
            finally:
                _leave()
        except TaskInterrupted:
            box["ended"] = "interrupted"

    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    assert entered.wait(10) and thread.ident is not None
    go.set()
    assert wait_for(lambda: interrupts.wakers.get(thread.ident or 0))  # asleep now
    assert interrupts.interrupt(thread.ident)
    thread.join(10)
    assert not thread.is_alive() and box == {"ended": "interrupted"}
    assert interrupts.wakers.get(thread.ident) is None
    time.sleep(0.01)  # outside a node (this thread): the sleep it always was


def test_a_node_that_catches_its_interrupt_and_sleeps_again_sleeps() -> None:
    """Its sleeps returned at once for as long as it ran (153,000 a second: a core spinning
    until the grace period restarted the worker, or for good without a nanny)."""
    box: dict[str, Any] = {}
    asleep = threading.Event()

    def node() -> None:
        interrupts.enter("d-swallow", 7)
        try:
            try:
                asleep.set()
                time.sleep(600)
            except TaskInterrupted:
                box["caught"] = True
            began = time.monotonic()
            time.sleep(0.2)  # the first one after too (it returned at once)
            box["first"] = time.monotonic() - began
            began, naps = time.monotonic(), 0
            while time.monotonic() - began < 0.5:
                time.sleep(0.1)
                naps += 1
            box["naps"] = naps
        finally:
            _leave()

    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    assert asleep.wait(10) and wait_for(lambda: interrupts.wakers.get(thread.ident or 0))
    assert thread.ident is not None and interrupts.interrupt(thread.ident)
    thread.join(10)
    assert box["caught"] and box["first"] >= 0.15 and 3 <= box["naps"] <= 6, box


def test_the_working_directory_is_the_workers_again_once_no_node_runs(tmp_path: Any) -> None:
    """A node's chdir stays while another node runs beside it (the directory is the process's:
    putting it back as each node ended moved the other one), a node never starts in a
    directory a node before it deleted, and the last node out puts the worker's back."""
    from dispatcher.worker.interrupts import Interrupts

    running = Interrupts()  # its own: other tests' nodes are none of this one's
    home = os.getcwd()
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    gone.mkdir()
    kept.mkdir()
    try:
        running.enter("d-cwd", 1)  # a long node, running all along (this thread)
        seen: dict[str, str] = {}

        def node(n: int, body: Any) -> None:
            running.enter("d-cwd", n)
            try:
                body()
            finally:
                running.leave()

        def wander() -> None:  # into a directory it then deletes
            os.chdir(gone)
            gone.rmdir()

        def settle() -> None:
            seen["after a deleted one"] = os.getcwd()  # raised FileNotFoundError before
            os.chdir(kept)

        for n, body in ((2, wander), (3, settle)):
            t = threading.Thread(target=node, args=(n, body))
            t.start()
            t.join(10)
        seen["beside the long one"] = os.getcwd()  # not put back under its feet
    finally:
        running.leave()
    assert seen == {"after a deleted one": home, "beside the long one": str(kept)}
    assert os.getcwd() == home  # the last node out


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_cancel_that_comes_during_a_step_of_dasks_own_is_raised_once_it_ends() -> None:
    """``outside`` (around ``distributed.secede``): nothing lands inside; the cancel does after."""
    interrupts.enter("d-outside", 4)
    reached_end = False
    try:
        with pytest.raises(TaskInterrupted):
            with interrupts.outside():
                assert interrupts.set_cancelled({"d-outside": [4]})[0] == []  # not raised here
                for _ in range(200):
                    time.sleep(0.0005)  # bytecode: an exception raised in the thread lands here
                reached_end = True
    finally:
        interrupts.set_cancelled({})
        _leave()
    assert reached_end
    assert not interrupts.inside(threading.get_ident())


def test_an_interrupt_ends_the_long_poll_a_node_waits_in() -> None:
    """A node blocked in a socket read (a sublattice node's long-poll of its child) runs no
    bytecode, so an interrupt alone would land only once the server answers; with the read's
    waker registered, the interrupt shuts the socket down and lands at once."""
    from covalent._client import request, waker

    listener = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()
    held: list[socket.socket] = []

    def silent_server() -> None:  # takes the request, never answers
        conn, _ = listener.accept()
        held.append(conn)
        while b"\r\n\r\n" not in conn.recv(65536):
            pass
        asked.set()

    box: dict[str, Any] = {}
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def node() -> None:
        try:
            interrupts.enter("d-waking", 5)
            try:
                with interrupts.waking(waker(url)):
                    request(ClientConfig(url=url, token=""), "GET", "/dispatches/x/status",
                            query={"wait": 30}, timeout=60)
            finally:
                _leave()
            box["ended"] = "answered"
        except TaskInterrupted:
            box["ended"] = "interrupted"
        except BaseException as exc:  # what the shut-down socket made the request raise
            box["ended"] = repr(exc)

    server = threading.Thread(target=silent_server, daemon=True)
    server.start()
    thread = threading.Thread(target=node, daemon=True)
    thread.start()
    try:
        assert asked.wait(10)  # the request is sent: the node waits for the answer
        assert thread.ident is not None and interrupts.interrupt(thread.ident)
        thread.join(10)
        assert not thread.is_alive(), "the interrupt did not end the long-poll"
        assert box["ended"] == "interrupted"
        assert thread.ident not in interrupts.wakers  # the block removed its waker
    finally:
        for conn in held:
            conn.close()
        listener.close()


# A sublattice node as the worker runs it (worker.sublattice, with its child's result faked):
# it secedes from the pool while its child runs. Events for the test to drive it.
_IN_CHILD_WAIT, _CHILD_ENDS = threading.Event(), threading.Event()
_OTHER_STARTED, _OTHER_ENDS = threading.Event(), threading.Event()


def _child_status(cfg: Any, method: str, path: str, **kw: Any) -> Any:
    assert (method, path) == ("GET", "/dispatches/child/status")
    _IN_CHILD_WAIT.set()
    assert _CHILD_ENDS.wait(20)
    return {"status": "COMPLETED"}


def _child_result(cfg: Any, child_id: str) -> Any:
    return SimpleNamespace(status=SimpleNamespace(is_terminal=True), child=child_id)


def _sublattice_node() -> str:
    interrupts.enter("d-seceded", 7)
    try:
        return str(_wait_seceded(ClientConfig(url="http://127.0.0.1:9", token="t"), "child").child)
    finally:
        _leave()


def _other_node() -> str:
    _OTHER_STARTED.set()
    assert _OTHER_ENDS.wait(20)
    return "other"


async def test_a_cancel_as_a_sublattice_node_ends_leaves_its_worker_its_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen with Dask's streams at 1 ms: a worker (one thread) that never ran a task again, its
    pool counting a dead thread, and the dispatches sent to it RUNNING for good. The node had
    seceded; its child ended, it called ``rejoin`` (waiting for the pool's one thread, busy with
    another task), its cancel landed there, and its thread died just after the pool counted
    it back in. Here the cancel comes at that moment: the worker must run the next task."""
    from distributed import Client, LocalCluster

    from dispatcher.worker import sublattice
    from tests.conftest import wait_until

    monkeypatch.setattr(sublattice, "request_json", _child_status)
    monkeypatch.setattr(sublattice, "fetch_result", _child_result)
    async with LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None, asynchronous=True,
                            # the scheduler's HTTP routes on a free port: 8787 may be held
                            scheduler_kwargs={"dashboard": False,
                                              "dashboard_address": "127.0.0.1:0"}) as cluster:
        async with Client(cluster, asynchronous=True, set_as_default=False) as client:
            [worker] = cluster.workers.values()
            pool = worker.executors["default"]
            try:
                node = client.submit(_sublattice_node, pure=False)
                await wait_until(_IN_CHILD_WAIT.is_set, 20)  # seceded, its child running
                other = client.submit(_other_node, pure=False)
                await wait_until(_OTHER_STARTED.is_set, 20)  # the pool's one thread is busy
                _CHILD_ENDS.set()
                # the node returns (or, rejoining, waits for the busy thread)
                await wait_until(lambda: node.done() or pool._rejoin_list, 20)
                interrupts.set_cancelled({"d-seceded": None})  # the cancel, at that moment
                _OTHER_ENDS.set()
                assert await other.result(timeout=20) == "other"
                assert await client.submit(len, "next", pure=False).result(timeout=20) == 4
                assert await node.result(timeout=20) == "child"
                assert all(t.is_alive() for t in pool._threads)
            finally:
                interrupts.set_cancelled({})
                _CHILD_ENDS.set()
                _OTHER_ENDS.set()


# A node whose user code leaves the pool and comes back (``secede``/``rejoin``, what
# ``worker_client()`` does), as the worker runs it; events for the test to drive it.
_USER_SECEDED, _USER_REJOINS = threading.Event(), threading.Event()
_BUSY_STARTED, _BUSY_ENDS = threading.Event(), threading.Event()


def _user_node_that_rejoins() -> str:
    from distributed import rejoin, secede

    interrupts.enter("d-rejoin", 3)
    try:
        secede()
        _USER_SECEDED.set()
        assert _USER_REJOINS.wait(20)
        rejoin()  # waits for the pool's one thread; the cancel lands as it returns
        return "rejoined"
    finally:
        _leave()


def _busy_node() -> str:
    _BUSY_STARTED.set()
    assert _BUSY_ENDS.wait(20)
    return "busy"


@pytest.mark.parametrize("guarded", [True, False])
async def test_a_cancel_as_user_code_rejoins_the_pool_costs_its_worker_no_thread(
        guarded: bool) -> None:
    """User code may ``rejoin`` (our sublattice nodes no longer do): a cancel raised in it as
    the pool counts it back in kills a thread the pool still counts. With ``PoolGuard`` (which
    the dispatcher registers on every worker) the worker replaces it and runs the next task;
    without it, it never would (shown here with a short bound)."""
    from distributed import Client, LocalCluster

    from dispatcher.worker.pool import PoolGuard
    from tests.conftest import wait_until

    for event in (_USER_SECEDED, _USER_REJOINS, _BUSY_STARTED, _BUSY_ENDS):
        event.clear()
    async with LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None, asynchronous=True,
                            # the scheduler's HTTP routes on a free port: 8787 may be held
                            scheduler_kwargs={"dashboard": False,
                                              "dashboard_address": "127.0.0.1:0"}) as cluster:
        async with Client(cluster, asynchronous=True, set_as_default=False) as client:
            if guarded:
                await client.register_plugin(PoolGuard(), name=PoolGuard.name)
            [worker] = cluster.workers.values()
            pool = worker.executors["default"]
            try:
                node = client.submit(_user_node_that_rejoins, pure=False)
                await wait_until(_USER_SECEDED.is_set, 20)
                busy = client.submit(_busy_node, pure=False)
                await wait_until(_BUSY_STARTED.is_set, 20)  # the pool's one thread is busy
                _USER_REJOINS.set()
                await wait_until(lambda: bool(pool._rejoin_list), 20)  # waiting in rejoin
                interrupts.set_cancelled({"d-rejoin": None})  # lands once rejoin returns
                _BUSY_ENDS.set()
                assert await busy.result(timeout=20) == "busy"
                with pytest.raises(TaskInterrupted):
                    await node.result(timeout=20)
                nxt = client.submit(len, "next", pure=False)
                if guarded:
                    assert await nxt.result(timeout=20) == 4
                    await wait_until(lambda: all(t.is_alive() for t in pool._threads), 20)
                    assert len(pool._threads) == 1
                else:  # the pool's one thread is dead: nothing runs
                    with pytest.raises(TimeoutError):
                        await nxt.result(timeout=3)
                    assert [t.is_alive() for t in pool._threads] == [False]
            finally:
                interrupts.set_cancelled({})
                _USER_REJOINS.set()
                _BUSY_ENDS.set()


def test_a_sublattice_that_cannot_reach_its_dispatcher_says_so_and_how_to_fix_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import covalent as ct
    from dispatcher.protocol import NodeSpec
    from dispatcher.worker import sublattice
    from dispatcher.worker.contact import WorkerContext
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setattr(sublattice, "worker_context", lambda: WorkerContext(url, "", "/unused"))

    @ct.lattice
    def child(x: int) -> int:
        return x

    spec = NodeSpec(dispatch_id="d" * 32, node_id=3, name=":sublattice:child", kind="sublattice",
                    fn=None, value=None, hooks=None, layout=())
    with pytest.raises(sublattice.DispatcherUnreachable) as caught:
        sublattice.run_sublattice(spec, child, [1], {})
    message = str(caught.value)
    assert message.startswith(f"this worker could not reach the dispatcher at {url} to run "
                              "sublattice dispatch ")
    assert "--public-url" in message and "covalent start" not in message
