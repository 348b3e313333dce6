"""Experiment trackers (`trackers: [mlflow, wandb]`) and the driver's count of cells waiting for
resources in `w2sweep status`.

The trackers are tested against a real MLflow tracking server on 127.0.0.1 and W&B in offline mode
(its run files on disk), after a real tiny sweep, with secrets planted in the environment that must
reach neither.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import free_port, tiny_config
from w2sweep.cli import main
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells
from w2sweep.status import DRIVER_STALE_SECONDS, format_status, sweep_status
from w2sweep.storage import Storage
from w2sweep.trackers import METRICS, PARAMS, CellTrackers, run_record

SECRETS = {"AWS_SECRET_ACCESS_KEY": "planted-aws-secret-3f9a", "MY_SERVICE_TOKEN": "planted-token-8c1d",
           "HF_TOKEN": "hf_plantedtoken77aa", "WANDB_API_KEY": "planted" + "0" * 33}


# ---- config ---------------------------------------------------------------------------------------

def test_trackers_are_off_by_default_and_change_no_cell_id(tmp_path):
    plain = parse_config(tiny_config(str(tmp_path)))
    tracked = parse_config(tiny_config(str(tmp_path), trackers=["mlflow", "wandb"]))
    assert plain.trackers == []
    assert [c.cell_id for c in expand_cells(plain)] == [c.cell_id for c in expand_cells(tracked)]


@pytest.fixture
def tracker_env(monkeypatch, tmp_path):
    """No tracker settings from the machine running the tests: no netrc login, no server."""
    for name in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return monkeypatch


BAD = [  # (trackers, environment, what the one line says)
    (["comet"], {}, "config error: trackers.0: 'comet': Input should be 'mlflow' or 'wandb'"),
    (["wandb", "wandb"], {"WANDB_MODE": "offline"}, "config error: trackers: list: 'wandb' is listed twice"),
    (["mlflow"], {}, "config error: trackers: list: 'mlflow' logs to the server in MLFLOW_TRACKING_URI, which is not set"),
    (["wandb"], {"WANDB_MODE": "sometimes"}, "config error: trackers: list: WANDB_MODE is 'sometimes'; allowed: online"),
    (["wandb"], {}, "config error: trackers: list: 'wandb' online needs an API key"),
]


@pytest.mark.parametrize("trackers,env,says", BAD, ids=[b[2][:60] for b in BAD])
def test_a_bad_tracker_setting_is_one_line_and_exit_2(tracker_env, write_config, capsys, trackers, env, says):
    for name, value in {**env, "MLFLOW_TRACKING_TOKEN": SECRETS["MY_SERVICE_TOKEN"]}.items():
        tracker_env.setenv(name, value)
    path = write_config(tiny_config("store", trackers=trackers))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(says), err
    assert SECRETS["MY_SERVICE_TOKEN"] not in err[0]


def test_tracker_settings_from_the_environment_pass_validate(tracker_env, write_config, capsys):
    tracker_env.setenv("MLFLOW_TRACKING_URI", "http://user:pw-not-shown@127.0.0.1:1")
    tracker_env.setenv("WANDB_MODE", "offline")
    path = write_config(tiny_config("store", trackers=["mlflow", "wandb"]))
    assert main(["validate", str(path)]) == 0
    assert "pw-not-shown" not in capsys.readouterr().out


# ---- what a run holds -----------------------------------------------------------------------------

RESULT = dict(cell_id="c1", sweep="s", dataset="d", weak_supervisor="w", student="st", method="seq-sft", budget=16.0,
              spending_fraction=None, seed=0, n_weak=10, n_oracle=3, label_cost=4.0, accuracy=0.75, auroc=0.8,
              gpu_seconds=0.0, wall_seconds=12.5, config={"anything": "else"}, accuracy_ci=[0.7, 0.8])


def test_a_run_holds_the_cells_axes_and_numbers_only():
    params, metrics = run_record(RESULT)
    assert params == {k: RESULT[k] for k in PARAMS}
    assert metrics == {k: float(RESULT[k]) for k in METRICS}


def test_a_failing_tracker_is_warned_about_once_and_the_others_go_on(tmp_path, capsys):
    storage = Storage.from_uri(str(tmp_path))
    for i in range(3):
        storage.write_bytes(f"s/cells/c{i}.json", json.dumps(RESULT | {"cell_id": f"c{i}"}).encode())

    class Broken:
        def log(self, *args):
            raise ConnectionError("refused\n<html>a server's error page</html>")

    class Kept:
        logged = []

        def log(self, sweep, cell_id, params, metrics):
            self.logged.append(cell_id)

    callback = CellTrackers(["mlflow", "wandb"], storage, "s")
    callback.trackers = {"mlflow": Broken(), "wandb": Kept()}
    for i in range(3):
        callback._log(f"c{i}")
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: tracker mlflow stopped logging: ConnectionError: refused"]
    assert Kept.logged == ["c0", "c1", "c2"]


# ---- the driver's waiting count -------------------------------------------------------------------

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
