"""A directory to transfer: a ``File`` that is always a directory."""

from __future__ import annotations

from .file import File


class Folder(File):
    """A directory path or URL; ``include_folder`` transfers the folder itself, not only its
    contents."""

    def __init__(self, filepath: str | None = None, is_remote: bool = False, is_dir: bool = True,
                 include_folder: bool = False) -> None:
        super().__init__(filepath, is_remote, is_dir, include_folder)
