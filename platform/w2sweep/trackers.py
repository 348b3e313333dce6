"""Experiment trackers: one MLflow and/or Weights & Biases run per finished cell, logged by the driver.

A config opts in with ``trackers: [mlflow, wandb]``; the servers come from the environment
(MLFLOW_TRACKING_URI; WANDB_MODE, WANDB_API_KEY, WANDB_DIR, WANDB_PROJECT), checked when the grid is
planned (`w2sweep.config_checks.tracker_problems`). A run's params are the cell's axes and its metrics
accuracy, AUROC, label cost, GPU-seconds and wall time, all read from the cell's stored result object,
so that a tracker shows exactly what the frontier reads. Runs are grouped by sweep: the MLflow
experiment is the sweep's name; the W&B group is too (and the project, unless WANDB_PROJECT is set).

Not Ray's `MLflowLoggerCallback`/`WandbLoggerCallback`: they log a trial's config as params, and a
trial's config is only its cell id; label cost and GPU-seconds are in the result object, not in what
a trial reports; and the W&B one starts a Ray actor per trial, a process per cell competing with the
cells for a small machine's CPUs. `CellTrackers` is a small Tune callback that logs the stored result
of each trial that completes, in one background thread so a slow server never stalls Tune's loop.

Nothing from the environment reaches a tracker: params and tags are built from the result only, MLflow
runs are made with `MlflowClient.create_run` (no source, git or user context tags), and W&B runs with
its metadata, system stats, git, code and console capture off. A tracker that fails is warned about
once and then left alone: the result objects stay the record of the sweep.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ray import tune

from w2sweep import layout
from w2sweep.config_checks import without_credentials
from w2sweep.storage import Storage, StorageError

PARAMS = ("dataset", "weak_supervisor", "student", "method", "budget", "spending_fraction", "seed",
          "n_weak", "n_oracle")
METRICS = ("accuracy", "auroc", "label_cost", "gpu_seconds", "wall_seconds")


def run_record(result: dict) -> tuple[dict, dict]:
    """(params, metrics) of one stored result object: its axes and its numbers, nothing else."""
    params = {name: result.get(name) for name in PARAMS}
    metrics = {name: float(result[name]) for name in METRICS if isinstance(result.get(name), int | float)}
    return params, metrics


class MlflowTracker:
    """Runs in the experiment named after the sweep, on the server in MLFLOW_TRACKING_URI."""

    def __init__(self, sweep: str):
        # The client retries a failing request for minutes by default; a tracker that is down is
        # given up on instead (CellTrackers), so a few quick tries are enough.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        # Else every run prints its URL (the tracking URI, with any user:password in it) to stdout,
        # across the progress bar.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        found = self.client.get_experiment_by_name(sweep)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(sweep)

    def log(self, sweep: str, cell_id: str, params: dict, metrics: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(self.experiment_id, run_name=cell_id, tags={
            "w2sweep.sweep": sweep, "w2sweep.cell_id": cell_id})
        run_id = run.info.run_id
        now = int(1000 * time.time())
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              params=[Param(k, str(v)) for k, v in params.items()],
                              tags=[RunTag("w2sweep.method", str(params.get("method")))])
        self.client.set_terminated(run_id, "FINISHED")

    def close(self) -> None:
        pass


# W&B records a host's metadata (command line, git remote, environment details), system metrics and the
# console by default; none of it is about the cell, and a git remote or a printed line can hold a token.
_WANDB_SETTINGS = dict(x_disable_meta=True, x_disable_stats=True, x_disable_machine_info=True, disable_git=True,
                       save_code=False, disable_code=True, disable_job_creation=True, console="off",
                       x_save_requirements=False, silent=True)


class WandbTracker:
    """Runs in the sweep's group (project: WANDB_PROJECT, else the sweep); offline under WANDB_DIR
    when WANDB_MODE=offline."""

    def __init__(self, sweep: str):
        import wandb

        self.wandb = wandb
        self.project = os.environ.get("WANDB_PROJECT") or sweep

    def log(self, sweep: str, cell_id: str, params: dict, metrics: dict) -> None:
        run = self.wandb.init(project=self.project, group=sweep, name=cell_id, job_type=str(params.get("method")),
                              config=params | {"cell_id": cell_id},
                              settings=self.wandb.Settings(**_WANDB_SETTINGS), reinit="create_new")
        try:
            run.log(metrics)
        finally:
            run.finish()

    def close(self) -> None:
        self.wandb.teardown()


TRACKERS = {"mlflow": MlflowTracker, "wandb": WandbTracker}


class CellTrackers(tune.Callback):
    """Logs each completed trial's stored result to every tracker of `names`, in one background
    thread, in the order trials complete. Failed cells have no result and are not logged."""

    def __init__(self, names: list[str], storage: Storage, sweep: str):
        self.names, self.storage, self.sweep = list(names), storage, sweep
        self.trackers: dict = {}
        self.pool: ThreadPoolExecutor | None = None  # made in setup: a callback is pickled with the Tuner

    def setup(self, **info) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="w2sweep-trackers")
        self.pool.submit(self._open)

    def _open(self) -> None:
        for name in self.names:
            try:
                self.trackers[name] = TRACKERS[name](self.sweep)
            except Exception as e:  # noqa: BLE001 - any tracker failure leaves the sweep running
                self._warn(name, e)

    def _warn(self, name: str, error: BaseException) -> None:
        """One line on stderr; the tracker logs nothing more in this run. The message is cut to its
        first line (a server's error page is no log line), a URL's user:password masked."""
        first = without_credentials((str(error).strip().splitlines() or [""])[0])[:300]
        print(f"warning: tracker {name} stopped logging: {type(error).__name__}: {first}", file=sys.stderr)
        self.trackers.pop(name, None)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if self.pool is not None:
            self.pool.submit(self._log, trial.config["cell_id"])

    def _log(self, cell_id: str) -> None:
        try:
            result = json.loads(self.storage.read_bytes(layout.result(self.sweep, cell_id)))
        except (OSError, StorageError, ValueError) as e:
            print(f"warning: trackers: result of cell {cell_id} unreadable ({type(e).__name__})", file=sys.stderr)
            return
        params, metrics = run_record(result)
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.log(self.sweep, cell_id, params, metrics)
            except Exception as e:  # noqa: BLE001
                self._warn(name, e)

    def on_experiment_end(self, trials, **info) -> None:
        """Waits for every queued run to be logged, then closes the trackers."""
        if self.pool is None:
            return
        self.pool.shutdown(wait=True)
        self.pool = None
        for tracker in self.trackers.values():
            try:
                tracker.close()
            except Exception:  # noqa: BLE001, S110 - closing what may already be gone
                pass


def tracker_callbacks(names: list[str], storage: Storage, sweep: str) -> list[tune.Callback]:
    """The Tune callbacks for a config's `trackers`: none when it has none (mlflow and wandb are
    then never imported)."""
    return [CellTrackers(names, storage, sweep)] if names else []
