"""Encode the bodies exchanged by the SDK and the dispatcher (a public contract).

A *framed* body carries a JSON header and opaque blobs in one byte string::

    b"CVD1" | uint32 big-endian header length | header (UTF-8 JSON) | blob 0 | blob 1 | ...

The header's ``blob_sizes`` lists each blob's length. Blobs are cloudpickle bytes that only the
client and the workers unpickle; the server slices and stores them. Content type:
``application/x-covalent-frame``. Error bodies are JSON ``{"error": code, "message": text}``.

>>> header, blobs = unpack(pack({"a": 1}, [b"x", b"yz"]))
>>> header["a"], blobs
(1, [b'x', b'yz'])
"""

from __future__ import annotations

import json
import re
import reprlib
import struct
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from . import pieces

T = TypeVar("T")

# Characters: a header this long is parsed a member at a time by a server (json.loads of a
# 2 MiB header holds the GIL for about 40 ms here; pieces.loads takes 2.6 times as long).
PIECES_FROM = 2 << 20

MAGIC = b"CVD1"
TEXT_LIMIT = 1 << 20  # characters of stdout, stderr or an error kept per node (head and tail)
PREVIEW_LIMIT = 200  # characters of a value's preview (a short repr for people to look at)
CONTENT_TYPE = "application/x-covalent-frame"
API = "/api/v1"
_LEN = struct.Struct(">I")
_LEFT_OUT = re.compile(r"\n\[\.\.\. (\d+) characters left out \.\.\.\]\n")  # clean_text's marker


class WireError(ValueError):
    """A framed body is malformed."""


def clean_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` as valid UTF-8 of at most about ``limit`` characters, whatever user code made.

    Characters UTF-8 cannot hold (lone surrogates, from ``print("\\udc80")`` or a file name
    that is not UTF-8) are written as escapes; a huge text keeps its head and its tail around a
    marker that says how much was left out.

    >>> clean_text("ok \\udc80")
    'ok \\\\udc80'
    >>> clean_text("a" * 10 + "b" * 10, limit=8)
    'aaaa\\n[... 12 characters left out ...]\\nbbbb'

    A text cut before (a node's captured output) is cut again with the count of both cuts:

    >>> clean_text(clean_text("a" * 100 + "b" * 100, limit=60), limit=20)
    'aaaaaaaaaa\\n[... 180 characters left out ...]\\nbbbbbbbbbb'
    """
    if len(text) > limit:
        half = limit // 2
        middle = text[half:len(text) - half]
        left_out = len(middle) + sum(int(m.group(1)) - len(m.group(0))
                                     for m in _LEFT_OUT.finditer(middle))
        text = f"{text[:half]}\n[... {left_out} characters left out ...]\n{text[-half:]}"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def shorten(text: str, limit: int = PREVIEW_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters where a person can tell it was cut: after
    the last item separator or space of its end (never inside a number), then "…".

    >>> shorten("[0.0, 0.14285714285714285, 0.2857142857142857]", 30)
    '[0.0, 0.14285714285714285, …'
    >>> shorten("1234567890", 6), shorten("short", 6)
    ('12345…', 'short')
    """
    if len(text) <= limit:
        return text
    keep = text[: limit - 1]
    for sep in (", ", " ", "\n"):
        at = keep.rfind(sep)
        if at >= limit // 2:
            return keep[: at + len(sep)] + "…"
    return keep + "…"


class _Short(reprlib.Repr):
    """``reprlib`` without its cuts in the middle of a value (``1071508607...9376`` reads as a
    number it is not): long numbers, strings and objects keep their start and say their size."""

    def repr_int(self, x: int, level: int) -> str:
        s = repr(x)  # past 4,300 digits this raises (sys.int_info): preview says repr() failed
        return s if len(s) <= 40 else f"{s[:30]}… ({len(s)} digits)"

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return repr(x[: self.maxstring - 30])[:-1] + f"…' ({len(x)} characters)"

    def repr_instance(self, x: Any, level: int) -> str:
        return shorten(repr(x), self.maxother)


def preview(value: Any) -> str:
    """A short, safe ``repr`` of a value for people to look at (never raises); made where the
    value lives (client, worker), since the server never unpickles. A cut is visible ("…")
    and falls between items, never inside a number.

    >>> preview(list(range(100)))[:30], len(preview("x" * 10_000)) <= PREVIEW_LIMIT
    ('[0, 1, 2, 3, 4, 5, 6, 7, 8, 9,', True)
    >>> preview(2 ** 1000)
    '107150860718626732094842504906… (302 digits)'
    >>> preview([i / 7 for i in range(100)])[-21:]
    '1.4285714285714286, …'
    """
    shorter = _Short()
    shorter.maxstring = shorter.maxother = PREVIEW_LIMIT
    shorter.maxlist = shorter.maxtuple = shorter.maxdict = shorter.maxset = 20
    try:
        text = shorter.repr(value)
    except Exception as exc:  # a user __repr__ may raise anything
        text = f"<{type(value).__name__}: repr() failed: {type(exc).__name__}>"
    return clean_text(shorten(text))


def pack(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    """Frame ``header`` and ``blobs`` into one body."""
    return b"".join(pack_parts(header, blobs))


def pack_parts(header: dict[str, Any], blobs: list[bytes]) -> list[bytes]:
    """The framed body as a list of parts, to send one after the other without joining
    them (a large blob is not copied).

    >>> b"".join(pack_parts({}, [b"ab"])) == pack({}, [b"ab"])
    True
    """
    head = json.dumps({**header, "blob_sizes": [len(b) for b in blobs]},
                      separators=(",", ":")).encode()
    return [MAGIC + _LEN.pack(len(head)) + head, *blobs]


def header_length(prefix: bytes) -> int:
    """The header length a frame's first 8 bytes announce; WireError if they are no frame."""
    if len(prefix) < 8 or prefix[:4] != MAGIC:
        raise WireError("body is not a covalent frame (bad magic or too short)")
    return int(_LEN.unpack_from(prefix, 4)[0])


def parse_header(head: bytes, shared: bool = True) -> tuple[dict[str, Any], list[int]]:
    """A frame's header and its blob sizes; WireError with the reason when malformed.
    ``shared``: parsed in a process that must go on answering others meanwhile (the server):
    a large header is parsed member by member (see pieces.py), at several times the cost."""
    # a large header (a 100,000-node graph is ~50 MiB) member by member: see pieces.py
    header = _parsed(head, lambda text: json.loads(text) if len(text) < PIECES_FROM or not shared
                     else pieces.loads(text))
    return header, _blob_sizes(header)


def parse_header_keeping(head: bytes, names: Collection[str]
                         ) -> tuple[dict[str, Any], list[int], dict[str, str]]:
    """``parse_header(head)`` in the server, and the JSON text of the header's members
    ``names`` as they were sent (``pieces.loads_members``)."""
    header, kept = _parsed(head, lambda text: pieces.loads_members(
        text, names, 1 if len(text) < PIECES_FROM else 3))
    return header, _blob_sizes(header), kept


def _parsed(head: bytes, parse: Callable[[str], T]) -> T:
    """``parse`` of the header's text; WireError if it is no UTF-8 JSON."""
    try:
        return parse(head.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, 5000-digit numbers, deep nesting
        raise WireError(f"frame header is not UTF-8 JSON: {type(exc).__name__}: {exc}") from None


def _blob_sizes(header: Any) -> list[int]:
    if not isinstance(header, dict):
        raise WireError("frame header must be a JSON object")
    sizes = header.get("blob_sizes")
    if not isinstance(sizes, list) or not all(type(s) is int and s >= 0 for s in sizes):
        raise WireError("frame header needs blob_sizes, a list of non-negative integers")
    return sizes


def unpack(body: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Split a framed body (in the client: its header in one C call, the records of a
    1,000-node result took 5x as long member by member, #23); raise WireError with the
    reason when it is malformed."""
    hlen = header_length(body[:8])
    end = 8 + hlen
    if end > len(body):
        raise WireError("frame header is truncated")
    header, sizes = parse_header(body[8:end], shared=False)
    if end + sum(sizes) != len(body):
        raise WireError(
            f"frame blobs hold {len(body) - end} bytes but blob_sizes add up to {sum(sizes)}"
        )
    view = memoryview(body)
    blobs = []
    for size in sizes:
        blobs.append(bytes(view[end : end + size]))
        end += size
    return header, blobs
