"""The storage layer on a local directory, and the URIs it refuses (no server needed)."""

import pickle
import threading

import pytest

from w2sweep.storage import AlreadyExists, LocalStorage, Storage, StorageError


def test_plain_path_and_file_uri_are_the_same_local_root(tmp_path):
    a = Storage.from_uri(str(tmp_path / "root"))
    b = Storage.from_uri(f"file://{tmp_path / 'root'}")
    assert isinstance(a, LocalStorage) and a.is_local
    assert a.root == b.root == str(tmp_path / "root")
    a.write_bytes("s/x.json", b"1")
    assert b.read_bytes("s/x.json") == b"1"


def test_local_write_once_twice_raises_already_exists_and_keeps_first_content(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    storage.write_once("s/cells/a.json", b"first")
    with pytest.raises(AlreadyExists):
        storage.write_once("s/cells/a.json", b"second")
    assert storage.read_bytes("s/cells/a.json") == b"first"
    assert storage.list("s/cells") == ["s/cells/a.json"]  # no temporary left behind


def test_local_concurrent_write_once_has_exactly_one_winner(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    winners, start = [], threading.Barrier(8)

    def attempt(i):
        start.wait()
        try:
            storage.write_once("s/cells/race.json", f"writer {i}".encode())
            winners.append(i)
        except AlreadyExists:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert storage.read_bytes("s/cells/race.json") == f"writer {winners[0]}".encode()


def test_local_list_exists_delete_and_missing_reads(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    assert storage.list("s/cells") == [] and not storage.exists("s/cells/a.json")
    for name in ("b.json", "a.json", "c.parquet"):
        storage.write_bytes(f"s/cells/{name}", b"x")
    storage.write_bytes("s/cells/deeper/d.json", b"x")
    assert storage.list("s/cells", suffix=".json") == ["s/cells/a.json", "s/cells/b.json"]
    assert set(storage.list_modified("s/cells")) == {"s/cells/a.json", "s/cells/b.json", "s/cells/c.parquet"}
    storage.delete("s/cells/a.json")
    storage.delete("s/cells/a.json")  # deleting what is gone is not an error
    assert not storage.exists("s/cells/a.json") and storage.exists("s/cells/b.json")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("s/cells/a.json")


def test_local_storage_pickles_and_works_after_unpickling(tmp_path):
    storage = pickle.loads(pickle.dumps(Storage.from_uri(str(tmp_path))))
    storage.write_once("k", b"v")
    assert storage.read_bytes("k") == b"v"


def test_local_check_reports_an_unusable_root_in_one_line(tmp_path):
    storage = Storage.from_uri(str(tmp_path / "root"))
    storage.check()
    assert storage.list("") == []  # the probe is gone
    (tmp_path / "root").rmdir()
    (tmp_path / "root").write_text("a file where the root directory was")
    with pytest.raises(StorageError, match=r"^storage error: .*/root: not writable") as e:
        storage.check()
    assert "\n" not in str(e.value)
    with pytest.raises(StorageError,
                       match=r"^storage error: .*/root/below: cannot create the directory \(Not a directory\)$"):
        Storage.from_uri(str(tmp_path / "root" / "below"))


@pytest.mark.parametrize("uri, message", [
    ("gs://bucket/runs", "unsupported scheme 'gs'; allowed: a local path, file://, s3://"),
    ("s3:///runs", "no bucket; expected s3://bucket/prefix"),
    ("s3://bucket/runs?endpoint_override=http://x:1",
     "options in the URI ('?...') are not supported; the endpoint comes from AWS_ENDPOINT_URL_S3"),
])
def test_unusable_uris_are_one_line_errors(uri, message):
    with pytest.raises(StorageError) as e:
        Storage.from_uri(uri)
    assert str(e.value).startswith("storage error: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_credentials_in_an_s3_uri_are_refused_without_echoing_them():
    with pytest.raises(StorageError) as e:
        Storage.from_uri("s3://AKIDEXAMPLE:s3cr3t-value@bucket/runs")
    assert "credentials in the URI are refused" in str(e.value)
    assert "s3cr3t-value" not in str(e.value) and "AKIDEXAMPLE" not in str(e.value)
    with pytest.raises(StorageError) as e:
        Storage.from_uri("s3://bucket/runs?secret_key=s3cr3t-value")
    assert "s3cr3t-value" not in str(e.value)
