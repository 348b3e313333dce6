"""The storage layer against real S3 servers on 127.0.0.1: SeaweedFS (authentication on) and moto."""

import pickle
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs
import pytest
from s3servers import SECRET_KEY, CutProxy, SeaweedFS

from w2sweep.storage import AlreadyExists, S3Storage, Storage, StorageError


def fresh_root(server) -> str:
    return f"s3://{server.bucket}/t-{uuid.uuid4().hex[:8]}"


def test_s3_uri_is_an_s3_root_on_the_endpoint_from_the_environment(seaweedfs, s3_env):
    s3_env(seaweedfs)
    storage = Storage.from_uri(f"s3://{seaweedfs.bucket}/runs/")
    assert isinstance(storage, S3Storage) and not storage.is_local
    assert storage.endpoint == seaweedfs.endpoint and storage.region == "us-east-1"
    assert storage.root == f"{seaweedfs.bucket}/runs" and storage.url("a/b.json") == f"s3://{seaweedfs.bucket}/runs/a/b.json"


def test_write_once_twice_raises_already_exists_and_keeps_first_content(s3_server, s3_env):
    s3_env(s3_server)
    storage = Storage.from_uri(fresh_root(s3_server))
    storage.write_once("s/cells/a.json", b"first")
    with pytest.raises(AlreadyExists):
        storage.write_once("s/cells/a.json", b"second")
    assert storage.read_bytes("s/cells/a.json") == b"first"
    assert s3_server.get(f"{storage.prefix}/s/cells/a.json") == b"first"


def test_concurrent_write_once_has_exactly_one_winner(seaweedfs, s3_env):
    s3_env(seaweedfs)
    storage = Storage.from_uri(fresh_root(seaweedfs))
    for round_ in range(2):
        key = f"s/cells/race-{round_}.json"
        winners, lost, start = [], [], threading.Barrier(8)

        def attempt(i):
            start.wait()
            try:
                storage.write_once(key, f"writer {i}".encode())
                winners.append(i)
            except AlreadyExists:
                lost.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1 and len(lost) == 7
        assert storage.read_bytes(key) == f"writer {winners[0]}".encode()


def test_read_list_exists_delete_roundtrip(s3_server, s3_env):
    s3_env(s3_server)
    storage = Storage.from_uri(fresh_root(s3_server))
    assert storage.list("s/cells") == [] and not storage.exists("s/cells/a.json")
    for name in ("b.json", "a.json", "c.parquet"):
        storage.write_bytes(f"s/cells/{name}", name.encode())
    storage.write_bytes("s/cells/deeper/d.json", b"x")
    storage.write_bytes("s/cells/b.json", b"replaced")
    assert storage.list("s/cells", suffix=".json") == ["s/cells/a.json", "s/cells/b.json"]
    modified = storage.list_modified("s/cells")
    assert set(modified) == {"s/cells/a.json", "s/cells/b.json", "s/cells/c.parquet"}
    assert all(abs(t - time.time()) < 600 for t in modified.values())
    assert storage.read_bytes("s/cells/b.json") == b"replaced"
    assert storage.exists("s/cells/a.json") and storage.exists("s/cells/deeper/d.json")
    storage.delete("s/cells/a.json")
    storage.delete("s/cells/a.json")
    assert not storage.exists("s/cells/a.json")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("s/cells/a.json")
    storage.check()
    assert storage.list("") == []  # the probe object is gone


def test_listing_pages_past_a_thousand_objects(seaweedfs, s3_env):
    s3_env(seaweedfs)
    storage = Storage.from_uri(fresh_root(seaweedfs))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: storage.write_bytes(f"s/cells/{i:04d}.json", b"{}"), range(1005)))
    assert len(storage.list("s/cells", suffix=".json")) == 1005


def test_storage_pickles_without_credentials_and_works_after_unpickling(seaweedfs, s3_env):
    s3_env(seaweedfs)
    storage = Storage.from_uri(fresh_root(seaweedfs))
    storage.write_once("k.json", b"v")
    _ = storage.filesystem  # a live client and filesystem are not pickled
    blob = pickle.dumps(storage)
    assert SECRET_KEY.encode() not in blob and seaweedfs.access_key.encode() not in blob
    copy = pickle.loads(blob)
    assert copy.read_bytes("k.json") == b"v"
    copy.write_once("k2.json", b"w")
    assert storage.exists("k2.json")
    assert SECRET_KEY.encode() not in pickle.dumps(copy.filesystem)


def test_tune_filesystem_sees_the_same_objects(seaweedfs, s3_env):
    s3_env(seaweedfs)
    storage = Storage.from_uri(fresh_root(seaweedfs))
    storage.write_bytes("s/cells/a.json", b"boto")
    fs = storage.filesystem
    with fs.open_input_stream(storage.path("s/cells/a.json")) as f:
        assert f.read() == b"boto"
    fs.create_dir(storage.path("s/tune/trial"), recursive=True)
    with fs.open_output_stream(storage.path("s/tune/trial/state.json")) as f:
        f.write(b"arrow")
    assert storage.read_bytes("s/tune/trial/state.json") == b"arrow"
    assert fs.get_file_info(storage.path("s/cells/nope")).type == pafs.FileType.NotFound


def test_wrong_secret_is_one_clear_line(seaweedfs, s3_env):
    s3_env(seaweedfs, secret_key="not-the-secret-Qw7")
    storage = Storage.from_uri(fresh_root(seaweedfs))
    for action in (storage.check, lambda: storage.write_once("a.json", b"x"), lambda: storage.exists("a.json"),
                   lambda: storage.list("s/cells"), lambda: storage.read_bytes("a.json")):
        with pytest.raises(StorageError) as e:
            action()
        message = str(e.value)
        assert message.startswith(f"storage error: {storage.uri}")
        assert "access denied (" in message
        assert message.endswith(f"at {seaweedfs.endpoint} — check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        assert "\n" not in message and "not-the-secret-Qw7" not in message and SECRET_KEY not in message
    with pytest.raises(StorageError, match=r"access denied \(SignatureDoesNotMatch\)"):
        storage.check()


def test_unknown_access_key_is_one_clear_line(seaweedfs, s3_env, monkeypatch):
    s3_env(seaweedfs)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(StorageError, match=r"access denied \(InvalidAccessKeyId\) at .* — check AWS_ACCESS_KEY_ID"):
        Storage.from_uri(fresh_root(seaweedfs)).check()


def test_missing_credentials_are_one_clear_line(seaweedfs, s3_env, monkeypatch):
    s3_env(seaweedfs)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match=r"no usable credentials — set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"):
        Storage.from_uri(fresh_root(seaweedfs)).check()


def test_missing_bucket_is_one_clear_line(moto_s3, s3_env):
    s3_env(moto_s3)
    with pytest.raises(StorageError, match=r"^storage error: s3://no-such-bucket/runs: bucket "
                                           r"'no-such-bucket' does not exist at http://127\.0\.0\.1:\d+$"):
        Storage.from_uri("s3://no-such-bucket/runs").check()


def test_check_never_creates_a_missing_bucket(seaweedfs, s3_env):
    """SeaweedFS creates a bucket on the first PUT into it: the check must ask first, and refuse."""
    s3_env(seaweedfs)
    with pytest.raises(StorageError, match=r"bucket 'typo-bucket' does not exist"):
        Storage.from_uri("s3://typo-bucket/runs").check()
    names = [b["Name"] for b in Storage.from_uri(fresh_root(seaweedfs)).client.list_buckets()["Buckets"]]
    assert "typo-bucket" not in names


def test_cut_connections_mid_upload_fail_after_bounded_retries_and_leave_no_object(seaweedfs, s3_env):
    port = int(seaweedfs.endpoint.rsplit(":", 1)[1])
    proxy = CutProxy(port, cut_after=200_000)  # every attempt dies after 200 kB of a 1 MB upload
    try:
        s3_env(seaweedfs, endpoint=proxy.endpoint)
        storage = Storage.from_uri(fresh_root(seaweedfs), max_attempts=3)
        started = time.monotonic()
        with pytest.raises(StorageError) as e:
            storage.write_once("s/cells/cut.json", b"x" * 1_000_000)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
    assert f"cannot reach {proxy.endpoint} after 3 attempt(s)" in str(e.value)
    assert str(e.value).startswith(f"storage error: {storage.uri}/s/cells/cut.json: ")
    assert proxy.connections == 3 and all(n > 0 for n in proxy.forwarded)  # the server saw partial uploads
    assert elapsed < 30
    # Straight to the server: the partial uploads left nothing behind, and the key is still free.
    s3_env(seaweedfs)
    direct = Storage.from_uri(storage.uri)
    assert not direct.exists("s/cells/cut.json")
    direct.write_once("s/cells/cut.json", b"complete")
    assert direct.read_bytes("s/cells/cut.json") == b"complete"


def test_killed_server_fails_writes_after_bounded_retries_and_keeps_no_object(tmp_path, s3_env):
    weed = SeaweedFS(tmp_path / "weed")
    server = weed.start()
    try:
        s3_env(server)
        storage = Storage.from_uri(f"s3://{server.bucket}/runs", max_attempts=3)
        storage.write_once("s/cells/before.json", b"kept")
        weed.kill()
        started = time.monotonic()
        with pytest.raises(StorageError) as e:
            storage.write_once("s/cells/during.json", b"lost")
        assert time.monotonic() - started < 30
        assert str(e.value) == (f"storage error: s3://{server.bucket}/runs/s/cells/during.json: cannot reach "
                                f"{server.endpoint} after 3 attempt(s) (EndpointConnectionError)")
        with pytest.raises(StorageError, match="cannot reach"):
            storage.exists("s/cells/before.json")
        weed.start()
        assert storage.read_bytes("s/cells/before.json") == b"kept"
        assert not storage.exists("s/cells/during.json")
        assert storage.list("s/cells") == ["s/cells/before.json"]
    finally:
        weed.stop()
