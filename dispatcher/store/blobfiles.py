"""The bytes of the blobs a store keeps outside its database: where they are, how they go.

Rows say which blobs exist and who uses them (SQL, in each store); this module only touches
bytes: the content-addressed ``BlobStore`` workers write to (the data dir's ``blobs`` or an
fsspec URL), reads checked against the address they were made for, and the removal of a blob
nothing uses any more. Both SQL stores share it, so this is written once.

A place is only ever derived from a blob's address, under this store's own roots: the path a
row recorded only says which root (the ``--store-url`` one or the local blob dir) the blob
went to, and is never opened as it is (issue #21).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..worker.blobs import (BadBlobRef, BlobStore, DamagedBlob, checked, is_url, open_location,
                            relative, remove_location)

log = logging.getLogger("covalent.dispatcher")


class BlobFiles:
    """Blob bytes under ``root`` (a directory or URL); ``local_dir`` holds the local ones."""

    def __init__(self, root: str, local_dir: Path, storage_options: dict[str, Any]) -> None:
        self.store = BlobStore(root, storage_options)
        self.local_dir = Path(local_dir)
        self.storage_options = storage_options

    def location(self, ref: str, recorded: str | None) -> str:
        """Where blob ``ref`` is: under the store's root URL if its row says it went to a URL
        (and the store has one), else under the local blob dir. BadBlobRef for a malformed
        address (a row an older version stored from a worker's report)."""
        if recorded is not None and is_url(recorded) and not self.store.local:
            return self.store.location(ref)
        return relative(ref)

    def read(self, ref: str, recorded: str | None) -> bytes:
        """A blob file's bytes, checked against its address; a damaged one is removed (the
        next write of that value puts it back) and raises DamagedBlob."""
        try:
            location = self.location(ref, recorded)
        except BadBlobRef:
            raise DamagedBlob(ref, "has no valid address") from None
        try:
            with open_location(location, str(self.local_dir), self.storage_options) as fh:
                data = fh.read()
        except FileNotFoundError:
            raise DamagedBlob(ref, "is missing") from None
        return checked(ref, data, lambda: self._remove(location))

    def unlink(self, ref: str, recorded: str | None) -> None:
        """Remove the bytes of blob ``ref`` (only ever at its own content address). Gone
        already is fine; a removal that fails is logged (the blob is unused: it only takes
        space)."""
        try:
            location = self.location(ref, recorded)
        except BadBlobRef:
            log.warning("not removing a blob with a malformed address: %r", ref[:80])
            return
        try:
            self._remove(location)
        except OSError as exc:
            log.warning("could not remove the unused blob %s: %s", location, exc)

    def _remove(self, location: str) -> None:
        remove_location(location, str(self.local_dir), self.storage_options)
