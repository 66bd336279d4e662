"""The dispatch list (``/``): filter by status and creation time, search, sort, pages of 50,
bulk delete, and what a bulk delete by filter deletes (the same query)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import aiohttp_jinja2
from aiohttp import web

from ..authz import owner_filter
from ..dispatches import cutoff
from ..errors import InvalidRequest
from ..keys import STORE
from ..state import Status
from ..store import DispatchQuery
from ..store.base import DISPATCH_SORTS
from . import live
from .routes import PAGE_SIZE, STATUSES, common, page_number
from ..state import TERMINAL
from .views import duration, seconds

routes = web.RouteTableDef()

AGES = [("", "any time"), ("1h", "in the last hour"), ("1d", "in the last day"),
        ("7d", "in the last 7 days"), ("30d", "in the last 30 days"),
        ("older-7d", "more than 7 days ago"), ("older-30d", "more than 30 days ago")]
FINISHED = [str(s) for s in TERMINAL]


FILTER_KEYS = ("status", "q", "age", "sort", "order")


def listing_query(params: Mapping[str, str], limit: int = PAGE_SIZE, owner: str | None = None,
                  strict: bool = False) -> tuple[DispatchQuery, str]:
    """The list's filter, search, age window and sort from the address (or a bulk delete's
    body, which names the same filter), limited to ``owner``'s dispatches if given; and the
    age key. An address's unknown values mean no filter (an old link still shows the list);
    ``strict`` (a bulk delete's filter): InvalidRequest for them, since no filter there would
    mean every finished dispatch."""
    if strict:
        _check_filter(params)
    age = params.get("age", "")
    age = age if age in dict(AGES) else ""
    after = before = None
    if age.startswith("older-"):
        before = cutoff(age.removeprefix("older-"))
    elif age:
        after = cutoff(age)
    status = params.get("status", "")
    sort = params.get("sort", "created")
    return DispatchQuery(
        status=status if status in [str(s) for s in STATUSES] else None,
        search=str(params.get("q", ""))[:200], sort=sort if sort in DISPATCH_SORTS else "created",
        descending=params.get("order", "desc") != "asc", limit=limit,
        created_after=after, created_before=before, owner=owner), age


def _check_filter(params: Mapping[str, str]) -> None:
    unknown = sorted(set(params) - set(FILTER_KEYS))
    if unknown:
        raise InvalidRequest(f"unknown filter keys {unknown}; a filter has {', '.join(FILTER_KEYS)}")
    checks = [("status", [""] + [str(s) for s in STATUSES]), ("age", [a for a, _ in AGES]),
              ("sort", list(DISPATCH_SORTS)), ("order", ["asc", "desc"])]
    for key, allowed in checks:
        if key in params and params[key] not in allowed:
            raise InvalidRequest(f"filter {key} must be one of "
                                 f"{', '.join(repr(a) for a in allowed)}; got {params[key]!r}")


@routes.get("/")
async def dispatch_list(request: web.Request) -> web.StreamResponse:
    query, age = listing_query(request.query, owner=owner_filter(request))
    wanted = page_number(request)
    store = request.app[STORE]
    page = await store.page_dispatches(replace(query, offset=(wanted - 1) * PAGE_SIZE))
    pages = max(1, math.ceil(page.total / PAGE_SIZE))
    page_no, note = wanted, ""
    if wanted > pages:  # an old link, or the last page emptied by deletes: show the last one
        page_no = pages
        page = await store.page_dispatches(replace(query, offset=(pages - 1) * PAGE_SIZE))
        note = f"There is no page {wanted}; this is the last page, {pages}."
    counts = await store.electron_counts([r.dispatch_id for r in page.rows])
    rows = [{"row": r, "runtime": duration(seconds(r.start_time, r.end_time)),
             **live.done_total(counts.get(r.dispatch_id, {}))} for r in page.rows]
    shown = [query.status] if query.status else FINISHED
    context = {**common(request), "rows": rows, "page": page, "query": query, "page_no": page_no,
               "pages": pages, "statuses": STATUSES, "all_count": sum(page.counts.values()),
               "sorts": DISPATCH_SORTS, "age": age, "ages": AGES, "note": note,
               "deletable": sum(page.counts.get(s, 0) for s in shown if s in FINISHED),
               "deletable_statuses": [*FINISHED, str(Status.NEW_OBJECT)]}
    template = "_dispatch_table.html" if request.headers.get("HX-Request") else "list.html"
    return aiohttp_jinja2.render_template(template, request, context)
