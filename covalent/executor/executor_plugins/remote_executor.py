"""``RemoteExecutor``: Covalent's base of plugins that run a task on another machine.

A subclass implements ``run`` (usually with the steps below) and is a custom executor like any
other: the worker awaits its ``setup``, ``run`` and ``teardown`` inside the node's Dask task.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..base import AsyncBaseExecutor


class RemoteExecutor(AsyncBaseExecutor):
    """Async executor with Covalent's steps for remote execution (all to be implemented by a
    subclass): ``_validate_credentials``, ``_upload_task``, ``submit_task``, ``get_status``,
    ``_poll_task``, ``query_result``, ``cancel``."""

    def __init__(self, poll_freq: int = 15, remote_cache: str = "", credentials_file: str = "",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.poll_freq = poll_freq
        self.remote_cache = remote_cache
        self.credentials_file = credentials_file

    async def _validate_credentials(self) -> bool:
        raise NotImplementedError

    async def _upload_task(self) -> None:
        raise NotImplementedError

    async def submit_task(self, task_metadata: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def get_status(self) -> Any:
        raise NotImplementedError

    async def _poll_task(self) -> Any:
        raise NotImplementedError

    async def query_result(self) -> Any:
        raise NotImplementedError

    @staticmethod
    async def run_async_subprocess(cmd: str) -> tuple[Any, bytes, bytes]:
        """Run a shell command; (process, stdout, stderr)."""
        proc = await asyncio.create_subprocess_shell(cmd, stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await proc.communicate()
        return proc, stdout, stderr
