"""Ray Train for the cells whose student trains on several workers (``num_workers > 1``).

The cell's Tune trial (`w2sweep.sweep`) asks almost nothing of the cluster itself and drives one Ray
Train V2 `TorchTrainer` per cell; each of its workers runs the same plain `run_cell` as a one-worker
cell, in a torch.distributed process group (gloo on CPUs, NCCL on GPUs), so `w2sweep.train` trains
through DeepSpeed and only rank 0 writes the result:

    Tune trial (memory only) -> TorchTrainer(num_workers x {CPU, GPU}) -> each worker: run(cell, storage, claims, hooks)

`run` is `run_cell` unless the caller passes another (a test that kills a worker wraps it). Rank 0
makes sure of the cell's prerequisites first, under the claims of the sweep's run, on behalf of the
trial; the other ranks wait until they are stored (`w2sweep.prerequisites`).

At every validation the workers save the training state (DeepSpeed's per-rank shards plus the loop's
own state) and report it with `ray.train.report`; Ray Train merges the ranks' files into one checkpoint
under ``<storage>/<sweep>/checkpoints/<cell_id>/``. A worker that dies makes Ray Train restart the worker
group (`FailureConfig(max_failures)`), and the new workers resume from the last checkpoint instead of
from scratch; a sweep re-run after an interruption finds the same run by name and resumes it too.
The checkpoints of a finished cell are deleted: its result object is what counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from w2sweep import layout
from w2sweep.cells import RESULT_WRITE_TIMEOUT_S, run_cell
from w2sweep.grid import Cell, worker_resources
from w2sweep.config import Resources
from w2sweep.prerequisites import KeyClaims, NoClaims
from w2sweep.raycompat import propagate_to_train_controller
from w2sweep.storage import Storage
from w2sweep.train import TrainHooks

_FINAL = "final_metrics.json"  # in the last checkpoint of a finished cell


def checkpoints_key(sweep: str) -> str:
    """Where the Ray Train runs of a sweep keep their checkpoints: one folder per cell id."""
    return layout.checkpoints(sweep)


class RayTrainHooks(TrainHooks):
    """`TrainHooks` on Ray Train: each validation's state is reported as a checkpoint; after a restart
    the last reported one is downloaded once and handed to the loop."""

    checkpoints = True

    def __init__(self):
        super().__init__()
        self._checkpoint = ray.train.get_checkpoint()
        self._local: str | None = None
        self.resumed = self._checkpoint is not None

    def resume_dir(self) -> str | None:
        if self._checkpoint is None:
            return None
        if self._local is None:
            self._local = tempfile.mkdtemp(prefix="w2sweep-resume-")
            self._checkpoint.to_directory(self._local)
        return self._local

    def on_epoch_end(self, save, metrics: dict) -> None:
        with tempfile.TemporaryDirectory(prefix="w2sweep-checkpoint-") as tmp:
            save(tmp)
            ray.train.report(dict(metrics), checkpoint=Checkpoint.from_directory(tmp))

    def final_metrics(self) -> dict | None:
        """The metrics of the finished cell when the last checkpoint is the final report's."""
        directory = self.resume_dir()
        final = Path(directory, _FINAL) if directory else None
        return json.loads(final.read_text()) if final is not None and final.exists() else None

    def cleanup(self) -> None:
        if self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)


def _train_loop_per_worker(config: dict) -> None:
    os.environ.update(ray.get(config["env"]))
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(ray.train.torch.get_device())
    cell = Cell.from_json(config["cell"])
    hooks = RayTrainHooks()
    try:
        final = hooks.final_metrics()  # a restart after the last report has nothing left to train
        if final is None:
            result = config["run"](cell, Storage.from_uri(config["storage_uri"]), claims=config["claims"], hooks=hooks,
                                   write_timeout_s=config["write_timeout_s"])
            stages = [s for s in hooks.stages if s is not None]
            final = {
                "accuracy": result.accuracy, "auroc": result.auroc, "wall_seconds": result.wall_seconds,
                "num_steps": sum(s["num_steps"] for s in stages),
                "num_steps_run": sum(s["num_steps_run"] for s in stages),
                "train_losses": [s["train_losses"] for s in stages],
                "resumed": hooks.resumed,
            }
    finally:
        hooks.cleanup()
    # Ray Train's result carries the metrics of the last *checkpoint*: the final report is one, too.
    with tempfile.TemporaryDirectory(prefix="w2sweep-final-") as tmp:
        rank0 = ray.train.get_context().get_world_rank() == 0
        if rank0:
            Path(tmp, _FINAL).write_text(json.dumps(final))
        ray.train.report(final, checkpoint=Checkpoint.from_directory(tmp) if rank0 else None)


@contextlib.contextmanager
def _pinned_ray_address():
    """Ray Train's placement-group cleaner (a detached actor the controller starts) finds its cluster
    by auto-detection: RAY_ADDRESS, else the latest ``ray start`` on the machine. Where several Ray
    clusters share a machine, that can be another cluster, on which this run's controller does not
    exist; the cleaner then removes this run's placement group, which kills its workers. Pin the
    address for the controller, and through its runtime env for the cleaner, while the trainer runs.
    (Ray 2.60 propagates a fixed set of variables to the controller; RAY_ADDRESS is added to it.)"""
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    propagate_to_train_controller("RAY_ADDRESS")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous


def run_cell_on_workers(cell: Cell, storage_uri: str, *, resources: Resources, max_failures: int,
                        env: dict[str, str] | None = None, keep_checkpoints: bool = False,
                        claims: KeyClaims = NoClaims(), run=run_cell,
                        write_timeout_s: float = RESULT_WRITE_TIMEOUT_S) -> dict:
    """Train and evaluate `cell` on `cell.student.num_workers` Ray Train workers, each of which calls
    `run(cell, storage, claims=claims, hooks=..., write_timeout_s=...)` (rank 0 makes sure of the prerequisites under
    `claims`, `w2sweep.prerequisites`); return the final metrics (accuracy, auroc, wall_seconds,
    num_steps, num_steps_run, train_losses per stage, resumed).

    `env` (storage settings such as AWS_*) reaches the workers through the object store, never a
    runtime env or a config that Ray would log. Raises ray.train.TrainingFailedError when the workers
    failed more than `max_failures` times."""
    storage = Storage.from_uri(storage_uri)
    student = cell.student
    per_worker = worker_resources(student, resources)
    use_gpu = per_worker["GPU"] > 0
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"cell": cell.to_json(), "storage_uri": storage_uri, "env": ray.put(env or {}),
                           "claims": claims, "run": run, "write_timeout_s": write_timeout_s},
        scaling_config=ScalingConfig(num_workers=student.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker if use_gpu else {"CPU": per_worker["CPU"]}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=cell.cell_id, storage_path=storage.path(checkpoints_key(cell.sweep)),
            storage_filesystem=None if storage.is_local else storage.filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    with _pinned_ray_address():
        result = trainer.fit()
    if not keep_checkpoints:
        try:
            storage.filesystem.delete_dir(storage.path(layout.checkpoints(cell.sweep, cell.cell_id)))
        except OSError:
            pass  # leftovers cost space, not correctness: the result object marks the cell done
    return dict(result.metrics)
