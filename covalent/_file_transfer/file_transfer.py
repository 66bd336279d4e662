"""File transfers of an electron: what to copy, when, and with which strategy.

``@ct.electron(files=[FileTransfer(...), ...])`` turns each transfer into two hooks, as
Covalent does: a ``call_before`` that creates temporary files and injects ``(from, to)`` into
the electron's ``files`` argument, and the transfer itself, in ``call_before`` (``Order.BEFORE``)
or ``call_after`` (``Order.AFTER``). Both run on the worker. A failed transfer raises
``FileTransferError`` naming both URLs, which fails the node.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._deps import RESERVED_RETVAL_KEY__FILES, Deps, DepsCall
from ..errors import FileTransferError
from .enums import FileSchemes, FtCallDepReturnValue, Order
from .file import File, register_remote_scheme
from .strategies.blob_strategy import Blob
from .strategies.gcloud_strategy import GCloud
from .strategies.http_strategy import HTTP
from .strategies.s3_strategy import S3
from .strategies.shutil_strategy import Shutil
from .strategies.transfer_strategy_base import FileTransferStrategy, Transfer

_downloaders: dict[str, type[FileTransferStrategy]] = {
    FileSchemes.File.value: Shutil,
    FileSchemes.HTTP.value: HTTP,
    FileSchemes.HTTPS.value: HTTP,
    FileSchemes.GCloud.value: GCloud,
    FileSchemes.Blob.value: Blob,
    FileSchemes.S3.value: S3,
}
_uploaders: dict[str, type[FileTransferStrategy]] = dict(_downloaders)


def register_downloader(scheme: str, cls: type[FileTransferStrategy]) -> None:
    """Download ``scheme://`` URLs with ``cls()`` when a transfer names no strategy."""
    register_remote_scheme(scheme)
    _downloaders[scheme] = cls


def register_uploader(scheme: str, cls: type[FileTransferStrategy]) -> None:
    """Upload to ``scheme://`` URLs with ``cls()`` when a transfer names no strategy."""
    register_remote_scheme(scheme)
    _uploaders[scheme] = cls


def guess_transfer_strategy(from_file: File, to_file: File) -> type[FileTransferStrategy]:
    """The strategy for the schemes of the two files: local to local is ``Shutil``.

    Raises:
        ValueError: no strategy is known for the remote side, or both sides are remote.
    """
    if from_file.is_remote and to_file.is_remote:
        raise ValueError("FileTransfer requires a file transfer strategy to be specified")
    if to_file.is_remote:
        up = _uploaders.get(to_file.scheme)
        if up is None:
            raise ValueError(f"Cannot guess upload strategy for remote {to_file.uri}")
        return up
    if from_file.is_remote:
        down = _downloaders.get(from_file.scheme)
        if down is None:
            raise ValueError(f"Cannot guess download strategy for remote {from_file.uri}")
        return down
    return Shutil


class FileTransfer:
    """Copy ``from_file`` to ``to_file`` on the worker, before or after the electron runs.

    Args:
        from_file: source path, URL or ``File``; ``None`` for a new temporary file.
        to_file: destination path, URL or ``File``; ``None`` for a new temporary file.
        order: ``Order.BEFORE`` (default) or ``Order.AFTER`` the electron's function.
        strategy: how to copy; by default guessed from the schemes (``Shutil`` locally,
            ``HTTP``, ``S3``, ``GCloud``, ``Blob`` for their URLs).

    Raises:
        TypeError: a file is neither a string, a ``File`` nor ``None``.
        ValueError: both files are remote, or no strategy fits.

    Example:
        >>> ft = FileTransfer("/tmp/in.txt", "/tmp/out.txt")
        >>> ft.from_file.filepath, ft.to_file.filepath, ft.order, type(ft.strategy).__name__
        ('/tmp/in.txt', '/tmp/out.txt', <Order.BEFORE: 'before'>, 'Shutil')
    """

    def __init__(self, from_file: File | str | None = None, to_file: File | str | None = None,
                 order: Order = Order.BEFORE, strategy: FileTransferStrategy | None = None) -> None:
        self.from_file = _as_file(from_file)
        self.to_file = _as_file(to_file)
        self.order = Order(order)
        if self.from_file.is_remote and self.to_file.is_remote:
            raise ValueError(
                "FileTransfer does not support remote->remote transfers; make from_file or "
                "to_file a local path."
            )
        self.strategy = strategy if strategy is not None else (
            guess_transfer_strategy(self.from_file, self.to_file)()
        )

    def cp(self) -> tuple[Transfer, Transfer]:
        """(the pre-transfer hook, the transfer), as callables to run on the worker."""
        src, dst = self.from_file, self.to_file
        if src.is_remote and not dst.is_remote:
            transfer = self.strategy.download(src, dst)
        elif dst.is_remote and not src.is_remote:
            transfer = self.strategy.upload(src, dst)
        else:
            transfer = self.strategy.cp(src, dst)
        hook = self.strategy.pre_transfer_hook(src, dst, FtCallDepReturnValue.FROM_TO)
        return hook, transfer

    def __repr__(self) -> str:
        return (f"FileTransfer({self.from_file.uri!r}, {self.to_file.uri!r}, "
                f"order={self.order.value!r}, strategy={type(self.strategy).__name__})")


def _as_file(f: File | str | None) -> File:
    if f is None or isinstance(f, str):
        return File(f)
    if isinstance(f, File):
        return f
    raise TypeError(f"FileTransfer takes a File, a path or None, got {type(f).__name__}")


def TransferFromRemote(from_filepath: str, to_filepath: str | None = None,
                       strategy: FileTransferStrategy | None = None,
                       order: Order = Order.BEFORE) -> FileTransfer:
    """A transfer that downloads ``from_filepath`` (treated as remote) before the electron runs.

    ``to_filepath`` defaults to a temporary file; a source ending with ``/`` is a directory
    and then the destination must end with ``/`` too. ``order`` is ignored (always before).

    Raises:
        ValueError: a directory source with a destination that is not a directory.
    """
    is_dir = from_filepath.endswith("/")
    if is_dir and not (to_filepath or "").endswith("/"):
        raise ValueError("Please specify a directory path (ending with '/') as the destination.")
    return FileTransfer(File(from_filepath, is_remote=True, is_dir=is_dir),
                        File(to_filepath, is_dir=is_dir), order=Order.BEFORE, strategy=strategy)


def TransferToRemote(to_filepath: str, from_filepath: str | None = None,
                     strategy: FileTransferStrategy | None = None,
                     order: Order = Order.AFTER) -> FileTransfer:
    """A transfer that uploads to ``to_filepath`` (treated as remote) after the electron runs.

    ``from_filepath`` defaults to a temporary file (created empty before the electron runs,
    for it to write); a source ending with ``/`` is a directory and then the destination must
    end with ``/`` too. ``order`` is ignored (always after).

    Raises:
        ValueError: a directory source with a destination that is not a directory.
    """
    is_dir = bool(from_filepath) and str(from_filepath).endswith("/")
    if is_dir and not to_filepath.endswith("/"):
        raise ValueError("Please specify a directory path (ending with '/') as the destination.")
    return FileTransfer(File(from_filepath, is_dir=is_dir),
                        File(to_filepath, is_remote=True, is_dir=is_dir), order=Order.AFTER,
                        strategy=strategy)


def run_transfer(transfer: Transfer, from_uri: str, to_uri: str) -> None:
    """Run one transfer on the worker; any failure becomes a FileTransferError naming both ends."""
    try:
        transfer()
    except Exception as exc:  # a strategy may raise anything (OSError, HTTP, boto, rsync errors)
        raise FileTransferError(from_uri, to_uri, f"{type(exc).__name__}: {exc}") from exc


def transfer_hooks(files: Sequence[FileTransfer], *, inject: bool = True) -> tuple[list[Deps], list[Deps]]:
    """The ``call_before`` and ``call_after`` hooks of an electron's ``files=``.

    With ``inject`` (electrons; not leptons), each transfer's ``(from, to)`` is appended to the
    list the electron receives as its ``files`` keyword argument.

    Raises:
        TypeError: an entry is not a ``FileTransfer``.
    """
    before: list[Deps] = []
    after: list[Deps] = []
    for ft in files:
        if not isinstance(ft, FileTransfer):
            raise TypeError(f"files= takes ct.fs.FileTransfer objects, got {type(ft).__name__}")
        hook, transfer = ft.cp()
        before.append(DepsCall(hook, retval_keyword=RESERVED_RETVAL_KEY__FILES if inject else "",
                               override_reserved_retval_keys=True))
        call = DepsCall(run_transfer, args=[transfer, ft.from_file.uri, ft.to_file.uri])
        (after if ft.order == Order.AFTER else before).append(call)
    return before, after
