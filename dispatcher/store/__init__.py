"""The dispatcher's durable state: the ``DispatchStore`` protocol, its records and SQLite."""

from __future__ import annotations

from .base import (BlobSource, DispatchExists, DispatchPage, DispatchQuery, DispatchRecord,
                   DispatchStore, DispatchSummary, NewDispatch, NodeRecord, NodeRow, StoredBlob,
                   TriggerRecord, blob_ref)
from .sqlite import SqliteStore

__all__ = ["BlobSource", "DispatchExists", "DispatchPage", "DispatchQuery", "DispatchRecord",
           "DispatchStore", "DispatchSummary", "NewDispatch", "NodeRecord", "NodeRow", "StoredBlob", "SqliteStore",
           "TriggerRecord", "blob_ref"]
