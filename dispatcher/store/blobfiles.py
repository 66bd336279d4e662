"""The bytes of the blobs a store keeps outside its database: where they are, how they go.

Rows say which blobs exist and who uses them (SQL, in each store); this module only touches
bytes: the content-addressed ``BlobStore`` workers write to (the data dir's ``blobs`` or an
fsspec URL), and the removal of a blob nothing uses any more. Both SQL stores share it, so
removing blobs is written once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..worker.blobs import BlobStore, open_location

log = logging.getLogger("covalent.dispatcher")

_REF = re.compile(r"[0-9a-f]{64}")


class BlobFiles:
    """Blob bytes under ``root`` (a directory or URL); ``local_dir`` resolves relative paths."""

    def __init__(self, root: str, local_dir: Path, storage_options: dict[str, Any]) -> None:
        self.store = BlobStore(root, storage_options)
        self.local_dir = Path(local_dir)
        self.storage_options = storage_options

    def read(self, location: str) -> bytes:
        """The bytes recorded at ``location`` (relative to the blob directory, or a URL)."""
        with open_location(location, str(self.local_dir), self.storage_options) as fh:
            return fh.read()

    def unlink(self, ref: str) -> None:
        """Remove the bytes of blob ``ref`` from this store: only ever its own content address
        (``<root>/<ab>/<ref>``), whatever a row says (issue #21). Gone already is fine; a
        removal that fails is logged (the blob is unused: it only takes space)."""
        if not _REF.fullmatch(ref):
            log.warning("not removing a blob with a malformed address: %r", ref[:80])
            return
        target = self.store.path(ref)
        try:
            if self.store.local:
                Path(target).unlink()
            else:
                self.store.fs.rm_file(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the unused blob %s: %s", target, exc)
