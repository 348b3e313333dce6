"""`w2sweep status STORAGE/SWEEP`: per dataset x student x method, cells done/running/failed/pending and
an ETA, from storage alone."""

import json
import time

import pytest
import yaml

from conftest import tiny_config
from w2sweep.grid import expand_cells
from w2sweep.cli import main
from w2sweep.config import parse_config
from w2sweep.status import format_status, sweep_status
from w2sweep.storage import Storage


def _grid_config(storage, **overrides):
    return parse_config(tiny_config(
        str(storage), methods=["seq-sft", "sft-oracle"],
        students=[dict(model="tiny-bert", name="small"), dict(model="tiny-bert", name="large", epochs=3)],
        **overrides))


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _make_sweep(root, config):
    """A sweep folder as a run leaves it, by hand: the snapshot, then objects per cell state."""
    sweep = root / config.name
    sweep.mkdir(parents=True)
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return sweep


def test_status_counts_each_state_per_group_and_estimates_the_eta(tmp_path):
    config = _grid_config(tmp_path)
    sweep = _make_sweep(tmp_path, config)
    cells = expand_cells(config)
    groups = {}
    for cell in cells:
        groups.setdefault((cell.student.label, cell.method), []).append(cell)
    # seq-sft runs at 3 fractions x 2 budgets, sft-oracle once per budget (f fixed at 1).
    assert {k: len(v) for k, v in groups.items()} == {
        ("small", "seq-sft"): 6, ("small", "sft-oracle"): 2, ("large", "seq-sft"): 6, ("large", "sft-oracle"): 2}

    small = groups[("small", "seq-sft")]
    for cell, seconds in zip(small[:3], (10, 20, 30)):  # 3 done, mean 20 s
        _write(sweep / "cells" / f"{cell.cell_id}.json", {"cell_id": cell.cell_id, "wall_seconds": seconds})
    _write(sweep / "running" / f"{small[3].cell_id}.json", {"cell_id": small[3].cell_id, "started": time.time()})
    _write(sweep / "failures" / f"{small[4].cell_id}.json", {"cell_id": small[4].cell_id, "error": "boom"})
    large = groups[("large", "sft-oracle")]
    _write(sweep / "cells" / f"{large[0].cell_id}.json", {"cell_id": large[0].cell_id, "wall_seconds": 100})
    _write(sweep / "running" / f"{large[1].cell_id}.json", {"cell_id": large[1].cell_id, "started": time.time()})
    # A failed cell that a later run finished counts as done; so does one whose heartbeat was left behind.
    _write(sweep / "failures" / f"{large[0].cell_id}.json", {"cell_id": large[0].cell_id, "error": "old"})
    _write(sweep / "running" / f"{small[0].cell_id}.json", {"cell_id": small[0].cell_id, "started": time.time()})
    _write(sweep / "cells" / "0123456789abcdef.json", {"cell_id": "0123456789abcdef", "wall_seconds": 5})

    status = sweep_status(Storage.from_uri(str(tmp_path)), config.name)
    by_group = {(g.student, g.method): g for g in status.groups}
    assert all(g.dataset == "synthetic-sentiment" for g in status.groups)
    s = by_group[("small", "seq-sft")]
    assert (s.done, s.running, s.failed, s.pending) == (3, 1, 1, 1)
    assert s.mean_seconds == pytest.approx(20)
    g = by_group[("large", "sft-oracle")]
    assert (g.done, g.running, g.failed, g.pending) == (1, 1, 0, 0)
    assert g.mean_seconds == pytest.approx(100)
    for key in (("small", "sft-oracle"), ("large", "seq-sft")):
        g = by_group[key]
        assert (g.done, g.running, g.failed, g.pending, g.mean_seconds) == (0, 0, 0, g.total, None)
    assert status.totals() == {"done": 4, "running": 2, "failed": 1, "pending": 9}
    assert status.num_outside_grid == 1

    # Remaining cell time: a group with results uses its own mean, the others the mean of all (40 s).
    overall = (10 + 20 + 30 + 100) / 4
    remaining = (1 + 1) * 20 + 1 * 100 + 2 * overall + 6 * overall
    assert status.remaining_seconds == pytest.approx(remaining)
    assert status.eta_seconds == pytest.approx(remaining / 2)  # two cells run at a time
    assert any("heartbeat" in w for w in status.warnings)

    text = format_status(status)
    assert "tiny: 4/16 cells done, 2 running, 1 failed, 9 pending" in text
    assert "ETA: 3m50s at 2 cells at a time (7m40s of cell time left)" in text  # 460 s / 2
    assert "1 result(s) are not in this grid" in text


def test_status_cli_prints_the_table_and_json(tmp_path, capsys):
    config = _grid_config(tmp_path)
    sweep = _make_sweep(tmp_path, config)
    cell = expand_cells(config)[0]
    _write(sweep / "cells" / f"{cell.cell_id}.json", {"cell_id": cell.cell_id, "wall_seconds": 12})

    assert main(["status", str(sweep)]) == 0
    out = capsys.readouterr().out
    header, rule, *rows = out.splitlines()
    assert header.split() == ["dataset", "student", "method", "done", "running", "failed", "pending", "mean/cell"]
    assert any(r.split()[:4] == ["synthetic-sentiment", "small", "seq-sft", "1"] and r.endswith("12s") for r in rows)
    assert "ETA: no cell is running (3m00s of cell time left)" in out  # 15 cells x 12 s

    assert main(["status", str(sweep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"] == {"done": 1, "running": 0, "failed": 0, "pending": 15}
    assert report["eta_seconds"] is None and report["remaining_seconds"] == pytest.approx(180)


def test_status_of_a_missing_sweep_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such sweep" in err[0] and "nope/sweep.yaml" in err[0]


def test_status_reads_a_sweep_whose_local_dataset_is_not_on_this_machine(tmp_path):
    """The sweep ran elsewhere: its snapshot names a data file this machine lacks. The grid, and so
    every cell id, is still the one the run used."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"example {i}", "label": i % 2}) + "\n" for i in range(50)))
    config = _grid_config(tmp_path / "store", datasets=[dict(name="mine", source="local", path=str(data))])
    sweep = _make_sweep(tmp_path / "store", config)
    cells = expand_cells(config)
    _write(sweep / "cells" / f"{cells[0].cell_id}.json", {"cell_id": cells[0].cell_id, "wall_seconds": 1})
    data.unlink()

    status = sweep_status(Storage.from_uri(str(tmp_path / "store")), config.name)
    assert status.totals() == {"done": 1, "running": 0, "failed": 0, "pending": len(cells) - 1}
    assert status.num_outside_grid == 0
    assert {g.dataset for g in status.groups} == {"mine"}



def test_stale_heartbeats_are_not_running_and_leave_the_eta(tmp_path, capsys):
    """A heartbeat not rewritten for 3 intervals (by `updated`, else `started`, else its last-modified
    time) is stale: its driver or node is gone. It is not running and the ETA ignores it."""
    import os

    from w2sweep import layout

    assert layout.HEARTBEAT_INTERVAL_S == 30 and layout.STALE_AFTER_INTERVALS == 3
    config = _grid_config(tmp_path)
    sweep = _make_sweep(tmp_path, config)
    cells = expand_cells(config)
    now = time.time() - 1e6  # eleven days ago
    _write(sweep / "cells" / f"{cells[0].cell_id}.json", {"cell_id": cells[0].cell_id, "wall_seconds": 10})
    beats = {  # cell -> heartbeat object (None: not JSON), its last-modified time
        1: ({"started": now - 1000, "updated": now - 10}, now - 10),  # rewritten lately: running
        2: ({"started": now - 10}, now - 10),  # no `updated` yet (an older runner): its start counts
        3: (None, now - 5),  # unreadable: its last-modified time counts
        4: ({"started": now - 1000, "updated": now - 91}, now - 91),  # missed 3 beats: stale
        5: ({"started": now - 1000}, now),  # started long ago, never rewritten: stale
        6: (None, now - 1000),
        7: ({"started": now - 1000, "updated": now - 1000}, now - 1000),  # stale, but its run failed
    }
    for n, (beat, mtime) in beats.items():
        path = sweep / "running" / f"{cells[n].cell_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{not json" if beat is None else json.dumps(dict(beat, cell_id=cells[n].cell_id)))
        os.utime(path, (mtime, mtime))
    _write(sweep / "failures" / f"{cells[7].cell_id}.json", {"cell_id": cells[7].cell_id, "error": "boom"})

    status = sweep_status(Storage.from_uri(str(tmp_path)), config.name, now=now)
    assert status.totals() == {"done": 1, "running": 3, "stale": 3, "failed": 1, "pending": 8}
    assert sum(g.stale for g in status.groups) == 3 and sum(g.total for g in status.groups) == 16
    assert status.remaining_seconds == pytest.approx((3 + 8) * 10)  # running + pending; not the stale
    assert status.eta_seconds == pytest.approx(110 / 3)
    text = format_status(status)
    assert text.splitlines()[0].split() == ["dataset", "student", "method", "done", "running", "stale", "failed",
                                            "pending", "mean/cell"]
    assert "tiny: 1/16 cells done, 3 running, 3 stale, 1 failed, 8 pending" in text
    assert "3 stale cell(s): heartbeat not rewritten for over 1m30s (driver or node gone)" in text

    assert main(["status", str(sweep), "--json"]) == 0  # now: every planted heartbeat is years old
    report = json.loads(capsys.readouterr().out)
    assert report["totals"] == {"done": 1, "running": 0, "stale": 6, "failed": 1, "pending": 8}
    assert report["eta_seconds"] is None and report["failed"] is None


def _plant_failures(tmp_path):
    config = _grid_config(tmp_path)
    sweep = _make_sweep(tmp_path, config)
    cells = expand_cells(config)
    by_key = {(c.student.label, c.method, c.budget, c.spending_fraction): c for c in cells}
    a, b = by_key[("small", "seq-sft", 16, 0.5)], by_key[("large", "sft-oracle", 4, 1.0)]
    _write(sweep / "failures" / f"{a.cell_id}.json", {"cell_id": a.cell_id, "error": "ValueError: no\n  labels"})
    (sweep / "failures" / f"{b.cell_id}.json").write_text("{torn")
    done = by_key[("small", "seq-sft", 4, 0.0)]  # failed once, finished by a later run: not listed
    _write(sweep / "failures" / f"{done.cell_id}.json", {"cell_id": done.cell_id, "error": "old"})
    _write(sweep / "cells" / f"{done.cell_id}.json", {"cell_id": done.cell_id, "wall_seconds": 3})
    return sweep, a, b


def test_status_failed_lists_each_failed_cell_with_its_axes_and_error(tmp_path, capsys):
    sweep, a, b = _plant_failures(tmp_path)
    assert main(["status", "--failed", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "tiny: 1/16 cells done, 0 running, 2 failed, 13 pending" in out
    lines = out.splitlines()
    start = lines.index("failed cells (2), with the last attempt's error:")
    header, rule, *rows = lines[start + 1:]
    assert header.split() == ["cell", "dataset", "weak", "supervisor", "student", "method", "budget", "f", "seed",
                              "error"]
    assert len(rows) == 2
    assert rows[0].split() == [b.cell_id, "synthetic-sentiment", "tiny-bert", "large", "sft-oracle", "4", "1", "0",
                               "(failure", "record", "unreadable:", "JSONDecodeError)"]
    assert rows[1].split()[:8] == [a.cell_id, "synthetic-sentiment", "tiny-bert", "small", "seq-sft", "16", "0.5", "0"]
    assert rows[1].endswith("ValueError: no labels")  # one line

    assert main(["status", "--failed", "--json", str(sweep)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["failed"] == 2
    failed = {f["cell_id"]: f for f in report["failed"]}
    assert failed[a.cell_id] == dict(cell_id=a.cell_id, dataset="synthetic-sentiment", weak_supervisor="tiny-bert",
                                     student="small", method="seq-sft", budget=16, spending_fraction=0.5,
                                     n_weak=a.n_weak, n_oracle=a.n_oracle, seed=0, error="ValueError: no labels")
    assert failed[b.cell_id]["error"] == "(failure record unreadable: JSONDecodeError)"
    assert set(failed) == {a.cell_id, b.cell_id}


def test_status_failed_without_failures_says_so(tmp_path, capsys):
    config = _grid_config(tmp_path)
    sweep = _make_sweep(tmp_path, config)
    assert main(["status", "--failed", str(sweep)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("no failed cells")
    assert main(["status", "--failed", "--json", str(sweep)]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == []
