"""P3: how full `w2sweep run` keeps a GPU cluster while cells are pending.

    .venv/bin/python bench/packing.py                  # 2 nodes x 4 logical GPUs, 24 one-GPU + 8 four-GPU cells
    .venv/bin/python bench/packing.py --time-scale 0.5 # the same grid with cells half as long

A simulated cluster on this machine: `ray.cluster_utils.Cluster`, a head and a second node, each with
--gpus-per-node logical GPUs (no real GPU is needed or used) and --cpus-per-node logical CPUs. The sweep
is a real config through the real `w2sweep.sweep.run_sweep` (weak labels under the run's claims, Tune
trials, per-cell resources, concurrency), with one thing swapped: `run_sweep(config, run=...,
run_on_workers=...)` replaces the cell's training by a timed sleep that holds what the training would
hold (after the cell's prerequisites, which it makes sure of as `run_cell` does):
  - a one-worker cell (student `one-gpu-*`: num_workers 1, gpus_per_worker 1) sleeps inside its Tune
    trial (`run`), which holds the cell's GPU;
  - a four-worker cell (student `four-gpu`: num_workers 4, gpus_per_worker 1) reserves what Ray Train's
    worker group would (`run_on_workers`), a placement group of 4 x {CPU, GPU} bundles (PACK), waits
    for it as the TorchTrainer would, runs `run` as its rank 0 would, and releases it. (A real
    TorchTrainer cannot start here: its NCCL backend needs real GPUs.)
Sleep lengths are fixed per cell (from its id): one-GPU cells 8 s +/- 25%, four-GPU cells 16 s +/- 25%,
times --time-scale. The three one-GPU students give three times as many one-GPU cells as four-GPU ones.

Measured: a thread in this process samples `ray.available_resources()` every 0.2 s; allocated GPUs =
cluster GPUs - available GPUs (trial placement groups and worker-group placement groups both count).
The window is "while cells are pending": from the first sample with a GPU allocated to the moment the
last cell started (after that nothing waits, and the tail is one cell's length, not packing).
  allocated fraction = mean allocated GPUs / cluster GPUs over the window        target >= 0.90
  busy fraction      = GPU-seconds inside cells' sleeps / (cluster GPUs x window) (allocation minus
                       trial start-up and placement latency)
  makespan           = first cell start -> last cell end, against the ideal: total GPU-seconds / GPUs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

# Defaults: one visible block.
NUM_NODES = 2
GPUS_PER_NODE = 4
CPUS_PER_NODE = 8  # logical: Ray never checks them against the machine's cores
ONE_GPU_SECONDS = 8.0
FOUR_GPU_SECONDS = 16.0
JITTER = 0.25
SAMPLE_EVERY_S = 0.2


def bench_config(storage: str, *, cells_per_student: int) -> dict:
    budgets = [float(b) for b in range(4, 4 + 2 * cells_per_student, 2)][:cells_per_student]
    one_gpu = lambda name: dict(model="tiny-bert", name=name, num_workers=1, gpus_per_worker=1)  # noqa: E731
    return dict(
        name="packing",
        storage=storage,
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=600,
                       pools=dict(weak_train=48, val=32, test=32))],
        weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=16)],
        students=[one_gpu("one-gpu-a"), one_gpu("one-gpu-b"), one_gpu("one-gpu-c"),
                  dict(model="tiny-bert", name="four-gpu", num_workers=4, gpus_per_worker=1)],
        methods=["sft-oracle"],  # one cell per budget
        budgets=budgets,
        spending_fractions=[1.0],
        resources=dict(cpu=1, gpu=0),  # weak labels on a CPU; each student says its own GPUs
        max_failures=0,
    )


def seconds_for(cell, *, time_scale: float) -> float:
    base = FOUR_GPU_SECONDS if cell.student.num_workers > 1 else ONE_GPU_SECONDS
    u = int(hashlib.sha256(cell.cell_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF  # in [0, 1]
    return time_scale * base * (1 + JITTER * (2 * u - 1))


class SleepCell:
    """The stand-in for `run_cell`: make sure of the cell's prerequisites, then hold the cell's
    resources for a fixed time; log start and end."""

    def __init__(self, log_path: str, time_scale: float, default_resources):
        self.log_path = log_path
        self.time_scale = time_scale
        self.default_resources = default_resources

    def __call__(self, cell, storage, *, claims, hooks=None, **_):
        from w2sweep.grid import worker_resources
        from w2sweep.prerequisites import ensure_prerequisites
        from w2sweep.results import CellResult, cell_key

        ensure_prerequisites(cell, storage, claims, warm_up=lambda cell: None)
        gpus = worker_resources(cell.student, self.default_resources)["GPU"] * cell.student.num_workers
        start = time.time()
        time.sleep(seconds_for(cell, time_scale=self.time_scale))
        end = time.time()
        with open(self.log_path, "a") as f:
            f.write(json.dumps(dict(cell_id=cell.cell_id, gpus=gpus, start=start, end=end)) + "\n")
        result = CellResult(
            cell_id=cell.cell_id, sweep=cell.sweep, dataset=cell.dataset.name, weak_supervisor=cell.weak_name,
            student=cell.student.label, method=cell.method, budget=cell.budget,
            spending_fraction=cell.spending_fraction, seed=cell.seed, n_weak=cell.n_weak, n_oracle=cell.n_oracle,
            label_cost=cell.label_cost, c_weak=cell.costs.c_weak, c_oracle=cell.costs.c_oracle,
            accuracy=0.5, accuracy_ci=(0.0, 1.0), auroc=0.5, auroc_ci=(0.0, 1.0), weak_accuracy=0.5,
            num_test=0, wall_seconds=end - start, config=cell.canonical(),
        )
        storage.write_once(cell_key(cell.sweep, cell.cell_id), result.to_json())
        return result


def sleep_on_workers(cell, storage_uri, *, resources, max_failures, env, claims, run, **_) -> dict:
    """The stand-in for `run_cell_on_workers`: reserve what Ray Train's worker group would, wait for
    it, run `run` as rank 0 would, release it."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from w2sweep.grid import worker_resources
    from w2sweep.storage import Storage

    pg = placement_group([worker_resources(cell.student, resources)] * cell.student.num_workers, strategy="PACK")
    ray.get(pg.ready())
    try:
        result = run(cell, Storage.from_uri(storage_uri), claims=claims)
    finally:
        remove_placement_group(pg)
    return dict(accuracy=result.accuracy, auroc=result.auroc, wall_seconds=result.wall_seconds)


def sample_gpus(stop: threading.Event, total: float, samples: list) -> None:
    import ray

    while not stop.is_set():
        try:
            free = ray.available_resources().get("GPU", 0.0)
            samples.append((time.time(), total - free))
        except Exception:  # noqa: BLE001 - the sampler must never kill the run it watches
            pass
        stop.wait(SAMPLE_EVERY_S)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-nodes", type=int, default=NUM_NODES)
    p.add_argument("--gpus-per-node", type=int, default=GPUS_PER_NODE)
    p.add_argument("--cpus-per-node", type=int, default=CPUS_PER_NODE)
    p.add_argument("--cells-per-student", type=int, default=8, help="cells of each of the 4 students")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiplies every cell's sleep")
    p.add_argument("--timeline", metavar="PATH", help="write the cells' intervals and the GPU samples as JSON")
    args = p.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import ray
    from ray.cluster_utils import Cluster

    from w2sweep.config import parse_config
    from w2sweep.sweep import _init_ray, run_sweep

    total_gpus = float(args.num_nodes * args.gpus_per_node)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=args.cpus_per_node,
                                                                num_gpus=args.gpus_per_node))
    for _ in range(args.num_nodes - 1):
        cluster.add_node(num_cpus=args.cpus_per_node, num_gpus=args.gpus_per_node)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="w2sweep-packing-") as tmp:
            config = parse_config(bench_config(str(Path(tmp) / "store"), cells_per_student=args.cells_per_student))
            log = Path(tmp) / "cells.jsonl"
            log.touch()
            t0 = time.time()
            sampler = None
            report = None
            try:
                _init_ray()  # what run_sweep does first (it then finds Ray initialized); sample from here
                sampler = threading.Thread(target=sample_gpus, args=(stop, total_gpus, samples), daemon=True)
                sampler.start()
                report = run_sweep(config, run=SleepCell(str(log), args.time_scale, config.resources),
                                   run_on_workers=sleep_on_workers)
            finally:
                stop.set()
                if sampler is not None:
                    sampler.join()
            wall = time.time() - t0
            cells = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        ray.shutdown()
        cluster.shutdown()

    if report.failed or len(cells) != report.num_cells:
        sys.exit(f"{len(cells)} of {report.num_cells} cells ran; failed: {report.failed}")
    if args.timeline:
        Path(args.timeline).write_text(json.dumps(dict(cells=cells, samples=samples, total_gpus=total_gpus)))
    first_alloc = next(t for t, g in samples if g > 0)
    last_start = max(c["start"] for c in cells)
    window = [(t, g) for t, g in samples if first_alloc <= t <= last_start]
    allocated = sum(g for _, g in window) / len(window) / total_gpus
    busy = sum(c["gpus"] * max(0.0, min(c["end"], last_start) - max(c["start"], first_alloc))
               for c in cells) / (total_gpus * (last_start - first_alloc))
    gpu_seconds = sum(c["gpus"] * (c["end"] - c["start"]) for c in cells)
    makespan = max(c["end"] for c in cells) - min(c["start"] for c in cells)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    result = dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python", "bench/packing.py", *sys.argv[1:]]),
        machine=dict(nproc=len(os.sched_getaffinity(0)), cpu=cpu, loadavg_1m=os.getloadavg()[0]),
        cluster=f"{args.num_nodes} nodes x {args.gpus_per_node} GPUs, {args.cpus_per_node} CPUs",
        cells=len(cells), one_gpu_cells=sum(c["gpus"] == 1 for c in cells),
        multi_gpu_cells=sum(c["gpus"] > 1 for c in cells), window_s=round(last_start - first_alloc, 1),
        allocated_fraction=round(allocated, 3), busy_fraction=round(busy, 3),
        makespan_s=round(makespan, 1), ideal_makespan_s=round(gpu_seconds / total_gpus, 1),
        sweep_wall_s=round(wall, 1),
    )
    print(f"| {result['cluster']} | {result['one_gpu_cells']} x 1 GPU + {result['multi_gpu_cells']} x 4 GPUs | "
          f"{result['window_s']} | {100 * allocated:.1f}% | {100 * busy:.1f}% | {result['makespan_s']} | "
          f"{result['ideal_makespan_s']} |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
