"""Show dispatches in Jupyter: rich HTML for a ``Result`` and a dispatch id (issue #27).

Jupyter calls ``_repr_html_`` on the value a cell ends with. A ``Result`` renders from what it
already holds (records and previews made on the workers: nothing is downloaded to draw it); a
``DispatchId`` (what ``ct.dispatch`` returns: a ``str`` in every other respect) asks the
dispatcher for the dispatch's progress once, when it is displayed, and says so if it cannot.
Links point at the dispatcher's web UI page of the dispatch; they never carry the token (a
notebook is saved and shared), so the browser must have opened the link ``covalent start``
prints once.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .wire.status import Status

COLOURS = {Status.COMPLETED: "#1a7f37", Status.FAILED: "#cf222e", Status.CANCELLED: "#9a6700",
           Status.POSTPROCESSING_FAILED: "#cf222e", Status.RUNNING: "#0969da"}
COUNTED = ("completed", "running", "failed", "cancelled")  # the columns of an electron count
_USER_KINDS = ("electron", "sublattice")  # what the UI counts: not parameters or gathers


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where a cell's output is HTML), not a terminal IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def badge(status: str) -> str:
    """A status as a coloured label.

    >>> badge("COMPLETED")
    '<span style="color:#fff;background:#1a7f37;padding:1px 6px;border-radius:3px">COMPLETED</span>'
    """
    colour = COLOURS.get(Status(status), "#6e7781")
    return (f'<span style="color:#fff;background:{colour};padding:1px 6px;border-radius:3px">'
            f"{html.escape(status)}</span>")


def ui_link(url: str | None, dispatch_id: str) -> str:
    """The dispatch's page in the web UI, or nothing without an address."""
    if not url:
        return ""
    href = html.escape(f"{url}/dispatches/{dispatch_id}")
    return f'<a href="{href}" target="_blank">open in the web UI</a>'


def counts_by_status(nodes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of the user's electrons (and sublattices) are in each status.

    >>> counts_by_status([{"kind": "electron", "status": "COMPLETED"},
    ...                   {"kind": "parameter", "status": "COMPLETED"},
    ...                   {"kind": "sublattice", "status": "FAILED"}])
    {'COMPLETED': 1, 'FAILED': 1}
    """
    out: dict[str, int] = {}
    for n in nodes:
        if n.get("kind") in _USER_KINDS:
            out[str(n["status"])] = out.get(str(n["status"]), 0) + 1
    return out


def _rows(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f'<tr><th style="text-align:left;padding-right:1em">{k}</th>'
                    f'<td style="text-align:left">{v}</td></tr>' for k, v in rows)
    return f"<table>{cells}</table>"


def _runtime(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "not started"
    if end is None:
        return f"started {start:%Y-%m-%d %H:%M:%S}, running"
    return f"{start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S} ({(end - start).total_seconds():.2f} s)"


def result_html(*, name: str, dispatch_id: str, status: str, counts: Mapping[str, int],
                start: datetime | None, end: datetime | None, preview: str | None,
                error: str | None, url: str | None) -> str:
    """The HTML of a Result (every text escaped: names, previews and errors are user data)."""
    total = sum(counts.values())
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"
    rows = [("dispatch", f"<code>{html.escape(dispatch_id)}</code> {ui_link(url, dispatch_id)}"),
            ("status", badge(status)),
            ("electrons", f"{total}: {html.escape(summary)}"),
            ("time", html.escape(_runtime(start, end)))]
    if preview is not None:
        rows.append(("result", f"<code>{html.escape(preview)}</code>"))
    body = _rows(rows)
    if error:
        body += f'<pre style="color:#cf222e;white-space:pre-wrap">{html.escape(error)}</pre>'
    return (f'<div class="covalent-result"><strong>Result of {html.escape(name)}</strong>'
            f"{body}</div>")


def dispatch_html(dispatch_id: str, progress: Mapping[str, Any] | None, url: str | None,
                  problem: str = "") -> str:
    """The HTML of a dispatch id: its status and electron counts as the server has them now."""
    rows = [("dispatch", f"<code>{html.escape(dispatch_id)}</code> {ui_link(url, dispatch_id)}")]
    if progress is None:
        rows.append(("status", html.escape(f"unknown ({problem})")))
    else:
        rows.append(("status", badge(progress["status"])))
        for e in progress.get("electrons", []):
            rows.append((html.escape(e["name"]), html.escape(count_text(e))))
    return f'<div class="covalent-dispatch">{_rows(rows)}</div>'


def count_text(e: Mapping[str, Any]) -> str:
    """One electron name's counts.

    >>> count_text({"total": 4, "completed": 2, "running": 1, "failed": 0, "cancelled": 0})
    '2/4 completed, 1 running'
    """
    extra = [f"{e[k]} {k}" for k in COUNTED[1:] if e.get(k)]
    return ", ".join([f"{e['completed']}/{e['total']} completed", *extra])


def bars_html(name: str, dispatch_id: str, status: str, electrons: list[Mapping[str, Any]],
              elapsed: float) -> str:
    """Progress bars of a dispatch, one per electron name, as HTML (``<progress>`` elements)."""
    rows = "".join(
        f"<tr><td>{html.escape(e['name'])}</td>"
        f'<td><progress value="{e["completed"]}" max="{max(e["total"], 1)}"></progress></td>'
        f"<td>{html.escape(count_text(e))}</td></tr>" for e in electrons)
    return (f'<div class="covalent-progress"><div>{html.escape(name)} '
            f"<code>{html.escape(dispatch_id)}</code> {badge(status)} "
            f"{elapsed:.1f} s</div><table>{rows}</table></div>")


def bars_text(name: str, dispatch_id: str, status: str, electrons: list[Mapping[str, Any]],
              elapsed: float) -> str:
    """The same bars as plain text (for a notebook viewer without HTML)."""
    lines = [f"{name} {dispatch_id}: {status} [{elapsed:.1f} s]"]
    for e in electrons:
        done = round(20 * e["completed"] / max(e["total"], 1))
        lines.append(f"{e['name']:<20} [{'#' * done}{'.' * (20 - done)}] {count_text(e)}")
    return "\n".join(lines)


class DispatchId(str):
    """A dispatch id: the ``str`` ``ct.dispatch`` returns, which also shows itself in Jupyter.

    >>> d = DispatchId("b1c2", "http://127.0.0.1:1")
    >>> d == "b1c2", isinstance(d, str), str(d), d.dispatcher_url
    (True, True, 'b1c2', 'http://127.0.0.1:1')
    """

    dispatcher_url: str | None

    def __new__(cls, value: str, dispatcher_url: str | None = None) -> DispatchId:
        self = super().__new__(cls, value)
        self.dispatcher_url = dispatcher_url
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (DispatchId, (str(self), self.dispatcher_url))

    def _repr_html_(self) -> str:
        from ._progress import snapshot
        from .config import client_config
        from .errors import CovalentError

        cfg = client_config(self.dispatcher_url)
        try:
            body = snapshot(cfg, str(self))
        except CovalentError as exc:  # unreachable server, unknown id: say so in the cell
            return dispatch_html(str(self), None, cfg.url, f"{type(exc).__name__}: {exc}")
        return dispatch_html(str(self), body, cfg.url)
