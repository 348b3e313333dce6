"""Run a sweep on Ray: every unfinished cell as a Ray Tune trial of the plain `run_cell` function,
which starts training once its own prerequisites exist (what cells read that is computed once per
key: weak labels, head-only students' features, `Cell.prerequisites`; computed by the trials that
need them, or as Ray tasks for Ray Train cells: `_Prerequisites`). With `w2sweep.claims` and
`w2sweep.distributed`, the only modules of the run path that import Ray.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from tqdm import tqdm

from w2sweep import layout
from w2sweep.claims import Claims, ask, claimed
from w2sweep.grid import Cell, Prerequisite, cell_gpus, expand_cells, uses_ray_train, worker_resources
from w2sweep.config import Resources, SweepConfig
from w2sweep.results import cell_key
from w2sweep.storage import Storage, in_storage_env
from w2sweep.telemetry import CellTags, SweepMetrics

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


def storage_env() -> dict[str, str]:
    """The driver's storage settings (``AWS_*``: endpoint, region, credentials) for the workers.

    They travel as a task argument through Ray's object store, not as runtime-env ``env_vars``: Ray
    writes runtime envs into its own log files, and credentials must never reach a log line.
    """
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def _keep_credentials_out_of_runtime_envs() -> None:
    """Ray Tune copies the driver's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and session tokens into
    every trial actor's runtime env, which Ray writes into its log files. The trainable gets them
    from `storage_env` instead, so that copy is switched off (ray is pinned; the test
    tests/test_dashboards.py::test_drivers_storage_secret_reaches_no_log_and_no_stored_object
    fails if a Ray upgrade brings it back)."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = {
        name for name in class_cache.ENV_VARS_TO_PROPAGATE if not name.startswith("AWS_")}


def running_key(sweep: str, cell_id: str) -> str:
    """The heartbeat a cell's trial holds while it runs: written at start, deleted at the end."""
    return layout.running(sweep, cell_id)


def _cell_trainable(config: dict, *, cells: dict[str, str], storage_uri: str, env: dict[str, str],
                    resources: dict, max_failures: int, cell_fn=None, tasks: dict | None = None,
                    claims=None) -> None:
    """One cell: `run_cell` right here, or, for a student on several workers, a Ray Train run whose
    workers each call it (`w2sweep.distributed`); this trial then only drives and waits. First its
    prerequisites that were not stored when the run began (`_Prerequisites`)."""
    os.environ.update(env)
    cell = Cell.from_json(cells[config["cell_id"]])
    storage = Storage.from_uri(storage_uri)
    # A Ray Train cell's trial holds no CPU or GPU of its own to warm up on.
    _ensure_prerequisites(cell, storage, tasks or {}, claims,
                          warm=cell_fn is None and not uses_ray_train(cell.student))
    # Imported here, once per trial process: torch, transformers and DeepSpeed stay out of the driver.
    from w2sweep.cells import run_cell
    from w2sweep.distributed import run_cell_on_workers

    heartbeat = running_key(cell.sweep, cell.cell_id)
    storage.write_bytes(heartbeat, json.dumps(
        {"cell_id": cell.cell_id, "started": time.time(), "host": socket.gethostname()}).encode())
    try:
        if cell_fn is not None:  # a stand-in for the training (bench/packing.py), in this trial
            result = cell_fn(cell, storage)
            metrics = {"accuracy": result.accuracy, "auroc": result.auroc, "wall_seconds": result.wall_seconds}
        elif uses_ray_train(cell.student):
            metrics = run_cell_on_workers(cell, storage_uri, resources=Resources(**resources),
                                          max_failures=max_failures, env=env)
        else:
            result = run_cell(cell, storage)
            metrics = {"accuracy": result.accuracy, "auroc": result.auroc, "wall_seconds": result.wall_seconds}
    finally:
        storage.delete(heartbeat)
    tune.report({k: metrics[k] for k in ("accuracy", "auroc", "wall_seconds")}
                | {k: metrics[k] for k in ("num_steps", "num_steps_run", "resumed") if k in metrics})


# What the trial of a Ray Train cell reserves: it only drives the TorchTrainer, whose workers reserve
# their own CPUs/GPUs. Memory, not a CPU fraction: drivers holding 0.01 CPU each would leave a 2-CPU
# machine short of the 2 whole CPUs a 2-worker group needs, and wait forever (Tune refuses an
# all-zero request).
DRIVER_MEMORY_BYTES = 256 * 2**20


def _trial_resources(cells: dict[str, str], default: Resources):
    """Tune's per-trial request: a one-worker cell trains in its trial, with the student's per-worker
    resources where it sets them, else the sweep's `resources`."""

    def request(config: dict) -> tune.PlacementGroupFactory:
        student = Cell.from_json(cells[config["cell_id"]]).student
        if uses_ray_train(student):
            return tune.PlacementGroupFactory([{"memory": DRIVER_MEMORY_BYTES}])
        need = worker_resources(student, default)
        return tune.PlacementGroupFactory([{k: v for k, v in need.items() if v}])

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
    """Cells in the order Tune starts them: most GPUs (then CPUs) per cell first, grid order within.
    The trials of big (Ray Train) cells then start first, and their processes are up and waiting for
    workers when GPUs come free, instead of starting cold after the last small cell while the GPUs
    idle (bench/packing.py, 24 one-GPU + 8 four-GPU cells on 2 x 4 GPUs: GPU allocation while cells
    were pending rose from 78% to 98%)."""
    def size(cell: Cell) -> tuple[float, float]:
        need = worker_resources(cell.student, default)
        return -need["GPU"] * cell.student.num_workers, -need["CPU"] * cell.student.num_workers

    return sorted(todo, key=size)


def _tags(cell: Cell) -> CellTags:
    return CellTags(sweep=cell.sweep, dataset=cell.dataset.name, student=cell.student.label, method=cell.method)


class _Progress(tune.Callback):
    """One progress bar for the whole grid: done/total, failures in the postfix. It also feeds the
    sweep's Prometheus metrics (`w2sweep.telemetry`), from the driver only."""

    def __init__(self, total: int, initial: int, *, cells: list[Cell], todo: list[Cell], resources: Resources):
        self.bar = tqdm(total=total, initial=initial, desc="cells", unit="cell", dynamic_ncols=True)
        self.num_failed = 0
        self.cells = {c.cell_id: c for c in todo}
        self.num_gpus = {c.cell_id: cell_gpus(c.student, resources) for c in todo}
        self.started: dict[str, float] = {}  # trial id -> time.monotonic() at its (last) start
        self.metrics = SweepMetrics()
        todo_ids = set(self.cells)
        groups: dict[CellTags, list[int]] = {}
        for c in cells:
            counts = groups.setdefault(_tags(c), [0, 0])
            counts[0] += 1
            counts[1] += c.cell_id not in todo_ids
        for tags, (num_cells, num_skipped) in groups.items():
            self.metrics.grid(tags, num_cells=num_cells, num_skipped=num_skipped)

    def _cell(self, trial) -> Cell:
        return self.cells[trial.config["cell_id"]]

    def _stop(self, trial) -> float:
        """Seconds since the trial's start; takes it out of the running cells."""
        start = self.started.pop(trial.trial_id, None)
        if start is None:
            return 0.0
        self.metrics.stopped(_tags(self._cell(trial)))
        return time.monotonic() - start

    def on_step_end(self, iteration, trials, **info):
        self.metrics.refresh()  # gauges fade from Prometheus unless set again (telemetry)

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.started:
            self.metrics.started(_tags(self._cell(trial)))
        self.started[trial.trial_id] = time.monotonic()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._stop(trial)  # back to pending for a retry

    def on_trial_complete(self, iteration, trials, trial, **info):
        seconds = self._stop(trial)
        cell = self._cell(trial)
        seconds = float((trial.last_result or {}).get("wall_seconds", seconds))
        self.metrics.finished(_tags(cell), seconds=seconds, label_cost=cell.label_cost,
                              n_weak=cell.n_weak, n_oracle=cell.n_oracle, num_gpus=self.num_gpus[cell.cell_id])
        self.bar.update(1)

    def on_trial_error(self, iteration, trials, trial, **info):
        seconds = self._stop(trial)
        cell = self._cell(trial)
        self.metrics.failed(_tags(cell), seconds=seconds, num_gpus=self.num_gpus[cell.cell_id])
        self.num_failed += 1
        self.bar.set_postfix(failed=self.num_failed)
        self.bar.update(1)


def _runtime_env() -> dict:
    """What every worker of the sweep needs: the driver's own w2sweep (shipped as a py_module, so a
    job submitted with ``--working-dir .`` runs its checkout's code even though the package lives in
    platform/, off the workers' import path) and `_WORKER_ENV`.

    Inside a submitted job Ray merges this with the job's runtime env and refuses a field or variable
    set on both sides, so whatever the job already sets is left to the job.
    """
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    env: dict = {}
    if "py_modules" not in job:
        env["py_modules"] = [str(Path(__file__).resolve().parent)]
    env_vars = {k: v for k, v in _WORKER_ENV.items() if k not in (job.get("env_vars") or {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


class ClusterError(Exception):
    """RAY_ADDRESS names no Ray cluster that answers."""


def _check_cluster_address(address: str) -> None:
    """Fail at once when `address` is HOST:PORT and nothing listens there: `ray.init` would retry for
    minutes (a typo, a stopped head). Ray client (``ray://``) and ``auto`` addresses are left to
    `ray.init`, whose ConnectionError `_init_ray` turns into a ClusterError."""
    if "://" in address or address in ("auto", "local"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"cluster error: RAY_ADDRESS={address!r}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379), "
                           "'auto', or unset to start a local cluster")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ClusterError(f"cluster error: RAY_ADDRESS={address}: no Ray cluster answers there ({e.strerror or e}); start "
                           "one with `ray start --head`, or unset RAY_ADDRESS to start a local cluster") from None


def _init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (ClusterError if none answers there), or start a local one
    for this process. Never join some other local cluster by accident: ``address=None`` would attach to
    any head running on this machine."""
    if ray.is_initialized():
        return
    options = dict(logging_level=logging.WARNING,
                   log_to_driver=False,  # cell logs stay in Ray's log files; the driver shows the progress bar
                   include_dashboard=False)
    if os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        _check_cluster_address(address)
        try:
            ray.init(address=address, runtime_env=_runtime_env(), **options)
        except ConnectionError as e:  # `auto` with no cluster on this machine, a Ray client server that does not answer
            raise ClusterError(f"cluster error: RAY_ADDRESS={address}: {str(e).splitlines()[0]}") from None
        return
    # A local cluster's processes start from this process's environment and run this interpreter on
    # this machine's files, so what the workers need travels in that environment instead of a runtime
    # env: nothing is packed at `ray.init`, and the claims actor starts in one of the workers Ray
    # prestarts with the cluster instead of a new process. (Trials start in new processes either way:
    # Tune gives every trial actor a runtime env of its own, `env_vars`.)
    with patch.dict(os.environ, _local_worker_env()):  # only while Ray starts its processes
        ray.init(address="local", **options)


def _local_worker_env() -> dict[str, str]:
    """`_WORKER_ENV`, and this w2sweep first on the import path, whatever put it on the driver's."""
    path = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    return {**_WORKER_ENV, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def prerequisites_to_compute(storage: Storage, cells: list[Cell]) -> list[Prerequisite]:
    """Every distinct prerequisite of `cells` not in storage yet. A re-run whose prerequisites are
    stored starts no task for them (a task would cost a worker process and its imports, seconds)."""
    by_key = {need.key: need for cell in cells for need in cell.prerequisites}
    return [need for key, need in by_key.items() if not storage.exists(key)]


class _Prerequisites:
    """How a run gets the prerequisites of its cells that are not stored yet (one per key).

    Most are computed by the trial of a cell that reads them, in its own process and on the resources
    it holds for that cell: it claims the key (`w2sweep.claims`), computes it, lets go; the trials of
    other cells reading it wait for the claim, warming up meanwhile. Every trial slot starts at once,
    and no process starts (and imports torch) only to compute a key (bench/overhead.py). A claim is
    always held by a running trial that computes it, so the waiting cannot deadlock.

    The trial of a Ray Train cell holds no CPU or GPU of its own, so the keys such cells read are Ray
    tasks instead (`refs`): before Tune starts, placement groups are reserved for them, as many as the
    cluster can run at once and at most one per key, each big enough for any of them; each runs its
    share of the keys in turn and is released when its last task ends. Trials waiting for them can
    never hold what a task needs: that was reserved before the first trial started. A key whose task
    fails for good fails the cells that read it, with its error, and not the whole run."""

    def __init__(self, config: SweepConfig, storage: Storage, cells: list[Cell]):
        by_task = {need.key for cell in cells if uses_ray_train(cell.student) for need in cell.prerequisites}
        needed = prerequisites_to_compute(storage, cells)
        tasks = [need for need in needed if need.key in by_task]
        self.claims = Claims.remote() if len(tasks) < len(needed) else None
        self.refs: dict[str, ray.ObjectRef] = {}
        self._groups = []
        self._thread = None
        if not tasks:
            return
        need_of = {id(need): _task_resources(need, config.resources) for need in tasks}
        bundle = {name: max(r[name] for r in need_of.values()) for name in ("CPU", "GPU")}
        bundle = {name: amount for name, amount in bundle.items() if amount}
        total = ray.cluster_resources()
        fits = min(int(total.get(name, 0) // amount) for name, amount in bundle.items())
        self._groups = [placement_group([bundle]) for _ in range(max(1, min(len(tasks), fits)))]
        ray.get([group.ready() for group in self._groups])
        task = ray.remote(max_retries=config.max_failures, retry_exceptions=True)(in_storage_env)
        env = ray.put(storage_env())
        shares: dict[int, list[ray.ObjectRef]] = {}
        for i, need in enumerate(tasks):
            group = i % len(self._groups)
            ref = task.options(
                num_cpus=need_of[id(need)]["CPU"], num_gpus=need_of[id(need)]["GPU"],
                scheduling_strategy=PlacementGroupSchedulingStrategy(self._groups[group]),
            ).remote(env, need.ensure, storage)
            self.refs[need.key] = ref
            shares.setdefault(group, []).append(ref)
        kinds = sorted({need.kind for need in tasks})
        self._bar = tqdm(total=len(tasks), desc=" and ".join(kinds), unit="key", dynamic_ncols=True)
        self._thread = threading.Thread(target=self._release_as_done, args=(shares,), daemon=True)
        self._thread.start()

    def _release_as_done(self, shares: dict[int, list[ray.ObjectRef]]) -> None:
        group_of = {ref: group for group, refs in shares.items() for ref in refs}
        left = {group: len(refs) for group, refs in shares.items()}
        while group_of:
            ready, _ = ray.wait(list(group_of), num_returns=1)
            group = group_of.pop(ready[0])
            left[group] -= 1
            self._bar.update(1)
            if not left[group]:
                remove_placement_group(self._groups[group])
        self._bar.close()  # now, so its time is the prerequisites', not the whole run's

    def close(self) -> None:
        """After the cells: every task has ended (each key had a cell waiting for it)."""
        if self._thread is not None:
            self._thread.join()
        if self.claims is not None:
            ray.kill(self.claims)


def _ensure_prerequisites(cell: Cell, storage: Storage, tasks: dict, claims, *, warm: bool) -> None:
    """Before a cell's training: compute the prerequisites it can claim, then wait for the others
    (their tasks, or the trials holding their claims), warming up first (`warm_up`) if it would wait
    and `warm`."""
    refs = [tasks[need.key] for need in cell.prerequisites if need.key in tasks]
    missing = [] if claims is None else [
        need for need in cell.prerequisites if need.key not in tasks and not storage.exists(need.key)]
    asked = ask(claims, [need.key for need in missing]) if missing else {}
    # Imported after asking, so that the answers arrive while this process imports torch.
    from w2sweep.cells import warm_up

    held = [need for need in missing if ray.get(asked[need.key])]
    try:
        for need in held:
            need.ensure(storage)
    finally:
        ray.get([claims.release.remote(need.key) for need in held])
    held_by_others = [need for need in missing if need not in held]
    if warm and (held_by_others or ray.wait(refs, num_returns=len(refs), timeout=0)[1]):
        warm_up(cell)  # instead of idling while the prerequisites compute
    ray.get(refs)  # a failed prerequisite task fails this cell with its error
    for need in held_by_others:
        with claimed(claims, need.key):  # let go by a holder that stored it, failed or died
            need.ensure(storage)  # nothing to do unless the holder failed or died


def _task_resources(need: Prerequisite, default: Resources) -> dict[str, float]:
    """A weak-label task gets the sweep's per-cell resources; a student's features, what one worker of
    that student gets."""
    if need.student is None:
        return {"CPU": default.cpu, "GPU": default.gpu}
    return worker_resources(need.student, default)


def run_sweep(config: SweepConfig, *, cell_fn=None) -> SweepReport:
    """Run every cell of `config` that has no result yet; return what happened.

    `cell_fn(cell, storage) -> CellResult`, for benchmarks only, replaces each cell's training (Ray
    Train cells included) inside its trial, with the same trial resources and concurrency."""
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)
    todo = [c for c in cells if not storage.exists(cell_key(config.name, c.cell_id))]
    if todo:
        _init_ray()  # first: a run that cannot reach its cluster (ClusterError) writes nothing
    storage.write_bytes(layout.sweep_yaml(config.name), config_snapshot(config))
    report = SweepReport(num_cells=len(cells), num_skipped=len(cells) - len(todo), num_done=0)
    if not todo:
        return report
    _keep_credentials_out_of_runtime_envs()
    prerequisites = _Prerequisites(config, storage, todo)
    cell_json = {c.cell_id: c.to_json() for c in todo}
    trainable = tune.with_resources(
        tune.with_parameters(_cell_trainable, cells=cell_json, storage_uri=config.storage, env=storage_env(),
                             resources=config.resources.model_dump(), max_failures=config.max_failures,
                             cell_fn=cell_fn, tasks=prerequisites.refs, claims=prerequisites.claims),
        _trial_resources(cell_json, config.resources),
    )
    # The progress bar below is the sweep's console output; Tune's own tables would interleave with it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Of Tune's per-trial loggers only the JSON one, which the result grid below reads: a trial reports
    # once, and the TensorBoard logger imports torch into the driver, delaying the first trial by
    # ~1.3 s (bench/overhead.py).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    progress = _Progress(total=len(cells), initial=report.num_skipped, cells=cells, todo=todo,
                         resources=config.resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"cell_id": tune.grid_search([c.cell_id for c in _largest_first(todo, config.resources)])},
        tune_config=tune.TuneConfig(reuse_actors=True,
                                    max_concurrent_trials=_max_concurrent_cells(todo, config.resources)),
        run_config=tune.RunConfig(
            # Trial state and checkpoints live under the same root: <root>/<sweep>/tune (on S3 through
            # a pyarrow S3FileSystem on the same endpoint, credentials from the same chain).
            name=layout.TUNE, storage_path=storage.path(config.name),
            storage_filesystem=None if storage.is_local else storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            callbacks=[progress, JsonLoggerCallback()], verbose=0,
        ),
    )
    grid = tuner.fit()
    prerequisites.close()
    progress.bar.close()
    # A cell is done when its result object exists, whatever Tune says: a trial that failed before it
    # had a config still leaves its cell without a result, and so in `failed`.
    errors = {r.config["cell_id"]: str(r.error).strip().splitlines()[-1][:500]
              for r in grid if r.error is not None and r.config}
    for cell in todo:
        if storage.exists(cell_key(config.name, cell.cell_id)):
            report.num_done += 1
            continue
        message = errors.get(cell.cell_id, "the trial ended without a result")
        report.failed[cell.cell_id] = message
        storage.write_bytes(layout.failure(config.name, cell.cell_id),
                            json.dumps({"cell_id": cell.cell_id, "error": message}).encode())
    return report


def shutdown_in_background() -> threading.Thread:
    """Disconnect from Ray, stopping the local cluster this process started, on a thread: the frontier
    is written meanwhile instead of after it (a local cluster takes ~1.3 s to stop here)."""
    thread = threading.Thread(target=ray.shutdown, name="ray-shutdown")
    thread.start()
    return thread


def config_snapshot(config: SweepConfig) -> bytes:
    """The resolved config as run. It never holds credentials: the schema has no field for them."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
