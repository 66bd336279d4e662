"""File transfer objects on the client: paths, schemes, strategies, hooks; and transfers run
directly (what the worker runs), without a server."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import cloudpickle
import pytest

import covalent as ct
from covalent._deps import call_with_hooks
from covalent._file_transfer.enums import Order
from covalent._file_transfer.file_transfer import transfer_hooks
from covalent.errors import FileTransferError

pytestmark = pytest.mark.usefixtures("private_tempdir")  # temporary Files in tmp_path

needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None,
                                 reason="the rsync binary is not installed (apt-get install rsync)")


def test_file_scheme_path_and_uri() -> None:
    f = ct.fs.File("https://host:8080/a/../b.csv?sig=x%2Fy")
    assert (f.scheme, f.filepath, f.uri, f.is_remote) == (
        "https", "/b.csv", "https://host:8080/b.csv?sig=x%2Fy", True)
    local = ct.fs.File("/data/my file #1.txt")
    assert (local.scheme, local.filepath, local.is_remote) == ("file", "/data/my file #1.txt", False)
    assert ct.fs.File("file://localhost/tmp/x").filepath == "/tmp/x"
    assert ct.fs.Folder("/tmp/d").filepath == "/tmp/d/"
    assert ct.fs.Folder("/tmp/d/", include_folder=True).filepath == "/tmp/d"
    temp = ct.fs.File()
    assert temp.is_temp_file and temp.filepath.endswith(temp.id)
    with pytest.raises(ValueError, match="scheme"):
        ct.fs.File("sftp://host/x")
    with pytest.raises(TypeError):
        ct.fs.File(Path("/tmp/x"))  # type: ignore[arg-type]


def test_strategies_are_guessed_from_the_schemes() -> None:
    def kind(src: str, dst: str) -> str:
        return type(ct.fs.FileTransfer(src, dst).strategy).__name__

    assert kind("/a", "/b") == "Shutil"
    assert kind("http://h/a", "/b") == "HTTP"
    assert kind("/a", "s3://bucket/b") == "S3"
    assert kind("gs://bucket/a", "/b") == "GCloud"
    assert kind("/a", "blob://acct.blob.core.windows.net/c/b") == "Blob"
    with pytest.raises(ValueError, match="remote->remote"):
        ct.fs.FileTransfer("s3://bucket/a", "gs://bucket/b")


def test_transfer_from_and_to_remote_fix_their_order_and_check_directories() -> None:
    down = ct.fs.TransferFromRemote("s3://b/k", order=Order.AFTER)
    up = ct.fs.TransferToRemote("s3://b/k", "/tmp/x", order=Order.BEFORE)
    assert (down.order, up.order) == (Order.BEFORE, Order.AFTER)
    assert down.from_file.is_remote and down.to_file.is_temp_file
    with pytest.raises(ValueError, match="directory path"):
        ct.fs.TransferFromRemote("s3://b/dir/", "/tmp/file")
    with pytest.raises(ValueError, match="directory path"):
        ct.fs.TransferToRemote("s3://b/file", "/tmp/dir/")


def test_strategies_check_their_credentials_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ct.fs_strategies.Rsync(private_key_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="credentials"):
        ct.fs_strategies.GCloud(credentials=str(tmp_path / "missing.json"))


def test_rsync_to_or_from_a_remote_side_without_a_host_says_so() -> None:
    # rsync was run with ":/path" and said "ssh: Could not resolve hostname :".
    for transfer in (ct.fs.TransferFromRemote("/data/in.txt", "/tmp/out.txt",
                                              strategy=ct.fs_strategies.Rsync()),
                     ct.fs.TransferToRemote("/data/out.txt", "/tmp/in.txt",
                                            strategy=ct.fs_strategies.Rsync(user="me"))):
        hook, copy = transfer.cp()  # built without complaint, as in Covalent
        with pytest.raises(ValueError, match=r"Rsync\(\) has no host= .*/data/"):
            copy()  # on the worker
    hook, copy = ct.fs.TransferFromRemote(
        "/data/in.txt", "/tmp/out.txt", strategy=ct.fs_strategies.Rsync(host="hpc")).cp()
    assert callable(copy)


def test_hooks_of_files_inject_from_to_pairs_and_pickle(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.txt", tmp_path / "out" / "b.txt"
    src.write_text("hello")
    before, after = transfer_hooks([ct.fs.FileTransfer(str(src), str(dst)),
                                    ct.fs.TransferToRemote(f"file://{tmp_path}/up.txt")])
    assert (len(before), len(after)) == (3, 1)
    hooks = cloudpickle.loads(cloudpickle.dumps({"call_before": before, "call_after": after}))

    def task(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
        Path(files[1][0]).write_text("made by the task")
        return files

    files = call_with_hooks(task, [], {}, hooks)
    assert files[0] == (str(src), str(dst)) and dst.read_text() == "hello"
    assert (tmp_path / "up.txt").read_text() == "made by the task"


def test_directories_copy_their_contents_or_themselves(tmp_path: Path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "f.txt").write_text("x")
    contents = ct.fs.FileTransfer(ct.fs.Folder(str(tmp_path / "src")), str(tmp_path / "c") + "/")
    itself = ct.fs.FileTransfer(ct.fs.Folder(str(tmp_path / "src"), include_folder=True),
                                str(tmp_path / "i") + "/")
    for ft in (contents, itself):
        ft.cp()[1]()
    assert (tmp_path / "c" / "sub" / "f.txt").read_text() == "x"
    assert (tmp_path / "i" / "src" / "sub" / "f.txt").read_text() == "x"


def test_a_failed_transfer_names_both_ends(tmp_path: Path) -> None:
    before, _ = transfer_hooks([ct.fs.FileTransfer(str(tmp_path / "missing"), str(tmp_path / "x"))])
    with pytest.raises(FileTransferError) as info:
        call_with_hooks(lambda files: files, [], {}, {"call_before": before})
    err = pickle.loads(pickle.dumps(info.value))
    assert err.from_uri == f"file://{tmp_path}/missing" and err.to_uri == f"file://{tmp_path}/x"
    assert "FileNotFoundError" in err.reason and str(tmp_path / "missing") in str(err)


@needs_rsync
def test_rsync_copies_locally_and_reports_its_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("r")
    rsync = ct.fs_strategies.Rsync()
    ct.fs.FileTransfer(str(tmp_path / "d") + "/", str(tmp_path / "e") + "/", strategy=rsync).cp()[1]()
    assert (tmp_path / "e" / "f.txt").read_text() == "r"
    _, transfer = ct.fs.FileTransfer(str(tmp_path / "nope"), str(tmp_path / "x"), strategy=rsync).cp()
    with pytest.raises(RuntimeError, match="rsync -a .* exited with 23"):
        transfer()


def test_rsync_over_ssh_names_user_host_and_key(tmp_path: Path) -> None:
    key = tmp_path / "id key"
    key.write_text("")
    rsync = ct.fs_strategies.Rsync(user="u", host="h", private_key_path=str(key))
    down = rsync.ssh_argv(ct.fs.File("/local/x"), ct.fs.File("/remote/y"), transfer_from_remote=True)
    assert down == ["rsync", "-a", "-e", f"ssh -i '{key}'", "u@h:/remote/y", "/local/x"]


def test_cloud_strategies_map_their_arguments_to_fsspec_options(tmp_path: Path) -> None:
    key = tmp_path / "sa.json"
    key.write_text("{}")
    blob = ct.fs_strategies.Blob(client_id="c", client_secret="s", tenant_id="t")
    f = ct.fs.File("https://acct.blob.core.windows.net/box/dir/x.png")
    assert blob.remote_path(f) == "box/dir/x.png"
    assert blob.filesystem_options(f.uri) == {"account_name": "acct", "tenant_id": "t",
                                              "client_id": "c", "client_secret": "s"}
    gcs = ct.fs_strategies.GCloud(credentials=str(key), project_id="p")
    assert gcs.filesystem_options("gs://b/o") == {"token": str(key), "project": "p"}
    s3 = ct.fs_strategies.S3(profile="dev", region_name="eu-west-1",
                             storage_options={"endpoint_url": "http://127.0.0.1:1"})
    assert s3.filesystem_options("s3://b/k") == {"profile": "dev", "endpoint_url": "http://127.0.0.1:1",
                                                 "client_kwargs": {"region_name": "eu-west-1"}}
    with pytest.raises(ValueError, match="single files"):  # at decoration, not on the worker
        ct.electron(files=[ct.fs.TransferFromRemote("https://h/dir/", str(tmp_path) + "/")])
