"""The notices of replicas (dispatcher/notices.py) on a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import notices
from dispatcher.notices import Notices
from dispatcher.recorder import Recorder
from dispatcher.store.postgres import PostgresStore
from tests.conftest import wait_until


@pytest.fixture
async def pg_store(pg_databases: Any, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    from dispatcher.store.schema import LATEST

    name, url = pg_databases.take()
    store = PostgresStore(url, tmp_path / "blobs")
    await store.open()
    yield store
    await store.close()
    pg_databases.give_back(name, LATEST)


async def _no_cancel(dispatch_id: str, nodes: list[int]) -> None:
    raise AssertionError("no cancel is asked for here")


async def test_a_stop_ends_the_listeners_wait_at_once(pg_store: PostgresStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener waits for notices with a timeout; a stop wakes it rather than waiting the
    timeout out (each stop of a server on PostgreSQL took a second longer)."""
    monkeypatch.setattr(notices, "LISTEN_WAIT_S", 120.0)
    listener = Notices(pg_store, pg_store.conninfo, Recorder(pg_store), lambda d: False,
                       _no_cancel)
    await listener.start()

    async def listening() -> bool:
        row = await pg_store._read(lambda db: db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'covalent-notices'"
            " AND query LIKE 'LISTEN \"covalent_wake_%'").fetchone())
        return bool(row[0])

    await wait_until(listening, timeout=10)
    await listener.close()  # joins the thread for at most 5 s
    assert listener._thread is not None and not listener._thread.is_alive()
