"""BaseTrigger: what every trigger shares on the client (register, trigger, to_dict).

A registered trigger is observed by the dispatcher: built-in triggers as coroutines on its
event loop, a custom subclass in a process of its own (the dispatcher never unpickles it). In
that process ``trigger()`` asks the dispatcher through a private hook instead of the REST API
(``use_internal_funcs``); used directly in a user's process, ``trigger()`` goes through REST.

Once registered (``register()``, or ``ct.dispatch`` of a lattice with ``triggers=``), the user's
own object reads ``new_dispatch_ids`` from the dispatcher, so it lists the dispatches the
dispatcher started for it (#12 item 9).
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

import cloudpickle


T = TypeVar("T", bound="BaseTrigger")


class BaseTrigger:
    """Base class of every trigger; subclass it and implement ``observe`` and ``stop``."""

    # Attributes a built-in trigger keeps across a restart besides its arguments (``to_dict``).
    _state_keys: tuple[str, ...] = ()

    def __init__(self, lattice_dispatch_id: str | None = None, dispatcher_addr: str | None = None,
                 triggers_server_addr: str | None = None) -> None:
        self.lattice_dispatch_id = lattice_dispatch_id
        self.dispatcher_addr = dispatcher_addr
        self.triggers_server_addr = triggers_server_addr
        self._new_dispatch_ids: list[str] = []
        self._registered: tuple[str | None, str] | None = None  # (dispatcher address, trigger id)
        self.observe_blocks = True
        self.event_loop: Any = None
        self.use_internal_funcs = False
        self.stop_flag: Any = None  # a subclass's own stopping mechanism (Covalent's name)
        self._covalent_fire: Callable[[], str | None] | None = None  # set by the trigger host

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # stop() on a trigger registered from this process stops it on the dispatcher too
        # (it kept firing): every subclass's own stop() is wrapped, once.
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("stop")
        if own is not None and not getattr(own, "_stops_registered", False):
            setattr(cls, "stop", _stopping_registered(own))

    # -- what a subclass implements -------------------------------------------------------

    def observe(self) -> None:
        """Watch for changes and call ``self.trigger()`` when one should start a dispatch."""
        raise NotImplementedError(f"{type(self).__name__} must implement observe()")

    def stop(self) -> None:
        """Stop observing."""
        raise NotImplementedError(f"{type(self).__name__} must implement stop()")

    # -- shared behaviour ------------------------------------------------------------------

    @property
    def new_dispatch_ids(self) -> list[str]:
        """The dispatches this trigger started (not the pending one it started first).

        On a registered trigger object this asks the dispatcher, which is the one firing it;
        when the dispatcher cannot be reached, it is the list from the last answer.
        """
        registered = self.__dict__.get("_registered")
        if registered is not None and self.__dict__.get("_covalent_fire") is None:
            fresh = _fired_ids(*registered)
            if fresh is not None:
                self._new_dispatch_ids = fresh
        return self.__dict__.setdefault("_new_dispatch_ids", [])  # type: ignore[no-any-return]

    @new_dispatch_ids.setter
    def new_dispatch_ids(self, ids: list[str]) -> None:
        self._new_dispatch_ids = list(ids)

    def _registered_as(self, trigger_id: str, dispatcher_addr: str | None,
                       dispatch_id: str) -> None:
        """Remember where this object was registered (``ct.dispatch`` calls it)."""
        self.lattice_dispatch_id = dispatch_id
        self._registered = (dispatcher_addr, trigger_id)
        self.__dict__.pop("_stopped_registered", None)

    def trigger(self) -> None:
        """Start the connected dispatch if it is pending, else redispatch it.

        Raises:
            RuntimeError: no dispatch id is connected to this trigger.
        """
        if not self.lattice_dispatch_id:
            raise RuntimeError(f"{type(self).__name__} has no lattice_dispatch_id to trigger")
        fire = self.__dict__.get("_covalent_fire")
        if fire is not None:
            new_id = fire()
        else:
            new_id = _trigger_over_rest(self.lattice_dispatch_id, self.dispatcher_addr)
        if new_id and new_id != self.lattice_dispatch_id:
            self._new_dispatch_ids = [*self.__dict__.get("_new_dispatch_ids", []), new_id]

    def register(self) -> None:
        """Register this trigger with the dispatcher, which then observes it (and keeps it
        across restarts).

        Raises:
            RuntimeError: no dispatch id is connected to this trigger.
            InvalidRequestError: the dispatcher cannot observe it (the reason says why).
        """
        from .. import _client
        from ..config import client_config

        if not self.lattice_dispatch_id:
            raise RuntimeError(f"{type(self).__name__} has no lattice_dispatch_id to register for")
        addr = self.triggers_server_addr or self.dispatcher_addr
        resp = _client.request_json(client_config(addr), "POST", "/triggers",
                                    body=json.dumps(self.registration()).encode())
        self._registered = (addr, str(resp["trigger_id"]))
        self.__dict__.pop("_stopped_registered", None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description from which a built-in trigger can be rebuilt."""
        return {
            "name": type(self).__name__,
            "lattice_dispatch_id": self.lattice_dispatch_id,
            "dispatcher_addr": self.dispatcher_addr,
            "triggers_server_addr": self.triggers_server_addr,
            "new_dispatch_ids": list(self.__dict__.get("_new_dispatch_ids", [])),
            "observe_blocks": self.observe_blocks,
            "use_internal_funcs": self.use_internal_funcs,
        }

    def registration(self) -> dict[str, Any]:
        """The body of a registration: ``to_dict()``, plus the pickled trigger for a custom one
        (any class not defined in ``covalent.triggers``, subclasses of built-ins included)."""
        body: dict[str, Any] = {"trigger": self.to_dict(), "pickled": None}
        if not is_builtin(type(self)):
            body["pickled"] = base64.b64encode(cloudpickle.dumps(self)).decode("ascii")
        return body

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        """Rebuild a built-in trigger from its ``to_dict()``: its constructor's arguments, then
        its ``_state_keys``. The constructor validates (ValueError/TypeError on a bad one)."""
        params = inspect.signature(cls.__init__).parameters
        kwargs = {k: d[k] for k in params if k != "self" and k in d}
        trigger = cls(**kwargs)
        for key in cls._state_keys:
            if key in d:
                trigger._restore(key, d[key])
        trigger.new_dispatch_ids = [str(x) for x in d.get("new_dispatch_ids") or []]
        return trigger

    def _restore(self, key: str, value: Any) -> None:
        """Set one ``_state_keys`` attribute from JSON: the built-ins keep counters."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a whole number >= 0, got {value!r}")
        setattr(self, key, value)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(event_loop=None, _covalent_fire=None, _registered=None)
        if not _picklable(state.get("stop_flag")):
            state["stop_flag"] = None  # a threading.Event: the host gives a fresh one
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "new_dispatch_ids" in state:  # pickled before it became a property
            state["_new_dispatch_ids"] = state.pop("new_dispatch_ids")
        self.__dict__.update(state)


def _stopping_registered(stop: Callable[[BaseTrigger], None]) -> Callable[[BaseTrigger], None]:
    @functools.wraps(stop)
    def wrapped(self: BaseTrigger) -> None:
        registered = self.__dict__.get("_registered")
        due = (registered is not None and self.__dict__.get("_covalent_fire") is None
               and not self.__dict__.get("_stopped_registered"))
        if due:
            self.__dict__["_stopped_registered"] = True  # a subclass's stop() calls super's
        try:
            stop(self)  # what it stops here first: a dispatcher away must not keep it going
        finally:
            if due and registered is not None and not _stop_on_dispatcher(*registered):
                self.__dict__["_stopped_registered"] = False  # stop() again tries again

    wrapped._stops_registered = True  # type: ignore[attr-defined]
    return wrapped


def _stop_on_dispatcher(dispatcher_addr: str | None, trigger_id: str) -> bool:
    """Stop a registered trigger on the dispatcher (a no-op if it stopped already); a
    dispatcher that is away, or no longer has the trigger, is warned about, never raised:
    ``stop()`` never failed before it reached the dispatcher. Whether it was reached."""
    import warnings
    from urllib.parse import quote

    from .. import _client
    from ..config import client_config
    from ..errors import CovalentError, TriggerNotFoundError

    try:
        _client.request_json(client_config(dispatcher_addr), "POST",
                             f"/triggers/{quote(trigger_id, safe='')}/stop")
    except TriggerNotFoundError:
        return True  # gone with its dispatch: nothing fires it
    except CovalentError as exc:
        warnings.warn(f"trigger {trigger_id} was stopped here but not on the dispatcher "
                      f"({exc}); ct.stop_triggers(<its dispatch id>) stops it there",
                      stacklevel=3)
        return False
    return True


def is_builtin(cls: type) -> bool:
    """A trigger class of this package: sent as JSON and observed by the server itself."""
    return cls.__module__.startswith(__name__.rsplit(".", 1)[0] + ".")


def _picklable(value: Any) -> bool:
    try:
        cloudpickle.dumps(value)
    except Exception:  # locks, events, sockets: many types refuse in many ways
        return False
    return True


def _fired_ids(dispatcher_addr: str | None, trigger_id: str) -> list[str] | None:
    """The dispatches the dispatcher started for a trigger; None when it cannot be asked."""
    from urllib.parse import quote

    from .. import _client
    from ..config import client_config
    from ..errors import DispatcherError, DispatcherUnavailableError

    try:
        info = _client.request_json(client_config(dispatcher_addr), "GET",
                                    f"/triggers/{quote(trigger_id, safe='')}")
    except (DispatcherUnavailableError, DispatcherError):
        return None  # gone, or deleted with its dispatch: keep what was known
    return [str(i) for i in info.get("new_dispatch_ids") or []]


def _trigger_over_rest(dispatch_id: str, dispatcher_addr: str | None) -> str:
    from .._dispatch import redispatch
    from .._results_manager.results_manager import get_result

    status = get_result(dispatch_id, dispatcher_addr=dispatcher_addr, status_only=True)
    pending = isinstance(status, dict) and status["status"] == "NEW_OBJECT"
    return redispatch(dispatch_id, dispatcher_addr=dispatcher_addr, is_pending=pending)()
