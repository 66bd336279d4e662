"""The interface of a file transfer strategy: callables that copy, download or upload.

A strategy runs on the client when the electron is decorated and returns callables; the
callables travel to the worker with the electron (pickled by value, like any closure) and run
there, before or after the electron's function. A callable raises on failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..enums import FtCallDepReturnValue
from ..file import File

Transfer = Callable[[], None]


class FileTransferStrategy(ABC):
    """Copies between two ``File``s: ``cp`` (local to local), ``download``, ``upload``."""

    @abstractmethod
    def cp(self, from_file: File, to_file: File) -> Transfer:
        """A callable that copies ``from_file`` to ``to_file`` (both local)."""

    @abstractmethod
    def download(self, from_file: File, to_file: File) -> Transfer:
        """A callable that copies remote ``from_file`` to local ``to_file``."""

    @abstractmethod
    def upload(self, from_file: File, to_file: File) -> Transfer:
        """A callable that copies local ``from_file`` to remote ``to_file``."""

    def pre_transfer_hook(
        self,
        from_file: File,
        to_file: File,
        return_value_type: FtCallDepReturnValue = FtCallDepReturnValue.FROM_TO,
    ) -> Callable[[], Any]:
        """A callable, run first on the worker, that creates the temporary files of the transfer
        and returns what the electron receives in ``files`` (by default ``(from, to)``)."""
        from_path, to_path = from_file.filepath, to_file.filepath
        temp = [p for f, p in ((from_file, from_path), (to_file, to_path)) if f.is_temp_file]
        value: Any = (
            to_path if return_value_type == FtCallDepReturnValue.TO
            else from_path if return_value_type == FtCallDepReturnValue.FROM
            else (from_path, to_path)
        )

        def prepare() -> Any:
            for path in temp:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).touch()
            return value

        return prepare
