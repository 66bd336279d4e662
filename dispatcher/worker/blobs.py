"""The content-addressed output store: where workers write node outputs, and the server reads.

A blob's address is the sha256 of its bytes; it lives at ``<root>/<ab>/<abcdef...>``. The root is
a local directory (the data dir's ``blobs``, for the embedded cluster) or any fsspec URL
(``s3://bucket/prefix``, a shared file system) for workers on other machines. A write is
atomic (a temporary name renamed into place, or a single object PUT), so a reader never sees
half a blob, and idempotent: the same output written twice (a node run again after its worker
died) lands at the same address, once.

>>> import tempfile; store = BlobStore(tempfile.mkdtemp())
>>> ref, size = store.put(b"hello")
>>> store.get(ref), size, store.exists(ref)
(b'hello', 5, True)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs


def blob_ref(data: bytes) -> str:
    """The content address of a blob.

    >>> blob_ref(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


class _Hashing:
    """A binary file that hashes what is written to it (``pickle.dump`` passes large buffers
    as they are, without copying them)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += view.nbytes
        self.fh.write(view)
        return view.nbytes


def is_url(path: str) -> bool:
    """A location with a scheme (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


class BlobStore:
    """Blobs under ``root`` (a local directory or an fsspec URL)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root.removeprefix("file://").rstrip("/")
        self.storage_options = storage_options or {}
        self.local = not is_url(self.root)
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs, _ = url_to_fs(self.root, **self.storage_options)
        return self._fs

    def location(self, ref: str) -> str:
        """Where ``ref`` lives: a path relative to a local root, else the full URL."""
        rel = f"{ref[:2]}/{ref}"
        return rel if self.local else f"{self.root}/{rel}"

    def path(self, ref: str) -> str:
        return f"{self.root}/{ref[:2]}/{ref}"

    def put(self, data: bytes, ref: str | None = None) -> tuple[str, int]:
        """Store ``data``; its (address, size). What exists already is left as it is."""
        ref = ref or blob_ref(data)
        target = self.path(ref)
        if self.local:
            self._put_local(target, data)
        elif not self.fs.exists(target):
            self.fs.pipe_file(target, data)  # one PUT: readers never see half of it
        return ref, len(data)

    def put_stream(self, fill: Callable[[IO[bytes]], object]) -> tuple[str, int]:
        """Store what ``fill`` writes to the file it is given, hashed as it is written (a
        large output is never held as one more copy in memory); its (address, size)."""
        local = self.root if self.local else None
        if local is not None:
            os.makedirs(local, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=local)
        try:
            with os.fdopen(fd, "wb") as fh:
                writer = _Hashing(fh)
                fill(writer)  # type: ignore[arg-type]
            ref, size = writer.hash.hexdigest(), writer.size
            if local is not None:
                target = self.path(ref)
                if not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.replace(tmp, target)
            else:
                self.adopt(tmp, ref)
            return ref, size
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def sweep(self, older_than: float) -> int:
        """Remove the temporary files of writers that died mid-write (a worker killed while it
        stored an output) last written over ``older_than`` seconds ago; how many. A local
        store only (an object store never shows half an object)."""
        if not self.local or not os.path.isdir(self.root):
            return 0
        removed = 0
        cutoff = time.time() - older_than
        dirs = [self.root] + [e.path for e in os.scandir(self.root) if e.is_dir()]
        for directory in dirs:
            for entry in os.scandir(directory):
                if not entry.name.startswith(".tmp-"):
                    continue
                try:
                    if entry.stat().st_mtime <= cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass  # its writer finished (renamed it) meanwhile
        return removed

    def _put_local(self, target: str, data: bytes) -> None:
        if os.path.exists(target):
            return
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def adopt(self, path: str, ref: str) -> None:
        """Move the finished file ``path`` (whose sha256 is ``ref``) into the store."""
        target = self.path(ref)
        try:
            if self.local:
                if not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.move(path, target)  # a rename when both are on one file system
            elif not self.fs.exists(target):
                self.fs.put_file(path, target)  # one upload (multipart if large), then visible
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def exists(self, ref: str) -> bool:
        target = self.path(ref)
        return os.path.exists(target) if self.local else bool(self.fs.exists(target))

    def get(self, ref: str) -> bytes:
        if self.local:
            with open(self.path(ref), "rb") as fh:
                return fh.read()
        data: bytes = self.fs.cat_file(self.path(ref))
        return data

    def open(self, ref: str) -> IO[bytes]:
        """A binary file of the blob, for streaming it."""
        if self.local:
            return open(self.path(ref), "rb")
        handle: IO[bytes] = self.fs.open(self.path(ref), "rb")
        return handle


def open_location(location: str, local_root: str, storage_options: dict[str, Any] | None = None
                  ) -> IO[bytes]:
    """Open a blob recorded at ``location`` (relative to ``local_root``, or a URL)."""
    if is_url(location):
        handle: IO[bytes] = fsspec.open(location, "rb", **(storage_options or {})).open()
        return handle
    return open(os.path.join(local_root, location), "rb")
