"""A local path or a URL that a file transfer reads or writes.

``File("/data/x.csv")`` and ``File("file:///data/x.csv")`` are local; ``s3://``, ``gs://``,
``blob://``, ``http(s)://``, ``ftp://`` and ``globus://`` URLs are remote. A path ending with
``/`` is a directory. ``File()`` names a fresh temporary file, created on the worker just
before the transfers run.

>>> f = File("s3://bucket/dir/key.txt")
>>> (f.scheme, f.filepath, f.uri, f.is_remote)
('s3', '/dir/key.txt', 's3://bucket/dir/key.txt', True)
>>> File("/tmp/a/../b/").filepath, File("/tmp/b", is_dir=True).filepath, File("file:///x").uri
('/tmp/b/', '/tmp/b/', 'file:///x')
"""

from __future__ import annotations

import posixpath
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .enums import FileSchemes

_is_remote_scheme: dict[str, bool] = {
    FileSchemes.S3.value: True,
    FileSchemes.Blob.value: True,
    FileSchemes.GCloud.value: True,
    FileSchemes.Globus.value: True,
    FileSchemes.HTTP.value: True,
    FileSchemes.HTTPS.value: True,
    FileSchemes.FTP.value: True,
    FileSchemes.File.value: False,
}


def register_remote_scheme(scheme: str) -> None:
    """Accept ``scheme://`` URLs as remote files (for a custom transfer strategy)."""
    _is_remote_scheme[scheme] = True


class File:
    """A path or URL to transfer from or to.

    Args:
        filepath: a local path or a URL; ``None`` for a new temporary file.
        is_remote: treat the path as remote even if it is local (e.g. a path on an ssh host
            that ``Rsync`` reaches).
        is_dir: a directory even without a trailing ``/``.
        include_folder: transfer the directory itself rather than only its contents.

    Raises:
        TypeError: ``filepath`` is not a string. ValueError: its scheme is not supported.
    """

    def __init__(self, filepath: str | None = None, is_remote: bool = False, is_dir: bool = False,
                 include_folder: bool = False) -> None:
        if filepath is not None and not isinstance(filepath, str):
            raise TypeError(f"a File takes a string path or URL, got {type(filepath).__name__}")
        self.id = str(uuid.uuid4())
        if filepath is None:
            filepath = self.get_temp_filepath()
        self._is_remote = is_remote
        self._is_dir = is_dir
        self._include_folder = include_folder
        self.scheme = File.resolve_scheme(filepath)
        self._netloc, self._path, self._query, self._fragment = _split(self.scheme, filepath)
        self.uri = File.get_uri(self.scheme, filepath)

    def get_temp_filepath(self) -> str:
        return posixpath.join(tempfile.gettempdir(), self.id)

    @property
    def is_temp_file(self) -> bool:
        return self.filepath == self.get_temp_filepath()

    @property
    def is_remote(self) -> bool:
        return self._is_remote or _is_remote_scheme[self.scheme]

    @property
    def is_dir(self) -> bool:
        return self._is_dir or self._path.endswith("/")

    @property
    def filepath(self) -> str:
        """The path part (without scheme and host); a directory ends with ``/`` unless
        ``include_folder`` is set."""
        path = self._path
        if self._include_folder:
            return path.rstrip("/") or path
        if self.is_dir and not path.endswith("/"):
            path += "/"
        return path

    def touch(self) -> None:
        Path(self.filepath).touch()

    @staticmethod
    def resolve_scheme(path: str) -> str:
        """The scheme of ``path`` (``file`` for a plain path); ValueError if unsupported."""
        scheme = urlsplit(path).scheme if "://" in path or path.startswith("file:") else ""
        if not scheme:
            return FileSchemes.File.value
        if scheme in _is_remote_scheme:
            return scheme
        raise ValueError(f"Provided File scheme ({scheme}) is not supported.")

    @staticmethod
    def get_uri(scheme: str, path: str) -> str:
        """``path`` as a normalised URL with the given scheme."""
        netloc, p, query, fragment = _split(File.resolve_scheme(path), path)
        if scheme == FileSchemes.File.value:
            return ("file://" if p.startswith("/") else "file:") + p
        return urlunsplit((scheme, netloc, p, query, fragment))

    def __repr__(self) -> str:
        return f"File({self.uri!r})"


def _split(scheme: str, filepath: str) -> tuple[str, str, str, str]:
    """(host, normalised path, query, fragment); a plain path is all path, '#' and '?' too."""
    if scheme == FileSchemes.File.value:
        path = filepath
        if path.startswith("file://"):
            path = path[len("file://"):]
            path = path[path.index("/"):] if "/" in path else "/"  # drop a host ('localhost')
        elif path.startswith("file:"):
            path = path[len("file:"):]
        return "", _normalise(path), "", ""
    parts = urlsplit(filepath)
    return parts.netloc, _normalise(parts.path), parts.query, parts.fragment


def _normalise(path: str) -> str:
    """Resolve '.', '..' and '//' in ``path``, keeping a trailing '/'.

    >>> _normalise("./a//b/../c/"), _normalise(""), _normalise("/")
    ('a/c/', '', '/')
    """
    if not path:
        return path
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm + "/" if path.endswith("/") and not norm.endswith("/") else norm
