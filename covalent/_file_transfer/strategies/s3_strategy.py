"""Upload files and directories to an S3 bucket and download them from it (with s3fs)."""

from __future__ import annotations

import configparser
import os
from typing import Any

from .fsspec_strategy import FsspecStrategy


class S3(FsspecStrategy):
    """Transfer ``s3://bucket/key`` objects (``key/`` for a directory) through s3fs.

    Args:
        credentials: path, on the worker, of an AWS shared credentials file.
        profile: profile to use (in ``credentials``, or in the AWS config).
        region_name: the bucket's region.
        storage_options: extra s3fs options, e.g. ``{"endpoint_url": "http://127.0.0.1:9000"}``.

    Without credentials, s3fs finds them as boto does (environment, ~/.aws, instance role).
    Needs ``s3fs`` on the workers: ``pip install 'covalent-dask[s3]'``.
    """

    protocol = "s3"
    package = "s3fs"
    extra = "s3"

    def __init__(self, credentials: str | None = None, profile: str | None = None,
                 region_name: str | None = None, *,
                 storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(storage_options=storage_options)
        self.credentials = credentials
        self.profile = profile
        self.region_name = region_name

    def filesystem_options(self, uri: str) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.credentials:
            opts.update(_shared_credentials(self.credentials, self.profile or "default"))
        elif self.profile:
            opts["profile"] = self.profile
        if self.region_name:
            opts["client_kwargs"] = {"region_name": self.region_name}
        return {**opts, **self.storage_options}


def _shared_credentials(path: str, profile: str) -> dict[str, Any]:
    """s3fs key/secret/token from one profile of an AWS shared credentials file."""
    parser = configparser.ConfigParser()
    if not parser.read(os.path.expanduser(path)):
        raise FileNotFoundError(f"AWS credentials file {path} not found")
    if not parser.has_section(profile):
        raise KeyError(f"profile {profile!r} not in AWS credentials file {path}")
    section = parser[profile]
    opts = {"key": section.get("aws_access_key_id"), "secret": section.get("aws_secret_access_key"),
            "token": section.get("aws_session_token")}
    return {k: v for k, v in opts.items() if v}
