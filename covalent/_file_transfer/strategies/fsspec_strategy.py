"""Transfers through an fsspec filesystem: the base of the HTTP, S3, GCloud and Blob strategies.

The strategy object itself travels to the worker inside the transfer callable, and opens its
filesystem there (``filesystem(uri)``), so credentials files are read where the transfer runs.
An fsspec implementation that is not installed on the worker fails the transfer with the name
of the package (and of this project's extra) to install.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..file import File
from .transfer_strategy_base import FileTransferStrategy, Transfer

if TYPE_CHECKING:
    import fsspec


class FsspecStrategy(FileTransferStrategy):
    """Download and upload files and directories with ``fsspec.filesystem(protocol)``.

    Args:
        storage_options: extra keyword arguments for the fsspec filesystem (e.g.
            ``{"endpoint_url": ...}`` for an S3-compatible server).
    """

    protocol = ""
    package = ""  # the fsspec implementation's distribution, for the error message
    extra = ""  # this project's extra that installs it

    def __init__(self, *, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = dict(storage_options or {})

    def filesystem_options(self, uri: str) -> dict[str, Any]:
        """Keyword arguments of the filesystem that serves ``uri``; runs on the worker."""
        return dict(self.storage_options)

    def filesystem(self, uri: str) -> fsspec.AbstractFileSystem:
        import fsspec  # on the worker only: keeps ``import covalent`` light

        try:
            return fsspec.filesystem(self.protocol, **self.filesystem_options(uri))
        except ImportError as exc:
            raise ImportError(
                f"{type(self).__name__} transfers need {self.package} on the worker "
                f"(pip install 'covalent-dask[{self.extra}]'): {exc}"
            ) from exc

    def remote_path(self, file: File) -> str:
        """The path of ``file`` as the filesystem names it."""
        return file.uri

    def cp(self, from_file: File, to_file: File) -> Transfer:
        raise NotImplementedError(f"{type(self).__name__} does not copy between two local paths")

    def download(self, from_file: File, to_file: File) -> Transfer:
        strategy, uri, local = self, from_file.uri, to_file.filepath
        remote, recursive = self.remote_path(from_file), from_file.is_dir

        def get() -> None:
            fs = strategy.filesystem(uri)
            if recursive:
                os.makedirs(local, exist_ok=True)
                fs.get(remote.rstrip("/") + "/", local.rstrip("/") + "/", recursive=True)
            else:
                os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
                fs.get_file(remote, local)

        return get

    def upload(self, from_file: File, to_file: File) -> Transfer:
        strategy, local, uri = self, from_file.filepath, to_file.uri
        remote, recursive = self.remote_path(to_file), from_file.is_dir

        def put() -> None:
            fs = strategy.filesystem(uri)
            if recursive:
                fs.put(local.rstrip("/") + "/", remote.rstrip("/") + "/", recursive=True)
            else:
                fs.put_file(local, remote)

        return put
