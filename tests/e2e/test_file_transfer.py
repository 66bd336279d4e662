"""``@ct.electron(files=[...])`` end to end: transfers run on the worker around the electron.

Local paths, rsync, an HTTP server and an S3-compatible server (moto), all on 127.0.0.1 and
started by these tests.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import covalent as ct
from tests.conftest import fetched, s3_bucket

pytestmark = pytest.mark.usefixtures("private_tempdir")  # temporary Files in tmp_path

needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None,
                                 reason="the rsync binary is not installed (apt-get install rsync)")


async def run(lattice: Any, addr: str) -> Any:
    dispatch_id = await asyncio.to_thread(ct.dispatch(lattice, dispatcher_addr=addr))
    return await fetched(dispatch_id, addr)


def reads_and_writes(files: list[Any]) -> Any:
    """Read the first transfer's destination, write the last transfer's source."""
    text = Path(files[0][1]).read_text()
    Path(files[-1][0]).write_text(text.upper())
    return files


async def test_local_transfers_before_and_after_with_injected_files(addr: str, tmp_path: Path) -> None:
    src, mid, out = tmp_path / "src.txt", tmp_path / "in" / "mid.txt", tmp_path / "out.txt"
    src.write_text("hello")
    down = ct.fs.FileTransfer(str(src), str(mid))
    up = ct.fs.FileTransfer(str(tmp_path / "made.txt"), str(out), order=ct.fs.Order.AFTER)
    task = ct.electron(files=[down, up])(reads_and_writes)

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result == [(str(src), str(mid)), (str(tmp_path / "made.txt"), str(out))]
    assert out.read_text() == "HELLO"


async def test_folders_and_temporary_files(addr: str, tmp_path: Path) -> None:
    (tmp_path / "srcdir").mkdir()
    (tmp_path / "srcdir" / "a.txt").write_text("a")
    copy_dir = ct.fs.FileTransfer(ct.fs.Folder(str(tmp_path / "srcdir")), str(tmp_path / "copy") + "/")
    upload = ct.fs.TransferToRemote(f"file://{tmp_path}/uploaded.txt")  # from a temporary file

    @ct.electron(files=[copy_dir, upload])
    def task(files: list[tuple[str, str]]) -> list[str]:
        Path(files[1][0]).write_text("from the temp file")
        return sorted(p.name for p in Path(files[0][1]).iterdir())

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    assert result.result == ["a.txt"], result.error
    assert (tmp_path / "uploaded.txt").read_text() == "from the temp file"


async def test_a_failed_transfer_fails_the_node_naming_the_url(addr: str, tmp_path: Path) -> None:
    @ct.electron(files=[ct.fs.FileTransfer(str(tmp_path / "missing.txt"), str(tmp_path / "x"))])
    def never(files: Any = None) -> int:
        return 1

    @ct.electron
    def independent() -> int:
        return 2

    @ct.lattice
    def wf() -> Any:
        return never(), independent()

    result = await run(wf, addr)
    assert result.status == "FAILED"
    node = result.get_node_result(0)
    assert node["status"] == "FAILED" and "FileTransferError" in node["error"]
    assert f"file://{tmp_path}/missing.txt" in node["error"]
    assert result.get_node_result(1)["output"] == 2


async def test_files_of_an_unpacked_electron_reach_the_electron_only(addr: str, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("1")
    (tmp_path / "two.txt").write_text("2")

    @ct.electron(files=[ct.fs.FileTransfer(str(tmp_path / "one.txt"), str(tmp_path / "c1")),
                        ct.fs.FileTransfer(str(tmp_path / "two.txt"), str(tmp_path / "c2"))])
    def both(files: Any = None) -> tuple[str, str]:
        return Path(files[0][1]).read_text(), Path(files[1][1]).read_text()

    @ct.lattice
    def wf() -> Any:
        a, b = both()
        return a, b

    result = await run(wf, addr)
    assert result.result == ["1", "2"], result.error  # a returned tuple is a list, as in Covalent


@needs_rsync
async def test_rsync_strategy_runs_on_the_worker(addr: str, tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f.txt").write_text("synced")
    rsync = ct.fs_strategies.Rsync()
    ft = ct.fs.FileTransfer(str(tmp_path / "tree") + "/", str(tmp_path / "mirror") + "/", strategy=rsync)

    @ct.electron(files=[ft])
    def read(files: Any = None) -> str:
        return (Path(files[0][1]) / "f.txt").read_text()

    @ct.lattice
    def wf() -> Any:
        return read()

    result = await run(wf, addr)
    assert result.result == "synced", result.error


@pytest.fixture
async def http_store(aiohttp_server: Any) -> tuple[str, dict[str, bytes], list[dict[str, str]]]:
    """An HTTP server on 127.0.0.1: GET serves ``store``, PUT fills it and logs its headers."""
    store: dict[str, bytes] = {"/data.csv": b"a,b\n1,2\n"}
    puts: list[dict[str, str]] = []

    async def get(request: web.Request) -> web.Response:
        if request.path not in store:
            raise web.HTTPNotFound()
        return web.Response(body=store[request.path])

    async def put(request: web.Request) -> web.Response:
        puts.append(dict(request.headers))
        store[request.path] = await request.read()
        return web.Response(status=201)

    app = web.Application()
    app.router.add_get("/{name}", get)
    app.router.add_put("/{name}", put)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}", store, puts


async def test_http_get_before_and_put_after(addr: str, tmp_path: Path, http_store: Any) -> None:
    base, store, puts = http_store
    down = ct.fs.TransferFromRemote(f"{base}/data.csv?token=a%2Fb")
    up = ct.fs.TransferToRemote(f"{base}/result.csv", str(tmp_path / "result.csv"))
    task = ct.electron(files=[down, up])(reads_and_writes)

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert store["/result.csv"] == b"A,B\n1,2\n"
    assert puts[0]["Content-Length"] == "8" and "Transfer-Encoding" not in puts[0]


async def test_http_error_status_fails_the_node_naming_the_url(addr: str, http_store: Any) -> None:
    base, _, _ = http_store

    @ct.electron(files=[ct.fs.TransferFromRemote(f"{base}/missing.csv")])
    def task(files: Any = None) -> int:
        return 1

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    error = result.get_node_result(0)["error"]
    assert result.status == "FAILED" and f"{base}/missing.csv" in error and "FileTransferError" in error


@pytest.fixture
def bucket(s3_endpoint: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A fresh bucket (named after the test's tmp dir) with a few files, and its s3fs options."""
    import s3fs

    name, opts = s3_bucket(s3_endpoint, tmp_path.name)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    fs.pipe({f"{name}/in/data.txt": b"s3 data", f"{name}/tree/a.txt": b"a", f"{name}/tree/sub/b.txt": b"b"})
    return name, opts


@pytest.mark.slow  # the first test of the module waits for the moto server (about 1 s)
async def test_s3_download_before_and_upload_after(addr: str, tmp_path: Path, bucket: Any) -> None:
    import s3fs

    name, opts = bucket
    s3 = ct.fs_strategies.S3(storage_options=opts)
    down = ct.fs.TransferFromRemote(f"s3://{name}/in/data.txt", str(tmp_path / "data.txt"), strategy=s3)
    up = ct.fs.TransferToRemote(f"s3://{name}/out/result.txt", str(tmp_path / "result.txt"), strategy=s3)
    task = ct.electron(files=[down, up])(reads_and_writes)

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    assert result.status == "COMPLETED", result.error
    assert result.result[0] == ("/in/data.txt", str(tmp_path / "data.txt"))
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    assert await asyncio.to_thread(fs.cat, f"{name}/out/result.txt") == b"S3 DATA"


async def test_s3_directories_and_a_credentials_file(addr: str, tmp_path: Path, bucket: Any) -> None:
    import s3fs

    name, opts = bucket
    creds = tmp_path / "credentials"
    creds.write_text("[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    endpoint = {k: v for k, v in opts.items() if k not in ("key", "secret")}
    s3 = ct.fs_strategies.S3(credentials=str(creds), profile="ci", region_name="us-east-1",
                             storage_options=endpoint)
    (tmp_path / "up" / "deep").mkdir(parents=True)
    (tmp_path / "up" / "deep" / "c.txt").write_text("c")
    down = ct.fs.TransferFromRemote(f"s3://{name}/tree/", str(tmp_path / "tree") + "/", strategy=s3)
    up = ct.fs.TransferToRemote(f"s3://{name}/up/", str(tmp_path / "up") + "/", strategy=s3)

    @ct.electron(files=[down, up])
    def listing(files: Any = None) -> list[str]:
        root = Path(files[0][1])
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.txt"))

    @ct.lattice
    def wf() -> Any:
        return listing()

    result = await run(wf, addr)
    assert result.result == ["a.txt", "sub/b.txt"], result.error
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    assert await asyncio.to_thread(fs.cat, f"{name}/up/deep/c.txt") == b"c"


async def test_s3_missing_object_fails_the_node_naming_the_url(addr: str, bucket: Any) -> None:
    name, opts = bucket
    s3 = ct.fs_strategies.S3(storage_options=opts)

    @ct.electron(files=[ct.fs.TransferFromRemote(f"s3://{name}/nope.txt", strategy=s3)])
    def task(files: Any = None) -> int:
        return 1

    @ct.lattice
    def wf() -> Any:
        return task()

    result = await run(wf, addr)
    error = result.get_node_result(0)["error"]
    assert result.status == "FAILED" and f"s3://{name}/nope.txt" in error
