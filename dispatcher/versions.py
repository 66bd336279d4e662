"""Refuse a client whose pickles the Dask workers could not load (Python or cloudpickle differ)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from distributed import Client

from .errors import IncompatibleClient
from .protocol import runtime_versions

log = logging.getLogger("covalent.dispatcher")

VERSIONS_TTL_S = 30.0  # how long the workers' Python/cloudpickle versions are trusted


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


class WorkerVersions:
    """The workers' Python and cloudpickle versions, asked at most every ``VERSIONS_TTL_S``."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._versions: tuple[float, dict[str, dict[str, str]]] | None = None

    async def check(self, versions: Any) -> None:
        """Refuse a client whose pickles the workers could not load (Python or cloudpickle
        major.minor differ); a client that does not say (curl) is not checked."""
        if not isinstance(versions, dict):
            return
        workers = await self._workers()
        problems = []
        for name in ("python", "cloudpickle"):
            mine = versions.get(name)
            if not isinstance(mine, str):
                continue
            theirs = sorted({v[name] for v in workers.values()
                             if v.get(name) and _minor(v[name]) != _minor(mine)})
            if theirs:
                problems.append(f"{name} {mine} here, {', '.join(theirs)} on the workers")
        if problems:
            raise IncompatibleClient(
                "the Dask workers could not load what this client pickles ("
                + "; ".join(problems) + "): use the same Python and cloudpickle versions")

    async def _workers(self) -> dict[str, dict[str, str]]:
        now = asyncio.get_running_loop().time()
        if self._versions is None or now - self._versions[0] > VERSIONS_TTL_S:
            try:
                found = await asyncio.wait_for(self.client.run(runtime_versions), 10)
            except Exception as exc:  # no workers reachable: the run itself will say so
                log.warning("could not ask the workers for their versions: %s", exc)
                return {}
            self._versions = (now, dict(found))
        return self._versions[1]
