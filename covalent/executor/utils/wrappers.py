"""What a custom executor's ``run`` receives as ``function``: the electron with its hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cloudpickle

from ..._deps import call_with_hooks


class ElectronCall:
    """``ElectronCall(fn, hooks)(*args, **kwargs)`` runs an electron as its worker would: bash
    and pip deps, ``call_before`` (injecting ``retval_keyword`` values), the function,
    ``call_after``. It pickles, even with plain ``pickle`` (the function and hooks travel as
    cloudpickle bytes, as Covalent's do), so an executor may run it elsewhere, where this
    package is installed.

    >>> import pickle
    >>> pickle.loads(pickle.dumps(ElectronCall(lambda x: x + 1, {})))(1)
    2
    """

    def __init__(self, fn: Callable[..., Any], hooks: dict[str, Any]) -> None:
        self.fn = fn
        self.hooks = {k: v for k, v in hooks.items() if k != "executor"}
        self.__name__ = getattr(fn, "__name__", "electron")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return call_with_hooks(self.fn, args, kwargs, self.hooks)

    def __repr__(self) -> str:
        return f"<electron {self.__name__}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_loaded, (cloudpickle.dumps(self.fn), cloudpickle.dumps(self.hooks)))


def _loaded(fn: bytes, hooks: bytes) -> ElectronCall:
    return ElectronCall(cloudpickle.loads(fn), cloudpickle.loads(hooks))
