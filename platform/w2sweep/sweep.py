"""Run a sweep on Ray: weak labels first (Ray tasks, once per key), then every unfinished cell as a
Ray Tune trial of the plain `run_cell` function. The only module of the run path that imports Ray.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import ray
from ray import tune
from tqdm import tqdm

from w2sweep.cells import Cell, expand_cells, run_cell
from w2sweep.config import SweepConfig
from w2sweep.results import cell_key
from w2sweep.storage import Storage
from w2sweep.weak import ensure_weak_labels

# Cells resolve relative paths (local datasets) against the directory the sweep was started from;
# Tune would otherwise move each trial into its own log directory first.
_WORKER_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "TOKENIZERS_PARALLELISM": "false",
               "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class SweepReport:
    num_cells: int
    num_skipped: int  # already had a result before this run
    num_done: int  # finished in this run
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> one-line error


def _cell_trainable(config: dict, *, cells: dict[str, str], storage_uri: str) -> None:
    cell = Cell.from_json(cells[config["cell_id"]])
    result = run_cell(cell, Storage.from_uri(storage_uri))
    tune.report({"accuracy": result.accuracy, "auroc": result.auroc, "wall_seconds": result.wall_seconds})


class _Progress(tune.Callback):
    """One progress bar for the whole grid: done/total, failures in the postfix."""

    def __init__(self, total: int, initial: int):
        self.bar = tqdm(total=total, initial=initial, desc="cells", unit="cell", dynamic_ncols=True)
        self.num_failed = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.bar.update(1)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.num_failed += 1
        self.bar.set_postfix(failed=self.num_failed)
        self.bar.update(1)


def _init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local one for this process."""
    if ray.is_initialized():
        return
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None,
        runtime_env={"env_vars": _WORKER_ENV},
        logging_level=logging.WARNING,
        log_to_driver=False,  # cell logs stay in Ray's log files; the driver shows the progress bar
        include_dashboard=False,
    )


def _produce_weak_labels(config: SweepConfig, storage: Storage, cells: list[Cell]) -> None:
    """One Ray task per distinct weak-label key, all before the cells that read them."""
    needed = {cell.weak_key: cell for cell in cells}
    if not needed:
        return
    task = ray.remote(num_cpus=config.resources.cpu, num_gpus=config.resources.gpu,
                      max_retries=config.max_failures, retry_exceptions=True)(ensure_weak_labels)
    refs = [task.remote(storage, config.name, c.dataset, c.weak_supervisor, c.seed) for c in needed.values()]
    with tqdm(total=len(refs), desc="weak labels", unit="key", dynamic_ncols=True) as bar:
        while refs:
            ready, refs = ray.wait(refs, num_returns=1)
            ray.get(ready)
            bar.update(1)


def run_sweep(config: SweepConfig) -> SweepReport:
    """Run every cell of `config` that has no result yet; return what happened."""
    storage = Storage.from_uri(config.storage)
    storage.write_bytes(f"{config.name}/sweep.yaml", config_snapshot(config))
    cells = expand_cells(config)
    todo = [c for c in cells if not storage.exists(cell_key(config.name, c.cell_id))]
    report = SweepReport(num_cells=len(cells), num_skipped=len(cells) - len(todo), num_done=0)
    if not todo:
        return report
    _init_ray()
    _produce_weak_labels(config, storage, todo)
    trainable = tune.with_resources(
        tune.with_parameters(_cell_trainable, cells={c.cell_id: c.to_json() for c in todo},
                             storage_uri=config.storage),
        {"cpu": config.resources.cpu, "gpu": config.resources.gpu},
    )
    # The progress bar below is the sweep's console output; Tune's own tables would interleave with it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    progress = _Progress(total=len(cells), initial=report.num_skipped)
    tuner = tune.Tuner(
        trainable,
        param_space={"cell_id": tune.grid_search([c.cell_id for c in todo])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            # Trial state and checkpoints live under the same root: <root>/<sweep>/tune (on S3 through
            # a pyarrow S3FileSystem on the same endpoint, credentials from the same chain).
            name="tune", storage_path=storage.path(config.name),
            storage_filesystem=None if storage.is_local else storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            callbacks=[progress], verbose=0,
        ),
    )
    grid = tuner.fit()
    progress.bar.close()
    for result in grid:
        cell_id = result.config["cell_id"]
        if result.error is not None:
            message = str(result.error).strip().splitlines()[-1][:500]
            report.failed[cell_id] = message
            storage.write_bytes(f"{config.name}/failures/{cell_id}.json",
                                json.dumps({"cell_id": cell_id, "error": message}).encode())
        else:
            report.num_done += 1
    return report


def config_snapshot(config: SweepConfig) -> bytes:
    """The resolved config as run. It never holds credentials: the schema has no field for them."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
