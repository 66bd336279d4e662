"""Download files with HTTP GET and upload them with HTTP PUT (e.g. to a presigned URL)."""

from __future__ import annotations

import os
from typing import Any

from ..file import File
from .fsspec_strategy import FsspecStrategy
from .transfer_strategy_base import Transfer


class HTTP(FsspecStrategy):
    """GET a file from an ``http(s)://`` URL before the electron, PUT one to it after.

    The URL is used as given (query string included, not re-encoded), so presigned URLs
    work. An error status fails the transfer. Directories are not supported.

    Args:
        storage_options: extra options of fsspec's HTTP filesystem (e.g. ``client_kwargs``
            with headers or auth for aiohttp).
    """

    protocol = "http"
    package = "aiohttp"

    def filesystem_options(self, uri: str) -> dict[str, Any]:
        return {"encoded": True, **self.storage_options}

    def download(self, from_file: File, to_file: File) -> Transfer:
        _single_file(from_file)
        return super().download(from_file, to_file)

    def upload(self, from_file: File, to_file: File) -> Transfer:
        _single_file(from_file)
        strategy, local, url = self, from_file.filepath, self.remote_path(to_file)

        def put() -> None:
            # A declared length, not a chunked body: object stores refuse chunked PUTs.
            size = os.path.getsize(local)
            strategy.filesystem(url).put_file(local, url, method="put",
                                           headers={"Content-Length": str(size)})

        return put


def _single_file(file: File) -> None:
    if file.is_dir:
        raise ValueError(f"HTTP transfers move single files, not the directory {file.uri}")
