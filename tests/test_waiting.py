"""The driver's count of cells running and waiting for resources (`<sweep>/progress.json`), and
`w2sweep status` showing it while it is fresh. A real sweep writing it: tests/test_trackers.py."""

import json
import time

import pytest
import yaml

from conftest import tiny_config
from w2sweep.cli import main
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells
from w2sweep.status import DRIVER_STALE_SECONDS, format_status, sweep_status
from w2sweep.storage import Storage


class _Trial:
    def __init__(self, status):
        self.status = status


def test_the_progress_object_counts_running_and_waiting_cells_and_goes_at_the_end(tmp_path, monkeypatch):
    from w2sweep.sweep import progress

    storage = Storage.from_uri(str(tmp_path))
    record = progress.ProgressObject(storage, "s", num_cells=10)
    # 2 running, 3 pending trials, 1 finished, 1 failed: the 3 pending and the 3 not yet made wait
    trials = [_Trial(s) for s in ("RUNNING", "RUNNING", "PENDING", "PENDING", "PENDING", "TERMINATED", "ERROR")]
    record.update(trials)
    written = json.loads(storage.read_bytes("s/progress.json"))
    assert {k: written[k] for k in ("running", "waiting", "pending_trials", "cells")} == {
        "running": 2, "waiting": 6, "pending_trials": 3, "cells": 10}
    assert abs(written["updated"] - time.time()) < 5

    storage.write_bytes("s/progress.json", b"{}")
    record.update(trials[:1])  # changed, but within RECORD_SECONDS of the last write: not written
    assert storage.read_bytes("s/progress.json") == b"{}"
    monkeypatch.setattr(progress, "RECORD_SECONDS", 0.0)
    record.update(trials[:1])
    assert json.loads(storage.read_bytes("s/progress.json"))["waiting"] == 9
    record.remove()
    assert not storage.exists("s/progress.json")


def _planted_sweep(tmp_path, progress: dict | None):
    config = parse_config(tiny_config(str(tmp_path)))
    sweep = tmp_path / config.name
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    cell = expand_cells(config)[0]
    (sweep / "running").mkdir()
    (sweep / "running" / f"{cell.cell_id}.json").write_text(json.dumps({"cell_id": cell.cell_id}))
    if progress is not None:
        (sweep / "progress.json").write_text(json.dumps(progress))
    return Storage.from_uri(str(tmp_path)), config.name


def test_status_shows_the_drivers_waiting_count_beside_running(tmp_path, capsys):
    storage, sweep = _planted_sweep(tmp_path, {"running": 1, "waiting": 4, "updated": time.time() - 7})
    status = sweep_status(storage, sweep)
    assert status.waiting_for_resources == 4
    assert "waiting for resources: 4 (the driver's count 7s ago), 1 running" in format_status(status).splitlines()
    assert main(["status", str(tmp_path / sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["waiting_for_resources"] == 4


@pytest.mark.parametrize("progress,line", [
    (None, None),  # no driver ever ran, or it ended: nothing to say
    ({"running": 1, "waiting": 4, "age": DRIVER_STALE_SECONDS + 60},
     "waiting for resources: unknown (the driver's last count is 4m0"),
    ({"waiting": "many", "age": 1}, None),  # unreadable: ignored
])
def test_status_ignores_a_stale_or_missing_count(tmp_path, progress, line):
    if progress is not None:
        progress = {k: v for k, v in progress.items() if k != "age"} | {"updated": time.time() - progress["age"]}
    storage, sweep = _planted_sweep(tmp_path, progress)
    status = sweep_status(storage, sweep)
    assert status.waiting_for_resources is None
    waiting = [s for s in format_status(status).splitlines() if s.startswith("waiting for resources")]
    assert [s[:len(line)] for s in waiting] == ([line] if line else [])
