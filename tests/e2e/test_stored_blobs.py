"""A stored blob is checked against its address when it is read (issue #21).

A blob file cut short, damaged in place or gone is never served as if it were the output: a
wrong size or a missing file is a clear error answer before anything is sent
(``StoredDataLostError``), and so is a damaged one in a small answer (read whole before it is
sent); in a large one, streamed, a damaged blob is cut off as soon as its hash is known
(``IncompleteAnswerError``, at once, never a 60 s wait). Either way the bad file is removed, so
running the dispatch again stores the output anew and it reads back whole.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import covalent as ct
from covalent.errors import IncompleteAnswerError, StoredDataLostError
from tests.tasks import big_bytes

pytestmark = pytest.mark.all_stores  # run on every store (tests/conftest.py)


@ct.lattice
def some_mib(mib):
    return big_bytes(mib)


def _blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]


def _result(dispatch_id: str, addr: str) -> object:
    return ct.get_result(dispatch_id, wait=True, dispatcher_addr=addr).result


@pytest.mark.parametrize("mib, damaged_is", [
    (1, (StoredDataLostError, "is damaged")),  # read whole
    (9, (IncompleteAnswerError, "cut off")),  # over transfer.WHOLE: streamed
])
async def test_a_damaged_cut_short_or_missing_blob_is_an_error_and_is_stored_anew(
        addr: str, tmp_path: Path, mib: int, damaged_is: tuple[type[Exception], str]) -> None:
    data_dir = tmp_path / "data"
    value = b"x" * (mib << 20)
    first = await asyncio.to_thread(ct.dispatch(some_mib, dispatcher_addr=addr), mib)
    assert await asyncio.to_thread(_result, first, addr) == value
    [blob] = _blob_files(data_dir)
    whole = blob.read_bytes()

    damaged = bytearray(whole)
    damaged[len(damaged) // 2] ^= 1  # one bit, same size: only its hash tells
    blob.write_bytes(bytes(damaged))
    with pytest.raises(damaged_is[0], match=damaged_is[1]):
        await asyncio.to_thread(_result, first, addr)
    assert not blob.exists()  # removed: the next write of that value puts it back

    again = await asyncio.to_thread(ct.dispatch(some_mib, dispatcher_addr=addr), mib)
    assert await asyncio.to_thread(_result, again, addr) == value
    assert blob.read_bytes() == whole
    assert await asyncio.to_thread(_result, first, addr) == value  # same address

    blob.write_bytes(whole[: len(whole) // 2])  # cut short: known before anything is sent
    with pytest.raises(StoredDataLostError, match=r"has \d+ bytes, not \d+ \(removed\)"):
        await asyncio.to_thread(_result, first, addr)
    assert not blob.exists()
    with pytest.raises(StoredDataLostError, match="is missing"):
        await asyncio.to_thread(_result, first, addr)

    blob.parent.mkdir(exist_ok=True)
    blob.write_bytes(whole[:100])  # a file of the wrong size where a worker writes: replaced
    third = await asyncio.to_thread(ct.dispatch(some_mib, dispatcher_addr=addr), mib)
    assert await asyncio.to_thread(_result, third, addr) == value
    assert blob.read_bytes() == whole
