"""`w2sweep pull`: hand-made results in storage -> pull -> the files on disk are what was computed."""

from __future__ import annotations

import io
import json
import uuid

import pandas as pd
import pytest
from test_frontier import FRONTIER_ROWS, PGR_ROWS, plain, row, write_cells

from w2sweep.cli import main
from w2sweep.frontier import aggregate
from w2sweep.pull import pull
from w2sweep.results import cell_keys, read_cells
from w2sweep.storage import Storage

ROWS = [*FRONTIER_ROWS, *PGR_ROWS, row(0.61, method="A", fraction=0.2, seed=1, label_cost=1.0),
        row(0.9, method="A", fraction=0.2, seed=2, status="failed")]
TABLES = ["curves.csv", "frontier.csv", "regimes.csv", "budget_table.csv", "pgr.csv"]


def read_csv(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(data))
    for column in ("reason", "ceiling_source", "comparison", "ci_method"):  # empty strings read back as NaN
        if column in frame:
            frame[column] = frame[column].astype(object).fillna("")
    return frame


def assert_tables_are(out, rows: list[dict], **options) -> None:
    """The CSVs under `out` are the aggregation of `rows` (computed here, independently of storage)."""
    expected = aggregate(pd.DataFrame(rows), **options)
    frames = dict(zip(TABLES, (expected.curves, expected.frontier, expected.regimes, expected.budget_table,
                               expected.pgr)))
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(read_csv((out / name).read_bytes()), plain(frame), check_dtype=False)


def assert_disk_equals_storage(out, storage: Storage, sweep: str = "demo") -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(storage.read_bytes(f"{sweep}/frontier/manifest.json"))
    for name in manifest["files"]:
        assert (out / name).read_bytes() == storage.read_bytes(f"{sweep}/frontier/{name}"), name
    return manifest


def test_pull_computes_a_missing_frontier_and_the_files_on_disk_equal_it(tmp_path):
    storage = Storage.from_uri(str(tmp_path / "store"))
    write_cells(storage, ROWS)
    out = tmp_path / "out"

    report = pull(storage, "demo", out, progress=False)

    assert (report.recomputed, report.reason) == (True, "no frontier computed yet")
    manifest = assert_disk_equals_storage(out, storage)
    assert sorted(manifest["files"]) == sorted(TABLES + ["no_signal.csv", "curves.png", "frontier.png", "budget_table.png",
                                                         "report.html", "results.parquet"])
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    assert_tables_are(out, ROWS)
    assert (out / "frontier.png").read_bytes().startswith(b"\x89PNG")


def test_pull_reuses_an_up_to_date_frontier(tmp_path):
    storage = Storage.from_uri(str(tmp_path / "store"))
    write_cells(storage, ROWS)
    pull(storage, "demo", tmp_path / "first", progress=False)
    manifest = storage.read_bytes("demo/frontier/manifest.json")

    report = pull(storage, "demo", tmp_path / "second", progress=False)

    assert (report.recomputed, report.reason) == (False, "up to date")
    assert storage.read_bytes("demo/frontier/manifest.json") == manifest  # nothing was rewritten
    assert_disk_equals_storage(tmp_path / "second", storage)


def test_pull_recomputes_after_a_new_result_with_the_options_stored(tmp_path):
    from w2sweep.frontier import write_frontier

    storage = Storage.from_uri(str(tmp_path / "store"))
    write_cells(storage, ROWS)
    write_frontier(storage, "demo", tolerance=0.05, budgets=[1.0, 3.0])
    new = row(0.99, method="B", fraction=0.3, label_cost=9.0)
    write_cells(storage, [new])

    report = pull(storage, "demo", tmp_path / "out", progress=False)

    assert report.recomputed and report.reason.startswith("results changed since the frontier was computed")
    out = tmp_path / "out"
    assert_disk_equals_storage(out, storage)
    assert_tables_are(out, [*ROWS, new], tolerance=0.05, budgets=[1.0, 3.0])  # as asked the first time
    assert set(pd.read_csv(out / "regimes.csv")["tolerance"]) == {0.05}


def test_pull_recomputes_when_asked_for_other_options(tmp_path):
    storage = Storage.from_uri(str(tmp_path / "store"))
    write_cells(storage, ROWS)
    pull(storage, "demo", tmp_path / "first", progress=False)

    same = pull(storage, "demo", tmp_path / "same", options={"tolerance": 0.01, "axis": "label"}, progress=False)
    other = pull(storage, "demo", tmp_path / "other", options={"tolerance": 0.02}, progress=False)

    assert (same.recomputed, other.recomputed) == (False, True)
    assert other.reason == "options differ: tolerance 0.01 -> 0.02"
    assert set(pd.read_csv(tmp_path / "other" / "regimes.csv")["tolerance"]) == {0.02}


def test_pull_repairs_outputs_that_do_not_match_the_manifest(tmp_path):
    storage = Storage.from_uri(str(tmp_path / "store"))
    write_cells(storage, ROWS)
    pull(storage, "demo", tmp_path / "first", progress=False)
    storage.write_bytes("demo/frontier/curves.csv", b"half a file")  # e.g. an interrupted writer

    report = pull(storage, "demo", tmp_path / "out", progress=False)

    assert report.recomputed
    assert_disk_equals_storage(tmp_path / "out", storage)
    assert_tables_are(tmp_path / "out", ROWS)


def test_pull_from_seaweedfs(seaweedfs, s3_env, tmp_path):
    s3_env(seaweedfs)
    prefix = f"pull-{uuid.uuid4().hex[:8]}"
    storage = Storage.from_uri(f"s3://{seaweedfs.bucket}/{prefix}")
    write_cells(storage, ROWS)
    storage.write_bytes("demo/cells/broken.json", b"{not json")
    out = tmp_path / "out"

    report = pull(storage, "demo", out, progress=False)

    assert report.recomputed
    manifest = json.loads((out / "manifest.json").read_text())
    for name in manifest["files"]:  # what the server holds, read with the server's own client
        assert (out / name).read_bytes() == seaweedfs.get(f"{prefix}/demo/frontier/{name}"), name
    assert_tables_are(out, ROWS)
    results, unreadable = read_cells(storage, cell_keys(storage, "demo"))
    assert len(results) == len(ROWS) and list(unreadable) == ["demo/cells/broken.json"]
    assert not pull(storage, "demo", tmp_path / "again", progress=False).recomputed


# ---- the command line -----------------------------------------------------------------------------

def test_cli_frontier_then_pull(tmp_path, capsys):
    root = tmp_path / "store"
    write_cells(Storage.from_uri(str(root)), ROWS)

    assert main(["frontier", f"{root}/demo", "--c-weak", "0.01", "--axis", "total",
                 "--gpu-hour-price", "4", "--budgets", "1,4"]) == 0
    assert "1 not usable" in capsys.readouterr().out
    assert main(["pull", f"{root}/demo", "--out", str(tmp_path / "out")]) == 0
    assert "frontier up to date" in capsys.readouterr().out
    out = tmp_path / "out"
    assert set(pd.read_csv(out / "frontier.csv")["axis"]) == {"total"}
    assert pd.read_csv(out / "budget_table.csv")["budget"].tolist() == [1.0, 4.0]
    assert (out / "c_weak=0.01" / "report.html").exists()

    assert main(["pull", f"{root}/demo", "--out", str(out), "--axis", "label"]) == 0
    assert "recomputed (options differ: axis 'total' -> 'label')" in capsys.readouterr().out
    assert set(pd.read_csv(out / "frontier.csv")["axis"]) == {"label"}
    assert (out / "c_weak=0.01" / "curves.csv").exists()  # the other stored options were kept
    assert pd.read_csv(out / "budget_table.csv")["budget"].tolist() == [1.0, 4.0]


@pytest.mark.parametrize(("argv", "message"), [
    (["frontier", "{root}/demo", "--c-weak", "0.5,x"], "'0.5,x': expected comma-separated numbers"),
    (["frontier", "{root}/demo", "--c-weak", "0,0.1"], "expected comma-separated numbers > 0"),
    (["frontier", "{root}/demo", "--axis", "gpu"], "invalid choice: 'gpu'"),
    (["frontier", "{root}/demo", "--dataset-group", "qa"], "expected NAME=DATASET,DATASET"),
])
def test_cli_refuses_bad_frontier_options(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(root=tmp_path) for a in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["frontier", "{root}/empty"], "frontier error: no finished cells under empty/cells"),
    (["pull", "{root}/empty", "--out", "{root}/out"], "pull error: no finished cells under empty/cells"),
    (["frontier", "{root}/demo", "--dataset-group", "qa=boolq,sciq"],
     "frontier error: dataset group 'qa': no usable results for datasets ['sciq']"),
])
def test_cli_reports_aggregation_errors_in_one_line(tmp_path, capsys, argv, message):
    write_cells(Storage.from_uri(str(tmp_path)), ROWS)
    assert main([a.format(root=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.strip() == message or err.strip().startswith(message)
    assert len(err.strip().splitlines()) == 1


def test_cli_wrong_s3_credentials_are_one_line(seaweedfs, s3_env, tmp_path, capsys):
    s3_env(seaweedfs, secret_key="not-the-secret")
    for argv in (["frontier", f"s3://{seaweedfs.bucket}/x/demo"],
                 ["pull", f"s3://{seaweedfs.bucket}/x/demo", "--out", str(tmp_path / "out")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("storage error: "), err
        assert "not-the-secret" not in err


def test_cli_pull_into_a_folder_it_cannot_write_is_one_line(tmp_path, capsys):
    write_cells(Storage.from_uri(str(tmp_path / "store")), ROWS)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["pull", f"{tmp_path / 'store'}/demo", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"pull error: {blocker / 'out'}"), err
