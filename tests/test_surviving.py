"""What a sweep survives and how it says what happened, without Ray: a one-worker cell killed in the
middle of training resumes from its last checkpoint in storage and ends with an uninterrupted cell's
result; result writes wait out a storage outage and then name the object; the heartbeat is refreshed
and its deletion never hides a cell's own error. (The same through real Ray Tune:
tests/test_surviving_ray.py.)"""

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import tiny_config
from w2sweep import layout
from w2sweep.cells import _patiently, run_cell
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells
from w2sweep.results import read_predictions
from w2sweep.storage import AlreadyExists, Storage, StorageError
from w2sweep.storage.local import LocalStorage
from w2sweep.sweep.heartbeat import Heartbeat


def _config(root, **overrides) -> dict:
    """One seq-sft cell whose weak stage trains 4 epochs, validating after each."""
    return tiny_config(str(root), **{
        "datasets": [dict(name="synthetic-sentiment", source="synthetic", num_examples=400,
                          pools=dict(weak_train=40, val=30, test=40, weak_label=80, oracle=60))],
        "weak_supervisors": [dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=16)],
        "students": [dict(model="tiny-bert", name="full", epochs=4, max_length=16, batch_size=16, patience=10)],
        "budgets": [12], "spending_fractions": [0.5], **overrides})


_KILL_AFTER = """
import json, os, sys
from w2sweep.cells import run_cell
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells
from w2sweep.storage import Storage
from w2sweep.sweep.checkpoints import StorageHooks

config = parse_config(json.loads(sys.argv[1]))
(cell,) = expand_cells(config)
storage = Storage.from_uri(config.storage)
hooks = StorageHooks(storage, cell.sweep, cell.cell_id)
save = hooks.on_epoch_end
def on_epoch_end(write, metrics):
    if (metrics["stage"], metrics["epoch"]) == (0, 2):
        os._exit(1)  # as if the machine died, before this validation's checkpoint
    save(write, metrics)
hooks.on_epoch_end = on_epoch_end
run_cell(cell, storage, hooks=hooks)
"""


def test_a_killed_one_worker_cell_resumes_from_its_last_checkpoint_with_the_uninterrupted_result(tmp_path):
    from w2sweep.sweep.checkpoints import StorageHooks

    killed = _config(tmp_path / "killed")
    died = subprocess.run([sys.executable, "-c", _KILL_AFTER, json.dumps(killed)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert died.returncode == 1 and "Traceback" not in died.stderr, died.stderr[-2000:]
    config = parse_config(killed)
    (cell,) = expand_cells(config)
    storage = Storage.from_uri(config.storage)
    assert not storage.exists(cell.result_key)
    assert json.loads(storage.read_bytes(layout.checkpoint_latest(cell.sweep, cell.cell_id)))["epoch"] == 1

    hooks = StorageHooks(storage, cell.sweep, cell.cell_id)
    resumed = run_cell(cell, storage, hooks=hooks)
    hooks.discard()
    assert hooks.resumed
    steps_per_epoch = 4  # ceil(60 weak labels / 16)
    weak_stage = hooks.stages[0]
    assert weak_stage["num_steps_run"] == weak_stage["num_steps"] - steps_per_epoch  # epoch 1 not trained again
    assert not (tmp_path / "killed" / cell.sweep / "checkpoints" / cell.cell_id).exists()

    steady_config = parse_config(_config(tmp_path / "steady"))
    steady_storage = Storage.from_uri(steady_config.storage)
    steady = run_cell(cell, steady_storage)
    assert resumed.accuracy == steady.accuracy
    assert resumed.auroc == pytest.approx(steady.auroc, abs=1e-6)
    a = read_predictions(storage, cell.sweep, [cell.cell_id])[cell.cell_id]
    b = read_predictions(steady_storage, cell.sweep, [cell.cell_id])[cell.cell_id]
    np.testing.assert_allclose(a["p"], b["p"], rtol=1e-5, atol=1e-6)


class _Outage(LocalStorage, scheme="test-outage"):
    """A local root whose writes fail `failures` times before they go through."""

    def __init__(self, path, failures):
        super().__init__(path)
        self.failures = failures
        self.attempts = 0

    def write_once(self, key, data):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StorageError(f"storage error: {self.url(key)}: connection refused")
        super().write_once(key, data)


def test_a_result_write_waits_out_a_short_outage(tmp_path):
    storage = _Outage(str(tmp_path), failures=2)
    _patiently("cells/x.json", 60, storage.write_once, "cells/x.json", b"{}")
    assert storage.attempts == 3 and storage.exists("cells/x.json")


def test_a_result_write_that_keeps_failing_names_its_object_and_keeps_the_cause(tmp_path):
    storage = _Outage(str(tmp_path), failures=10**6)
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"writing .*cells/x\.json failed for 2 s \(\d+ attempts\)") as e:
        _patiently(storage.url("cells/x.json"), 2, storage.write_once, "cells/x.json", b"{}")
    assert time.monotonic() - start < 10
    assert "connection refused" in str(e.value) and isinstance(e.value.__cause__, StorageError)


def test_an_existing_result_is_an_answer_not_an_outage(tmp_path):
    storage = _Outage(str(tmp_path), failures=0)
    storage.write_once("cells/x.json", b"{}")
    with pytest.raises(AlreadyExists):
        _patiently("cells/x.json", 60, storage.write_once, "cells/x.json", b"{}")
    assert storage.attempts == 2


def test_the_heartbeat_carries_started_and_updated_and_is_refreshed_until_it_is_deleted(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    key = layout.running("s", "c1")
    with Heartbeat(storage, key, cell_id="c1", interval_s=0.05):
        first = json.loads(storage.read_bytes(key))
        time.sleep(0.5)
        later = json.loads(storage.read_bytes(key))
    assert first["cell_id"] == "c1" and first["pid"] == os.getpid() and first["host"]
    assert first["started"] == later["started"] <= first["updated"] < later["updated"]
    assert not storage.exists(key)
    assert layout.HEARTBEAT_INTERVAL_S == 30


def test_a_failing_heartbeat_deletion_is_logged_and_never_hides_the_cells_error(tmp_path, monkeypatch, caplog):
    """Through the trainable itself: the cell's error is what the trial raises."""
    from w2sweep.sweep.run import _cell_trainable

    config = parse_config(_config(tmp_path / "store"))
    (cell,) = expand_cells(config)

    def run(cell, storage, **_):
        raise ValueError("the real failure")

    def delete(self, key):
        raise StorageError(f"storage error: {self.url(key)}: unreachable")

    monkeypatch.setattr(LocalStorage, "delete", delete)
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="the real failure"):
        _cell_trainable({"cell_id": cell.cell_id}, cells={cell.cell_id: cell.to_json()}, storage_uri=config.storage,
                        env={}, resources={}, max_failures=0, write_timeout_s=0, claims_actor=None, run=run,
                        run_on_workers=None)
    assert "not deleted" in caplog.text and "running" in caplog.text


def test_a_heartbeat_that_cannot_be_written_at_the_start_does_not_fail_the_cell(tmp_path, monkeypatch, caplog):
    """A short outage at a cell's start costs it no attempt: the beat is logged and tried again."""
    storage = Storage.from_uri(str(tmp_path))

    def write_bytes(self, key, data):
        raise StorageError(f"storage error: {self.url(key)}: unreachable")

    monkeypatch.setattr(LocalStorage, "write_bytes", write_bytes)
    with caplog.at_level(logging.WARNING), Heartbeat(storage, layout.running("s", "c1"), cell_id="c1"):
        pass
    assert "not written" in caplog.text


def test_a_retried_trial_of_a_finished_cell_reports_its_stored_result_and_trains_nothing(tmp_path, monkeypatch):
    """Tune may retry a trial whose cell stored its result (an actor lost after the write): the cell
    is not trained again, so its predictions stay those of the training that made its result."""
    from w2sweep.sweep import run as runner

    config = parse_config(_config(tmp_path / "store"))
    (cell,) = expand_cells(config)
    storage = Storage.from_uri(config.storage)
    storage.write_once(cell.result_key, json.dumps({"accuracy": 0.75, "auroc": 0.8, "wall_seconds": 3.0}).encode())
    reported = []
    monkeypatch.setattr(runner.tune, "report", reported.append)

    def run(cell, storage, **_):
        raise AssertionError("a finished cell was trained again")

    runner._cell_trainable({"cell_id": cell.cell_id}, cells={cell.cell_id: cell.to_json()}, storage_uri=config.storage,
                           env={}, resources={}, max_failures=0, write_timeout_s=0, claims_actor=None, run=run,
                           run_on_workers=None)
    assert reported == [{"accuracy": 0.75, "auroc": 0.8, "wall_seconds": 3.0}]
    assert not storage.exists(layout.running(cell.sweep, cell.cell_id))
