"""A bulk delete deletes what it names, and nothing when asked badly (issue #21).

An empty, negative or overflowing ``older_than`` once meant "no filter": the REST call deleted
every finished dispatch and ``covalent purge --yes --older-than ""`` wiped the data dir and the
config file, token included. Real processes: ``covalent start`` and ``covalent purge``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import covalent as ct
from covalent import api
from covalent.config import client_config, config_path
from tests.conftest import free_port
from tests.faults.conftest import Cli
from tests.tasks import add, print_a_lot

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.all_stores]


@ct.lattice
def _sum(x):
    return add(x, 1)


def _stored(cfg: api.ClientConfig) -> set[str]:
    return {d["dispatch_id"] for d in api.request_json(cfg, "GET", "/dispatches")["dispatches"]}


def test_an_empty_or_odd_filter_deletes_nothing_and_purge_needs_all(cli: Cli, config_dir: Path) -> None:
    out = cli("start", "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    ids = {ct.dispatch(_sum)(i) for i in range(3)}
    for i in ids:
        assert ct.get_result(i, wait=True).status == "COMPLETED"
    cfg = client_config()
    token = cfg.token

    for query in ({"older_than": ""}, {"older_than": " "}, {"older_than": "-1d"},
                  {"older_than": "99999999999999d"}, {"older_than": "1e400d"},
                  {"older_than": "7d\n"}, {"status": ""}, {"all": "yes"},
                  {"all": "1", "older_than": "1d"}, {}):
        with pytest.raises(ct.errors.InvalidRequestError):
            api.request_json(cfg, "DELETE", "/dispatches", query=query)
        assert _stored(cfg) == ids, query

    for args in (["--yes", "--older-than", ""], ["--yes"], ["--yes", "--all", "--status", "FAILED"]):
        done = cli("purge", *args)
        assert done.returncode == 2 and "Error" in done.stderr, (args, done.stdout, done.stderr)
        assert _stored(cfg) == ids and cli.data_dir.is_dir(), args
        assert client_config().token == token  # the config file, token included, is intact

    # A bulk delete names what it will delete, and asks.
    named = cli("purge", "--older-than", "0s", timeout=60)
    assert named.returncode == 1 and "3 finished dispatches match" in named.stdout  # declined
    assert all(i in named.stdout for i in ids) and _stored(cfg) == ids
    done = cli("purge", "--older-than", "0s", "--yes")
    assert done.returncode == 0 and "Deleted 3 finished dispatches." in done.stdout
    assert _stored(cfg) == set()

    done = cli("purge", "--all", "--yes")
    assert done.returncode == 0 and "Purged" in done.stdout
    assert not cli.data_dir.exists() and not config_path().exists()


@ct.lattice
def _chatty(mib):
    return print_a_lot(mib)


def test_compact_gives_back_what_a_purge_freed(cli: Cli, config_dir: Path) -> None:
    # A purge frees the SQLite file's pages for new dispatches, but the file kept its size
    # (210 MB after purging 991 dispatches), and nothing said how to get it back.
    out = cli("start", "--port", str(free_port()), "--workers", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    cli.server_pid()
    ids = [ct.dispatch(_chatty)(1) for _ in range(6)]  # each node's 1 MiB of stdout is stored
    for i in ids:
        assert ct.get_result(i, wait=True).status == "COMPLETED"
    assert cli("purge", "--older-than", "0s", "--yes").returncode == 0
    compacted = cli("db", "compact")  # the dispatcher still runs
    if cli.env.get("COVALENT_DB_URL"):
        assert compacted.returncode == 1 and "VACUUM FULL" in compacted.stderr
        return
    assert compacted.returncode == 0, compacted.stderr
    sizes = [float(x) for x in re.findall(r"([0-9.]+) MiB", compacted.stdout)]
    assert len(sizes) == 2 and sizes[0] > 5 and sizes[1] < sizes[0] - 4, compacted.stdout
    again = ct.dispatch(_sum)(1)  # and the dispatcher goes on with it
    assert ct.get_result(again, wait=True).result == 2
