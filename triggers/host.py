"""Observe one custom trigger in a process of its own: the dispatcher never unpickles it.

A custom ``BaseTrigger`` subclass arrives pickled. ``python -m triggers.host`` unpickles it (the
user's code runs there, as the user), runs ``observe()`` in a thread and talks to the
dispatcher in JSON lines over a private pipe (the process's original stdout; anything the
trigger prints goes to stderr, the server log):

    dispatcher -> host   {"pickled": <base64>, "dispatch_id": ...}   then {"op": "fired", "dispatch_id": ...}
                         and finally {"op": "stop"}
    host -> dispatcher   {"op": "ready", "trigger": to_dict()} or {"op": "error", "message": ...};
                         {"op": "fire"} per trigger() call; {"op": "observe-returned"};
                         {"op": "ended", "reason": ...} if observe() raised

``run_host`` is the dispatcher's side: it starts the process, answers fires, and stops it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import queue
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import IO, Any

log = logging.getLogger("covalent.triggers")

STOP_GRACE_S = 10.0


class TriggerLoadError(ValueError):
    """The pickled trigger cannot be loaded (or is not a BaseTrigger); the reason is the text."""


async def run_host(pickled: bytes, dispatch_id: str, fire: Callable[[], Awaitable[str | None]],
                   stopped: asyncio.Event, ready: asyncio.Event,
                   on_spec: Callable[[dict[str, Any]], None]) -> str:
    """Observe a custom trigger in a child process until ``stopped``; return why it ended.

    Raises:
        TriggerLoadError: the child could not load the trigger.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "triggers.host", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=1 << 24)
    assert proc.stdin is not None and proc.stdout is not None
    log.info("custom trigger of %s observed in process %d", dispatch_id, proc.pid)
    send = _sender(proc.stdin)
    stop_wait = asyncio.ensure_future(stopped.wait())
    try:
        await send({"pickled": base64.b64encode(pickled).decode(), "dispatch_id": dispatch_id})
        while True:
            line_task = asyncio.ensure_future(proc.stdout.readline())
            await asyncio.wait({line_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not line_task.done():
                line_task.cancel()
                return "stopped"
            line = line_task.result()
            if not line:
                return f"the trigger's process exited (code {await proc.wait()})"
            msg = json.loads(line)
            op = msg.get("op")
            if op == "error":
                raise TriggerLoadError(str(msg.get("message")))
            if op == "ready":
                on_spec(dict(msg.get("trigger") or {}))
                ready.set()
            elif op == "fire":
                await send({"op": "fired", "dispatch_id": await fire()})
            elif op == "observe-returned" and not msg.get("fired"):
                log.info("custom trigger of %s: observe() returned without firing; it stays "
                         "registered and fires when its own threads call trigger()", dispatch_id)
            elif op == "ended":
                return str(msg.get("reason"))
    finally:
        stop_wait.cancel()
        await _stop(proc, send)


def _sender(stream: asyncio.StreamWriter) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def send(msg: dict[str, Any]) -> None:
        stream.write(json.dumps(msg).encode() + b"\n")
        await stream.drain()

    return send


async def _stop(proc: asyncio.subprocess.Process, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if proc.returncode is None:
        try:
            await send({"op": "stop"})
        except (ConnectionError, RuntimeError):
            pass  # it exited meanwhile
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("custom trigger process %d ignored stop(); killing it", proc.pid)
            proc.kill()  # our own child, by the PID we started
            await proc.wait()


def main() -> None:
    """The trigger host process (``python -m triggers.host``)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the trigger prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(msg: dict[str, Any]) -> None:
        with lock:
            proto.write(json.dumps(msg) + "\n")

    first = json.loads(sys.stdin.readline() or "{}")
    try:
        trigger = _load(first)
    except Exception as exc:  # anything the user's pickle raises while loading
        send({"op": "error", "message": f"cannot load the trigger: {type(exc).__name__}: {exc}"})
        return
    replies: queue.Queue[str | None] = queue.Queue()
    fired = [0]

    def fire() -> str | None:
        with lock:
            fired[0] += 1
            proto.write(json.dumps({"op": "fire"}) + "\n")
        return replies.get()

    trigger._covalent_fire = fire
    send({"op": "ready", "trigger": _describe(trigger)})
    threading.Thread(target=_observe, args=(trigger, send, fired), name="covalent-trigger",
                     daemon=True).start()
    _serve_commands(sys.stdin, replies)
    try:
        trigger.stop()
    except Exception:  # the user's stop() failed: report it, exit anyway
        traceback.print_exc()
    proto.flush()
    os._exit(0)  # an observe() thread that ignores stop() must not keep the process alive


def _load(first: dict[str, Any]) -> Any:
    import cloudpickle

    from covalent.triggers import BaseTrigger

    trigger = cloudpickle.loads(base64.b64decode(first["pickled"]))
    if not isinstance(trigger, BaseTrigger):
        raise TypeError(f"expected a covalent.triggers.BaseTrigger, got {type(trigger).__name__}")
    trigger.lattice_dispatch_id = str(first["dispatch_id"])
    trigger.use_internal_funcs = True
    if trigger.stop_flag is None:  # never replace a flag the trigger keeps itself
        trigger.stop_flag = threading.Event()
    return trigger


def _describe(trigger: Any) -> dict[str, Any]:
    try:
        return dict(json.loads(json.dumps(trigger.to_dict(), default=str)))
    except Exception as exc:  # a user to_dict() that fails must not stop observing
        return {"name": type(trigger).__name__, "to_dict_error": f"{type(exc).__name__}: {exc}"}


def _observe(trigger: Any, send: Callable[[dict[str, Any]], None], fired: list[int]) -> None:
    try:
        trigger.observe()
    except Exception as exc:  # the user's observe() failed: that ends this trigger
        traceback.print_exc()
        send({"op": "ended", "reason": f"observe() raised {type(exc).__name__}: {exc}"})
        return
    send({"op": "observe-returned", "fired": fired[0]})


def _serve_commands(stream: IO[str], replies: queue.Queue[str | None]) -> None:
    for line in stream:
        msg = json.loads(line)
        if msg.get("op") == "fired":
            replies.put(msg.get("dispatch_id"))
        elif msg.get("op") == "stop":
            return


if __name__ == "__main__":
    main()
