"""Dask over Unix sockets (dispatcher/unix_comm.py), with a real scheduler and real workers in
this process: where sockets go, what a worker moves to another, what a missing socket says."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest
from distributed import Client, Scheduler, Worker
from distributed.comm import connect

from dispatcher.unix_comm import STALE_S, SUN_PATH_MAX, _socket_path, remove_socket_dir, socket_dir


def test_sockets_go_in_a_directory_only_their_user_may_enter(tmp_path: Path) -> None:
    near = socket_dir(tmp_path / "run")
    try:
        assert near.parent == tmp_path / "run"  # short enough here
        assert stat.S_IMODE(near.stat().st_mode) == 0o700
        made = _socket_path(f"{near}:0")  # as Dask hands it a host and a port
        assert made.parent == near and made.suffix == ".sock"
        assert _socket_path(str(near / "s.sock")) == near / "s.sock"
    finally:
        remove_socket_dir(near)
    deep = tmp_path / ("d" * (SUN_PATH_MAX - len(str(tmp_path))))
    far = socket_dir(deep)  # a socket there would not fit: the system's temporary directory
    try:
        assert not far.is_relative_to(deep) and stat.S_IMODE(far.stat().st_mode) == 0o700
        assert [p.name for p in deep.iterdir()] == [far.name]  # named there by a link
        assert (deep / far.name).resolve() == far
    finally:
        remove_socket_dir(far, deep)
    assert not far.exists() and list(deep.iterdir()) == []


def test_a_directory_in_the_temporary_directory_a_killed_dispatcher_left_is_swept(
        tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (SUN_PATH_MAX - len(str(tmp_path))))
    dead, starting = socket_dir(deep), socket_dir(deep)  # neither removed: as after a kill -9
    gone = socket_dir(deep)
    gone.rmdir()  # its link stays, naming nothing
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(dead / "1-00.sock"))
        long_ago = time.time() - 2 * STALE_S
        os.utime(dead, (long_ago, long_ago))
        new = socket_dir(deep)
        assert not dead.exists() and starting.is_dir() and new.is_dir()
        assert sorted(p.name for p in deep.iterdir()) == sorted([starting.name, new.name])
    finally:
        for d in (dead, starting, gone):
            remove_socket_dir(d, deep)
    assert list(deep.iterdir()) == [deep / new.name]
    remove_socket_dir(new, deep)


def test_directories_a_killed_dispatcher_left_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    dead, live, starting = socket_dir(run), socket_dir(run), socket_dir(run)
    kept = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for d in (dead, live):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.bind(str(d / "1-00.sock"))  # its process gone: the file stays, nobody listens
        kept.bind(str(live / "2-00.sock"))
        kept.listen()
        long_ago = time.time() - 2 * STALE_S
        for d in (dead, live):
            os.utime(d, (long_ago, long_ago))
        new = socket_dir(run)
        assert sorted(run.iterdir()) == sorted([live, starting, new])
    finally:
        kept.close()


@pytest.mark.parametrize("loc", ["127.0.0.1:0", "relative/dir"])
def test_a_listen_address_that_is_not_a_path_is_refused(loc: str) -> None:
    with pytest.raises(ValueError, match="unix:// address is the path"):
        _socket_path(loc)


def test_a_socket_path_too_long_for_the_kernel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than a Unix socket allows"):
        _socket_path(str(tmp_path / ("s" * SUN_PATH_MAX)))


async def test_a_scheduler_and_workers_on_unix_sockets_move_data_and_clean_up(
        tmp_path: Path) -> None:
    sockets = socket_dir(tmp_path / "run")
    try:
        async with Scheduler(host=str(sockets), port=0, protocol="unix", dashboard=False,
                             dashboard_address="127.0.0.1:0") as s:  # (8787 may be taken)
            assert s.address.startswith(f"unix://{sockets}/")
            async with Worker(s.address, host=str(sockets), nthreads=1) as a, \
                    Worker(s.address, host=str(sockets), nthreads=1) as b, \
                    Client(s.address, asynchronous=True, set_as_default=False) as client:
                assert set(s.workers) == {a.address, b.address}
                # 24 MiB made on one worker, read by the other: frames over the socket
                made = client.submit(bytes, 24 << 20, workers=[a.address], pure=False)
                size = client.submit(len, made, workers=[b.address], pure=False)
                assert await size == 24 << 20
                assert b.state.tasks[made.key].state == "memory"  # it did travel
                socks = sorted(p.name for p in sockets.iterdir())
                assert len(socks) == 3 and all(stat.S_ISSOCK((sockets / n).stat().st_mode)
                                               for n in socks)
        assert list(sockets.iterdir()) == []  # each listener removes its socket as it stops
    finally:
        remove_socket_dir(sockets)


async def test_a_socket_nobody_listens_on_is_a_clear_error_within_the_timeout(
        tmp_path: Path) -> None:
    with pytest.raises(OSError, match="Timed out trying to connect to unix://"):
        await connect(f"unix://{tmp_path}/gone.sock", timeout=0.5)
