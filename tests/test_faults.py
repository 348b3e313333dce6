"""Sweeps survive real faults: a Ray worker node killed mid-sweep, the `w2sweep run` process killed
mid-sweep, the S3 server down for 30 s mid-sweep. After the run (and a plain re-run where the first
did not finish), every cell of the grid has exactly one result: 0 lost, 0 duplicated, 0 corrupt
(each parses through `results.read_cells`, its cell_id is its key's, its predictions read), and no
result stored before the fault was written again. The cells trained twice are counted and shown.

The audit itself is checked first, against planted faults (`faults.audit`): that one runs in `make test`;
the fault tests (marker `faults`, ~3 min each on 2 busy cores) run in `make test-faults`, which CI
(.ci/run) runs after `make test`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import warnings

import pytest

from conftest import tiny_config
from faults import (RayNodes, audit, descendants, grid_ids, kill_tree, predictions_ids, result_ids, run_sweep_to_end,
                    snapshot, start_sweep, sweep_env, tune_failures, wait_for)
from s3servers import SeaweedFS

SWEEP = "tiny"


def small_config(storage: str, **overrides) -> dict:
    """Six tiny-bert cells, one epoch each: enough that a fault lands while some are done, some run
    and some wait."""
    return tiny_config(storage, students=[dict(model="tiny-bert", name="tiny-student", epochs=1, max_length=32)],
                       **overrides)


def _storage(uri: str):
    from w2sweep.storage import Storage

    return Storage.from_uri(uri)


# ---- the audit catches what it must ----------------------------------------------------------------


def _fake_result(cell_id: str, **fields) -> bytes:
    row = dict(cell_id=cell_id, sweep=SWEEP, dataset="d", weak_supervisor="w", student="s", method="seq-sft",
               budget=4.0, spending_fraction=0.5, seed=0, n_weak=1, n_oracle=1, label_cost=1.1, c_weak=0.1,
               c_oracle=1.0, accuracy=0.5, accuracy_ci=[0.4, 0.6], auroc=0.5, auroc_ci=[0.4, 0.6],
               weak_accuracy=0.5, num_test=2, wall_seconds=1.0, status="ok", config={})
    return json.dumps(row | fields).encode()


def test_audit_catches_planted_lost_duplicated_corrupt_and_overwritten_results(tmp_path):
    from w2sweep import layout
    from w2sweep.results import write_predictions

    storage = _storage(str(tmp_path))
    ids = ["c1", "c2", "c3"]
    for cell_id in ids:
        write_predictions(storage, SWEEP, cell_id, [0, 1], [0, 1], [0.2, 0.9])
        storage.write_once(layout.result(SWEEP, cell_id), _fake_result(cell_id))
    clean = audit(storage, SWEEP, ids)
    assert clean.ok, clean.summary()
    before = snapshot(storage, SWEEP)

    time.sleep(0.05)
    storage.write_bytes(layout.result(SWEEP, "c1"), _fake_result("c1"))  # same bytes, written again
    storage.delete(layout.result(SWEEP, "c2"))  # lost
    storage.write_bytes(layout.result(SWEEP, "c3"), b'{"cell_id": "c3", "accur')  # corrupt
    storage.write_bytes(layout.result(SWEEP, "stray"), _fake_result("c1"))  # c1 twice, and a stray key
    found = audit(storage, SWEEP, ids, before)
    assert found.lost == ["c2"]
    assert found.overwritten == [layout.result(SWEEP, "c1"), layout.result(SWEEP, "c2"), layout.result(SWEEP, "c3")]
    assert "stray" in found.duplicated and "c1 x2" in found.duplicated
    assert any(line.startswith(layout.result(SWEEP, "c3")) for line in found.corrupt)
    assert any("stray.json: holds cell_id c1" in line for line in found.corrupt)
    assert not found.ok

    write_predictions(storage, SWEEP, "c1", [0, 1], [0, 1], [0.9, 0.9])  # 1 hit of 2, the result says 0.5
    assert audit(storage, SWEEP, ["c1"]).predictions_after_result == ["c1"]
    write_predictions(storage, SWEEP, "c1", [0, 1, 2, 3], [0, 1, 0, 1], [0.9, 0.1, 0.9, 0.1])
    assert "predictions of c1: 0/4 hits, the result says accuracy 0.5 of 2" in audit(storage, SWEEP, ["c1"]).corrupt
    write_predictions(storage, SWEEP, "c1", [0, 1], [0, 1], [0.2, 0.9])

    storage.write_bytes(layout.result(SWEEP, "c1"), _fake_result("c1"))  # newer than its predictions again
    storage.write_bytes(layout.result(SWEEP, "c3"), _fake_result("c3"))
    storage.delete(layout.result(SWEEP, "stray"))
    storage.write_once(layout.result(SWEEP, "c2"), _fake_result("c2"))
    storage.delete(layout.predictions(SWEEP, "c2"))  # a done cell without its predictions
    assert [line for line in audit(storage, SWEEP, ids).corrupt] == ["predictions of c2: FileNotFoundError"]


# ---- faults -----------------------------------------------------------------------------------------


def _settle(storage, ids: list[str], before, log_text: str, **counts) -> None:
    found = audit(storage, SWEEP, ids, before)
    assert found.ok, found.summary(**counts) + "\n" + log_text[-3000:]
    print(found.summary(**counts))


@pytest.mark.faults
@pytest.mark.ray
def test_worker_node_killed_mid_sweep_loses_and_duplicates_no_cell(tmp_path, write_config):
    """A head (no CPUs) and two one-CPU worker nodes; the sweep joins through RAY_ADDRESS. Once a cell
    is done, the worker node running a cell is SIGKILLed (raylet, object store, workers): Tune retries
    the trial elsewhere (max_failures), or a plain re-run on the surviving node finishes the grid."""
    store = tmp_path / "store"
    path = write_config(small_config(str(store), max_failures=2))
    ids, storage = grid_ids(path), _storage(str(store))
    cluster = RayNodes(tmp_path, workers=2)
    try:
        env = sweep_env(RAY_ADDRESS=cluster.address, **cluster.auth_env)
        log = tmp_path / "run1.log"
        proc = start_sweep(path, tmp_path, env, log)
        try:
            wait_for(lambda: len(result_ids(storage, SWEEP)) >= 1, 600, "a first cell done", proc=proc)
            busy = wait_for(lambda: [i for i in (0, 1) if cluster.worker_busy(i)], 120, "a worker node running a cell",
                            poll=0.2, proc=proc)
            victim = busy[0]
            cluster.kill(victim)
            at_kill = snapshot(storage, SWEEP)
            assert len(at_kill.results) < len(ids), "every cell was done before the kill: nothing was tested"
            in_flight = sorted(set(at_kill.running) - at_kill.cell_ids)
            proc.wait(timeout=900)
        finally:
            kill_tree(proc.pid)
        first = log.read_text(errors="replace")
        done_first = result_ids(storage, SWEEP)
        rerun = None
        if done_first != set(ids):
            rerun, second = run_sweep_to_end(path, tmp_path, env, tmp_path / "run2.log")
            first += "\n--- re-run ---\n" + second
            assert rerun == 0, first[-3000:]
        else:
            assert proc.returncode == 0, first[-3000:]
        retried = {cell: n for cell, n in tune_failures(storage, SWEEP).items() if n}  # Tune's state of the last run
        counts = dict(done_before_kill=len(at_kill.results), in_flight_at_kill=len(in_flight),
                      finished_by_first_run=len(done_first), needed_rerun=rerun is not None,
                      retrained_by_tune=sum(retried.values()),
                      retrained_by_rerun=len(set(in_flight) - done_first))
        _settle(storage, ids, at_kill, first, **counts)
        # The killed node was running a cell: that cell ran again (a Tune retry, or the re-run).
        assert counts["retrained_by_tune"] + counts["retrained_by_rerun"] >= 1, counts
        assert set(retried) <= set(in_flight), (retried, in_flight)
    finally:
        cluster.stop()


@pytest.mark.faults
@pytest.mark.ray
def test_killed_sweep_process_then_the_same_command_finishes_every_cell_once(tmp_path, write_config):
    """`w2sweep run` (its own local Ray cluster) SIGKILLed with its whole process group once a cell is
    done; the same command again finishes the grid without touching the results already there."""
    store = tmp_path / "store"
    path = write_config(small_config(str(store)))
    ids, storage = grid_ids(path), _storage(str(store))
    env = sweep_env()
    log = tmp_path / "run1.log"
    proc = start_sweep(path, tmp_path, env, log)
    try:
        wait_for(lambda: len(result_ids(storage, SWEEP)) >= 1, 600, "a first cell done", proc=proc)
        procs = descendants(proc.pid)
    finally:
        kill_tree(proc.pid, descendants(proc.pid))
    proc.wait(timeout=30)
    leftovers = [p for p in procs if p.is_running() and p.status() != "zombie"]
    assert not leftovers, f"processes of the killed sweep still alive: {leftovers}"
    at_kill = snapshot(storage, SWEEP)  # nothing writes any more: exact
    assert len(at_kill.results) < len(ids), "every cell was done before the kill: nothing was tested"
    in_flight = sorted(set(at_kill.running) - at_kill.cell_ids)  # their training is lost: they train again

    code, second = run_sweep_to_end(path, tmp_path, env, tmp_path / "run2.log")
    assert code == 0, second[-3000:]
    assert f"{len(ids) - len(at_kill.results)} cells finished, {len(at_kill.results)} already done, 0 failed" in second
    _settle(storage, ids, at_kill, second, done_before_kill=len(at_kill.results), retrained=len(in_flight),
            never_started_before_kill=len(ids) - len(at_kill.results) - len(in_flight))


@pytest.fixture
def own_seaweedfs(tmp_path):
    """A SeaweedFS of this test's own (auth on), which it stops and starts again on the same ports and data."""
    server = SeaweedFS(tmp_path / "seaweedfs")
    server.start()
    yield server
    server.stop()


OUTAGE_S = 30


def _aim_at_a_result_write(storage, proc) -> dict:
    """Wait until the outage will likely cover a cell's result write: the time a trial takes from its
    heartbeat to its result (T: the shortest of the first three cells done; the first ones also wait
    for the weak labels) is measured, then a running cell's expected end is awaited, less 10 s.
    Returns what was aimed at."""
    from w2sweep import layout

    started: dict[str, float] = {}
    took: list[float] = []
    seen: set[str] = set()

    def look():
        for cell_id in snapshot(storage, SWEEP).running:
            if cell_id not in started:
                try:
                    started[cell_id] = json.loads(storage.read_bytes(layout.running(SWEEP, cell_id)))["started"]
                except (FileNotFoundError, ValueError, KeyError):
                    pass
        done = storage.list_modified(layout.folder(SWEEP, layout.RESULTS), suffix=".json")
        for key, mtime in done.items():
            cell_id = key.rsplit("/", 1)[1].removesuffix(".json")
            if cell_id in started and cell_id not in seen:
                seen.add(cell_id)
                took.append(mtime - started[cell_id])
        running = [c for c in started if layout.result(SWEEP, c) not in done]
        return len(done) >= 3 and took and running and (running, min(took))

    running, trial_s = wait_for(look, 600, "a cell done (heartbeat seen) and another running", poll=0.3, proc=proc)
    target = max(started[c] for c in running) + trial_s - 10  # the latest-started: its end is furthest
    while time.time() < target and proc.poll() is None:
        time.sleep(0.2)
    return dict(trial_s=round(trial_s, 1))


@pytest.mark.faults
@pytest.mark.ray
def test_s3_server_down_30s_mid_sweep_loses_and_duplicates_no_cell(own_seaweedfs, tmp_path, write_config, s3_env):
    """The sweep's S3 server (SeaweedFS) stopped for 30 s once a cell is done and others run, then
    started again on the same port and data. The sweep rides it out, or a plain re-run finishes it.
    With a result-write retry (`result_write_timeout_s` in the config), no cell that trained to the
    end (its predictions stored) may be left without its result by the first run."""
    from w2sweep.config import SweepConfig

    has_retry = "result_write_timeout_s" in SweepConfig.model_fields
    server = own_seaweedfs.server
    uri = f"s3://{server.bucket}/runs-{uuid.uuid4().hex[:8]}"
    extra = dict(result_write_timeout_s=120) if has_retry else {}
    path = write_config(small_config(uri, **extra))
    env = sweep_env(**server.env())
    s3_env(server)  # this process's own looks at the bucket
    ids, storage = grid_ids(path), _storage(uri)
    log = tmp_path / "run1.log"
    proc = start_sweep(path, tmp_path, env, log)
    try:
        aim = _aim_at_a_result_write(storage, proc)
        before = snapshot(storage, SWEEP)
        own_seaweedfs.stop()
        down = time.monotonic()
        time.sleep(OUTAGE_S)
        own_seaweedfs.start()
        outage = time.monotonic() - down
        try:
            proc.wait(timeout=600)
        except Exception:
            pass  # a first run that hangs after the outage is ended here; the re-run must finish
    finally:
        kill_tree(proc.pid)
    first = log.read_text(errors="replace")
    assert len(before.results) < len(ids), "every cell was done before the outage: nothing was tested"
    done_first = result_ids(storage, SWEEP)
    # Cells that trained to the end and then could not store their outputs: predictions stored without a
    # result, or a storage error on their predictions/result key in the first run's log (each trains again).
    failed_writes = set(re.findall(rf"StorageError: storage error: \S+/{SWEEP}/(?:predictions|cells)/(\w+)\.", first))
    lost_by_first = sorted((predictions_ids(storage, SWEEP) - done_first) | failed_writes)
    rerun = None
    if done_first != set(ids):
        rerun, second = run_sweep_to_end(path, tmp_path, env, tmp_path / "run2.log")
        first += "\n--- re-run ---\n" + second
        assert rerun == 0, first[-3000:]
    counts = dict(outage_s=round(outage), **aim, done_before_outage=len(before.results),
                  running_at_outage=len(before.running), first_run_exit=proc.returncode,
                  finished_by_first_run=len(done_first), results_lost_by_first_run=len(lost_by_first),
                  retrained=len(lost_by_first),  # by a Tune retry or the re-run
                  needed_rerun=rerun is not None,
                  # trials Tune started again (an attempt that failed at the heartbeat write trained
                  # nothing; one that failed at the heartbeat delete had trained and written its result)
                  tune_retries=sum(tune_failures(storage, SWEEP).values()))
    _settle(storage, ids, before, first, **counts)
    if not has_retry:  # that one assertion skipped, the rest of the test stands: a warning, not a skip
        warnings.warn("SweepConfig has no `result_write_timeout_s` (no result-write retry yet): not asserting that "
                    f"the first run lost no trained cell's result; it lost {len(lost_by_first)}: {lost_by_first}", stacklevel=1)
        return
    assert not lost_by_first, f"trained cells whose result the first run lost to a {OUTAGE_S} s outage: {lost_by_first}"
