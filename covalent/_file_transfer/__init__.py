"""File transfers (``ct.fs``): ``FileTransfer``, ``TransferFromRemote``, ``TransferToRemote``,
``File``, ``Folder`` and ``Order``; the strategies are in ``ct.fs_strategies``.

>>> import covalent as ct
>>> ft = ct.fs.TransferFromRemote("https://example.com/data.csv", "/tmp/data.csv")
>>> type(ft.strategy).__name__, ft.order
('HTTP', <Order.BEFORE: 'before'>)
"""

from __future__ import annotations

from . import strategies
from .enums import Order
from .file import File
from .file_transfer import FileTransfer, TransferFromRemote, TransferToRemote
from .folder import Folder

__all__ = ["File", "FileTransfer", "Folder", "Order", "TransferFromRemote", "TransferToRemote",
           "strategies"]
