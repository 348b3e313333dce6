"""P1: orchestration overhead of `w2sweep run` against a serial in-process loop over the same cells.

    .venv/bin/python bench/overhead.py                  # 32 cells of ~5 s; a markdown row and a JSON line
    .venv/bin/python bench/overhead.py --calibrate      # time 2 cells serially, to size --num-examples/--epochs
    .venv/bin/python bench/overhead.py --num-cells 8    # a quicker look

Both sides start cold, in a fresh Python process each, and do the same work into their own storage root:
  (a) `w2sweep run CONFIG` with RAY_ADDRESS unset: a new local Ray cluster on this machine (its start
      and shutdown included) and one Tune trial per cell, every one calling `run_cell` (the weak labels
      are computed by the first trial to claim their key, while the others warm up and wait);
  (b) `python bench/overhead.py --serial-child CONFIG`: import w2sweep, `ensure_weak_labels` per weak
      key, `run_cell` per cell in a plain loop, then `write_frontier` (which `w2sweep run` also does).
The wall time of each is spawn to exit, measured here. Reported:
  ratio = a / b                                          target <= 0.8
  overhead per cell = (a * slots - b) / cells, seconds   target <= 1 s
  overhead outside cells per cell = ((a * slots - a's cell seconds) - (b - b's cell seconds)) / cells:
      the same, with the time inside `run_cell` taken out of each side, so it measures orchestration
      only and does not move when parallel cells run slower than serial ones (load, memory bandwidth)
where slots = CPUs of this machine // CPUs per cell (`resources.cpu`, 1): how many cells Ray runs at once.
`cell_seconds` is the sum of the cells' own `wall_seconds` (run_cell, start to result written) on each side:
(a)'s can exceed (b)'s when parallel cells slow each other down (memory bandwidth, a shared machine).

Both sides train on the same number of torch threads per cell: Ray gives a 1-CPU trial
OMP_NUM_THREADS=1, and the serial loop sets 1 (--serial-threads; 0 = torch's default, one per core, which
on a loaded 2-core machine oversubscribes and ran a tiny-bert step 10x slower).
To compare another version of w2sweep side by side, point both sides at its source:
    PYTHONPATH=/tmp/w2sweep-old/platform .venv/bin/python bench/overhead.py    # git archive <commit> platform | tar -x -C /tmp/w2sweep-old

The cells: a tiny-bert student (2 layers, hidden 64, trained from scratch, max_length 32) on the
synthetic-sentiment task, method seq-sft, at NUM_CELLS explicit (n_weak, n_oracle) pairs with the same
total n_weak + n_oracle = NUM_EXAMPLES, so every cell trains about as long: STUDENT_EPOCHS epochs per stage, no
early stopping (patience = epochs). The weak supervisor is the same tiny model for 1 epoch: one weak-label key.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

# Defaults: sized on the 2-core development machine so a cell trains for about 5 s in the serial loop.
NUM_CELLS = 32
NUM_EXAMPLES = 160  # n_weak + n_oracle of every cell
STUDENT_EPOCHS = 40
CPU_PER_CELL = 1
REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def bench_config(storage: str, *, num_cells: int, num_examples: int, epochs: int) -> dict:
    step = max(1, (num_examples - 2) // max(1, num_cells - 1))
    pairs = [[num_examples - k, k] for k in range(1, num_examples, step)][:num_cells]
    if len(pairs) < num_cells:
        raise SystemExit(f"--num-examples {num_examples} gives only {len(pairs)} distinct pairs; raise it")
    return dict(
        name="overhead",
        storage=storage,
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=4 * num_examples + 600,
                       pools=dict(weak_train=100, val=64, test=128, weak_label=num_examples,
                                  oracle=num_examples))],
        weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=32)],
        students=[dict(model="tiny-bert", name="tiny-student", epochs=epochs, patience=epochs,
                       batch_size=32, max_length=32)],
        methods=["seq-sft"],
        budgets=[float(num_examples)],
        pairs=pairs,
        resources=dict(cpu=CPU_PER_CELL, gpu=0),
        max_failures=0,
    )


def serial_child(config_path: str, limit: int | None, threads: int) -> None:
    """(b): the plain functions in one process, one cell after another, on `threads` torch threads
    (0: torch's default, one per core)."""
    t0 = time.monotonic()
    import torch

    if threads:
        torch.set_num_threads(threads)
    from w2sweep.cells import run_cell
    from w2sweep.grid import expand_cells
    from w2sweep.config import load_config
    from w2sweep.frontier import write_frontier
    from w2sweep.storage import Storage
    from w2sweep.weak import ensure_weak_labels

    imported = time.monotonic() - t0
    config = load_config(config_path)
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)[:limit]
    t1 = time.monotonic()
    for cell in {c.weak_key: c for c in cells}.values():
        ensure_weak_labels(storage, config.name, cell.dataset, cell.weak_supervisor, cell.seed)
    weak = time.monotonic() - t1
    per_cell = []
    for cell in cells:
        t = time.monotonic()
        run_cell(cell, storage)
        per_cell.append(time.monotonic() - t)
    if limit is None:
        write_frontier(storage, config.name)
    print(json.dumps(dict(import_s=imported, weak_s=weak, cells_s=per_cell, torch_threads=torch.get_num_threads())))


def _timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - t
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return seconds, done


def _cell_seconds(root: Path) -> tuple[int, float]:
    rows = [json.loads(p.read_text()) for p in (root / "overhead" / "cells").glob("*.json")]
    return len(rows), sum(r["wall_seconds"] for r in rows)


def _cell_spans(root: Path) -> list[tuple[float, float]]:
    """(start, end) of every cell's `run_cell`, epoch seconds: its result file is written as it ends
    (mtime), `wall_seconds` before that it started. (Tune's own result timestamps are whole seconds.)"""
    spans = []
    for path in (root / "overhead" / "cells").glob("*.json"):
        end = path.stat().st_mtime
        spans.append((end - json.loads(path.read_text())["wall_seconds"], end))
    return spans


def _slot_gaps(spans: list[tuple[float, float]], slots: int) -> list[float]:
    """Seconds between a cell's end and the next cell's start on the same slot: each cell, in start
    order, goes to the slot that freed up last before it started (Tune's turnaround per cell)."""
    free = [0.0] * slots
    gaps = []
    for start, end in sorted(spans):
        ready = [i for i in range(slots) if free[i] <= start]
        slot = max(ready, key=lambda i: free[i]) if ready else min(range(slots), key=lambda i: free[i])
        if free[slot]:
            gaps.append(start - free[slot])
        free[slot] = end
    return gaps


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return dict(nproc=len(os.sched_getaffinity(0)), cpu=model, python=platform.python_version(),
                loadavg_1m=os.getloadavg()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-cells", type=int, default=NUM_CELLS)
    p.add_argument("--num-examples", type=int, default=NUM_EXAMPLES, help="n_weak + n_oracle per cell")
    p.add_argument("--epochs", type=int, default=STUDENT_EPOCHS, help="student epochs per stage")
    p.add_argument("--calibrate", action="store_true", help="time the first 2 cells serially and stop")
    p.add_argument("--order", default="ba", help="which side runs first: 'ba' (serial first) or 'ab'")
    p.add_argument("--repeat", type=int, default=1,
                   help="side-by-side runs, alternating which side goes first; prints each and the medians")
    p.add_argument("--serial-child", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--serial-threads", type=int, default=CPU_PER_CELL,
                   help="torch threads of the serial loop: the cells' own (default, what Ray gives a "
                        "1-CPU trial through OMP_NUM_THREADS), or 0 for torch's default (one per core)")
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serial_child:
        return serial_child(args.serial_child, args.limit, args.serial_threads)

    reports = []
    for i in range(args.repeat):
        # Alternate which side goes first, so a machine that speeds up or slows down during the
        # runs favours neither side.
        order = args.order if i % 2 == 0 else args.order[::-1]
        report = measure(args, order)
        if report is None:
            return
        reports.append(report)
    if len(reports) > 1:
        medians = {k: round(statistics.median(r[k] for r in reports), 3) for k in
                   ("ratio", "overhead_per_cell_s", "overhead_outside_cells_per_cell_s", "a_sweep_s", "b_serial_s")}
        print(json.dumps(dict(runs=len(reports), median=medians)))


def measure(args, order: str) -> dict | None:
    """One side-by-side run of (a) and (b) in `order`; prints and returns its report."""
    env = dict(os.environ, RAY_ADDRESS="", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("RAY_AIR_NEW_OUTPUT", None)
    slots = len(os.sched_getaffinity(0)) // CPU_PER_CELL
    with tempfile.TemporaryDirectory(prefix="w2sweep-overhead-") as tmp:
        tmp = Path(tmp)
        paths = {}
        for side in "ab":
            paths[side] = tmp / f"{side}.yaml"
            paths[side].write_text(yaml.safe_dump(bench_config(
                str(tmp / f"store-{side}"), num_cells=args.num_cells, num_examples=args.num_examples,
                epochs=args.epochs)))
        if args.calibrate:
            _, done = _timed([PYTHON, __file__, "--serial-child", str(paths["b"]), "--limit", "2",
                              "--serial-threads", str(args.serial_threads)], env)
            print(done.stdout.strip().splitlines()[-1])
            return None
        before = machine()
        wall, detail = {}, {}
        for side in order:
            if side == "a":
                a_spawned = time.time()
                wall["a"], done = _timed([PYTHON, "-m", "w2sweep.cli", "run", str(paths["a"])], env)
                detail["a_stdout"] = done.stdout.strip().splitlines()[:1]
            else:
                wall["b"], done = _timed([PYTHON, __file__, "--serial-child", str(paths["b"]),
                                          "--serial-threads", str(args.serial_threads)], env)
                detail["b"] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"({side}) {wall[side]:.1f} s", file=sys.stderr)
        counts = {s: _cell_seconds(tmp / f"store-{s}") for s in "ab"}
        spans = _cell_spans(tmp / "store-a")
    for side, (n, _) in counts.items():
        if n != args.num_cells:
            sys.exit(f"({side}) wrote {n} results, expected {args.num_cells}")
    a, b, n = wall["a"], wall["b"], args.num_cells
    report = dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python", "bench/overhead.py", *sys.argv[1:]]),
        machine=before, loadavg_1m_after=os.getloadavg()[0], slots=slots, cells=n,
        num_examples=args.num_examples, epochs=args.epochs,
        a_sweep_s=round(a, 2), b_serial_s=round(b, 2), ratio=round(a / b, 3),
        overhead_per_cell_s=round((a * slots - b) / n, 3),
        # The same with each side's time inside run_cell taken out: slot-seconds (a) spends outside
        # cells minus the seconds (b) spends outside cells, per cell. Unlike the figure above it does not
        # move when parallel cells run slower than serial ones (a shared machine, memory bandwidth).
        overhead_outside_cells_per_cell_s=round(
            ((a * slots - counts["a"][1]) - (b - counts["b"][1])) / n, 3),
        a_cell_seconds=round(counts["a"][1], 2), b_cell_seconds=round(counts["b"][1], 2),
        # Where (a)'s time goes: before the first cell starts (CLI imports, Ray start, weak labels, Tune
        # start, trial processes importing), between the first start and the last end (slot-seconds
        # outside cells, per cell: a second slot starting later, Tune's turnaround, uneven ends), and
        # after (frontier, Ray shutdown, exit). The turnaround alone is the median gap on a slot.
        a_startup_s=round(min(t for t, _ in spans) - a_spawned, 2),
        a_steady_overhead_per_cell_s=round(
            (slots * (max(e for _, e in spans) - min(t for t, _ in spans)) - sum(e - t for t, e in spans)) / n, 3),
        a_median_gap_between_cells_s=round(statistics.median(_slot_gaps(spans, slots)), 3),
        a_teardown_s=round(a_spawned + a - max(e for _, e in spans), 2),
        b_import_s=round(detail["b"]["import_s"], 2), b_weak_s=round(detail["b"]["weak_s"], 2),
        b_mean_cell_s=round(sum(detail["b"]["cells_s"]) / n, 2), b_torch_threads=detail["b"]["torch_threads"],
    )
    report["order"] = order
    print(f"| {n} | {report['b_mean_cell_s']:.1f} | {a:.1f} | {b:.1f} | {report['ratio']:.2f} | "
          f"{report['overhead_per_cell_s']:.2f} | {report['overhead_outside_cells_per_cell_s']:.2f} | {slots} |")
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
