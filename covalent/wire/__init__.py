"""The contract between the SDK, the dispatcher and its workers: what crosses a process boundary.

Both sides import this package and nothing private of the other: the framed body
(``frame``), the workflow graph as JSON (``graph``), how gathering nodes are made of their
parents (``gather``), the statuses (``status``), the error codes (``errors``), and JSON read and
written a member at a time for large headers (``pieces``).
"""

from __future__ import annotations

from .errors import ErrorCode
from .frame import (API, CONTENT_TYPE, MAGIC, PREVIEW_LIMIT, TEXT_LIMIT, WireError, clean_text,
                    header_length, pack, pack_parts, parse_header, parse_header_keeping, preview,
                    shorten, unpack)
from .gather import GATHER_KINDS, Layout, NodeOutput, arguments, gather, gathered_bytes
from .graph import (ELECTRON_DICT_PREFIX, ELECTRON_LIST_PREFIX, PARAMETER_PREFIX,
                    POSTPROCESS_NAME, SUBLATTICE_PREFIX, Edge, EdgeKind, Node, NodeKind,
                    WorkflowGraph)
from . import pieces
from .status import TERMINAL, Status

__all__ = [
    "API", "CONTENT_TYPE", "ELECTRON_DICT_PREFIX", "ELECTRON_LIST_PREFIX", "GATHER_KINDS", "MAGIC",
    "PARAMETER_PREFIX", "POSTPROCESS_NAME", "PREVIEW_LIMIT", "SUBLATTICE_PREFIX", "TERMINAL", "TEXT_LIMIT", "Edge",
    "EdgeKind", "ErrorCode", "Layout", "Node", "NodeKind", "NodeOutput", "Status", "WireError",
    "WorkflowGraph", "arguments", "clean_text", "gather", "gathered_bytes", "header_length", "pack",
    "pack_parts", "parse_header", "parse_header_keeping", "pieces", "preview", "shorten", "unpack",
]
