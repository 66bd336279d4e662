"""What the dispatcher keeps, as typed records, behind one ``DispatchStore`` protocol.

SQLite (``sqlite.SqliteStore``, the embedded default) and PostgreSQL
(``postgres.PostgresStore``) implement it with the same SQL (``sqlstore``). Records are
frozen: a reader gets a snapshot of what was committed. A store raises only the protocol's
errors (``dispatcher.errors``: ``StoreBusy``, ``StoreUnavailable``, ``StoreFull``,
``StoreError``, ``StoreVersionError`` at open) and ``DispatchExists``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Protocol

from covalent.wire import WorkflowGraph, pieces

from ..state import DispatchUpdate, NodeUpdate, Status
from ..worker.blobs import blob_ref

__all__ = ["BlobSource", "DispatchExists", "DispatchRecord", "DispatchStore", "DispatchSummary",
           "NewDispatch", "NodeRecord", "TriggerRecord", "blob_ref"]


BUILTIN_OWNER = "admin"  # the single-user owner: whoever holds the server's own token (#26)


class DispatchExists(Exception):
    """A dispatch with this id is stored already (a retried request)."""


@dataclass(frozen=True, slots=True)
class NewDispatch:
    """What ``create_dispatch`` stores about a dispatch besides its graph's blobs."""

    dispatch_id: str
    root_dispatch_id: str
    name: str
    status: Status
    created_at: str
    graph_json: str
    nodes: list[tuple[int, str, str]]  # (node id, name, kind)
    start_time: str | None = None
    parent_dispatch_id: str | None = None
    parent_node_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    owner: str = BUILTIN_OWNER  # the user it belongs to (its parent's, its original's)


@dataclass(frozen=True, slots=True)
class DispatchRecord:
    dispatch_id: str
    root_dispatch_id: str
    parent_dispatch_id: str | None
    parent_node_id: int | None
    name: str
    status: Status
    created_at: str
    start_time: str | None
    end_time: str | None
    error: str | None
    graph_json: str
    blob_refs: list[str]
    inputs_ref: str | None
    lattice_ref: str | None
    result_ref: str | None
    template_ref: str | None
    meta: dict[str, Any]
    owner: str = BUILTIN_OWNER

    @property
    def graph(self) -> dict[str, Any]:
        parsed: dict[str, Any] = pieces.loads(self.graph_json)  # 50 MiB at 100,000 nodes
        return parsed

    def workflow_graph(self) -> WorkflowGraph:
        """Its graph without blob values (seconds at 100,000 nodes: call it off the loop)."""
        return WorkflowGraph.from_json(self.graph, [b""] * len(self.blob_refs))


@dataclass(frozen=True, slots=True)
class DispatchSummary:
    """A row of the dispatch listing."""

    dispatch_id: str
    root_dispatch_id: str
    name: str
    status: Status
    created_at: str
    start_time: str | None
    end_time: str | None
    owner: str = BUILTIN_OWNER

    def to_json(self) -> dict[str, Any]:
        return {"dispatch_id": self.dispatch_id, "root_dispatch_id": self.root_dispatch_id,
                "name": self.name, "status": str(self.status), "created_at": self.created_at,
                "start_time": self.start_time, "end_time": self.end_time, "owner": self.owner}


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_id: int
    name: str
    kind: str
    status: Status
    start_time: str | None
    end_time: str | None
    output_ref: str | None
    error: str | None
    stdout: str | None
    stderr: str | None
    sub_dispatch_id: str | None
    preview: str | None = None  # a short repr of the output, made on the worker
    output_size: int | None = None  # bytes of the pickled output
    gather: str | None = None  # a gathering node's output: JSON naming its parts
    reused_from: str | None = None  # the dispatch that computed the output it reused
    attempts: int | None = None  # times a task ran it (None: it never ran as a task)
    worker: str | None = None  # the Dask worker that ran it (address)

    @property
    def gather_spec(self) -> dict[str, Any] | None:
        parsed: dict[str, Any] | None = json.loads(self.gather) if self.gather else None
        return parsed

    def to_json(self) -> dict[str, Any]:
        """The node as the REST API shows it (without output bytes)."""
        return {"node_id": self.node_id, "name": self.name, "kind": self.kind,
                "status": str(self.status), "start_time": self.start_time,
                "end_time": self.end_time, "error": self.error, "stdout": self.stdout,
                "stderr": self.stderr, "sub_dispatch_id": self.sub_dispatch_id,
                "has_output": self.output_ref is not None or self.gather is not None,
                "preview": self.preview, "output_size": self.output_size,
                "reused_from": self.reused_from, "attempts": self.attempts, "worker": self.worker}


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    trigger_id: str
    dispatch_id: str
    name: str
    spec_json: str
    pickled: bytes | None
    active: bool
    fire_count: int
    reason: str
    created_at: str
    owner: str = BUILTIN_OWNER

    @property
    def spec(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.spec_json)
        return parsed


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user of a shared dispatcher (#26): its token is kept only as its sha256 (hex)."""

    name: str
    token_hash: str
    admin: bool
    created_at: str
    revoked_at: str | None = None
    last_used_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As ``GET /api/v1/users`` shows it (never the hash)."""
        return {"name": self.name, "admin": self.admin, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "last_used_at": self.last_used_at}


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob the store is not handed as bytes: a file of a request written as it arrived
    (``path``; the store moves it into place rather than reading it), or one already in the
    blob store (no path: a dispatch run again with the same large inputs)."""

    ref: str  # sha256 of the bytes
    size: int
    path: str | None = None


@dataclass(frozen=True, slots=True)
class BlobSource:
    """Where a blob's bytes are: inline (small), a file under the blob directory, or a URL."""

    ref: str
    size: int
    data: bytes | None
    location: str | None


# -- what the web UI and the progress views read (issue #15) -------------------------------

USER_KINDS = ("electron", "sublattice")  # nodes a person wrote: not parameters, not gathering
DISPATCH_SORTS = ("created", "started", "name", "status", "runtime")


@dataclass(frozen=True, slots=True)
class DispatchQuery:
    """One page of the dispatch listing: filter, search (name or id prefix), sort, window."""

    status: str | None = None
    search: str = ""
    sort: str = "created"  # one of DISPATCH_SORTS
    descending: bool = True
    offset: int = 0
    limit: int = 50
    top_level: bool = True  # sublattice dispatches are reached from their parent's node
    created_after: str | None = None  # ISO times: only dispatches created after / before them
    created_before: str | None = None
    owner: str | None = None  # only this user's dispatches (None: everyone's, for an admin)


@dataclass(frozen=True, slots=True)
class DispatchPage:
    """The rows of one page, how many match in all, and per-status counts (search applied,
    status filter not: the filter's own buttons show them)."""

    rows: list[DispatchSummary]
    total: int
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node without its texts (stdout, stderr, error, preview): for tables, graphs, counts."""

    node_id: int
    name: str
    kind: str
    status: Status
    start_time: str | None
    end_time: str | None
    sub_dispatch_id: str | None
    has_error: bool
    output_size: int | None
    worker: str | None = None


class DispatchStore(Protocol):
    """The dispatcher's durable state. Every method is one transaction (a delete: several)."""

    blob_dir: Path
    on_write: Callable[[str, float], None] | None  # (operation, seconds) after each write

    async def open(self) -> None:
        """Connect, refuse a newer schema (StoreVersionError), apply missing migrations."""
        ...

    async def close(self) -> None: ...
    def describe(self) -> str:
        """Which database, for people (no password)."""
        ...

    def connections(self) -> int:
        """Open database connections."""
        ...

    async def create_dispatch(self, new: NewDispatch, blobs: Sequence[bytes | StoredBlob],
                              extra: dict[str, bytes | StoredBlob]) -> list[str]:
        """Store a dispatch, its nodes (NEW_OBJECT) and blobs; raises DispatchExists."""
        ...

    async def get_dispatch(self, dispatch_id: str) -> DispatchRecord | None: ...
    async def get_status(self, dispatch_id: str) -> Status | None: ...
    async def get_nodes(self, dispatch_id: str) -> list[NodeRecord]: ...

    async def get_some_nodes(self, dispatch_id: str, node_ids: Iterable[int]
                             ) -> dict[int, NodeRecord]:
        """The records of these nodes, by node id (those the dispatch has: none for a dispatch
        that does not exist)."""
        ...
    async def get_blobs(self, refs: Iterable[str]) -> dict[str, bytes]: ...

    async def blob_sources(self, refs: Iterable[str]) -> dict[str, BlobSource]:
        """Where each blob is, without reading the large ones (for streaming them)."""
        ...
    async def list_dispatches(self, status: str | None, limit: int, owner: str | None = None
                              ) -> list[DispatchSummary]: ...
    async def owners(self, dispatch_ids: list[str]) -> dict[str, str]:
        """The owner of each of these dispatches that exists."""
        ...

    async def apply(self, nodes: list[NodeUpdate], dispatches: list[DispatchUpdate]) -> None:
        """Apply updates where the state machine allows (terminal statuses are kept)."""
        ...

    async def claim_pending(self, dispatch_id: str, start_time: str) -> bool:
        """NEW_OBJECT -> RUNNING atomically; False if it was not pending any more."""
        ...

    async def set_sub_dispatch(self, dispatch_id: str, node_id: int, child_id: str) -> None: ...
    async def children(self, dispatch_id: str) -> list[tuple[str, int]]: ...
    async def unfinished(self) -> list[str]: ...
    async def reset_nodes(self, dispatch_id: str, node_ids: list[int]) -> None: ...

    async def finished_before(self, before: str | None, statuses: list[Status] | None,
                              owner: str | None = None) -> list[str]:
        """Top-level dispatches that ended before ``before`` (ISO), with one of ``statuses``
        (of ``owner`` only, if given)."""
        ...

    async def delete_dispatches(self, dispatch_ids: list[str], pending: bool = False) -> list[str]:
        """Delete finished dispatches (and their sublattice dispatches, triggers, and blobs no
        other dispatch uses) in bounded transactions, and with ``pending`` never-started
        (NEW_OBJECT) ones too; others are left (checked in the same transaction); returns the
        ids deleted."""
        ...

    async def resume_deletions(self) -> int:
        """Finish deletes a previous run left unfinished; how many dispatches."""
        ...

    async def add_trigger(self, record: TriggerRecord) -> None: ...
    async def save_trigger(self, trigger_id: str, spec_json: str, active: bool, fire_count: int,
                           reason: str) -> None: ...
    async def delete_trigger(self, trigger_id: str) -> None: ...
    async def all_triggers(self) -> list[TriggerRecord]: ...
    async def active_triggers(self) -> list[TriggerRecord]: ...

    async def page_dispatches(self, query: DispatchQuery) -> DispatchPage: ...
    async def electron_counts(self, dispatch_ids: list[str]) -> dict[str, dict[Status, int]]:
        """Per dispatch, how many user electrons (``USER_KINDS``) have each status."""
        ...

    async def find_ids(self, prefix: str, limit: int, owner: str | None = None) -> list[str]:
        """Ids of dispatches (sublattice ones too) that start with ``prefix``, newest first
        (of ``owner`` only, if given)."""
        ...

    async def node_rows(self, dispatch_id: str) -> list[NodeRow]: ...
    async def node_names(self, dispatch_id: str) -> list[tuple[str, str]]:
        """(name, kind) of each node, by node id."""
        ...

    async def get_node(self, dispatch_id: str, node_id: int) -> NodeRecord | None: ...

    async def add_user(self, user: UserRecord) -> bool:
        """Store a new user; False if the name is taken (revoked users keep theirs)."""
        ...

    async def user_by_hash(self, token_hash: str) -> UserRecord | None: ...
    async def user_by_name(self, name: str) -> UserRecord | None: ...
    async def list_users(self) -> list[UserRecord]: ...

    async def revoke_user(self, name: str, when: str) -> bool:
        """Revoke a user's token (for good); False if there is no such user."""
        ...

    async def touch_user(self, name: str, when: str) -> None:
        """Record that the user's token was used at ``when``."""
        ...
