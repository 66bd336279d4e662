"""The Covalent workflow API on a Dask engine.

>>> import covalent as ct
>>> @ct.electron
... def add(x, y): return x + y
>>> @ct.lattice
... def wf(n): return add(n, 1)
>>> wf(1)   # outside a dispatch a lattice is its function
2
"""

from __future__ import annotations

from . import _file_transfer as fs
from . import executor, leptons
from ._deps import DepsBash, DepsCall, DepsModule, DepsPip
from ._dispatch import dispatch, dispatch_sync, redispatch, stop_triggers
from ._electron import Electron, electron, wait
from ._file_transfer import strategies as fs_strategies
from ._lattice import Lattice, lattice
from ._lepton import Lepton
from ._programmatic.commands import covalent_start, covalent_stop, is_covalent_running
from ._results_manager.result import Result
from ._results_manager.results_manager import cancel, get_result
from .wire.status import Status, status
from ._transport import TransportableObject
from .config import get_config, reload_config, set_config
from .executor.utils import get_context

__version__ = "0.1.0"

__all__ = [
    "DepsBash",
    "DepsCall",
    "DepsModule",
    "DepsPip",
    "Electron",
    "Lattice",
    "Lepton",
    "Result",
    "Status",
    "TransportableObject",
    "cancel",
    "covalent_start",
    "covalent_stop",
    "dispatch",
    "dispatch_sync",
    "electron",
    "executor",
    "fs",
    "fs_strategies",
    "get_config",
    "get_context",
    "get_result",
    "is_covalent_running",
    "lattice",
    "leptons",
    "redispatch",
    "reload_config",
    "set_config",
    "status",
    "stop_triggers",
    "triggers",
    "wait",
]


def __getattr__(name: str) -> object:
    """``ct.triggers`` (as Covalent's Quick Start uses it), imported when first asked for."""
    if name == "triggers":
        import importlib

        return importlib.import_module(".triggers", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
