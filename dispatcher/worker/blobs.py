"""The content-addressed output store: where workers write node outputs, and the server reads.

A blob's address is the hash of its bytes, in one of two forms: ``b3-`` and the 64 lower-case
hex digits of its BLAKE3 hash (how workers store outputs: on one core of the benchmark machine
BLAKE3 hashes 5-6 GB/s and SHA-256 1.2, and the hash is paid in the node's own time, #23), or
the 64 hex digits of its SHA-256 (the workflow's own blobs, whose hash the client sends, and
every blob stored before BLAKE3). The form says which hash a reader checks. A blob lives at
``<root>/<ab>/<address>``, ``ab`` the first two hex digits of its hash. The root is a local
directory (the data dir's ``blobs``, for the embedded cluster) or any fsspec URL
(``s3://bucket/prefix``, a shared file system) for workers on other machines. A write is
atomic (a temporary name renamed into place, or a single object PUT), so a reader never sees
half a blob, and idempotent: the same output written twice (a node run again after its worker
died) lands at the same address, once; a file found there with the wrong size (cut short by a
crash, damaged) is replaced. A writer killed mid-write leaves only a temporary ``.tmp-*``
file, which ``sweep`` removes (the dispatcher, when it starts).

Only an address is ever turned into a place, and only under this store's root: a path or URL
that comes from a message is never opened, and anything but an address of either form is
refused (``BadBlobRef``), so no report can make the server read or delete a file of its choosing
(issue #21). Readers check what they read against its address (``Hashed``, ``get``): a blob
that is missing, cut short or damaged raises ``DamagedBlob`` and is removed, so the next
write of the same value puts it back.

>>> import tempfile; store = BlobStore(tempfile.mkdtemp())
>>> ref, size = store.put(b"hello")
>>> store.get(ref), size, store.exists(ref), ref[:11]
(b'hello', 5, True, 'b3-ea8f163d')
>>> store.path("../../etc/passwd")
Traceback (most recent call last):
...
dispatcher.worker.blobs.BadBlobRef: '../../etc/passwd' is not a blob address (64 hex digits, or b3- and 64 hex digits)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import blake3
import fsspec
from fsspec.core import url_to_fs

BLAKE3 = "b3-"  # the prefix of a BLAKE3 address
_REF = re.compile(r"(?:b3-)?[0-9a-f]{64}")


class BadBlobRef(ValueError):
    """Something offered as a blob address that is not one (a path, a URL, a short id)."""

    def __init__(self, ref: object) -> None:
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return (f"{str(self.ref)[:200]!r} is not a blob address (64 hex digits, or {BLAKE3} and "
                "64 hex digits)")


class DamagedBlob(OSError):
    """A stored blob that is missing, or whose bytes are not those its address names."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(ref, reason)
        self.ref = ref
        self.reason = reason

    def __str__(self) -> str:
        return f"stored blob {self.ref[:16]}… {self.reason}"


def blob_ref(data: bytes) -> str:
    """The SHA-256 address of a blob: how the client and the server name a workflow's blobs.

    >>> blob_ref(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def output_ref(data: bytes) -> str:
    """The BLAKE3 address of a blob: how workers name the outputs they store.

    >>> output_ref(b"")[:15]
    'b3-af1349b9f5f9'
    """
    return BLAKE3 + blake3.blake3(data).hexdigest()


def _hash_for(ref: str) -> Any:
    """A new hash object of the kind ``ref`` names."""
    return blake3.blake3() if ref.startswith(BLAKE3) else hashlib.sha256()


def _address(ref: str, digest: str) -> str:
    """``digest`` (hex) written as an address of the form of ``ref``."""
    return BLAKE3 + digest if ref.startswith(BLAKE3) else digest


def is_blob_ref(ref: object) -> bool:
    """True for a content address (what ``blob_ref`` or ``output_ref`` returns), False for
    anything else.

    >>> is_blob_ref(blob_ref(b"x")), is_blob_ref(output_ref(b"x")), is_blob_ref("/etc/passwd")
    (True, True, False)
    >>> is_blob_ref(blob_ref(b"x") + "\\n"), is_blob_ref("b3-" + blob_ref(b"x")[:63] + "/")
    (False, False)
    """
    return isinstance(ref, str) and _REF.fullmatch(ref) is not None


def check_ref(ref: object) -> str:
    """``ref`` if it is a content address, else BadBlobRef."""
    if not is_blob_ref(ref):
        raise BadBlobRef(ref)
    assert isinstance(ref, str)
    return ref


class _Hashing:
    """A binary file that hashes what is written to it with BLAKE3 (``pickle.dump`` passes
    large buffers as they are, without copying them; a NumPy array's buffer is read as bytes).

    A large buffer (``ALONGSIDE`` or more) is hashed in another thread while this one writes
    it: both release the GIL, so a 200 MB array costs the longer of the two (a write to the
    page cache, 50-55 ms here) rather than their sum (35 ms more for BLAKE3, #23). The file's
    bytes and the hash's input are the same buffers, in the same order, either way."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.hash = blake3.blake3()
        self.size = 0

    @property
    def ref(self) -> str:
        return BLAKE3 + self.hash.hexdigest()

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
        self.size += view.nbytes
        if view.nbytes < ALONGSIDE:
            self.hash.update(view)
            self.fh.write(view)
            return view.nbytes
        hashed = _hashers().submit(self.hash.update, view)
        try:
            self.fh.write(view)
        finally:
            hashed.result()  # the next update, and the caller's next change of the buffer, wait
        return view.nbytes


# A buffer this large is hashed in another thread while it is written: from 1 MiB up the
# hand-off costs less than it saves (a 2 MiB NumPy array stored in 0.68 ms against 0.87 with
# the hash after the write; BLAKE3 of it alone 0.34 ms).
ALONGSIDE = 1 << 20
_HASHERS: ThreadPoolExecutor | None = None
_HASHERS_LOCK = threading.Lock()


def _hashers() -> ThreadPoolExecutor:
    """The threads that hash large buffers beside their writes (a few, for workers that run
    several tasks at once; started when first needed, and anew in a forked child)."""
    global _HASHERS
    with _HASHERS_LOCK:
        if _HASHERS is None:
            _HASHERS = ThreadPoolExecutor(4, thread_name_prefix="blob-hash")
        return _HASHERS


def _forget_hashers() -> None:
    global _HASHERS, _HASHERS_LOCK
    _HASHERS, _HASHERS_LOCK = None, threading.Lock()  # the parent's threads are not here


os.register_at_fork(after_in_child=_forget_hashers)


def is_url(path: str) -> bool:
    """A location with a scheme (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def relative(ref: str) -> str:
    """Where ``ref`` lives under a root: ``ab/abcdef...`` (``ab/b3-abcdef...``).

    >>> relative(output_ref(b"")), relative(blob_ref(b""))[:20]
    ('af/b3-af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262', 'e3/e3b0c44298fc1c149')
    """
    ref = check_ref(ref)
    return f"{ref.removeprefix(BLAKE3)[:2]}/{ref}"


class Hashed:
    """Check bytes read a chunk at a time against the address they were read for (with the
    hash the address's form names).

    >>> h = Hashed(blob_ref(b"abc"), 3); h.update(b"ab"); h.update(b"c"); h.check()
    >>> h = Hashed(output_ref(b"abc"), 3); h.update(b"ab"); h.update(b"c"); h.check()
    >>> h = Hashed(blob_ref(b"abc"), 3); h.update(b"abd"); h.check()
    Traceback (most recent call last):
    ...
    dispatcher.worker.blobs.DamagedBlob: stored blob ba7816bf8f01cfea… is damaged: its bytes hash to a52d15… (3 bytes)
    >>> h = Hashed(output_ref(b"abc"), 3); h.update(b"abd"); h.check()
    Traceback (most recent call last):
    ...
    dispatcher.worker.blobs.DamagedBlob: stored blob b3-6437b3ac38465… is damaged: its bytes hash to 90bfae… (3 bytes)
    """

    def __init__(self, ref: str, size: int) -> None:
        self.ref, self.size = ref, size
        self.seen = 0
        self._hash = _hash_for(ref)

    def update(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        self._hash.update(chunk)

    def check(self) -> None:
        """DamagedBlob unless the bytes seen are exactly the blob's."""
        if self.seen != self.size:
            raise DamagedBlob(self.ref, f"is cut short: {self.seen} of {self.size} bytes")
        digest = self._hash.hexdigest()
        if _address(self.ref, digest) != self.ref:
            raise DamagedBlob(self.ref, f"is damaged: its bytes hash to {digest[:6]}… "
                              f"({self.seen} bytes)")


def checked(ref: str, data: bytes, remove: Callable[[], None]) -> bytes:
    """``data``, read for ``ref``, if it is that blob's; else ``remove()`` it and DamagedBlob."""
    found = Hashed(ref, len(data))
    found.update(data)
    try:
        found.check()
    except DamagedBlob as exc:
        remove()
        raise DamagedBlob(ref, f"{exc.reason} (removed)") from None
    return data


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
        return relative(ref) if self.local else f"{self.root}/{relative(ref)}"

    def path(self, ref: str) -> str:
        return f"{self.root}/{relative(ref)}"

    def put(self, data: bytes, ref: str | None = None) -> tuple[str, int]:
        """Store ``data`` at ``ref`` (default: its BLAKE3 address, as outputs are); its
        (address, size). A blob already there is kept if its size is right (else it is
        replaced)."""
        ref = ref or output_ref(data)
        target = self.path(ref)
        if self.local:
            self._put_local(target, data)
        elif self._size(target) != len(data):
            self.fs.pipe_file(target, data)  # one PUT: readers never see half of it
        return ref, len(data)

    def put_stream(self, fill: Callable[[IO[bytes]], object]) -> tuple[str, int]:
        """Store what ``fill`` writes to the file it is given, hashed (BLAKE3) as it is written
        (a large output is never held as one more copy in memory); its (address, size)."""
        local = self.root if self.local else None
        if local is not None:
            os.makedirs(local, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=local)
        try:
            with os.fdopen(fd, "wb") as fh:
                writer = _Hashing(fh)
                fill(writer)  # type: ignore[arg-type]
            ref, size = writer.ref, writer.size
            if local is not None:
                target = self.path(ref)
                if self._size(target) != size:  # else there whole already
                    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
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
        if self._size(target) == len(data):
            return
        directory = os.path.dirname(target)
        os.makedirs(directory, mode=0o700, exist_ok=True)
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
            if not os.path.exists(path) or self._size(target) == os.path.getsize(path):
                return  # moved in already (one blob named twice), or there already
            if self.local:  # moved next to its place, then renamed over whatever is there
                directory = os.path.dirname(target)
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
                os.close(fd)
                shutil.move(path, tmp)  # a rename when both are on one file system
                os.replace(tmp, target)
            else:
                self.fs.put_file(path, target)  # one upload (multipart if large), then visible
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def _size(self, target: str) -> int | None:
        """The size of what is at ``target`` now, None if nothing is."""
        try:
            return os.path.getsize(target) if self.local else int(self.fs.info(target)["size"])
        except (FileNotFoundError, KeyError):
            return None

    def exists(self, ref: str) -> bool:
        target = self.path(ref)
        return os.path.exists(target) if self.local else bool(self.fs.exists(target))

    def get(self, ref: str) -> bytes:
        """The blob's bytes, checked against its address (DamagedBlob, and removed, if not)."""
        try:
            if self.local:
                with open(self.path(ref), "rb") as fh:
                    data = fh.read()
            else:
                data = self.fs.cat_file(self.path(ref))
        except FileNotFoundError:
            raise DamagedBlob(ref, "is missing") from None
        return checked(ref, data, lambda: self.discard(ref))

    def open(self, ref: str) -> IO[bytes]:
        """A binary file of the blob, for streaming it."""
        if self.local:
            return open(self.path(ref), "rb")
        handle: IO[bytes] = self.fs.open(self.path(ref), "rb")
        return handle

    def discard(self, ref: str) -> None:
        """Remove the blob (one found damaged: the next write of its value puts it back)."""
        target = self.path(ref)
        try:
            if self.local:
                os.unlink(target)
            else:
                self.fs.rm_file(target)
        except FileNotFoundError:
            pass


# A blob's *location*, as the server's store derives it from the blob's address: a path
# relative to the local blob dir, or a URL under the store's root. Never one from a message.

def open_location(location: str, local_root: str, storage_options: dict[str, Any] | None = None
                  ) -> IO[bytes]:
    """Open the blob at ``location`` for reading."""
    if is_url(location):
        handle: IO[bytes] = fsspec.open(location, "rb", **(storage_options or {})).open()
        return handle
    return open(os.path.join(local_root, location), "rb")


def size_at(location: str, local_root: str, storage_options: dict[str, Any] | None = None
            ) -> int | None:
    """The size of the blob at ``location``, None if there is none."""
    try:
        if is_url(location):
            fs, target = url_to_fs(location, **(storage_options or {}))
            return int(fs.info(target)["size"])
        return os.path.getsize(os.path.join(local_root, location))
    except (FileNotFoundError, KeyError):
        return None


def remove_location(location: str, local_root: str,
                    storage_options: dict[str, Any] | None = None) -> None:
    """Remove the blob at ``location`` (nothing if there is none)."""
    try:
        if is_url(location):
            fs, target = url_to_fs(location, **(storage_options or {}))
            fs.rm_file(target)
        else:
            os.unlink(os.path.join(local_root, location))
    except FileNotFoundError:
        pass
