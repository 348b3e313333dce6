"""Adaptive search vs the full grid: replays `w2sweep.search.next_cells` (the core decisions, no Ray)
against recorded full grids and counts the cells it would have run.

    .venv/bin/python bench/adaptive.py                        # planted tables, 20 noise draws each
    .venv/bin/python bench/adaptive.py --draws 5 --coarse-seeds 5 --seed 1
    .venv/bin/python bench/adaptive.py --draws 0 --sweep /tmp/w2s-results/results   # a real sweep's grid

Planted tables: at each budget a known curve accuracy(f) over 21 fractions (0, 0.05, ..., 1) and 5
seeds; a seed's cell = curve + a per-seed offset shared by every fraction (the seed's pools) + an
independent per-cell noise; each cell stores a 95% interval of +-0.035 (500 test examples). Four
budgets: quantity-dominant (decreasing), mixed (peak at 0.3), mixed (peak at 0.8, f=1 2.4 points
below) and quality-dominant (increasing). `--sweep STORAGE/SWEEP` reads a sweep's result objects
(`w2sweep.results.read_cells`) and replays each dataset x weak x student x method x budget with a
complete grid of spending fractions x seeds, over the fractions that buy distinct label counts (as
`w2sweep.search.choose`); ceiling cells, which every search runs, are left out of both counts.

Reported per budget: cells run by the search vs the full grid; `best err`: the full grid's best
accuracy minus the full grid's accuracy at the fraction the search chose (what choosing from the
search costs, in accuracy points; 0 = the same or an equally good fraction); the regime the
frontier's rule (`w2sweep.frontier.regimes`, same tolerance, Bonferroni over the fractions the grid
has, as `w2sweep frontier` takes them from sweep.yaml) gives on the search's cells vs on the full
grid (`same_regime`: share of draws agreeing), and how often each finds the planted regime
(`search_true`, `full_true`). The regime is decided from the result rows (paired over seeds); the
frontier uses stored predictions only for a comparison on one seed, which neither side makes here.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
from w2sweep.frontier import CEILING_METHOD, at_chance, curves, regimes, without_signal  # noqa: E402
from w2sweep.results import NO_WEAK_SUPERVISOR  # noqa: E402
from w2sweep.search import Observation, Options, candidate_fractions, next_cells  # noqa: E402

FRACTIONS = [round(0.05 * i, 2) for i in range(21)]
SEEDS = [0, 1, 2, 3, 4]
PLANTED = {  # budget -> (name, true accuracy at f, true regime)
    8: ("quantity-dominant", lambda f: 0.80 - 0.15 * f ** 1.2, "quantity-dominant"),
    32: ("mixed, peak 0.3", lambda f: 0.85 - 0.40 * (f - 0.3) ** 2, "mixed"),
    128: ("mixed, peak 0.8", lambda f: 0.88 - 0.60 * (f - 0.8) ** 2, "mixed"),
    512: ("quality-dominant", lambda f: 0.70 + 0.18 * f ** 0.7, "quality-dominant"),
}


def planted(curve, rng, *, seed_sd: float, cell_sd: float) -> dict[tuple[float, int], Observation]:
    """One recorded full grid of a planted curve: (fraction, seed) -> observation."""
    offsets = {s: rng.normal(0, seed_sd) for s in SEEDS}
    table = {}
    for f in FRACTIONS:
        for s in SEEDS:
            acc = float(np.clip(curve(f) + offsets[s] + rng.normal(0, cell_sd), 0, 1))
            table[(f, s)] = Observation(acc, acc - 0.035, acc + 0.035)
    return table


def replay(table: dict, fractions: list[float], seeds: list[int], options: Options,
           num_fractions: int | None = None, at_chance: bool = False) -> tuple[dict, int, str]:
    """The search run against `table`: (observed cells, rounds, why it stopped)."""
    observed, rounds = {}, 0
    while True:
        decision = next_cells(fractions, seeds, observed, options, num_fractions=num_fractions, at_chance=at_chance)
        if not decision.run:
            return observed, rounds, decision.reason
        rounds += 1
        observed.update({point: table[point] for point in decision.run})


def rows(cells: dict, budget: float) -> pd.DataFrame:
    """Result rows the frontier reads, for a set of (fraction, seed) cells of one budget."""
    return pd.DataFrame([dict(dataset="d", weak_supervisor="w", student="s", method="seq-sft", budget=budget,
                              spending_fraction=f, seed=s, n_weak=0, n_oracle=0, label_cost=budget,
                              c_weak=0.1, c_oracle=1.0, accuracy=o.accuracy, accuracy_ci_low=o.ci_low,
                              accuracy_ci_high=o.ci_high, auroc=math.nan, status="ok", cell_id=f"{f}-{s}")
                         for (f, s), o in cells.items()])


def answer(cells: dict, budget: float, tolerance: float, num_fractions: int,
           ceiling: pd.DataFrame | None = None) -> tuple[float, float, str]:
    """(best fraction, its mean accuracy, regime) by the frontier's rules on `cells`, `num_fractions`
    asked for (the regimes' Bonferroni family, as `w2sweep frontier` takes it from sweep.yaml), with the
    group's `ceiling` result rows (relabelled to the unit's names) when it has them: no regime where the
    ceiling is at chance (`without_signal`)."""
    results = pd.concat([rows(cells, budget), ceiling], ignore_index=True) if ceiling is not None else rows(cells, budget)
    table = curves(results)
    found = without_signal(regimes(table, tolerance=tolerance, results=results, num_fractions=num_fractions), table)
    table = found[found["method"] == "seq-sft"].iloc[0]
    return float(table["best_fraction"]), float(table["best_accuracy"]), table["regime"]


def compare_one(table: dict, budget: float, fractions: list, seeds: list, options: Options,
                candidates: list | None = None, ceiling: pd.DataFrame | None = None) -> dict:
    """One budget: the search (over `candidates`, default all `fractions`) against its full grid; both
    with the group's `ceiling` rows, whose being at chance the search is told as `w2sweep.search.choose` is."""
    silent = ceiling is not None and not at_chance(curves(ceiling)).empty
    observed, rounds, why = replay(table, candidates or fractions, seeds, options, len(fractions), silent)
    full_f, full_acc, full_regime = answer(table, budget, options.tolerance, len(fractions), ceiling)
    f, _, regime = answer(observed, budget, options.tolerance, len(fractions), ceiling)
    at_chosen = float(np.mean([o.accuracy for (g, _), o in table.items() if g == f]))
    return dict(cells=len(observed), full=len(table), rounds=rounds, stop=why, best_f=f, full_best_f=full_f,
                err=full_acc - at_chosen, regime=regime, full_regime=full_regime)


def planted_runs(draws: int, options: Options, *, seed_sd: float, cell_sd: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = []
    for draw in range(draws):
        for budget, (name, curve, truth) in PLANTED.items():
            table = planted(curve, rng, seed_sd=seed_sd, cell_sd=cell_sd)
            out.append(dict(budget=budget, planted=name, draw=draw, truth=truth,
                            **compare_one(table, budget, FRACTIONS, SEEDS, options)))
    return pd.DataFrame(out)


def recorded_runs(sweep: str, options: Options) -> pd.DataFrame:
    """Each unit of a real sweep's stored results, replayed as a recorded grid."""
    from w2sweep.results import cell_keys, read_cells
    from w2sweep.storage import Storage

    root, name = sweep.rstrip("/").rsplit("/", 1)
    storage = Storage.from_uri(root)
    results, _ = read_cells(storage, cell_keys(storage, name))
    if results.empty:
        sys.exit(f"--sweep {sweep}: no result objects under {root}/{name}/")
    results = results[results["spending_fraction"].notna() & (results["status"] == "ok")]
    ceilings = results[results["method"] == CEILING_METHOD]  # shared ones under NO_WEAK_SUPERVISOR
    results = results[results["method"] != CEILING_METHOD]
    out = []
    for key, unit in results.groupby(["dataset", "weak_supervisor", "student", "method", "budget"]):
        ceiling = ceilings[(ceilings["dataset"] == key[0]) & (ceilings["student"] == key[2])
                           & ceilings["weak_supervisor"].isin([key[1], NO_WEAK_SUPERVISOR])]
        ceiling = ceiling.assign(dataset="d", weak_supervisor="w", student="s") if len(ceiling) else None
        table = {(float(r.spending_fraction), int(r.seed)):
                 Observation(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high) for r in unit.itertuples()}
        fractions, seeds = sorted({f for f, _ in table}), sorted({s for _, s in table})
        if len(table) < len(fractions) * len(seeds):
            continue  # not a complete grid
        candidates = sorted(candidate_fractions(unit.itertuples()))  # as `choose`: one per label count
        out.append(dict(budget=key[-1], planted="/".join(map(str, key[:-1])), draw=0, truth="",
                        **compare_one(table, key[-1], fractions, seeds, options, candidates, ceiling)))
    return pd.DataFrame(out)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby(["budget", "planted"]).agg(
        cells=("cells", "mean"), full=("full", "first"), rounds=("rounds", "mean"),
        max_err=("err", "max"), mean_err=("err", "mean"),
        same_regime=("regime", lambda r: float((r == frame.loc[r.index, "full_regime"]).mean())),
        search_true=("regime", lambda r: float((r == frame.loc[r.index, "truth"]).mean())),
        full_true=("full_regime", lambda r: float((r == frame.loc[r.index, "truth"]).mean())),
        full_regime=("full_regime", lambda r: r.value_counts().idxmax()),
        search_regime=("regime", lambda r: r.value_counts().idxmax())).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--coarse-seeds", type=int, default=3)
    parser.add_argument("--max-cells", type=int, default=None, help="max_cells_per_budget")
    parser.add_argument("--seed-sd", type=float, default=0.01)
    parser.add_argument("--cell-sd", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0, help="of the planted noise draws")
    parser.add_argument("--sweep", help="STORAGE/SWEEP of a finished grid to replay as well, "
                        "e.g. /tmp/w2s-results/results")
    args = parser.parse_args()
    options = Options(tolerance=args.tolerance, coarse_seeds=args.coarse_seeds, max_cells_per_budget=args.max_cells)
    print(f"# {platform.node()} {os.cpu_count()} CPUs, python {platform.python_version()}; {options}")
    frames = [planted_runs(args.draws, options, seed_sd=args.seed_sd, cell_sd=args.cell_sd, seed=args.seed)]
    if args.sweep:
        frames.append(recorded_runs(args.sweep, options))
    frame = pd.concat(frames, ignore_index=True)
    pd.set_option("display.width", 200)
    print(summary(frame).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    for source, part in frame.groupby(frame["truth"] == "", sort=False):
        total, full = part["cells"].sum(), part["full"].sum()
        print(f"{'recorded' if source else 'planted'}: {total} of {full} cells ({full / total:.2f}x fewer); "
              f"best-accuracy error max {part['err'].max() * 100:.2f} points, mean {part['err'].mean() * 100:.2f}; "
              f"same regime in {(part['regime'] == part['full_regime']).sum()} of {len(part)} budgets; planted "
              f"regime found by the search in {(part['regime'] == part['truth']).sum()}, by the full grid in "
              f"{(part['full_regime'] == part['truth']).sum()}")


if __name__ == "__main__":
    main()
