"""Upload files and directories to Google Cloud Storage and download them (with gcsfs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .fsspec_strategy import FsspecStrategy


class GCloud(FsspecStrategy):
    """Transfer ``gs://bucket/object`` objects (``prefix/`` for a directory) through gcsfs.

    Args:
        credentials: path of a service account's JSON key; the workers read it, so it must be
            at that path on them too (it does not travel with the workflow).
        project_id: the GCP project.
        storage_options: extra gcsfs options.

    Raises:
        ValueError: ``credentials`` is not a file.

    Needs ``gcsfs`` on the workers: ``pip install 'covalent-dask[gs]'``.
    """

    protocol = "gs"
    package = "gcsfs"
    extra = "gs"

    def __init__(self, credentials: str | None = None, project_id: str | None = None, *,
                 storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(storage_options=storage_options)
        self.credentials: str | None = None
        if credentials is not None:
            path = Path(credentials).expanduser().resolve()
            if not path.is_file():
                raise ValueError(f"Could not locate credentials ({credentials}) for GCloud file transfers.")
            self.credentials = str(path)
        self.project_id = project_id

    def filesystem_options(self, uri: str) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.credentials:
            opts["token"] = self.credentials
        if self.project_id:
            opts["project"] = self.project_id
        return {**opts, **self.storage_options}
