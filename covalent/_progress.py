"""Show a dispatch's progress in a terminal: one bar per electron name (issue #15).

Used by ``covalent watch ID`` and ``ct.get_result(id, wait=True, progress=True)``. The counts
come from ``GET /api/v1/dispatches/{id}/progress``, a long-poll the server answers when a
commit changes the dispatch (``since`` = the version last seen), so nothing is polled on a
timer; the client only caps how often it redraws (``MIN_GAP_S``). In a terminal the bars are
drawn with ``rich``; in a Jupyter notebook, as HTML in the cell's output, replaced in place at
each change (an IPython display handle, so an executed notebook keeps the last bars); otherwise
(a pipe, a CI log) one plain line per electron name whose counts changed, at most once a
second, then a last line with the final status. Times are the server's: from the first of an
electron name's nodes starting to the last ending (so a dispatch that ended long ago shows how
long it took), and a failed dispatch ends with its error.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote

from . import _client
from .config import ClientConfig
from .wire.status import Status

MIN_GAP_S = 0.25  # at most four answers a second, however busy the dispatch
PLAIN_GAP_S = 1.0
_WAIT_S = 30.0


def updates(cfg: ClientConfig, dispatch_id: str) -> Iterator[dict[str, Any]]:
    """Progress bodies: the current one at once, then one per change, until it has ended."""
    from ._results_manager.results_manager import Patience

    path = f"/dispatches/{quote(dispatch_id, safe='')}/progress"
    query: dict[str, Any] = {}
    patience = Patience()  # a dispatcher restarting meanwhile is waited for, as by get_result
    while True:
        started = time.monotonic()
        asked = dict(query)
        body = patience.call(lambda: _client.request_json(cfg, "GET", path, query=asked,
                                                          timeout=_WAIT_S + 30))
        yield body
        if Status(body["status"]).is_terminal:
            return
        query = {"since": body["version"], "wait": _WAIT_S}
        pause = MIN_GAP_S - (time.monotonic() - started)
        if pause > 0:
            time.sleep(pause)  # a cap on redraws; the next answer is still pushed by a commit


def snapshot(cfg: ClientConfig, dispatch_id: str) -> dict[str, Any]:
    """The progress body as it is now (no waiting)."""
    path = f"/dispatches/{quote(dispatch_id, safe='')}/progress"
    return _client.request_json(cfg, "GET", path, timeout=5)  # type: ignore[no-any-return]


def watch(cfg: ClientConfig, dispatch_id: str, stream: IO[str] | None = None) -> Status:
    """Show progress until the dispatch ends; returns its final status.

    Raises:
        DispatchNotFoundError: no dispatch has that id.
        DispatcherUnavailableError: no server answers (for 30 s, if it did at first).
    """
    from ._notebook import in_notebook

    if stream is None and in_notebook():
        return _notebook(cfg, dispatch_id)
    out = stream if stream is not None else sys.stderr
    if out.isatty():
        return _bars(cfg, dispatch_id, out)
    return _lines(cfg, dispatch_id, out)


def _took(e: dict[str, Any]) -> str:
    """How long an electron name's nodes took (from the server's times).

    >>> _took({"seconds": 2.345}), _took({"seconds": 75}), _took({"seconds": None})
    ('2.3 s', '1 m 15 s', '-')
    """
    value = e.get("seconds")
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} m {int(value % 60)} s"


def _ending(body: dict[str, Any], dispatch_id: str, status: Status) -> str:
    """The last line: name, id and status, and a failed dispatch's error."""
    line = f"{body['name']} {dispatch_id}: {status}"
    if status == Status.FAILED and body.get("error"):
        line += "\n" + str(body["error"]).rstrip()
    return line


def _not_started(dispatch_id: str) -> str:
    """What watching a dispatch stored with ``disable_run`` waits for."""
    return (f"{dispatch_id} is stored, not started (disable_run=True): watching until it runs; "
            f"ct.redispatch({dispatch_id!r}, is_pending=True)() starts it")


def _detail(e: dict[str, Any]) -> str:
    """What a bar says besides its count.

    >>> _detail({"running": 2, "failed": 1, "cancelled": 0})
    '2 running, 1 failed'
    """
    parts = [f"{e[k]} {k}" for k in ("running", "failed", "cancelled") if e.get(k)]
    return ", ".join(parts)


def _bars(cfg: ClientConfig, dispatch_id: str, out: IO[str]) -> Status:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from rich.progress import ProgressColumn, Task
    from rich.table import Column
    from rich.text import Text

    class Took(ProgressColumn):
        """How long a name's nodes took; while some run, it ticks between the server's
        answers (which come at each change, not each second)."""

        def render(self, task: Task) -> Text:
            e = dict(task.fields["electron"])
            if e.get("running") and isinstance(e.get("seconds"), int | float):
                e["seconds"] += time.monotonic() - task.fields["at"]
            return Text(_took(e) if e else "")

    status = Status.NEW_OBJECT
    tasks: dict[str, Any] = {}
    hinted = False  # "stored, not started": said once
    console = Console(file=out)
    # A long electron name is cut short, never the counts (a narrow terminal squeezed them
    # out: "1..." in place of "1/2").
    width = max(8, min(40, console.width // 3))
    columns = (TextColumn("{task.description}", table_column=Column(
                   max_width=width, no_wrap=True, overflow="ellipsis")),
               BarColumn(bar_width=max(5, min(40, console.width // 5))),
               MofNCompleteColumn(table_column=Column(no_wrap=True)),
               TextColumn("{task.fields[detail]}"),
               Took(table_column=Column(no_wrap=True)))
    with Progress(*columns, console=console, transient=False) as bars:
        for body in updates(cfg, dispatch_id):
            status = Status(body["status"])
            if status == Status.NEW_OBJECT and not hinted:
                hinted = True
                console.print(_not_started(dispatch_id), markup=False, highlight=False)
            at = time.monotonic()
            for e in body["electrons"]:
                if e["name"] not in tasks:
                    tasks[e["name"]] = bars.add_task(e["name"], total=e["total"], detail="",
                                                     electron={}, at=at)
                bars.update(tasks[e["name"]], completed=e["completed"], total=e["total"],
                            detail=_detail(e), electron=e, at=at)
            if status.is_terminal:
                for task_id in tasks.values():
                    bars.stop_task(task_id)
    console.print(_ending(body, dispatch_id, status), markup=False, highlight=False)
    return status


def _notebook(cfg: ClientConfig, dispatch_id: str) -> Status:
    """Bars in the notebook cell's output, updated in place through one display handle."""
    import IPython.display

    from ._notebook import bars_html, bars_text

    display: Any = IPython.display.display  # typed partially, depending on the IPython version
    start, handle = time.monotonic(), None
    for body in updates(cfg, dispatch_id):
        args = (body["name"], dispatch_id, body["status"], body["electrons"],
                time.monotonic() - start)
        bundle = {"text/html": bars_html(*args), "text/plain": bars_text(*args)}
        if handle is None:
            handle = display(bundle, raw=True, display_id=True)
        else:
            handle.update(bundle, raw=True)
    return Status(body["status"])


def _lines(cfg: ClientConfig, dispatch_id: str, out: IO[str]) -> Status:
    shown: dict[str, tuple[int, int, int, int, int]] = {}
    last = 0.0
    status = Status.NEW_OBJECT
    for body in updates(cfg, dispatch_id):
        status = Status(body["status"])
        if status == Status.NEW_OBJECT and not last:  # (the first answer only)
            print(_not_started(dispatch_id), file=out, flush=True)
        now = time.monotonic()
        if now - last < PLAIN_GAP_S and not status.is_terminal:
            # At most a line a second: a change is printed late, never dropped (it used to
            # wait for the next change, 15 s later, or the end).
            time.sleep(PLAIN_GAP_S - (now - last))
            now = time.monotonic()
        last = now
        for e in body["electrons"]:
            key = (e["completed"], e["running"], e["failed"], e.get("cancelled", 0), e["total"])
            if shown.get(e["name"]) != key:
                shown[e["name"]] = key
                detail = _detail(e)
                print(f"{e['name']}: {e['completed']}/{e['total']} completed"
                      f"{', ' + detail if detail else ''} [{_took(e)}]", file=out, flush=True)
    print(_ending(body, dispatch_id, status), file=out, flush=True)
    return status
