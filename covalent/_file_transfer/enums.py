"""Names used by file transfers: when a transfer runs, URL schemes, strategy kinds."""

from __future__ import annotations

import enum


class Order(enum.StrEnum):
    """When a transfer runs: before the electron's function or after it."""

    BEFORE = "before"
    AFTER = "after"


class FileSchemes(enum.StrEnum):
    """URL schemes a ``File`` understands."""

    File = "file"
    S3 = "s3"
    Blob = "blob"
    GCloud = "gs"
    Globus = "globus"
    HTTP = "http"
    HTTPS = "https"
    FTP = "ftp"


class FileTransferStrategyTypes(enum.StrEnum):
    """Kinds of transfer strategy, by the scheme they serve."""

    Shutil = "Shutil"
    Rsync = "rsync"
    HTTP = "http"
    S3 = "s3"
    GCloud = "gs"
    FTP = "ftp"
    GLOBUS = "globus"


SchemeToStrategyMap = {
    "file": FileTransferStrategyTypes.Shutil,
    "http": FileTransferStrategyTypes.HTTP,
    "https": FileTransferStrategyTypes.HTTP,
    "s3": FileTransferStrategyTypes.S3,
    "gs": FileTransferStrategyTypes.GCloud,
    "ftp": FileTransferStrategyTypes.FTP,
    "globus": FileTransferStrategyTypes.GLOBUS,
}


class FtCallDepReturnValue(enum.StrEnum):
    """What a transfer's pre-hook injects into ``files``: the source, the destination or both."""

    TO = "to"
    FROM = "from"
    FROM_TO = "from_to"
