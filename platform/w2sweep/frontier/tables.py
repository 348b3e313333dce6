"""The tables a sweep's answer is read from: usable rows, seed-averaged curves, their costs, the
Pareto frontier and the budget table; and the vocabulary (GROUP, AXES, ...) the other modules share.

Everything is vectorized pandas (groupby, sort + cummax, merge_asof) rather than a loop per group,
because a sweep can have a million result rows and they must aggregate in seconds (bench/aggregate.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from w2sweep.frontier import stats
from w2sweep.frontier.stats import numeric

GROUP = ["dataset", "weak_supervisor", "student", "method"]
MODELS = ["dataset", "weak_supervisor", "student"]  # GROUP without the method
ALL_METHODS = "*all*"  # the `method` of the frontier taken across every method
AXES = {  # --axis: the cost a frontier is drawn on
    "label": ("label_cost", "label cost (label units)"),
    "compute": ("compute_cost", "compute cost ($)"),
    "total": ("total_cost", "label + compute cost ($)"),
}
DEFAULT_GPU_HOUR_PRICE = 2.0  # $ per GPU-hour, when neither the CLI nor sweep.yaml sets one

# Slack on "within tolerance" and "cost <= budget": accuracies are means of floats, and
# 0.71 - 0.70 is 0.0100000000000000009.
EPS = 1e-9


def usable(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: status "ok" and a finite accuracy, with numeric fraction/accuracy columns."""
    if results.empty:
        return results
    results = results.assign(
        # JSON null (an explicit pair) arrives as None; an all-None column would stay dtype object.
        spending_fraction=numeric(results, "spending_fraction"),
        accuracy=numeric(results, "accuracy"),
    )
    ok = (results["status"] == "ok") & np.isfinite(results["accuracy"])
    return results[ok].reset_index(drop=True)


def gpu_seconds(results: pd.DataFrame, *, default_gpus: float = 0.0) -> pd.Series:
    """GPU-seconds per row, the compute-cost axis: the ``gpu_seconds`` the runner recorded, 0.0 for a
    CPU-only cell included (a recorded value is a measurement, never overridden by a guess).

    Only a result written before the runner recorded it (NaN after `w2sweep.results.read_cells`)
    falls back to an estimate: ``wall_seconds x gpus_per_cell`` (``config.resources.gpu``), with
    `default_gpus` (sweep.yaml's ``resources.gpu``) where that is unknown; else 0.
    """
    measured = numeric(results, "gpu_seconds")
    gpus = numeric(results, "gpus_per_cell").fillna(default_gpus)
    derived = numeric(results, "wall_seconds") * gpus
    return measured.where(measured.notna(), derived).fillna(0.0)


def recost(results: pd.DataFrame, *, c_weak: float) -> pd.DataFrame:
    """The same results priced with another weak-label cost: nothing is re-run.

    n_weak and n_oracle are what the cells trained on; ``label_cost = n_weak*c_weak + n_oracle*c_oracle``
    (each row's c_oracle) and the spending fraction becomes the oracle share of that cost,
    ``n_oracle*c_oracle / label_cost``. ``budget`` stays the budget the cell was run at (the curve it
    belongs to); explicit (n_weak, n_oracle) pairs keep a NaN fraction.
    """
    if not (c_weak > 0 and math.isfinite(c_weak)):
        raise ValueError(f"c_weak={c_weak!r}: must be a number > 0 (label units)")
    n_weak, n_oracle = numeric(results, "n_weak"), numeric(results, "n_oracle")
    c_oracle = numeric(results, "c_oracle")
    oracle_cost = n_oracle * c_oracle
    cost = (n_weak * c_weak + oracle_cost).round(9)  # 3 * 0.1 is 0.30000000000000004
    fraction = (oracle_cost / cost.where(cost > 0)).round(12)
    was_pair = numeric(results, "spending_fraction").isna()
    return results.assign(c_weak=c_weak, label_cost=cost, spending_fraction=fraction.mask(was_pair))


def add_dataset_groups(results: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    """`results` plus one row per dataset group x (everything but the dataset) x seed: the mean over
    the group's datasets of accuracy, AUROC, weak accuracy and GPU-seconds, ``dataset`` = the group's
    name. A point enters a group only when every member dataset has a usable result for it."""
    if not groups:
        return results
    rows = usable(results)
    known = set(rows["dataset"]) if not rows.empty else set()
    keys = ["weak_supervisor", "student", "method", "budget", "spending_fraction", "n_weak", "n_oracle", "seed"]
    parts = [results]
    for name, members in groups.items():
        members = sorted(set(members))
        if name in known:
            raise ValueError(f"dataset group {name!r}: a dataset of that name exists; pick another name")
        absent = [m for m in members if m not in known]
        if absent:
            raise ValueError(f"dataset group {name!r}: no usable results for datasets {absent}; "
                             f"allowed: {sorted(known)}")
        sub = rows[rows["dataset"].isin(members)]
        sub = sub.assign(gpu_seconds=gpu_seconds(sub))
        means = (
            sub.groupby(keys, dropna=False, sort=False)
            .agg(label_cost=("label_cost", "first"), c_weak=("c_weak", "first"),
                 c_oracle=("c_oracle", "first"), accuracy=("accuracy", "mean"), auroc=("auroc", "mean"),
                 weak_accuracy=("weak_accuracy", "mean"), gpu_seconds=("gpu_seconds", "mean"),
                 num_datasets=("dataset", "nunique"))
            .reset_index()
        )
        means = means[means["num_datasets"] == len(members)].drop(columns="num_datasets")
        parts.append(means.assign(dataset=name, status="ok"))
    return pd.concat(parts, ignore_index=True)


# ---- curves ---------------------------------------------------------------------------------------

CURVE_COLUMNS = GROUP + [
    "budget", "spending_fraction", "n_weak", "n_oracle", "label_cost", "accuracy_mean", "accuracy_std",
    "num_seeds", "accuracy_ci_low", "accuracy_ci_high", "auroc_mean", "weak_accuracy_mean", "gpu_seconds_mean",
    "c_weak", "c_oracle", "auroc_std", "auroc_ci_low", "auroc_ci_high", "ci_method", "majority_rate",
    "auroc_chance"]


def curves(results: pd.DataFrame, *, confidence: float = 0.95,
           predictions: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Seed-averaged accuracy and AUROC per GROUP x budget x spending fraction (label units, metrics
    in [0, 1]), with their intervals and baselines.

    Columns: GROUP, budget, spending_fraction, n_weak, n_oracle, label_cost, accuracy_mean,
    accuracy_std (ddof=1), num_seeds, accuracy_ci_low/high, auroc_mean, weak_accuracy_mean,
    gpu_seconds_mean, c_weak, c_oracle, auroc_std, auroc_ci_low/high, ci_method, majority_rate (the
    test pool's majority-class rate: the accuracy of a constant answer), auroc_chance (0.5).
    Intervals are at `confidence` (`w2sweep.frontier.stats.point_intervals`): Student-t over seeds;
    with one seed a bootstrap over test examples from `predictions` ({cell_id: predictions}), else
    the result's stored 95% CI (``ci_method`` says which; NaN when there is none). Cells with
    predictions take accuracy, AUROC and the majority rate from them. Explicit (n_weak, n_oracle)
    pairs keep spending_fraction NaN and are told apart by their counts. Unusable rows are dropped.
    """
    stats.check_confidence(confidence)
    # Rows `aggregate` prepared already (``has_predictions``) are usable and carry their predictions' values.
    rows = results if "has_predictions" in results else usable(results)
    if rows.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    rows = stats.with_predictions(rows, predictions)
    # Only columns some row has are aggregated (a million rows: each costs a groupby pass).
    stored = [f"{m}_ci_{end}" for m in stats.METRICS for end in ("low", "high") if f"{m}_ci_{end}" in rows]
    rows = rows.assign(gpu_seconds=gpu_seconds(rows), weak_accuracy=numeric(rows, "weak_accuracy"),
                       majority_rate=stats.majority_rate(rows["test_label1_share"]),
                       **{f"_{name.replace('_ci_', '_stored_')}": numeric(rows, name) for name in stored})
    # Categorical names (sorted categories, so they sort like the strings): every later groupby, sort
    # and merge works on integer codes instead of hashing strings again.
    rows = rows.astype({column: "category" for column in GROUP})
    # n_weak/n_oracle are fixed by budget + fraction, so as keys they split nothing for fraction rows
    # and they tell explicit pairs (fraction NaN) apart.
    keys = GROUP + ["budget", "spending_fraction", "n_weak", "n_oracle"]
    extra = {"_cell_id": ("cell_id", "first")} if "cell_id" in rows else {}
    if rows["majority_rate"].notna().any():
        extra["majority_rate"] = ("majority_rate", "mean")
    table = (
        rows.groupby(keys, dropna=False, sort=False, observed=True)
        .agg(
            label_cost=("label_cost", "first"),
            accuracy_mean=("accuracy", "mean"),
            accuracy_std=("accuracy", "std"),
            num_seeds=("accuracy", "size"),
            auroc_mean=("auroc", "mean"),
            auroc_std=("auroc", "std"),
            weak_accuracy_mean=("weak_accuracy", "mean"),
            gpu_seconds_mean=("gpu_seconds", "mean"),
            c_weak=("c_weak", "first"),
            c_oracle=("c_oracle", "first"),
            **{f"_{name.replace('_ci_', '_stored_')}": (f"_{name.replace('_ci_', '_stored_')}", "first")
               for name in stored},
            **extra,
        )
        .reset_index()
    )
    if "majority_rate" not in table:
        table["majority_rate"] = math.nan
    table = stats.point_intervals(table, predictions, confidence).assign(auroc_chance=stats.CHANCE_AUROC)
    order = GROUP + ["budget", "spending_fraction", "n_oracle", "n_weak"]
    return table.sort_values(order, na_position="last").reset_index(drop=True)[CURVE_COLUMNS]


# ---- Pareto frontier ------------------------------------------------------------------------------

def with_costs(curves: pd.DataFrame, *, gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
               label_unit_price: float = 1.0) -> pd.DataFrame:
    """`curves` plus compute_cost ($ = gpu_seconds_mean / 3600 * gpu_hour_price) and total_cost
    ($ = label_cost * label_unit_price + compute_cost)."""
    compute = curves["gpu_seconds_mean"] / 3600.0 * gpu_hour_price
    return curves.assign(compute_cost=compute, total_cost=curves["label_cost"] * label_unit_price + compute)


def _pareto(points: pd.DataFrame, cost: str, value: str = "accuracy_mean") -> pd.DataFrame:
    """Per GROUP, the points no other point dominates (cost <= and accuracy >=, one strict).

    Sorted by GROUP, cost ascending, accuracy descending, a point survives iff its accuracy beats the
    running maximum of the points before it in its group: those are cheaper or equally cheap and at
    least as accurate. Exact ties keep the first by (source_method, spending_fraction, n_oracle), so
    the result does not depend on input order.
    """
    points = points.sort_values(
        GROUP + [cost, value, "source_method", "spending_fraction", "n_oracle"],
        ascending=[True] * len(GROUP) + [True, False, True, True, True],
        na_position="last",
        kind="mergesort",
    ).reset_index(drop=True)
    if points.empty:
        return points
    keys = points[GROUP]
    starts = (keys != keys.shift()).any(axis=1).to_numpy()  # first row of each group
    group_id = np.cumsum(starts)
    running_best = points[value].groupby(group_id).cummax().to_numpy()
    best_before = np.roll(running_best, 1)
    best_before[starts] = -math.inf
    return points[points[value].to_numpy() > best_before]


def pareto_frontier(curves: pd.DataFrame, *, axis: str = "label",
                    gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
                    label_unit_price: float = 1.0, metric: str = "accuracy") -> pd.DataFrame:
    """Pareto set of (cost: lower is better, ``<metric>_mean``: higher is better; `metric` is
    "accuracy" or "auroc").

    `axis` picks the cost: "label" (label_cost, label units), "compute" (compute_cost, $) or "total"
    (their sum in $, a label unit costing `label_unit_price`); the column ``cost`` holds the one used.
    Computed per GROUP, and across methods per (dataset, weak_supervisor, student) with
    ``method == "*all*"``; ``source_method`` names the method each point came from. Each frontier is
    sorted by cost ascending and its accuracy strictly increases along it.
    """
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: allowed: {', '.join(AXES)}")
    cost = AXES[axis][0]
    value = f"{metric}_mean"
    points = with_costs(curves.dropna(subset=[value]), gpu_hour_price=gpu_hour_price,
                        label_unit_price=label_unit_price)
    points = points.assign(source_method=points["method"], cost=points[cost], axis=axis)
    per_method = _pareto(points, "cost", value)
    # A point dominated within its method is dominated across methods, and the tie order is the same:
    # the across-method frontier needs only the per-method frontiers' points.
    across = _pareto(per_method.assign(method=ALL_METHODS), "cost", value)
    frontier = pd.concat([per_method, across], ignore_index=True)
    return frontier.sort_values(GROUP + ["cost"], kind="mergesort").reset_index(drop=True)


# ---- budget table ---------------------------------------------------------------------------------

def budget_points(curves: pd.DataFrame, *, budgets: list[float], metric: str = "accuracy") -> pd.DataFrame:
    """For each (dataset, weak_supervisor, student, method or "*all*") x budget B: the best seed-mean
    `metric` among points with label_cost <= B (label units), and which point that is.

    Columns: GROUP, budget, best_<metric> (NaN when no point is that cheap), label_cost,
    spending_fraction, n_weak, n_oracle, source_method. Read off the label-cost Pareto frontier: its
    last point at cost <= B is the best reachable, whatever fraction or budget it was run at.
    """
    frontier = pareto_frontier(curves, axis="label", metric=metric)
    value, best = f"{metric}_mean", f"best_{metric}"
    columns = GROUP + ["budget", best, "label_cost", "spending_fraction", "n_weak", "n_oracle",
                       "source_method"]
    if frontier.empty or not budgets:
        return pd.DataFrame(columns=columns)
    groups = frontier[GROUP].drop_duplicates()
    grid = groups.merge(pd.DataFrame({"budget": sorted(set(map(float, budgets)))}), how="cross")
    grid["_reach"] = grid["budget"] + EPS
    right = frontier[GROUP + ["label_cost", value, "spending_fraction", "n_weak", "n_oracle",
                              "source_method"]].sort_values("label_cost", kind="mergesort")
    table = pd.merge_asof(grid.sort_values("_reach", kind="mergesort"), right, left_on="_reach",
                          right_on="label_cost", by=GROUP, direction="backward")
    table = table.rename(columns={value: best}).drop(columns="_reach")
    return table.sort_values(GROUP + ["budget"], kind="mergesort").reset_index(drop=True)[columns]


def budget_table(points: pd.DataFrame, *, metric: str = "accuracy") -> pd.DataFrame:
    """`budget_points` in the paper's Table 1 shape: per (dataset, weak_supervisor, student), one row
    per budget and one column per method (best `metric` at label cost <= budget), "*all*" last."""
    if points.empty:
        return pd.DataFrame(columns=MODELS + ["budget"])
    wide = points.pivot_table(index=MODELS + ["budget"], columns="method", values=f"best_{metric}",
                              aggfunc="first", dropna=False, observed=True)
    methods = sorted(m for m in wide.columns if m != ALL_METHODS) + [m for m in wide.columns if m == ALL_METHODS]
    wide = wide[methods].reset_index()
    wide.columns.name = None
    return wide


def with_baselines(wide: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """`wide` (rows per MODELS, e.g. the budget table) plus the baselines of its group: majority_rate
    (the test pool's majority-class rate, mean over its points; NaN when unknown) and auroc_chance."""
    if wide.empty or curves.empty:
        return wide.assign(majority_rate=math.nan, auroc_chance=0.5)
    rates = curves.groupby(MODELS, observed=True)["majority_rate"].mean().rename("majority_rate").reset_index()
    keys = wide[MODELS].astype(str)
    rates = rates.astype({m: str for m in MODELS})
    merged = keys.merge(rates, on=MODELS, how="left")
    return wide.assign(majority_rate=merged["majority_rate"].to_numpy(), auroc_chance=0.5)
