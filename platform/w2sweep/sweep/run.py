"""`run_sweep`: every unfinished cell of a config as a Ray Tune trial, and what the run did.

A trial runs its cell with `run` (by default `w2sweep.cells.run_cell`) in its own process, or, for a
student on several workers, drives a Ray Train run (`run_on_workers`, by default
`w2sweep.distributed.run_cell_on_workers`) whose workers each call `run`. Either way `run` gets the
run's claims (`w2sweep.sweep.prerequisites`) and makes sure of the cell's prerequisites first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import ray
from ray import tune

from w2sweep import layout
from w2sweep.config import Resources, SweepConfig
from w2sweep.grid import Cell, expand_cells, uses_ray_train, worker_resources
from w2sweep.results import cell_key
from w2sweep.storage import Storage
from w2sweep.sweep.cluster import ClusterError, _init_ray, keep_credentials_out_of_runtime_envs, storage_env
from w2sweep.sweep.prerequisites import prerequisites_to_compute, start_claims, start_order, stop_claims, trial_claims
from w2sweep.sweep.heartbeat import Heartbeat
from w2sweep.sweep.logs import announce, ray_logs_in_file, run_log_path
from w2sweep.sweep.placement import refuse_unplaceable
from w2sweep.sweep.progress import Progress, one_line
from w2sweep.trackers import tracker_callbacks

log = logging.getLogger(__name__)

# What the trial of a Ray Train cell reserves: it only drives the TorchTrainer, whose workers reserve
# their own CPUs/GPUs. Memory, not a CPU fraction: drivers holding 0.01 CPU each would leave a 2-CPU
# machine short of the 2 whole CPUs a 2-worker group needs, and wait forever (Tune refuses an
# all-zero request).
DRIVER_MEMORY_BYTES = 256 * 2**20
_METRICS = ("accuracy", "auroc", "wall_seconds")
_TRAIN_METRICS = ("num_steps", "num_steps_run", "resumed")
EXPERIMENT_STATE_PERIOD_S = 3600  # seconds between Tune's experiment-state saves (and uploads) in a run


@dataclass
class SweepReport:
    num_cells: int
    num_skipped: int  # already had a result before this run
    num_done: int  # finished in this run
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> one-line error


def run_cell(cell, storage, **kwargs):
    """`w2sweep.cells.run_cell`, imported in the process that runs the cell: torch, transformers and
    DeepSpeed stay out of the driver."""
    from w2sweep.cells import run_cell

    return run_cell(cell, storage, **kwargs)


def run_cell_on_workers(cell, storage_uri, **kwargs) -> dict:
    """`w2sweep.distributed.run_cell_on_workers`, imported in the trial that drives it."""
    from w2sweep.distributed import run_cell_on_workers

    return run_cell_on_workers(cell, storage_uri, **kwargs)


def running_key(sweep: str, cell_id: str) -> str:
    """The heartbeat a cell's trial holds while it runs: written at start, deleted at the end."""
    return layout.running(sweep, cell_id)


# Each run's cell table, by the ObjectRef it travels under: fetched once per trial process.
_TABLES: dict[str, dict[str, str]] = {}


class SharedCells(Mapping):
    """{cell id: cell JSON} of a run, put in Ray's object store once by the driver; pickled, it is only
    that ObjectRef, and a trial process fetches the table at its first lookup.

    Why: `tune.with_parameters` fetches and unpickles every parameter at every trial a process runs,
    and the cells of a 10,000-cell run are 21 MB: passed as a dict, each trial's start cost O(cells)
    (4.6 cells/s at 10,000 cells against ~13 at 2,000, bench/scale.py)."""

    def __init__(self, cells: dict[str, str]):
        self._ref = ray.put(cells)

    def _table(self) -> dict[str, str]:
        key = self._ref.hex()
        if key not in _TABLES:
            _TABLES.clear()  # an earlier run's, in a process Tune kept
            _TABLES[key] = ray.get(self._ref)
        return _TABLES[key]

    def __getitem__(self, cell_id: str) -> str:
        return self._table()[cell_id]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def _cell_trainable(config: dict, *, cells: Mapping[str, str], storage_uri: str, env: dict[str, str],
                    resources: dict, max_failures: int, write_timeout_s: float, claims_actor, run,
                    run_on_workers) -> None:
    """One cell: `run` right here, or, for a student on several workers, `run_on_workers`, whose
    workers each call `run`; this trial then only drives and waits. Either way its heartbeat is in
    storage while it runs (`w2sweep.sweep.heartbeat`), and its training resumes from its last
    checkpoint where an earlier attempt left one."""
    os.environ.update(env)
    cell = Cell.from_json(cells[config["cell_id"]])
    storage = Storage.from_uri(storage_uri)
    if storage.exists(cell.result_key):
        # An earlier attempt stored the result and then failed (a lost actor, a report that never
        # arrived): Tune retries it, but a finished cell is never trained again.
        stored = json.loads(storage.read_bytes(cell.result_key))
        tune.report({k: stored[k] for k in _METRICS})
        return
    claims = trial_claims(claims_actor)
    with Heartbeat(storage, running_key(cell.sweep, cell.cell_id), cell_id=cell.cell_id):
        if uses_ray_train(cell.student):
            metrics = run_on_workers(cell, storage_uri, resources=Resources(**resources), max_failures=max_failures,
                                     env=env, claims=claims, run=run, write_timeout_s=write_timeout_s)
        else:
            metrics = _run_here(cell, storage, claims=claims, run=run, write_timeout_s=write_timeout_s)
    tune.report({k: metrics[k] for k in _METRICS} | {k: metrics[k] for k in _TRAIN_METRICS if k in metrics})


def _run_here(cell: Cell, storage: Storage, *, claims, run, write_timeout_s: float) -> dict:
    """A one-worker cell in this trial, checkpointed at each validation in the sweep's storage
    (`w2sweep.sweep.checkpoints`): a killed attempt loses at most one validation interval. Its
    checkpoints are deleted once the result is stored."""
    from w2sweep.sweep.checkpoints import StorageHooks  # imports torch: in the trial, not the driver

    hooks = StorageHooks(storage, cell.sweep, cell.cell_id)
    try:
        result = run(cell, storage, claims=claims, hooks=hooks, write_timeout_s=write_timeout_s)
    finally:
        hooks.cleanup()
    hooks.discard()
    stages = [s for s in hooks.stages if s is not None]
    return {name: getattr(result, name) for name in _METRICS} | dict(
        num_steps=sum(s["num_steps"] for s in stages), num_steps_run=sum(s["num_steps_run"] for s in stages),
        resumed=hooks.resumed)


def _trial_resources(todo: list[Cell], default: Resources):
    """Tune's per-trial request: a one-worker cell trains in its trial, with the student's per-worker
    resources where it sets them, else the sweep's `resources`.

    Computed here, one bundle per student shared by its cells: Tune pickles this function into the
    trainable's actor class, which every trial process loads, and a closure over the cells' JSON made
    that class 32 MiB at 10,000 cells (bench/scale.py); this one holds a cell id and a reference each."""
    per_student: dict[str, dict] = {}
    bundles = {}
    for cell in todo:
        student = cell.student
        if student.label not in per_student:
            need = ({"memory": DRIVER_MEMORY_BYTES} if uses_ray_train(student)
                    else {k: v for k, v in worker_resources(student, default).items() if v})
            per_student[student.label] = need
        bundles[cell.cell_id] = per_student[student.label]

    def request(config: dict) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory([bundles[config["cell_id"]]])

    return request


def _max_concurrent_cells(todo: list[Cell], default: Resources) -> int | None:
    """With Ray Train cells, at most as many trials as the cluster's CPUs could run at once: their
    drivers reserve no CPU, so nothing else would stop Tune from starting every one of them (each a
    process, each a Train controller waiting for its workers). None without Ray Train cells."""
    if not any(uses_ray_train(c.student) for c in todo):
        return None
    per_cell = [worker_resources(c.student, default)["CPU"] * c.student.num_workers for c in todo]
    return max(1, int(ray.cluster_resources().get("CPU", 1) // min(per_cell)))


def _largest_first(todo: list[Cell], default: Resources) -> list[Cell]:
    """Cells in the order Tune starts them: most GPUs (then CPUs) per cell first, in `todo`'s order
    within (`start_order`'s).
    The trials of big (Ray Train) cells then start first, and their processes are up and waiting for
    workers when GPUs come free, instead of starting cold after the last small cell while the GPUs
    idle (bench/packing.py, 24 one-GPU + 8 four-GPU cells on 2 x 4 GPUs: GPU allocation while cells
    were pending rose from 78% to 98%)."""
    def size(cell: Cell) -> tuple[float, float]:
        need = worker_resources(cell.student, default)
        return -need["GPU"] * cell.student.num_workers, -need["CPU"] * cell.student.num_workers

    return sorted(todo, key=size)


def run_sweep(config: SweepConfig, *, cells: list[Cell] | None = None, retry_failed: bool = False,
              run=run_cell, run_on_workers=run_cell_on_workers) -> SweepReport:
    """Run every cell of `config` that has no result yet (failed ones included), or with
    `retry_failed` only those that have a failure object; return what happened.

    `run(cell, storage, *, claims, hooks=None, write_timeout_s) -> CellResult` is what every trial
    and every Ray Train worker calls for a cell; `run_on_workers(cell, storage_uri, *, resources,
    max_failures, env, claims, run, write_timeout_s) -> metrics` is what the trial of a multi-worker
    cell calls. Both must be picklable by reference or by value (they travel to the trials); a
    benchmark passes stand-ins (bench/packing.py); a test kills a worker with a `run` that wraps
    `run_cell` (tests/test_distributed.py, tests/test_surviving.py).
    `cells`: only these cells of the grid (the adaptive search's rounds); unset, with `search:
    adaptive`, the search chooses them (`w2sweep.sweep.adaptive`).

    Ray's own log lines (start-up warnings, a traceback per failed attempt) go to a log file whose
    path is printed once (`w2sweep.sweep.logs`); the console shows the progress bar and one line per
    failed cell."""
    if cells is None and config.search == "adaptive":
        from w2sweep.sweep.adaptive import run_adaptive

        return run_adaptive(config, run_sweep, run=run, run_on_workers=run_on_workers)
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config) if cells is None else cells
    todo = [c for c in cells if not storage.exists(cell_key(config.name, c.cell_id))]
    if retry_failed:
        failed = set(storage.list(layout.folder(config.name, layout.FAILURES), suffix=".json"))
        todo = [c for c in todo if layout.failure(config.name, c.cell_id) in failed]
    report = SweepReport(num_cells=len(cells), num_skipped=len(cells) - len(todo), num_done=0)
    if not todo:
        storage.write_bytes(layout.sweep_yaml(config.name), config_snapshot(config))
        return report
    with ray_logs_in_file(run_log_path(storage, config.name)) as log_path:
        # first: a run that cannot reach its cluster, or whose cluster can never hold some of its
        # cells (ClusterError), writes nothing
        started_here = _init_ray(
            keep_credentials=not storage.is_local and any(uses_ray_train(c.student) for c in todo))
        try:
            refuse_unplaceable(config, todo, started_here=started_here)
        except ClusterError:
            ray.shutdown()
            raise
        announce(log_path)
        storage.write_bytes(layout.sweep_yaml(config.name), config_snapshot(config))
        keep_credentials_out_of_runtime_envs()
        missing = {need.key for need in prerequisites_to_compute(storage, todo)}
        claims = start_claims(missing)
        todo = start_order(todo, missing)
        progress = Progress(total=len(cells), initial=report.num_skipped, cells=cells, todo=todo,
                            resources=config.resources, storage=storage)
        trainable = tune.with_parameters(
            _cell_trainable, cells=SharedCells({c.cell_id: c.to_json() for c in todo}), storage_uri=config.storage,
            env=storage_env(), resources=config.resources.model_dump(), max_failures=config.max_failures,
            write_timeout_s=config.result_write_timeout_s, claims_actor=claims, run=run,
            run_on_workers=run_on_workers)
        with _no_metrics_files_warning():
            grid = _tuner(config, storage, todo, trainable, progress).fit()
        stop_claims(claims)
        progress.bar.close()
    _record_outcomes(config, storage, todo, grid, report)
    return report


def _tuner(config: SweepConfig, storage: Storage, todo: list[Cell], trainable, progress: Progress) -> tune.Tuner:
    """One Tune trial per cell of `todo`, biggest first, each with its cell's resources."""
    # The progress bar is the sweep's console output; Tune's own tables would interleave with it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # None of Tune's per-trial loggers: a cell's metrics are in its result object, and `_record_outcomes`
    # reads only each trial's config and error, which the result grid holds in memory. Each logger's
    # files sit in the driver's staging directory, which every experiment-state sync uploads whole
    # (pyarrow copy_files, no comparison): with the JSON logger's 3 files per trial, ~13 requests per
    # trial created so far at every sync on S3 (bench/scale.py, docs/benchmarks.md). The TensorBoard
    # logger would also import torch into the driver (~1.3 s before the first trial, bench/overhead.py).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # The experiment state is for Tune's own restore, which w2sweep does not use (a re-run skips the
    # cells whose result exists); Tune saves it at the start and, forced, at the end of the run. Each
    # save uploads the driver's staging directory whole, with an (empty) folder per trial created so
    # far: O(trials) requests on S3. Tune's default period ("auto": 10 s, or 19 times the last save's
    # duration) would repeat that every 10 s or so.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(EXPERIMENT_STATE_PERIOD_S))
    return tune.Tuner(
        tune.with_resources(trainable, _trial_resources(todo, config.resources)),
        param_space={"cell_id": tune.grid_search([c.cell_id for c in _largest_first(todo, config.resources)])},
        tune_config=tune.TuneConfig(reuse_actors=True,
                                    max_concurrent_trials=_max_concurrent_cells(todo, config.resources)),
        run_config=tune.RunConfig(
            # Trial state and checkpoints live under the same root: <root>/<sweep>/tune (on S3 through
            # a pyarrow S3FileSystem on the same endpoint, credentials from the same chain).
            name=layout.TUNE, storage_path=storage.path(config.name),
            storage_filesystem=None if storage.is_local else storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            callbacks=[progress, *tracker_callbacks(config.trackers, storage, config.name)],
            verbose=0,
        ),
    )


@contextlib.contextmanager
def _no_metrics_files_warning():
    """Without per-trial loggers the result grid finds no result.json / progress.csv per trial and warns
    once per run with a line per trial ("Failed to fetch metrics for N trial(s)"); its metrics
    dataframes stay empty, and nothing here reads them. That one warning is dropped, nothing else."""
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics for")

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _record_outcomes(config: SweepConfig, storage: Storage, todo: list[Cell], grid, report: SweepReport) -> None:
    """Count the cells done and record a failure object for each of the others; a cell that finished
    loses the failure object an earlier run left. A cell is done when its result object exists,
    whatever Tune says: a trial that failed before it had a config still leaves its cell without a
    result, and so in `failed`."""
    errors = {r.config["cell_id"]: one_line(r.error) for r in grid if r.error is not None and r.config}
    # Two listings, not a request or two per cell: on S3 a 10,000-cell run would wait on 20,000 calls.
    results = set(storage.list(layout.folder(config.name, layout.RESULTS), suffix=".json"))
    failures = set(storage.list(layout.folder(config.name, layout.FAILURES), suffix=".json"))
    for cell in todo:
        failure = layout.failure(config.name, cell.cell_id)
        if cell.result_key in results:
            report.num_done += 1
            if failure in failures:
                try:
                    storage.delete(failure)
                except Exception as e:  # a stale failure object beside a result: the result counts
                    log.warning("could not delete %s: %s", failure, e)
            continue
        message = errors.get(cell.cell_id, "the trial ended without a result")
        report.failed[cell.cell_id] = message
        storage.write_bytes(failure, json.dumps({"cell_id": cell.cell_id, "error": message}).encode())


def config_snapshot(config: SweepConfig) -> bytes:
    """The resolved config as run. It never holds credentials: the schema has no field for them."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
