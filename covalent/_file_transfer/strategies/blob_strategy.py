"""Upload files and directories to Azure Blob Storage and download them (with adlfs)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..file import File
from .fsspec_strategy import FsspecStrategy


class Blob(FsspecStrategy):
    """Transfer blobs named ``https://<account>.blob.core.windows.net/<container>/<blob>``
    (or ``blob://`` with the same host) through adlfs, as a service principal.

    Args:
        client_id, client_secret, tenant_id: the service principal's credentials (they travel
            with the workflow to the workers).
        storage_options: extra adlfs options.

    Needs ``adlfs`` on the workers: ``pip install 'covalent-dask[blob]'``.
    """

    protocol = "abfs"
    package = "adlfs"
    extra = "blob"

    def __init__(self, client_id: str | None = None, client_secret: str | None = None,
                 tenant_id: str | None = None, *,
                 storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(storage_options=storage_options)
        self.credentials = (tenant_id, client_id, client_secret)

    def filesystem_options(self, uri: str) -> dict[str, Any]:
        """The storage account is the first label of the URL's host."""
        tenant_id, client_id, client_secret = self.credentials
        account = (urlsplit(uri).hostname or "").split(".")[0]
        opts = {"account_name": account, "tenant_id": tenant_id,
                "client_id": client_id, "client_secret": client_secret}
        return {**{k: v for k, v in opts.items() if v}, **self.storage_options}

    def remote_path(self, file: File) -> str:
        """``container/blob``."""
        return file.filepath.lstrip("/")
