"""Copy files and directories that the worker sees on its own filesystem."""

from __future__ import annotations

import os
import shutil

from ..file import File
from .transfer_strategy_base import FileTransferStrategy, Transfer


class Shutil(FileTransferStrategy):
    """Copy with ``shutil`` on the worker: local paths and ``file://`` URLs.

    A directory source (``dir/``) has its contents copied into the destination; with
    ``include_folder`` the directory itself is copied into it. A file copied to a path ending
    with ``/`` lands in that directory. Missing parent directories are created.
    """

    def cp(self, from_file: File, to_file: File) -> Transfer:
        src, dst = from_file.filepath, to_file.filepath
        into = from_file.is_dir and not src.endswith("/")  # include_folder: keep the folder

        def copy() -> None:
            if os.path.isdir(src):
                target = os.path.join(dst, os.path.basename(src.rstrip("/"))) if into else dst
                shutil.copytree(src, target, dirs_exist_ok=True)
                return
            if dst.endswith("/"):
                os.makedirs(dst, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
            shutil.copy2(src, dst)

        return copy

    # A file:// URL marked remote is still a path this worker can read or write.
    def download(self, from_file: File, to_file: File) -> Transfer:
        return self.cp(from_file, to_file)

    def upload(self, from_file: File, to_file: File) -> Transfer:
        return self.cp(from_file, to_file)
