"""Large outputs (issue #23): pickled once, straight into the store, hashed with BLAKE3 as they
are written, and passed between workers as out-of-band buffers; blobs stored before under their
SHA-256 address are still read and checked."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import blake3
import cloudpickle
import numpy as np
import pytest
from distributed.protocol import deserialize, serialize

import covalent as ct
from dispatcher.protocol import NodeOutcome
from dispatcher.worker import blobs
from dispatcher.worker.blobs import BlobStore, DamagedBlob, blob_ref, output_ref, relative
from tests.conftest import run


def test_a_large_value_crosses_workers_as_its_own_buffers() -> None:
    value = np.arange(1_000_000, dtype=np.float64)
    header, frames = serialize(NodeOutcome(4, None, value, True), serializers=("dask", "pickle"))
    assert [memoryview(f).nbytes for f in frames][1:] == [value.nbytes]  # the array's memory
    received = deserialize(header, frames)
    assert received.node_id == 4 and received.__sizeof__() >= value.nbytes
    got = received.value
    assert np.array_equal(got, value) and got.flags.writeable
    assert np.shares_memory(got, np.frombuffer(frames[1], dtype=np.float64))  # no copy made
    again = deserialize(*serialize(received, serializers=("dask", "pickle")))
    assert np.array_equal(again.value, value)  # and on to a third worker


def test_a_small_value_travels_as_the_pickle_kept_from_storing_it() -> None:
    data = cloudpickle.dumps({"a": 1})
    header, frames = serialize(NodeOutcome(1, data, {"a": 1}, True), serializers=("dask", "pickle"))
    assert len(frames) == 1 and data in bytes(frames[0])
    assert deserialize(header, frames).value == {"a": 1}


def test_a_streamed_blob_is_the_blob_put_would_store(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    value = np.full(300_000, 3.0)
    ref, size = store.put_stream(lambda fh: cloudpickle.dump(value, fh, protocol=5))
    data = cloudpickle.dumps(value)
    assert (ref, size) == ("b3-" + blake3.blake3(data).hexdigest(), len(data))
    assert (ref, size) == store.put(data) and store.get(ref) == data
    assert store.put_stream(lambda fh: cloudpickle.dump(value, fh, protocol=5)) == (ref, size)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [ref]  # once, no temporary

    def broken(fh: object) -> None:
        cloudpickle.dump(value, fh, protocol=5)
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        store.put_stream(broken)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [ref]


class _SlowHash:
    """BLAKE3 that takes its time over a large buffer, as on a busy machine: an update that did
    not wait for the one before it would be hashed first."""

    def __init__(self, data: bytes = b"") -> None:
        self.inner = blake3.blake3(data)

    def update(self, data: Any) -> None:
        if memoryview(data).nbytes > 1 << 16:
            threading.Event().wait(0.05)
        self.inner.update(data)

    def hexdigest(self) -> str:
        return str(self.inner.hexdigest())


@pytest.mark.parametrize("alongside,slow", [(blobs.ALONGSIDE, False), (1 << 10, False),
                                            (1 << 10, True)])
def test_buffers_hashed_beside_their_writes_give_the_address_of_the_bytes_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alongside: int, slow: bool) -> None:
    """A large buffer is hashed in another thread while it is written: the address is still
    the BLAKE3 of the file's bytes in order, with small writes between large ones (at the
    real threshold; at 1 KiB, where every array here takes that path; and with a hash slower
    than the writes)."""
    monkeypatch.setattr(blobs, "ALONGSIDE", alongside)
    if slow:
        monkeypatch.setattr(blobs, "blake3", SimpleNamespace(blake3=_SlowHash))
    store = BlobStore(str(tmp_path))
    rng = np.random.default_rng(7)
    value = {"a": rng.random(2_200_000), "note": "between", "b": rng.random((700, 900)),
             "c": np.arange(3000, dtype=np.int32), "d": rng.random(2_100_000)}  # 17.6 MB, 5 MB
    ref, size = store.put_stream(lambda fh: cloudpickle.dump(value, fh, protocol=5))
    data = (tmp_path / relative(ref)).read_bytes()
    assert (ref, size) == (output_ref(data), len(data)) == (output_ref(cloudpickle.dumps(value)),
                                                           len(data))
    got = cloudpickle.loads(store.get(ref))
    assert all(np.array_equal(got[k], value[k]) for k in "abcd") and got["note"] == "between"

    def broken(fh: object) -> None:
        cloudpickle.dump(value, fh, protocol=5)
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        store.put_stream(broken)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [ref]  # no temporary left


@ct.electron
def make(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@ct.electron
def total(a: np.ndarray) -> float:
    a *= 2  # the value it gets is its own (writable), as with a small one
    return float(a.sum())


@ct.lattice
def pipeline(n: int) -> tuple[np.ndarray, float]:
    a = make(n)
    return a, total(a)


async def test_a_large_output_is_stored_and_passed_on(addr: str, tmp_path: Path) -> None:
    n = 400_000  # 3.2 MB: over the size kept pickled in memory
    result = await run(pipeline, addr, n)
    assert result.status == ct.status.COMPLETED, result.error
    array, doubled = result.result
    assert np.array_equal(array, np.arange(n, dtype=np.float64)) and doubled == n * (n - 1)
    node = result.get_node_result(0)
    assert np.array_equal(node["output"], np.arange(n, dtype=np.float64))
    stored = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()
              and p.stat().st_size > n * 8]
    digest = blake3.blake3(cloudpickle.dumps(array)).hexdigest()
    assert [(p.parent.name, p.name) for p in stored] == [(digest[:2], "b3-" + digest)]


def test_a_sweep_removes_only_temporaries_older_than_asked(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    ref, _ = store.put(b"x" * 5000)
    shard = tmp_path / relative(ref).split("/")[0]
    (shard / ".tmp-live").write_bytes(b"half")  # a writer still at work
    dead = tmp_path / ".tmp-dead"
    dead.write_bytes(b"half")
    old = dead.stat().st_mtime - 7200
    os.utime(dead, (old, old))
    assert store.sweep(3600.0) == 1
    assert not dead.exists() and (shard / ".tmp-live").exists()
    assert store.sweep(0.0) == 1 and store.get(ref) == b"x" * 5000
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [ref]


@pytest.mark.parametrize("shape", [(1000, 300), (300,), (0,)])
def test_an_array_of_any_shape_is_hashed_as_its_bytes(tmp_path: Path,
                                                      shape: tuple[int, ...]) -> None:
    """pickle hands the store an array's own memory (a 2-D float64 buffer, not bytes): its
    address is the hash of the bytes written, whatever the buffer's shape and item type."""
    store = BlobStore(str(tmp_path))
    value = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    columns = np.asfortranarray(value)  # not C-contiguous: copied before it is hashed
    for v in (value, columns, value.T):
        ref, size = store.put_stream(lambda fh, v=v: cloudpickle.dump(v, fh, protocol=5))
        data = (tmp_path / relative(ref)).read_bytes()
        assert (ref, size) == (output_ref(data), len(data))
        assert np.array_equal(cloudpickle.loads(store.get(ref)), v)


@pytest.mark.parametrize("form", ["blake3", "sha256"])
def test_a_damaged_blob_of_either_address_form_is_refused_and_removed(tmp_path: Path,
                                                                       form: str) -> None:
    """A blob stored under its SHA-256 address (before BLAKE3, or a workflow's own blob) is
    checked with SHA-256, a BLAKE3 one with BLAKE3: either damaged is refused, then removed."""
    store = BlobStore(str(tmp_path))
    data = os.urandom(70_000)
    ref, _ = store.put(data) if form == "blake3" else store.put(data, blob_ref(data))
    assert ref == (output_ref(data) if form == "blake3" else hashlib.sha256(data).hexdigest())
    assert store.get(ref) == data
    path = tmp_path / relative(ref)
    damaged = bytearray(data)
    damaged[12_345] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(DamagedBlob, match="is damaged"):
        store.get(ref)
    assert not path.exists()
    assert store.put(data, ref) == (ref, len(data)) and store.get(ref) == data  # put back
