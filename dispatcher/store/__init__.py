"""The dispatcher's durable state: the ``DispatchStore`` protocol, its records and SQLite."""

from __future__ import annotations

from .base import (BlobSource, DispatchExists, DispatchRecord, DispatchStore, DispatchSummary, NewDispatch,
                   NodeRecord, TriggerRecord, blob_ref)
from .sqlite import SqliteStore

__all__ = ["BlobSource", "DispatchExists", "DispatchRecord", "DispatchStore", "DispatchSummary", "NewDispatch",
           "NodeRecord", "SqliteStore", "TriggerRecord", "blob_ref"]
