"""The dispatcher's durable state: the ``DispatchStore`` protocol, its records and SQLite."""

from __future__ import annotations

from .base import (DispatchExists, DispatchRecord, DispatchStore, DispatchSummary, NewDispatch,
                   NodeRecord, TriggerRecord, blob_ref)
from .sqlite import SqliteStore

__all__ = ["DispatchExists", "DispatchRecord", "DispatchStore", "DispatchSummary", "NewDispatch",
           "NodeRecord", "SqliteStore", "TriggerRecord", "blob_ref"]
