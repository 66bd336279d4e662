"""``ct.covalent_start()``, ``ct.covalent_stop()``, ``ct.is_covalent_running()``: the ``covalent
start`` and ``covalent stop`` commands, called from Python.

They run the ``covalent`` command of this Python's environment in a subprocess (the SDK never
imports the server), with the options given or, as Covalent does, those of the config file:
``[dispatcher] port`` and ``[dask] num_workers``, ``mem_per_worker``, ``threads_per_worker``.
"Running" means that the dispatcher the SDK would talk to (``COVALENT_DISPATCHER_ADDR`` or the
config file's address) answers.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from .. import _client
from ..config import client_config, get_config
from ..errors import CovalentError

log = logging.getLogger("covalent")

__all__ = ["covalent_start", "covalent_stop", "is_covalent_running"]


def is_covalent_running() -> bool:
    """Whether the dispatcher at the configured address answers.

    Returns:
        True if it answers ``/health``, False otherwise.
    """
    try:
        _client.request_json(client_config(), "GET", "/health", timeout=2)
    except (CovalentError, OSError):
        return False
    return True


def covalent_start(develop: bool = False, port: str | int | None = None,
                   mem_per_worker: str | None = None, workers: int | None = None,
                   threads_per_worker: int | None = None, ignore_migrations: bool = False,
                   no_cluster: bool = False, no_triggers: bool = False,
                   triggers_only: bool = False, *, quiet: bool = False) -> None:
    """Start the dispatcher (``covalent start``) unless it is running already.

    Args:
        develop, ignore_migrations: Covalent's; accepted, nothing to do here (the store
            migrates itself).
        port: the port (default: the config file's, else 48008).
        mem_per_worker, workers, threads_per_worker: the embedded Dask cluster's shape
            (default: the config file's ``[dask]`` values, else Dask's defaults).
        no_cluster, no_triggers, triggers_only: Covalent's; this dispatcher always runs its
            Dask cluster and observes triggers itself, so these are refused.
        quiet: print nothing.

    Raises:
        ValueError: ``no_cluster``, ``no_triggers`` or ``triggers_only`` was asked for.
        subprocess.CalledProcessError: ``covalent start`` failed (its output says why).

    Example:
        >>> import covalent as ct
        >>> ct.covalent_start(quiet=True)  # doctest: +SKIP
    """
    refused = [name for name, on in (("no_cluster", no_cluster), ("no_triggers", no_triggers),
                                     ("triggers_only", triggers_only)) if on]
    if refused:
        raise ValueError(f"{', '.join(refused)}: this dispatcher always runs its own Dask "
                         "cluster and observes triggers itself; start it without them (or "
                         "point it at a cluster with `covalent start --scheduler-address`)")
    if is_covalent_running():
        _say("Covalent server is already running.", quiet)
        return
    args: dict[str, Any] = {
        "--port": port or _configured("dispatcher.port"),
        "--mem-per-worker": mem_per_worker or _configured("dask.mem_per_worker"),
        "--workers": workers or _configured("dask.num_workers"),
        "--threads-per-worker": threads_per_worker or _configured("dask.threads_per_worker"),
    }
    cmd = [*_covalent(), "start"]
    for flag, value in args.items():
        if value not in (None, ""):
            cmd += [flag, str(value)]
    log.debug("starting the dispatcher: %s", cmd)
    _run(cmd, quiet)


def covalent_stop(*, quiet: bool = False) -> None:
    """Stop the dispatcher (``covalent stop``) if it is running.

    Raises:
        subprocess.CalledProcessError: ``covalent stop`` failed.
    """
    if not is_covalent_running():
        _say("Covalent server is not running.", quiet)
        return
    _run([*_covalent(), "stop"], quiet)


def _covalent() -> list[str]:
    """The ``covalent`` command of this environment."""
    return [sys.executable, "-m", "dispatcher.cli"]


def _configured(key: str) -> Any:
    try:
        return get_config(key)
    except KeyError:
        return None


def _run(cmd: list[str], quiet: bool) -> None:
    if quiet:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    else:
        subprocess.run(cmd, check=True)


def _say(message: str, quiet: bool) -> None:
    log.debug(message)
    if not quiet:
        print(message)
