"""File transfer strategies (``ct.fs_strategies``): Shutil, Rsync, HTTP, S3, GCloud, Blob.

S3, GCloud and Blob need s3fs, gcsfs or adlfs on the workers (the extras ``s3``, ``gs`` and
``blob`` of this package); the classes import without them.
"""

from __future__ import annotations

from .blob_strategy import Blob
from .fsspec_strategy import FsspecStrategy
from .gcloud_strategy import GCloud
from .http_strategy import HTTP
from .rsync_strategy import Rsync
from .s3_strategy import S3
from .shutil_strategy import Shutil
from .transfer_strategy_base import FileTransferStrategy

__all__ = ["HTTP", "S3", "Blob", "FileTransferStrategy", "FsspecStrategy", "GCloud", "Rsync", "Shutil"]
