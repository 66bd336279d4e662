"""A real single-node SLURM for the session: munged, slurmctld and slurmd as children of pytest.

Everything lives in one temporary directory (config, munge key and socket, state, spool, logs); the
daemons listen on free loopback ports and know nothing of /etc/slurm or /etc/munge. Tests reach the
cluster through ``SLURM_CONF``, set in ``os.environ`` for the session so that ``sbatch``/``scancel``
run by dask-jobqueue find it. See tests/slurm/README.md for the pitfalls.

When SLURM is not installed or cannot start here the tests skip with the reason and the daemon's log
tail; with ``COVALENT_TEST_REQUIRE_SLURM=1`` (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import free_port, wait_until

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sinfo", "squeue", "sbatch", "scancel", "scontrol")
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PARTITION = "pytest"


@dataclass(frozen=True, slots=True)
class Slurm:
    """A running single-node SLURM: where its config is and what it is called."""

    conf: Path
    root: Path
    node: str
    partition: str
    cpus: int
    memory_mib: int

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def job_ids(self) -> list[str]:
        """IDs of every job squeue still shows (pending, running or completing)."""
        out = _run(["squeue", "-h", "-o", "%i"], self.env())
        return out.split()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("COVALENT_TEST_REQUIRE_SLURM") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _run(cmd: list[str], env: dict[str, str], timeout: float = 15.0) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _hardware() -> dict[str, str]:
    """The node line ``slurmd -C`` prints (its own view of name, topology and memory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=15, check=False,
                         env={**os.environ, "PATH": SBIN}).stdout
    first = out.splitlines()[0] if out else ""
    fields = dict(re.findall(r"(\w+)=(\S+)", first))
    if "NodeName" not in fields or "RealMemory" not in fields:
        _unavailable(f"`slurmd -C` printed no node line: {out!r}")
    return fields


def write_config(root: Path, hw: dict[str, str]) -> tuple[Path, int]:
    """Write slurm.conf for this host alone; return its path and the memory it offers (MiB)."""
    memory = int(int(hw["RealMemory"]) * 0.9)  # above the real figure, slurmd would drain the node
    conf = root / "slurm.conf"
    node = hw["NodeName"]
    conf.write_text(f"""\
ClusterName=pytest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root / "munge" / "munge.socket"}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
# No cgroups, no systemd: track job processes by process group, bind nothing.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
# A cancelled job's processes get SIGKILL 5 s after SIGTERM (default 30 s).
KillWait=5
InactiveLimit=0
MinJobAge=10
NodeName={node} NodeAddr=127.0.0.1 CPUs={hw["CPUs"]} Boards={hw.get("Boards", 1)} \
SocketsPerBoard={hw.get("SocketsPerBoard", 1)} CoresPerSocket={hw.get("CoresPerSocket", hw["CPUs"])} \
ThreadsPerCore={hw.get("ThreadsPerCore", 1)} RealMemory={memory} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf, memory


class Daemons:
    """The processes this fixture started, stopped by their PIDs in reverse order."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.root / "log" / f"{name}.out", "ab") as out:
            proc = subprocess.Popen([shutil.which(name, path=SBIN) or name, *args], env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # a ^C to pytest must not reach them first
        self.procs.append((name, proc))
        return proc

    def report(self) -> str:
        """Exit status and log tail of each daemon, for a skip or failure message."""
        parts = []
        for name, proc in self.procs:
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            parts.append(f"--- {name} (pid {proc.pid}, {state}):\n{_tail(self.root / 'log' / f'{name}.out')}")
        return "\n".join(parts)

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]

    def stop(self, timeout: float = 10.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)


def _node_idle(env: dict[str, str], node: str) -> bool:
    try:
        return _run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env, timeout=5).strip() == "idle"
    except (RuntimeError, subprocess.TimeoutExpired):
        return False  # slurmctld not answering yet


async def _cancel_all(slurm: Slurm) -> None:
    """scancel every job and wait for squeue to empty; SIGKILL (by PID) what slurm still lists."""
    ids = slurm.job_ids()
    if not ids:
        return
    subprocess.run(["scancel", *ids], env=slurm.env(), capture_output=True, timeout=15, check=False)
    try:
        await wait_until(lambda: not slurm.job_ids(), timeout=30, interval=0.2)
    except AssertionError:
        for job in slurm.job_ids():
            out = _run(["scontrol", "listpids", job], slurm.env())
            for pid in re.findall(r"^(\d+)\s", out, re.MULTILINE):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        raise


@pytest.fixture(scope="session")
async def slurm() -> AsyncIterator[Slurm]:
    """A single-node SLURM on this host (about 1 s to come up); jobs cancelled and daemons stopped at the end."""
    if os.geteuid() != 0:
        _unavailable("SLURM test cluster needs root (slurmd runs jobs as their owner, SlurmdUser=root)")
    missing = [b for b in DAEMONS + CLIENTS if shutil.which(b, path=SBIN) is None]
    if missing:
        _unavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge, see .ci/run)")
    hw = _hardware()
    # munged refuses a socket whose directory (and every parent) is not executable by all:
    # pytest's tmp_path lives under a 0700 directory, so use a 0755 one under /tmp.
    root = Path(tempfile.mkdtemp(prefix="pytest-slurm-"))
    root.chmod(0o755)
    for d in ("munge", "state", "spool", "log"):
        (root / d).mkdir(mode=0o755)
    fd = os.open(root / "munge" / "munge.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as key:
        key.write(os.urandom(1024))  # a fresh key: only our munged can read its credentials
    conf, memory = write_config(root, hw)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = Daemons(root, env)
    slurm = Slurm(conf=conf, root=root, node=hw["NodeName"], partition=PARTITION,
                  cpus=int(hw["CPUs"]), memory_mib=memory)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(conf))
            await _start(daemons, root, env, slurm.node)
            yield slurm
            await _cancel_all(slurm)
    finally:
        daemons.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _start(daemons: Daemons, root: Path, env: dict[str, str], node: str) -> None:
    sock = root / "munge" / "munge.socket"
    daemons.start("munged", "--foreground", f"--socket={sock}", f"--key-file={root / 'munge' / 'munge.key'}",
                  f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'seed'}")
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: sock.exists() or daemons.dead(), timeout=10, interval=0.02)
    if not sock.exists():
        _unavailable(f"munged exited or made no socket within 10 s\n{daemons.report()}")
    daemons.start("slurmctld", "-D")
    daemons.start("slurmd", "-D")
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: daemons.dead() or _node_idle(env, node), timeout=30, interval=0.1)
    if daemons.dead() or not _node_idle(env, node):
        slurm_logs = "\n".join(f"--- {n}.log:\n{_tail(root / 'log' / f'{n}.log')}" for n in ("slurmctld", "slurmd"))
        what = f"{', '.join(daemons.dead())} exited" if daemons.dead() else "not idle in sinfo within 30 s"
        _unavailable(f"SLURM did not come up: {what} (node {node})\n{daemons.report()}\n{slurm_logs}\n"
                     f"--- sinfo:\n{_sinfo(env)}")


def _sinfo(env: dict[str, str]) -> str:
    proc = subprocess.run(["sinfo", "-N", "-l"], env=env, capture_output=True, text=True, timeout=10, check=False)
    return proc.stdout + proc.stderr
