"""Experiment trackers (`trackers: [mlflow, wandb]`): the config field, what a run holds, and a real
sweep logging to them (the same sweep checks the driver's waiting count, tests/test_waiting.py the rest).

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

from conftest import free_port, tiny_config
from w2sweep.cli import main
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells
from w2sweep.storage import Storage
from w2sweep.trackers import METRICS, PARAMS, CellTrackers, MlflowTracker, run_record

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


def test_a_tracker_that_cannot_reach_its_server_warns_without_the_password(tmp_path, tracker_env, capsys):
    tracker_env.setenv("MLFLOW_TRACKING_URI", f"http://w2s:planted-pw@127.0.0.1:{free_port()}")
    tracker_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    callback = CellTrackers(["mlflow"], Storage.from_uri(str(tmp_path)), "s")
    callback._open()
    assert callback.trackers == {}
    err = capsys.readouterr().err
    assert err.startswith("warning: tracker mlflow stopped logging: ") and len(err.splitlines()) == 1
    assert "planted-pw" not in err


# ---- a real sweep, a real MLflow server, W&B offline ----------------------------------------------

@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a SQLite store and a local artifact root; its URI once it
    answers /health (a cold start takes about a minute on a 2-core machine)."""
    root = tmp_path / "mlflow"
    root.mkdir()
    port = free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--default-artifact-root", str(root / "artifacts"),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not answer in 240 s"
            time.sleep(1)
        yield uri, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``): a LevelDB-style log of 32 KiB blocks,
    each record a protobuf `Record` in chunks with a 7-byte header (CRC, length, type), after a
    7-byte file header (``:W&B``, magic, version)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, records, chunks = 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def wandb_run(path: Path) -> dict:
    """An offline run's project, group, name, config and final summary, read from its records."""
    def items(update):
        return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in update}

    run, summary = {}, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = dict(project=record.run.project, group=record.run.run_group, name=record.run.display_name,
                       config=items(record.run.config.update))
        elif kind == "summary":
            summary |= items(record.summary.update)
    return run | {"summary": summary}


def _watching_progress(out: str):
    """A `run` for the trials: `run_cell`, after saving the driver's progress object as it is while
    this cell runs (once it counts a running cell). Defined inside a function, so Ray pickles it by value."""

    def run(cell, storage, *, claims, hooks=None, **options):  # write_timeout_s=...: passed through
        from w2sweep import layout
        from w2sweep.cells import run_cell

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                counts = json.loads(storage.read_bytes(layout.progress(cell.sweep)))
                if counts["running"] >= 1:
                    with open(f"{out}/{cell.cell_id}.json", "w") as f:
                        json.dump(counts, f)
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        return run_cell(cell, storage, claims=claims, hooks=hooks, **options)

    return run


def _all_files_text(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def _assert_mlflow_runs(uri: str, results: dict) -> None:
    """The sweep's experiment holds one finished run per cell, with the stored params and metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.data.tags["w2sweep.cell_id"] for r in runs) == sorted(results)
    for run in runs:
        stored = results[run.data.tags["w2sweep.cell_id"]]
        assert run.info.status == "FINISHED" and run.info.run_name == stored["cell_id"]
        assert run.data.params == {k: str(stored[k]) for k in PARAMS}
        assert run.data.metrics == pytest.approx({k: float(stored[k]) for k in METRICS})


def _assert_wandb_runs(root: Path, results: dict) -> None:
    """One offline run file per cell, in the sweep's project and group, config and summary as stored."""
    files = sorted(root.rglob("run-*.wandb"))
    logged = {r["name"]: r for r in map(wandb_run, files)}
    assert len(files) == 3 and sorted(logged) == sorted(results)
    for cell_id, run in logged.items():
        stored = results[cell_id]
        assert (run["project"], run["group"]) == ("tiny", "tiny")
        assert {k: run["config"][k] for k in PARAMS} == {k: stored[k] for k in PARAMS}
        assert {k: run["summary"][k] for k in METRICS} == pytest.approx({k: float(stored[k]) for k in METRICS})


@pytest.mark.ray
def test_a_sweep_logs_one_run_per_cell_to_mlflow_and_wandb_and_no_secret(
        tmp_path, local_ray, mlflow_server, tracker_env, capsys):
    from mlflow.tracking import MlflowClient

    from w2sweep.sweep import run_sweep

    uri, mlflow_root = mlflow_server
    for name, value in SECRETS.items():
        tracker_env.setenv(name, value)
    tracker_env.setenv("MLFLOW_TRACKING_URI", uri)
    tracker_env.setenv("WANDB_MODE", "offline")
    tracker_env.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    (tmp_path / "wandb").mkdir()
    (tmp_path / "seen").mkdir()
    config = parse_config(tiny_config(str(tmp_path / "store"), budgets=[16], spending_fractions=[0, 0.5, 1],
                                      trackers=["mlflow", "wandb"]))
    with capsys.disabled():  # Tune pickles the progress bar with the stream it writes to
        report = run_sweep(config, run=_watching_progress(str(tmp_path / "seen")))
    assert (report.num_done, report.failed) == (3, {})
    storage = Storage.from_uri(config.storage)
    results = {r["cell_id"]: r for r in (json.loads(p.read_bytes()) for p in (tmp_path / "store/tiny/cells").glob("*.json"))}
    assert len(results) == 3

    _assert_mlflow_runs(uri, results)
    _assert_wandb_runs(tmp_path / "wandb", results)

    # No planted secret in the MLflow store, its artifacts, or anything W&B wrote
    written = _all_files_text(mlflow_root) + _all_files_text(tmp_path / "wandb")
    for name, value in SECRETS.items():
        assert value.encode() not in written, name

    # While cells ran, the driver's progress object counted them; it is gone after the sweep
    seen = [json.loads(p.read_text()) for p in (tmp_path / "seen").glob("*.json")]
    assert seen and all(s["cells"] == 3 and 1 <= s["running"] <= 2 and s["running"] + s["waiting"] <= 3
                        for s in seen), seen
    assert any(s["waiting"] >= 1 for s in seen), seen  # 3 one-CPU cells on 2 CPUs: one waited
    assert not storage.exists("tiny/progress.json")

    # A tracking URI's password is never printed (MLflow prints each run's URL by default)
    tracker_env.setenv("MLFLOW_TRACKING_URI", uri.replace("//", "//w2s:planted-mlflow-pw@"))
    MlflowTracker("other").log("other", "c1", *run_record(results[next(iter(results))]))
    printed = capsys.readouterr()
    assert "planted-mlflow-pw" not in printed.out + printed.err
    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("other").experiment_id])) == 1
