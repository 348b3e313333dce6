"""Thousands of cells: the runner's own cost per cell, through the real `w2sweep.sweep.run_sweep`.

    PYTHONPATH=platform .venv/bin/python bench/scale.py                       # 10,000 one-second cells, 16 CPUs
    PYTHONPATH=platform .venv/bin/python bench/scale.py --num-cells 1000 --cell-seconds 0.5
    PYTHONPATH=platform .venv/bin/python bench/scale.py --num-cells 300 --storage seaweedfs   # S3 on 127.0.0.1

A simulated cluster on this machine: `ray.cluster_utils.Cluster` with --nodes nodes whose logical CPUs add
up to --cpus (Ray never checks logical CPUs against the machine's cores). RAY_ADDRESS names it, so
`run_sweep` joins it as a sweep joins a real cluster.

The grid: one local dataset (written by this script, 600 rows) that brings its own `weak` column (so no
weak supervisor trains: its one prerequisite is the column read into a weak-label object), one tiny-bert
student, method seq-sft, seed 0, and N distinct (n_weak, n_oracle) `pairs`: N distinct cells, one
weak-label key.

The cell: `run_sweep(config, run=SleepCell(...))` swaps the training for a sleep of --cell-seconds inside
the trial (which holds the cell's 1 CPU). Before it, `SleepCell` makes sure of the cell's prerequisites
under the run's claims as `w2sweep.prerequisites.ensure_prerequisites` does for a one-worker cell (the
same lookups, claims and compute; without its `world()`, which imports torch into every trial actor);
after it, it writes a valid `CellResult` with `write_once` at the cell's result key, the 'done' marker.
It also logs (cell, pid, start, end, boto3 operations this process made so far) to a local file.

Measured:
  wall            run_sweep's wall time (the cluster is up before, not timed) against N x S / CPUs;
                  the cells' completion rate in each quarter of the run (a rate that falls is a cost
                  that grows with the cells done)
  driver memory   ru_maxrss of this process (RUSAGE_SELF: the driver, not Ray's processes), and its
                  RSS sampled every second, read at 25/50/75/100% of cells done
  Tune state      bytes under <sweep>/tune after the run, / N
  re-run          run_sweep again once every cell is done (nothing to run: the lookups only)
  S3 requests     (--storage seaweedfs) boto3 operations in the driver (counted by wrapping
                  botocore's `BaseClient._make_api_call`) and in the trials (the same wrapper,
                  installed by SleepCell in each trial process; what a trial makes after its
                  last cell, one heartbeat delete per actor, is not in the log); all requests the
                  server answered (boto3's and Tune's pyarrow S3FileSystem's, from every process)
                  from SeaweedFS's Prometheus counter SeaweedFS_s3_request_total.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

NUM_CELLS = 10_000
CELL_SECONDS = 1.0
CPUS = 16
NODES = 2
TESTS = Path(__file__).resolve().parents[1] / "tests"


# ---- boto3 request counting (driver and trials) -------------------------------------------------

def count_boto3_operations() -> Counter:
    """Count every boto3 API operation this process makes from now on (idempotent per process)."""
    from botocore.client import BaseClient

    if getattr(BaseClient, "_scale_bench_counts", None) is None:
        counts: Counter = Counter()
        original = BaseClient._make_api_call

        def counted(self, operation_name, api_params):
            counts[operation_name] += 1
            return original(self, operation_name, api_params)

        BaseClient._make_api_call = counted
        BaseClient._scale_bench_counts = counts
    return BaseClient._scale_bench_counts


# ---- the cell --------------------------------------------------------------------------------------

class SleepCell:
    """The stand-in for `run_cell`: the cell's prerequisites, a sleep, a valid result object."""

    def __init__(self, log_path: str, seconds: float, count_requests: bool):
        self.log_path = log_path
        self.seconds = seconds
        self.count_requests = count_requests

    def _prerequisites(self, cell, storage, claims) -> None:
        """`ensure_prerequisites` for one process (rank 0 of 1), minus its torch import."""
        missing = [need for need in cell.prerequisites if not storage.exists(need.key)]
        if not missing:
            return
        held = claims.try_hold([need.key for need in missing])
        try:
            for need in missing:
                if need.key in held:
                    need.ensure(storage)
        finally:
            for key in held:
                claims.release(key)
        for need in missing:
            if need.key not in held:
                with claims.holding(need.key):
                    need.ensure(storage)

    def __call__(self, cell, storage, *, claims, hooks=None, **_):  # write_timeout_s: its own write is one PUT
        from w2sweep.results import CellResult, cell_key

        counts = count_boto3_operations() if self.count_requests else Counter()
        self._prerequisites(cell, storage, claims)
        start = time.time()
        time.sleep(self.seconds)
        end = time.time()
        result = CellResult(
            cell_id=cell.cell_id, sweep=cell.sweep, dataset=cell.dataset.name, weak_supervisor=cell.weak_name,
            student=cell.student.label, method=cell.method, budget=cell.budget,
            spending_fraction=cell.spending_fraction, seed=cell.seed, n_weak=cell.n_weak, n_oracle=cell.n_oracle,
            label_cost=cell.label_cost, c_weak=cell.costs.c_weak, c_oracle=cell.costs.c_oracle,
            accuracy=0.5, accuracy_ci=(0.0, 1.0), auroc=0.5, auroc_ci=(0.0, 1.0), weak_accuracy=0.5,
            num_test=0, wall_seconds=end - start, config=cell.canonical(),
        )
        storage.write_once(cell_key(cell.sweep, cell.cell_id), result.to_json())
        with open(self.log_path, "a") as f:
            f.write(json.dumps(dict(cell_id=cell.cell_id, pid=os.getpid(), start=start, end=end,
                                    written=time.time(), boto3=dict(counts))) + "\n")
        return result


# ---- the grid --------------------------------------------------------------------------------------

def write_dataset(path: Path, rows: int = 600) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            label = i % 2
            weak = 0.8 if (label if i % 5 else 1 - label) else 0.2  # 80% right
            f.write(json.dumps(dict(text=f"example {i} {'good' if label else 'bad'} {i * 7919 % 1000}",
                                    label=label, weak=weak)) + "\n")


def bench_config(storage: str, dataset: Path, num_cells: int) -> dict:
    side = math.ceil(math.sqrt(num_cells))
    pairs = [(1 + i // side, 1 + i % side) for i in range(num_cells)]
    return dict(
        name="scale",
        storage=storage,
        datasets=[dict(name="own-weak", source="local", path=str(dataset), weak_label="weak",
                       pools=dict(weak_train=1, val=20, test=20, weak_label=200, oracle=200))],
        students=[dict(model="tiny-bert", name="student")],
        methods=["seq-sft"],
        budgets=[1.0],
        pairs=pairs,
        seeds=[0],
        resources=dict(cpu=1, gpu=0),
        max_failures=0,
    )


# ---- measurements ----------------------------------------------------------------------------------

def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample_rss(stop: threading.Event, samples: list) -> None:
    while not stop.is_set():
        samples.append((time.time(), rss_mb()))
        stop.wait(1.0)


def tree_bytes(storage, prefix: str) -> tuple[int, int]:
    """(bytes, files) under `prefix` of `storage`'s filesystem."""
    import pyarrow.fs as pafs

    infos = storage.filesystem.get_file_info(pafs.FileSelector(storage.path(prefix), recursive=True,
                                                               allow_not_found=True))
    files = [i for i in infos if i.type == pafs.FileType.File]
    return sum(i.size for i in files), len(files)


def seaweed_requests(metrics_port: int) -> Counter | None:
    """SeaweedFS_s3_request_total summed by request type; None if the server shows no metrics."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    except OSError:
        return None
    counts: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("SeaweedFS_s3_request_total{"):
            labels, value = line.rsplit(" ", 1)
            kind = next((part.split("=", 1)[1].strip('"') for part in labels[labels.index("{") + 1:-1].split(",")
                         if part.startswith("type=")), "?")
            counts[kind] += int(float(value))
        elif line.startswith("SeaweedFS_s3_bucket_traffic_received_bytes_total"):
            counts["bytes received"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def start_seaweedfs(data_dir: Path):
    """tests/s3servers.py's SeaweedFS, plus its Prometheus port (`weed mini -metricsPort`)."""
    sys.path.insert(0, str(TESTS))
    from s3servers import SeaweedFS, free_port

    class MeteredSeaweedFS(SeaweedFS):
        PORT_FLAGS = (*SeaweedFS.PORT_FLAGS, "metricsPort")

    server = MeteredSeaweedFS(data_dir)
    s3 = server.start()
    return server, s3, server.ports["metricsPort"]


# ---- main ------------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-cells", type=int, default=NUM_CELLS)
    p.add_argument("--cell-seconds", type=float, default=CELL_SECONDS)
    p.add_argument("--cpus", type=int, default=CPUS, help="logical CPUs of the simulated cluster, in all")
    p.add_argument("--nodes", type=int, default=NODES)
    p.add_argument("--storage", choices=["local", "seaweedfs"], default="local")
    p.add_argument("--tracemalloc", action="store_true", help="also the driver's Python peak (slows the driver)")
    p.add_argument("--out", metavar="PATH", help="write the result JSON here too")
    args = p.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.tracemalloc:
        import tracemalloc
        tracemalloc.start()
    import ray
    from ray.cluster_utils import Cluster

    from w2sweep.config import parse_config
    from w2sweep.storage import Storage
    from w2sweep.sweep import run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="w2sweep-scale-"))
    server = None
    metrics_port = None
    driver_ops: Counter = Counter()
    if args.storage == "seaweedfs":
        server, s3, metrics_port = start_seaweedfs(tmp / "seaweedfs")
        os.environ.update(s3.env())
        storage_uri = f"s3://{s3.bucket}/scale-{int(time.time())}"
        driver_ops = count_boto3_operations()
    else:
        storage_uri = str(tmp / "store")
    write_dataset(tmp / "data.jsonl")
    log = tmp / "cells.jsonl"
    log.touch()

    per_node = [args.cpus // args.nodes + (i < args.cpus % args.nodes) for i in range(args.nodes)]
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=per_node[0]))
    for cpus in per_node[1:]:
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        config = parse_config(bench_config(storage_uri, tmp / "data.jsonl", args.num_cells))
        storage = Storage.from_uri(config.storage)
        rss_before = rss_mb()
        sampler = threading.Thread(target=sample_rss, args=(stop, samples), daemon=True)
        sampler.start()
        server_before = seaweed_requests(metrics_port) if metrics_port else Counter()
        ops_before = Counter(driver_ops)
        t0 = time.time()
        report = run_sweep(config, run=SleepCell(str(log), args.cell_seconds, args.storage != "local"))
        wall = time.time() - t0
        stop.set()
        sampler.join()
        server_after = seaweed_requests(metrics_port) if metrics_port else Counter()
        server_run = None if server_before is None or server_after is None else server_after - server_before
        ops_run = Counter(driver_ops) - ops_before
        maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        traced_peak_mb = None
        if args.tracemalloc:
            import tracemalloc
            traced_peak_mb = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            top = tracemalloc.take_snapshot().statistics("filename")[:10]
            print("driver's Python memory held after the run, by file:", file=sys.stderr)
            for stat in top:
                print(f"  {stat.size / 2**20:8.1f} MiB {stat.count:9,} blocks  {stat.traceback[0].filename}",
                      file=sys.stderr)
        tune_bytes, tune_files = tree_bytes(storage, f"{config.name}/tune")
        server_mid = seaweed_requests(metrics_port) if metrics_port else Counter()
        t1 = time.time()
        again = run_sweep(config, run=SleepCell(str(log), args.cell_seconds, args.storage != "local"))
        rerun = time.time() - t1
        server_end = seaweed_requests(metrics_port) if metrics_port else Counter()
        server_rerun = None if server_mid is None or server_end is None else server_end - server_mid
    finally:
        stop.set()
        ray.shutdown()
        cluster.shutdown()
        if server is not None:
            server.stop()

    cells = [json.loads(line) for line in log.read_text().splitlines()]
    shutil.rmtree(tmp, ignore_errors=True)
    n = args.num_cells
    if report.failed or report.num_done != n or len(cells) != n or again.num_skipped != n:
        failed = list(report.failed.items())[:3]
        sys.exit(f"{report.num_done} of {n} cells done, {len(cells)} logged; failed: {failed}; "
                 f"re-run skipped {again.num_skipped}")

    ends = sorted(c["written"] for c in cells)
    first_start = min(c["start"] for c in cells)
    quarters = []  # cells per second in each quarter of the cells, by completion
    for q in range(4):
        a, b = ends[q * n // 4], ends[(q + 1) * n // 4 - 1]
        quarters.append(round((n // 4 - 1) / (b - a), 2) if b > a else None)
    rss_at = {}
    for frac in (0.25, 0.5, 0.75, 1.0):
        t = ends[max(0, int(frac * n) - 1)]
        rss_at[f"{int(frac * 100)}%"] = round(max((r for s, r in samples if s <= t), default=float("nan")), 1)
    trial_ops: Counter = Counter()
    last_by_pid: dict[int, dict] = {}
    for c in sorted(cells, key=lambda c: c["written"]):
        last_by_pid[c["pid"]] = c["boto3"]
    for ops in last_by_pid.values():
        trial_ops.update(ops)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    ideal = n * args.cell_seconds / args.cpus
    result = dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python", "bench/scale.py", *sys.argv[1:]]),
        machine=dict(nproc=len(os.sched_getaffinity(0)), cpu=cpu, loadavg_1m=round(os.getloadavg()[0], 1)),
        cluster=f"{args.nodes} nodes, {args.cpus} logical CPUs", storage=args.storage,
        cells=n, cell_seconds=args.cell_seconds,
        wall_s=round(wall, 1), ideal_s=round(ideal, 1), over_ideal=f"{100 * (wall / ideal - 1):.0f}%",
        runner_s_per_cell=round((wall - ideal) / n * args.cpus, 3),  # slot-seconds lost per cell
        to_first_cell_s=round(first_start - t0, 1),
        # first cell's start to last result written: the run without the trial actors' start-up
        span_s=round(ends[-1] - first_start, 1),
        span_over_ideal=f"{100 * ((ends[-1] - first_start) / ideal - 1):.0f}%",
        cells_per_s_by_quarter=quarters, ideal_cells_per_s=round(args.cpus / args.cell_seconds, 2),
        driver_rss_mb=dict(before=round(rss_before, 1), **rss_at), driver_maxrss_mb=round(maxrss_mb, 1),
        driver_tracemalloc_peak_mb=traced_peak_mb,
        tune_state_bytes=tune_bytes, tune_state_files=tune_files, tune_bytes_per_cell=round(tune_bytes / n),
        rerun_s=round(rerun, 1), trial_processes=len(last_by_pid),
    )
    if args.storage != "local":
        result.update(
            driver_boto3_ops=dict(ops_run), driver_boto3_per_cell=round(sum(ops_run.values()) / n, 2),
            trial_boto3_ops=dict(trial_ops), trial_boto3_per_cell=round(sum(trial_ops.values()) / n, 2),
            server_requests=server_run and dict(server_run),
            server_requests_per_cell=server_run and round(
                sum(v for k, v in server_run.items() if k != "bytes received") / n, 2),
            rerun_server_requests=server_rerun and dict(server_rerun),
        )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
