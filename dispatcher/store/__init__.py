"""The dispatcher's durable state: the ``DispatchStore`` protocol, its records and SQLite."""

from __future__ import annotations

from .base import (BlobSource, DispatchExists, DispatchPage, DispatchQuery, DispatchRecord,
                   DispatchStore, DispatchSummary, NewDispatch, NodeRecord, NodeRow, TriggerRecord,
                   blob_ref)
from .sqlite import SqliteStore

__all__ = ["BlobSource", "DispatchExists", "DispatchPage", "DispatchQuery", "DispatchRecord",
           "DispatchStore", "DispatchSummary", "NewDispatch", "NodeRecord", "NodeRow", "SqliteStore",
           "TriggerRecord", "blob_ref"]
