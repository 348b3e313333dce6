"""Aggregation speed: curves + frontier + regimes + budget table + PGR on 1,000,000 result rows.

    .venv/bin/python bench/aggregate.py                   # 1,000,000 rows, vectorized + naive baseline
    .venv/bin/python bench/aggregate.py --rows 200000 --no-baseline
    .venv/bin/python bench/aggregate.py --parquet /tmp/results.parquet   # also time reading them back
    .venv/bin/python bench/aggregate.py --rows 0 --objects 2000 --objects-in seaweedfs  # read_cells over S3

What is timed: `w2sweep.frontier.aggregate()` on a pandas table already in memory, i.e. curves (mean,
std, n seeds, t-interval per budget x fraction), the Pareto frontier per method and across methods,
regimes (with their paired t-intervals over seeds), the budget table, PGR and the no-signal check.
Not timed: generating the synthetic rows, reading cell objects from storage (one object per cell;
see `read_cells`), plots and report.html. With --parquet the rows are
also written to a Parquet file and the read back into pandas is timed on its own line.

The baseline is the same work done the naive way, one Python iteration per group (the shape of the
first frontier.py: a loop over groups for the Pareto set and regimes, plus per-group loops for the budget
table and PGR), on the same curves table in the same process; its curves step is shared, so the ratio
is for the per-group stages only. Results of both are checked equal before timings are reported.

Synthetic grid (default): 20 datasets x 4 weak supervisors x 5 students x 5 methods x 10 budgets x
10 spending fractions x 5 seeds = 1,000,000 rows; 1% failed cells and 1% NaN accuracies.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # run without installing

from w2sweep import frontier as fr  # noqa: E402
from w2sweep import layout  # noqa: E402
from w2sweep.results import cell_keys, read_cells  # noqa: E402

METHODS = ["seq-sft", "seq-sft+fewshot", "seq-sft+logconf", "sft-oracle", "sft-weak"]


def synthetic_results(num_rows: int, *, seed: int = 0) -> pd.DataFrame:
    """`num_rows` result rows (as `read_cells` returns them) on a full grid; accuracy rises with budget
    and has an interior optimum in the spending fraction, plus noise per seed."""
    rng = np.random.default_rng(seed)
    shape = dict(datasets=20, weak=4, students=5, methods=len(METHODS), budgets=10, fractions=10, seeds=5)
    full = math.prod(shape.values())
    scale = num_rows / full
    if scale < 1:  # fewer rows: shrink the dataset axis, keep the rest
        shape["datasets"] = max(1, round(shape["datasets"] * scale))
    grid = np.indices(tuple(shape.values())).reshape(len(shape), -1)
    grid = grid[:, :num_rows] if grid.shape[1] >= num_rows else grid
    d, w, s, m, b, f, seed_ = grid
    budgets = np.geomspace(8, 4096, shape["budgets"])[b].round()
    fractions = np.linspace(0, 1, shape["fractions"])[f].round(3)
    c_weak, c_oracle = 0.1, 1.0
    n_oracle = np.floor(fractions * budgets / c_oracle)
    n_weak = np.floor((budgets - n_oracle * c_oracle) / c_weak + 1e-9)
    accuracy = (0.6 + 0.05 * np.log2(budgets) / 12 + 0.1 * fractions * (1 - fractions)
                + 0.02 * (d % 3) + rng.normal(0, 0.01, len(d)))
    status = np.where(rng.random(len(d)) < 0.01, "failed", "ok")
    accuracy[rng.random(len(d)) < 0.01] = np.nan
    names = lambda prefix, n: np.array([f"{prefix}{i}" for i in range(n)], dtype=object)  # noqa: E731
    return pd.DataFrame({
        "dataset": names("dataset-", shape["datasets"])[d],
        "weak_supervisor": names("weak-", shape["weak"])[w],
        "student": names("student-", shape["students"])[s],
        "method": np.array(METHODS, dtype=object)[m],
        "budget": budgets, "spending_fraction": fractions, "seed": seed_,
        "n_weak": n_weak.astype(np.int64), "n_oracle": n_oracle.astype(np.int64),
        "label_cost": n_weak * c_weak + n_oracle * c_oracle, "c_weak": c_weak, "c_oracle": c_oracle,
        "accuracy": accuracy, "auroc": accuracy + 0.05, "weak_accuracy": 0.58 + 0.01 * (w % 4),
        "wall_seconds": rng.uniform(60, 600, len(d)), "gpu_seconds": rng.uniform(60, 600, len(d)),
        "gpus_per_cell": 1.0, "status": status,
    })


# ---- the naive baseline: one Python iteration per group ---------------------------------------------

def naive_frontier(curves: pd.DataFrame) -> pd.DataFrame:
    points = fr.with_costs(curves.dropna(subset=["accuracy_mean"]))
    points = points.assign(source_method=points["method"], cost=points["label_cost"], axis="label")
    both = pd.concat([points, points.assign(method=fr.ALL_METHODS)], ignore_index=True)
    parts = []
    for _, group in both.groupby(fr.GROUP, sort=True):
        group = group.sort_values(["cost", "accuracy_mean", "source_method", "spending_fraction", "n_oracle"],
                                  ascending=[True, False, True, True, True], kind="mergesort")
        best_before = group["accuracy_mean"].cummax().shift(fill_value=-math.inf)
        parts.append(group[group["accuracy_mean"] > best_before])
    return pd.concat(parts).sort_values(fr.GROUP + ["cost"], kind="mergesort").reset_index(drop=True)


def naive_regimes(curves: pd.DataFrame, *, tolerance: float) -> pd.DataFrame:
    rows = []
    for key, group in curves[curves["spending_fraction"].notna()].groupby(fr.GROUP + ["budget"], sort=True):
        by_fraction = group.sort_values("spending_fraction").set_index("spending_fraction")["accuracy_mean"]
        best = by_fraction.max()
        best_fraction = by_fraction.idxmax()
        at_0, at_1 = by_fraction.get(0.0, math.nan), by_fraction.get(1.0, math.nan)
        near_0 = not math.isnan(at_0) and best - at_0 <= tolerance + 1e-9
        near_1 = not math.isnan(at_1) and best - at_1 <= tolerance + 1e-9
        regime = ("indeterminate" if len(group) < 2 else "quantity-dominant" if near_0 and not near_1
                  else "quality-dominant" if near_1 and not near_0
                  else "mixed" if not near_0 and not near_1 and 0 < best_fraction < 1 else "indeterminate")
        rows.append(dict(zip(fr.GROUP + ["budget"], key), regime_by_tolerance=regime, best_fraction=best_fraction,
                         best_accuracy=best))
    return pd.DataFrame(rows)


def naive_budget_points(curves: pd.DataFrame, budgets: list[float]) -> pd.DataFrame:
    points = curves.dropna(subset=["accuracy_mean"])
    both = pd.concat([points, points.assign(method=fr.ALL_METHODS)], ignore_index=True)
    rows = []
    for key, group in both.groupby(fr.GROUP, sort=True):
        for budget in budgets:
            reachable = group[group["label_cost"] <= budget + 1e-9]
            best = reachable["accuracy_mean"].max() if len(reachable) else math.nan
            rows.append(dict(zip(fr.GROUP, key), budget=budget, best_accuracy=best))
    return pd.DataFrame(rows)


def naive_pgr(curves: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for _, group in curves.groupby(fr.MODELS, sort=True):
        oracle = group[group["method"] == fr.ORACLE_METHOD]
        ceiling = oracle.loc[oracle["budget"] == oracle["budget"].max(), "accuracy_mean"].max()
        weak = group["weak_accuracy_mean"]
        parts.append(group.assign(pgr=(group["accuracy_mean"] - weak) / (ceiling - weak)))
    return pd.concat(parts)


def naive_stages(curves: pd.DataFrame, budgets: list[float], tolerance: float) -> dict:
    return dict(frontier=naive_frontier(curves), regimes=naive_regimes(curves, tolerance=tolerance),
                budget_points=naive_budget_points(curves, budgets), pgr=naive_pgr(curves))


def check_same(agg: fr.Aggregate, naive: dict) -> None:
    """The vectorized answers equal the naive ones (same rows, same numbers)."""
    def plain(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        return frame[columns].astype({c: str for c in fr.GROUP}).reset_index(drop=True)

    cols = fr.GROUP + ["cost", "accuracy_mean"]
    pd.testing.assert_frame_equal(plain(agg.frontier, cols), plain(naive["frontier"], cols))
    # The regime itself is not compared: the naive loop applies the tolerance only, while the frontier
    # also requires a paired significance test (w2sweep.frontier.regimes).
    cols = fr.GROUP + ["budget", "best_fraction", "best_accuracy"]
    pd.testing.assert_frame_equal(plain(agg.regimes, cols), plain(naive["regimes"], cols), check_dtype=False)
    cols = fr.GROUP + ["budget", "best_accuracy"]
    pd.testing.assert_frame_equal(plain(agg.budget_points, cols), plain(naive["budget_points"], cols),
                                  check_dtype=False)
    keys = fr.GROUP + ["budget", "spending_fraction", "n_weak", "n_oracle"]
    merged = plain(agg.pgr, keys + ["pgr"]).merge(plain(naive["pgr"], keys + ["pgr"]), on=keys)
    assert len(merged) == len(agg.pgr) == len(naive["pgr"])
    np.testing.assert_allclose(merged["pgr_x"], merged["pgr_y"])


def time_read_cells(num_objects: int, *, where: str) -> None:
    """Write `num_objects` result JSON objects as cells do, then time `read_cells` over them, with 1,
    4 and 32 threads. `where`: "local" (a temporary directory) or "seaweedfs" (a SeaweedFS S3 server
    on 127.0.0.1, started and stopped here, as the tests do)."""
    import json
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from w2sweep.storage import Storage

    rows = synthetic_results(num_objects).head(num_objects).to_dict("records")
    with tempfile.TemporaryDirectory() as root:
        server = None
        if where == "seaweedfs":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from s3servers import SeaweedFS

            server = SeaweedFS(Path(root) / "weed")
            os.environ.update(server.start().env())
            storage = Storage.from_uri(f"s3://{server.server.bucket}/bench-{os.getpid()}")
        else:
            storage = Storage.from_uri(root)
        try:
            def put(i: int) -> None:
                r = rows[i]
                low, high = r["accuracy"] - 0.03, r["accuracy"] + 0.03
                obj = r | {"cell_id": f"{i:08x}", "sweep": "bench", "accuracy_ci": [low, high],
                           "auroc_ci": [low, high], "num_test": 500, "config": {"resources": {"gpu": 1}}}
                storage.write_once(layout.result("bench", f"{i:08x}"), json.dumps(obj).encode())

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(put, range(len(rows))))
            keys = cell_keys(storage, "bench")
            for threads in (1, 4, 32):
                t = time.perf_counter()
                table, unreadable = read_cells(storage, keys, num_threads=threads)
                print(f"read_cells: {len(table):,} {where} objects with {threads:>2} thread(s): "
                      f"{time.perf_counter() - t:.2f} s ({len(unreadable)} unreadable)")
        finally:
            if server:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the vectorized path (best is reported)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive per-group baseline")
    parser.add_argument("--parquet", help="also write the rows to this Parquet file and time reading it back")
    parser.add_argument("--objects", type=int, default=0, metavar="N",
                        help="also write N cell result objects and time reading them with read_cells "
                             "(1, 4, 32 threads)")
    parser.add_argument("--objects-in", choices=["local", "seaweedfs"], default="local",
                        help="where those objects live (seaweedfs: a SeaweedFS S3 server on 127.0.0.1)")
    args = parser.parse_args()
    if args.objects:
        time_read_cells(args.objects, where=args.objects_in)
    if args.rows <= 0:
        return

    t = time.perf_counter()
    results = synthetic_results(args.rows)
    print(f"generated {len(results):,} rows in {time.perf_counter() - t:.1f} s (not timed)")
    if args.parquet:
        results.to_parquet(args.parquet, index=False)
        t = time.perf_counter()
        results = pd.read_parquet(args.parquet)
        print(f"read back from Parquet: {time.perf_counter() - t:.2f} s")
    budgets = sorted(results["budget"].unique().tolist())
    fr.aggregate(results.head(1000), budgets=budgets)  # warm up imports (scipy) outside the timing

    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        agg = fr.aggregate(results, tolerance=0.01, budgets=budgets)
        times.append(time.perf_counter() - t)
    print(f"vectorized aggregate(): best {min(times):.2f} s, runs {', '.join(f'{x:.2f}' for x in times)} "
          f"({len(agg.curves):,} curve points, {len(agg.frontier):,} frontier points, "
          f"{len(agg.regimes):,} regimes, {len(agg.budget_points):,} budget cells, {len(agg.pgr):,} PGR rows)")
    stages = {}
    t = time.perf_counter()
    table = fr.curves(results)
    stages["curves"] = time.perf_counter() - t
    for name, fn in [("frontier", lambda: fr.pareto_frontier(table)),
                     ("regimes", lambda: fr.regimes(table, tolerance=0.01, results=results)),
                     ("budget table", lambda: fr.budget_table(fr.budget_points(table, budgets=budgets))),
                     ("pgr", lambda: fr.pgr(table))]:
        t = time.perf_counter()
        fn()
        stages[name] = time.perf_counter() - t
    print("  stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))

    if not args.no_baseline:
        t = time.perf_counter()
        naive = naive_stages(table, budgets, 0.01)
        naive_time = time.perf_counter() - t
        vector_time = sum(v for k, v in stages.items() if k != "curves")
        check_same(agg, naive)
        print(f"naive per-group loops (frontier, regimes, budget table, pgr): {naive_time:.1f} s vs "
              f"vectorized {vector_time:.2f} s for the same stages: {naive_time / vector_time:.0f}x; "
              f"answers equal")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"pandas {pd.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
