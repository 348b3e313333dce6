"""Faults through real Ray Tune on a local cluster: a one-worker cell whose process dies mid-training
resumes from its last checkpoint when the sweep is run again (`--retry-failed` runs only it), and
ends with an uninterrupted cell's result; a failed cell is one console line, its traceback is in the
run's log file."""

import json
import os
import subprocess
import sys

import pytest

from conftest import broken_model_dir, tiny_config
from test_surviving import _config
from w2sweep import layout

pytestmark = pytest.mark.ray


def _killing(cell_id: str, marker: str):
    """A `run` whose trial process exits (as if its machine died) at the end of the weak stage's
    second epoch of cell `cell_id`, before that validation's checkpoint. Defined inside a function,
    so that Ray pickles it by value (the workers cannot import this test module)."""

    def run(cell, storage, *, claims, hooks, **options):
        import os

        from w2sweep.cells import run_cell

        if cell.cell_id == cell_id:
            save = hooks.on_epoch_end

            def on_epoch_end(write, metrics):
                if (metrics["stage"], metrics["epoch"]) == (0, 2):
                    open(marker, "a").close()
                    os._exit(1)
                save(write, metrics)

            hooks.on_epoch_end = on_epoch_end
        return run_cell(cell, storage, claims=claims, hooks=hooks, **options)

    return run


def _tune_results(storage, sweep: str, cell_id: str) -> list[dict]:
    """What the trials of `cell_id` last reported to Tune, from the newest experiment state of the sweep
    (`<sweep>/tune/experiment_state-*.json`: each trial's run metadata holds its last result)."""
    states = sorted(k for k in storage.list(layout.folder(sweep, layout.TUNE), suffix=".json")
                    if k.rsplit("/", 1)[1].startswith("experiment_state-"))
    found = []
    for trial, runtime in json.loads(storage.read_bytes(states[-1]))["trial_data"]:
        if json.loads(trial)["config"]["cell_id"] == cell_id:
            found.append(json.loads(runtime)["last_result"])
    return found


def test_a_killed_cell_resumes_on_retry_failed_and_ends_with_the_uninterrupted_result(tmp_path, local_ray, capsys):
    from w2sweep.cells import run_cell
    from w2sweep.config import parse_config
    from w2sweep.grid import expand_cells
    from w2sweep.storage import Storage
    from w2sweep.sweep import run_sweep

    config = parse_config(_config(tmp_path / "store", spending_fractions=[0.5, 1.0], max_failures=0))
    killed, other = sorted(expand_cells(config), key=lambda c: c.spending_fraction)
    storage = Storage.from_uri(config.storage)
    marker = tmp_path / "killed"
    with capsys.disabled():  # Tune pickles the progress bar with the stream it writes to
        first = run_sweep(config, run=_killing(killed.cell_id, str(marker)))
    assert marker.exists() and first.num_done == 1 and list(first.failed) == [killed.cell_id]
    assert storage.exists(layout.failure(config.name, killed.cell_id))
    beat = json.loads(storage.read_bytes(layout.running(config.name, killed.cell_id)))  # its process died
    assert beat["started"] <= beat["updated"] and beat["cell_id"] == killed.cell_id
    assert json.loads(storage.read_bytes(layout.checkpoint_latest(config.name, killed.cell_id)))["epoch"] == 1

    with capsys.disabled():
        second = run_sweep(config, retry_failed=True)
    assert (second.num_skipped, second.num_done, second.failed) == (1, 1, {})
    assert not storage.exists(layout.failure(config.name, killed.cell_id))
    assert storage.list(layout.folder(config.name, layout.RUNNING)) == []
    assert not (tmp_path / "store" / config.name / "checkpoints" / killed.cell_id).exists()
    (resumed,) = [r for r in _tune_results(storage, config.name, killed.cell_id) if "num_steps" in r]
    steps_per_epoch = 4  # ceil(60 weak labels / 16)
    assert resumed["resumed"] and resumed["num_steps_run"] == resumed["num_steps"] - steps_per_epoch

    steady = run_cell(killed, Storage.from_uri(str(tmp_path / "steady")))
    stored = json.loads(storage.read_bytes(killed.result_key))
    assert stored["accuracy"] == steady.accuracy
    assert stored["auroc"] == pytest.approx(steady.auroc, abs=1e-6)


def test_a_failed_cell_is_one_console_line_and_its_traceback_is_in_the_runs_log_file(tmp_path, write_config):
    broken_model_dir(tmp_path / "broken-model")  # fails at run time, not at validate
    storage = tmp_path / "store"
    path = write_config(tiny_config(
        str(storage), budgets=[4], spending_fractions=[0.5], max_failures=1,
        students=[dict(model="tiny-bert", name="tiny-student", epochs=1, max_length=32),
                  dict(model=str(tmp_path / "broken-model"), name="broken")]))

    def w2sweep(*args):
        return subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", *args, str(path)], cwd=tmp_path,
                              env=dict(os.environ, RAY_ADDRESS=""), capture_output=True, text=True, timeout=900)

    done = w2sweep()
    assert done.returncode == 1, done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert "1 cells finished, 0 already done, 1 failed (of 2)" in done.stdout
    assert "Traceback" not in console and "Token authentication" not in console, console[-3000:]
    failed_lines = [line for line in done.stdout.splitlines() if line.startswith("cell ") and " failed: " in line]
    assert len(failed_lines) == 1 and "(broken, seq-sft, budget 4)" in failed_lines[0]
    (log,) = (storage / "tiny" / "logs").glob("run-*.log")
    assert f"tracebacks of failed attempts (if any): {log}" in done.stdout
    text = log.read_text()
    assert text.count("Trial task failed") == 2  # two attempts (max_failures: 1), each with its traceback
    assert "Traceback" in text

    again = w2sweep("--retry-failed")  # only the failed cell runs again (and fails again)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "0 cells finished, 1 already done, 1 failed (of 2)" in again.stdout


_PROBE = """
import os, psutil, ray
from w2sweep.storage import in_storage_env
from w2sweep.sweep import _init_ray, storage_env

_init_ray()
assert os.environ["AWS_SECRET_ACCESS_KEY"] == "{secret}"  # the driver keeps its own

@ray.remote
def environment():
    return dict(os.environ)

@ray.remote
def with_storage_env(env):
    return in_storage_env(env, lambda: os.environ.get("AWS_SECRET_ACCESS_KEY"))

seen = [p.environ() for p in psutil.Process().children(recursive=True)] + [ray.get(environment.remote())]
print("processes", len(seen), "with secret", sum("{secret}" in str(e) for e in seen))
print("task gets it as an argument:", ray.get(with_storage_env.remote(storage_env())) == "{secret}")
"""


def test_a_local_clusters_processes_start_without_the_drivers_storage_secrets(tmp_path):
    """Raylet, GCS, workers: none inherits AWS_* secrets; a trial gets them as a task argument
    (`storage_env`, tests/test_storage_sweep_s3.py runs cells that read and write S3 that way)."""
    secret = "w2sweep-test-secret-" + os.urandom(6).hex()
    env = dict(os.environ, RAY_ADDRESS="", AWS_ACCESS_KEY_ID="w2sweep-test-key", AWS_SECRET_ACCESS_KEY=secret)
    done = subprocess.run([sys.executable, "-c", _PROBE.replace("{secret}", secret)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    processes = done.stdout.split("processes ")[1].split()
    assert int(processes[0]) >= 3 and processes[3] == "0", done.stdout
    assert "task gets it as an argument: True" in done.stdout
