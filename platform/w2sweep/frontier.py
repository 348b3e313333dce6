"""From result rows to curves, frontiers, regimes, budget tables and PGR: the sweep's answer.

Units: budget and label cost are in label units (one oracle label costs ``c_oracle``); compute is in
GPU-seconds and its cost in dollars (GPU-seconds / 3600 x $ per GPU-hour); accuracy and AUROC are
fractions in [0, 1] on the test pool; a spending fraction is the oracle share of the label cost.
Only rows with ``status == "ok"`` and a finite accuracy enter the statistics; `write_frontier` counts
the others. Everything is vectorized pandas (groupby, sort + cummax, merge_asof): a million result
rows aggregate in seconds (bench/aggregate.py). No Ray import: this runs anywhere storage is readable.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from w2sweep import layout
from w2sweep.storage import Storage, StorageError

GROUP = ["dataset", "weak_supervisor", "student", "method"]
MODELS = ["dataset", "weak_supervisor", "student"]  # GROUP without the method
ALL_METHODS = "*all*"  # the `method` of the frontier taken across every method
ORACLE_METHOD = "sft-oracle"  # its best accuracy at the largest budget is the default PGR ceiling
CEILING_METHOD = "ceiling"  # a result of this method, when present, is the PGR ceiling instead
AXES = {  # --axis: the cost a frontier is drawn on
    "label": ("label_cost", "label cost (label units)"),
    "compute": ("compute_cost", "compute cost ($)"),
    "total": ("total_cost", "label + compute cost ($)"),
}
DEFAULT_GPU_HOUR_PRICE = 2.0  # $ per GPU-hour, when neither the CLI nor sweep.yaml sets one
MAX_PANELS = 12  # a figure with more subplots than this is unreadable; the rest are left out
MANIFEST = "manifest.json"  # under <sweep>/frontier: what was computed, from which inputs
# Fields a result object must have to enter the table; anything else about it is optional.
REQUIRED_FIELDS = ("dataset", "weak_supervisor", "student", "method", "budget", "spending_fraction",
                   "seed", "n_weak", "n_oracle", "label_cost", "c_weak", "c_oracle", "accuracy", "status")

# Slack on "within tolerance" and "cost <= budget": accuracies are means of floats, and
# 0.71 - 0.70 is 0.0100000000000000009.
_EPS = 1e-9


# ---- reading --------------------------------------------------------------------------------------

def _parse_result(data: bytes) -> dict:
    """One cell result object -> one flat row; raises ValueError/KeyError/TypeError when malformed.

    ``accuracy_ci``/``auroc_ci`` become ``*_low``/``*_high``; ``config`` is dropped except
    ``config.resources.gpu``, kept as ``gpus_per_cell`` (NaN when absent); ``gpu_seconds`` is NaN when
    the runner did not record it.
    """
    row = json.loads(data)
    if not isinstance(row, dict):
        raise TypeError(f"expected a JSON object, got {type(row).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise KeyError(f"missing fields {missing}")
    for name in ("accuracy_ci", "auroc_ci"):
        low, high = row.pop(name, None) or (None, None)
        row[f"{name}_low"], row[f"{name}_high"] = low, high
    config = row.pop("config", None)
    resources = config.get("resources") if isinstance(config, dict) else None
    gpus = resources.get("gpu") if isinstance(resources, dict) else None
    row["gpus_per_cell"] = math.nan if gpus is None else float(gpus)
    if row.get("gpu_seconds") is None:
        row["gpu_seconds"] = math.nan
    return row


def read_cells(storage: Storage, keys: list[str], *, num_threads: int = 32
               ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read result objects `keys` in a thread pool: (table, {unreadable key: one-line reason}).

    Rows come out in the order of `keys`. An object that cannot be read or parsed is reported, never
    fatal: one corrupt object must not hide a thousand good ones.
    """
    def load(key: str) -> dict | str:
        try:
            return _parse_result(storage.read_bytes(key))
        except (OSError, StorageError, ValueError, KeyError, TypeError, AttributeError) as e:
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]

    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(keys)))) as pool:
        loaded = list(pool.map(load, keys))
    rows = [r for r in loaded if isinstance(r, dict)]
    unreadable = {k: r for k, r in zip(keys, loaded) if isinstance(r, str)}
    return pd.DataFrame(rows), unreadable


def cell_keys(storage: Storage, sweep: str) -> list[str]:
    """Keys of the sweep's cell result objects, sorted."""
    return storage.list(layout.folder(sweep, layout.RESULTS), suffix=".json")


def read_sweep_yaml(storage: Storage, sweep: str) -> dict:
    """``<sweep>/sweep.yaml`` as a dict; {} when absent or unreadable (hand-made results have none)."""
    import yaml

    key = layout.sweep_yaml(sweep)
    try:
        if not storage.exists(key):
            return {}
        loaded = yaml.safe_load(storage.read_bytes(key))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def inputs_digest(keys: list[str], sweep_yaml: bytes) -> str:
    """What the frontier was computed from: the set of cell keys (written once, never changed) and
    sweep.yaml. A new result, a deleted one or an edited sweep.yaml changes it."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(key.encode() + b"\n")
    h.update(b"\0sweep.yaml\0" + sweep_yaml)
    return h.hexdigest()


# ---- the table ------------------------------------------------------------------------------------

def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(math.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def usable(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: status "ok" and a finite accuracy, with numeric fraction/accuracy columns."""
    if results.empty:
        return results
    results = results.assign(
        # JSON null (an explicit pair) arrives as None; an all-None column would stay dtype object.
        spending_fraction=_numeric(results, "spending_fraction"),
        accuracy=_numeric(results, "accuracy"),
    )
    ok = (results["status"] == "ok") & np.isfinite(results["accuracy"])
    return results[ok].reset_index(drop=True)


def gpu_seconds(results: pd.DataFrame, *, default_gpus: float = 0.0) -> pd.Series:
    """GPU-seconds per row: the recorded ``gpu_seconds``; else ``wall_seconds x gpus_per_cell``
    (the cell's ``config.resources.gpu``), with `default_gpus` where that is unknown; else 0."""
    measured = _numeric(results, "gpu_seconds")
    gpus = _numeric(results, "gpus_per_cell").fillna(default_gpus)
    derived = _numeric(results, "wall_seconds") * gpus
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
    n_weak, n_oracle = _numeric(results, "n_weak"), _numeric(results, "n_oracle")
    c_oracle = _numeric(results, "c_oracle")
    oracle_cost = n_oracle * c_oracle
    cost = (n_weak * c_weak + oracle_cost).round(9)  # 3 * 0.1 is 0.30000000000000004
    fraction = (oracle_cost / cost.where(cost > 0)).round(12)
    was_pair = _numeric(results, "spending_fraction").isna()
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

def _t_quantile_975(dof: np.ndarray) -> np.ndarray:
    """Student-t 97.5% quantile for each degrees of freedom (NaN where dof < 1)."""
    from scipy import stats

    dof = np.asarray(dof, dtype=float)
    out = np.full(dof.shape, math.nan)
    ok = dof >= 1
    if ok.any():
        unique, inverse = np.unique(dof[ok], return_inverse=True)  # a handful of distinct seed counts
        out[ok] = stats.t.ppf(0.975, unique)[inverse]
    return out


def curves(results: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged accuracy per GROUP x budget x spending fraction (label units, accuracy in [0, 1]).

    Columns: GROUP, budget, spending_fraction, n_weak, n_oracle, label_cost, accuracy_mean,
    accuracy_std (ddof=1), num_seeds, accuracy_ci_low/high (95% Student-t interval for the mean over
    seeds: mean +- t(0.975, n-1) * std / sqrt(n)), auroc_mean, weak_accuracy_mean, gpu_seconds_mean,
    c_weak, c_oracle. Std and CI are NaN with one seed. Explicit (n_weak, n_oracle) pairs keep
    spending_fraction NaN and are told apart by their counts. Unusable rows are dropped first.
    """
    rows = usable(results)
    columns = GROUP + ["budget", "spending_fraction", "n_weak", "n_oracle", "label_cost", "accuracy_mean",
                       "accuracy_std", "num_seeds", "accuracy_ci_low", "accuracy_ci_high", "auroc_mean",
                       "weak_accuracy_mean", "gpu_seconds_mean", "c_weak", "c_oracle"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(gpu_seconds=gpu_seconds(rows), auroc=_numeric(rows, "auroc"),
                       weak_accuracy=_numeric(rows, "weak_accuracy"))
    # Categorical names (sorted categories, so they sort like the strings): every later groupby, sort
    # and merge works on integer codes instead of hashing strings again.
    rows = rows.astype({column: "category" for column in GROUP})
    # n_weak/n_oracle are fixed by budget + fraction, so as keys they split nothing for fraction rows
    # and they tell explicit pairs (fraction NaN) apart.
    keys = GROUP + ["budget", "spending_fraction", "n_weak", "n_oracle"]
    table = (
        rows.groupby(keys, dropna=False, sort=False, observed=True)
        .agg(
            label_cost=("label_cost", "first"),
            accuracy_mean=("accuracy", "mean"),
            accuracy_std=("accuracy", "std"),
            num_seeds=("accuracy", "size"),
            auroc_mean=("auroc", "mean"),
            weak_accuracy_mean=("weak_accuracy", "mean"),
            gpu_seconds_mean=("gpu_seconds", "mean"),
            c_weak=("c_weak", "first"),
            c_oracle=("c_oracle", "first"),
        )
        .reset_index()
    )
    n = table["num_seeds"].to_numpy(dtype=float)
    half = _t_quantile_975(n - 1) * table["accuracy_std"].to_numpy() / np.sqrt(n)
    table["accuracy_ci_low"] = table["accuracy_mean"] - half
    table["accuracy_ci_high"] = table["accuracy_mean"] + half
    order = GROUP + ["budget", "spending_fraction", "n_oracle", "n_weak"]
    return table.sort_values(order, na_position="last").reset_index(drop=True)[columns]


# ---- Pareto frontier ------------------------------------------------------------------------------

def with_costs(curves: pd.DataFrame, *, gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
               label_unit_price: float = 1.0) -> pd.DataFrame:
    """`curves` plus compute_cost ($ = gpu_seconds_mean / 3600 * gpu_hour_price) and total_cost
    ($ = label_cost * label_unit_price + compute_cost)."""
    compute = curves["gpu_seconds_mean"] / 3600.0 * gpu_hour_price
    return curves.assign(compute_cost=compute, total_cost=curves["label_cost"] * label_unit_price + compute)


def _pareto(points: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Per GROUP, the points no other point dominates (cost <= and accuracy >=, one strict).

    Sorted by GROUP, cost ascending, accuracy descending, a point survives iff its accuracy beats the
    running maximum of the points before it in its group: those are cheaper or equally cheap and at
    least as accurate. Exact ties keep the first by (source_method, spending_fraction, n_oracle), so
    the result does not depend on input order.
    """
    points = points.sort_values(
        GROUP + [cost, "accuracy_mean", "source_method", "spending_fraction", "n_oracle"],
        ascending=[True] * len(GROUP) + [True, False, True, True, True],
        na_position="last",
        kind="mergesort",
    ).reset_index(drop=True)
    if points.empty:
        return points
    keys = points[GROUP]
    starts = (keys != keys.shift()).any(axis=1).to_numpy()  # first row of each group
    group_id = np.cumsum(starts)
    running_best = points["accuracy_mean"].groupby(group_id).cummax().to_numpy()
    best_before = np.roll(running_best, 1)
    best_before[starts] = -math.inf
    return points[points["accuracy_mean"].to_numpy() > best_before]


def pareto_frontier(curves: pd.DataFrame, *, axis: str = "label",
                    gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
                    label_unit_price: float = 1.0) -> pd.DataFrame:
    """Pareto set of (cost: lower is better, accuracy_mean: higher is better).

    `axis` picks the cost: "label" (label_cost, label units), "compute" (compute_cost, $) or "total"
    (their sum in $, a label unit costing `label_unit_price`); the column ``cost`` holds the one used.
    Computed per GROUP, and across methods per (dataset, weak_supervisor, student) with
    ``method == "*all*"``; ``source_method`` names the method each point came from. Each frontier is
    sorted by cost ascending and its accuracy strictly increases along it.
    """
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: allowed: {', '.join(AXES)}")
    cost = AXES[axis][0]
    points = with_costs(curves.dropna(subset=["accuracy_mean"]), gpu_hour_price=gpu_hour_price,
                        label_unit_price=label_unit_price)
    points = points.assign(source_method=points["method"], cost=points[cost], axis=axis)
    per_method = _pareto(points, "cost")
    # A point dominated within its method is dominated across methods, and the tie order is the same:
    # the across-method frontier needs only the per-method frontiers' points.
    across = _pareto(per_method.assign(method=ALL_METHODS), "cost")
    frontier = pd.concat([per_method, across], ignore_index=True)
    return frontier.sort_values(GROUP + ["cost"], kind="mergesort").reset_index(drop=True)


# ---- regimes --------------------------------------------------------------------------------------

def regimes(curves: pd.DataFrame, *, tolerance: float) -> pd.DataFrame:
    """The regime of each GROUP x budget, from its spending-fraction rows (explicit pairs are ignored).

    best_fraction is the argmax of accuracy_mean (ties: the smallest fraction); accuracy_at_0 and
    accuracy_at_1 are NaN when that fraction was not run. An endpoint is *within tolerance* when
    ``best_accuracy - accuracy_at_endpoint <= tolerance`` (accuracy units, e.g. 0.01 = one point).

    - "quantity-dominant": f=0 is within tolerance of the best and f=1 is not (or f=1 missing);
    - "quality-dominant":  f=1 is within tolerance of the best and f=0 is not (or f=0 missing);
    - "mixed":             the best fraction is strictly between 0 and 1 and neither endpoint is
                           within tolerance (a missing endpoint is not within tolerance);
    - "indeterminate":     otherwise: both endpoints within tolerance, one fraction run, no accuracy.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance={tolerance!r}: must be a number >= 0 (accuracy units)")
    keys = GROUP + ["budget"]
    columns = keys + ["regime", "best_fraction", "best_accuracy", "accuracy_at_0", "accuracy_at_1",
                      "num_fractions", "tolerance"]
    fractions = curves.loc[curves["spending_fraction"].notna(), keys + ["spending_fraction", "accuracy_mean"]]
    if fractions.empty:
        return pd.DataFrame(columns=columns)
    # Best first within each budget: accuracy descending (NaN last), then the smallest fraction.
    ranked = fractions.sort_values(keys + ["accuracy_mean", "spending_fraction"],
                                   ascending=[True] * len(keys) + [False, True], na_position="last",
                                   kind="mergesort")
    table = ranked.drop_duplicates(keys).rename(
        columns={"spending_fraction": "best_fraction", "accuracy_mean": "best_accuracy"})
    table = table.merge(fractions.groupby(keys, observed=True).size().rename("num_fractions").reset_index(),
                        on=keys)
    for value, name in ((0.0, "accuracy_at_0"), (1.0, "accuracy_at_1")):
        at = fractions[fractions["spending_fraction"] == value].drop_duplicates(keys)
        table = table.merge(at.drop(columns="spending_fraction").rename(columns={"accuracy_mean": name}),
                            on=keys, how="left")
    best = table["best_accuracy"].to_numpy(dtype=float)
    best_fraction = table["best_fraction"].where(np.isfinite(best))  # no accuracy: no best fraction
    near = {}
    for name in ("accuracy_at_0", "accuracy_at_1"):
        at = table[name].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            near[name] = np.isfinite(at) & (best - at <= tolerance + _EPS)  # NaN is never near
    near_0, near_1 = near["accuracy_at_0"], near["accuracy_at_1"]
    inside = ((best_fraction > 0) & (best_fraction < 1)).to_numpy()
    undecidable = (table["num_fractions"].to_numpy() < 2) | ~np.isfinite(best)
    table["regime"] = np.select(
        [undecidable, near_0 & ~near_1, near_1 & ~near_0, ~near_0 & ~near_1 & inside],
        ["indeterminate", "quantity-dominant", "quality-dominant", "mixed"],
        default="indeterminate",  # both endpoints within tolerance
    )
    table["best_fraction"] = best_fraction
    table["tolerance"] = tolerance
    return table.sort_values(keys, kind="mergesort").reset_index(drop=True)[columns]


# ---- budget table ---------------------------------------------------------------------------------

def budget_points(curves: pd.DataFrame, *, budgets: list[float]) -> pd.DataFrame:
    """For each (dataset, weak_supervisor, student, method or "*all*") x budget B: the best seed-mean
    accuracy among points with label_cost <= B (label units), and which point that is.

    Columns: GROUP, budget, best_accuracy (NaN when no point is that cheap), label_cost,
    spending_fraction, n_weak, n_oracle, source_method. Read off the label-cost Pareto frontier: its
    last point at cost <= B is the best reachable, whatever fraction or budget it was run at.
    """
    frontier = pareto_frontier(curves, axis="label")
    columns = GROUP + ["budget", "best_accuracy", "label_cost", "spending_fraction", "n_weak", "n_oracle",
                       "source_method"]
    if frontier.empty or not budgets:
        return pd.DataFrame(columns=columns)
    groups = frontier[GROUP].drop_duplicates()
    grid = groups.merge(pd.DataFrame({"budget": sorted(set(map(float, budgets)))}), how="cross")
    grid["_reach"] = grid["budget"] + _EPS
    right = frontier[GROUP + ["label_cost", "accuracy_mean", "spending_fraction", "n_weak", "n_oracle",
                              "source_method"]].sort_values("label_cost", kind="mergesort")
    table = pd.merge_asof(grid.sort_values("_reach", kind="mergesort"), right, left_on="_reach",
                          right_on="label_cost", by=GROUP, direction="backward")
    table = table.rename(columns={"accuracy_mean": "best_accuracy"}).drop(columns="_reach")
    return table.sort_values(GROUP + ["budget"], kind="mergesort").reset_index(drop=True)[columns]


def budget_table(points: pd.DataFrame) -> pd.DataFrame:
    """`budget_points` in the paper's Table 1 shape: per (dataset, weak_supervisor, student), one row
    per budget and one column per method (best accuracy at label cost <= budget), "*all*" last."""
    if points.empty:
        return pd.DataFrame(columns=MODELS + ["budget"])
    wide = points.pivot_table(index=MODELS + ["budget"], columns="method", values="best_accuracy",
                              aggfunc="first", dropna=False, observed=True)
    methods = sorted(m for m in wide.columns if m != ALL_METHODS) + [m for m in wide.columns if m == ALL_METHODS]
    wide = wide[methods].reset_index()
    wide.columns.name = None
    return wide


# ---- performance gap recovered --------------------------------------------------------------------

def pgr(curves: pd.DataFrame) -> pd.DataFrame:
    """Performance gap recovered per curves point: (accuracy - weak) / (ceiling - weak).

    weak = the point's weak_accuracy_mean (the weak supervisor's test accuracy, the floor). The ceiling
    of a (dataset, weak_supervisor, student) is the best seed-mean accuracy of method "ceiling" when
    such results exist, else the best "sft-oracle" accuracy at that triple's largest sft-oracle budget.
    ``pgr`` is NaN, with ``reason`` saying why, when there is no ceiling, no weak accuracy, or the
    ceiling is not above the weak accuracy; ``reason`` is empty otherwise.
    """
    columns = GROUP + ["budget", "spending_fraction", "n_weak", "n_oracle", "label_cost", "accuracy_mean",
                       "weak_accuracy_mean", "ceiling_accuracy", "ceiling_source", "pgr", "reason"]
    points = curves.dropna(subset=["accuracy_mean"])
    if points.empty:
        return pd.DataFrame(columns=columns)
    explicit = points[points["method"] == CEILING_METHOD]
    explicit = explicit.groupby(MODELS, observed=True)["accuracy_mean"].max().rename("ceiling_accuracy")
    oracle = points[points["method"] == ORACLE_METHOD]
    largest = oracle.groupby(MODELS, observed=True)["budget"].transform("max")
    oracle = oracle[oracle["budget"] == largest]
    oracle = oracle.groupby(MODELS, observed=True).agg(ceiling_accuracy=("accuracy_mean", "max"),
                                                       _budget=("budget", "first"))
    ceilings = pd.concat([
        explicit.reset_index().assign(ceiling_source=CEILING_METHOD),
        oracle.reset_index().assign(
            ceiling_source=lambda f: [f"{ORACLE_METHOD} at budget {b:g}" for b in f["_budget"]]
        ).drop(columns="_budget"),
    ], ignore_index=True).drop_duplicates(MODELS)  # an explicit ceiling wins over sft-oracle
    table = points.merge(ceilings, on=MODELS, how="left")
    acc, weak = table["accuracy_mean"].to_numpy(float), table["weak_accuracy_mean"].to_numpy(float)
    ceiling = table["ceiling_accuracy"].to_numpy(float)
    no_ceiling, no_weak = ~np.isfinite(ceiling), ~np.isfinite(weak)
    with np.errstate(invalid="ignore"):
        flat = ~no_ceiling & ~no_weak & (ceiling - weak <= _EPS)
    bad = no_ceiling | no_weak | flat
    with np.errstate(invalid="ignore", divide="ignore"):
        table["pgr"] = np.where(bad, math.nan, (acc - weak) / (ceiling - weak))
    table["reason"] = np.select(
        [no_ceiling, no_weak, flat],
        [f"no ceiling: no '{CEILING_METHOD}' or '{ORACLE_METHOD}' result for this dataset/weak supervisor/student",
         "no weak accuracy",
         "ceiling accuracy is not above the weak accuracy"],
        default="",
    )
    table["ceiling_source"] = table["ceiling_source"].fillna("")
    return table[columns]


# ---- everything at once ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Aggregate:
    """The tables of one view of a sweep (one cost model)."""

    curves: pd.DataFrame
    frontier: pd.DataFrame
    regimes: pd.DataFrame
    budget_points: pd.DataFrame
    budget_table: pd.DataFrame
    pgr: pd.DataFrame


def aggregate(results: pd.DataFrame, *, tolerance: float = 0.01, axis: str = "label",
              gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE, label_unit_price: float = 1.0,
              budgets: list[float] | None = None) -> Aggregate:
    """curves -> frontier, regimes, budget table, PGR. `budgets` (label units) are the budget table's
    rows; None: every budget a fraction cell was run at."""
    table = curves(results)
    if budgets is None:
        budgets = sorted(table.loc[table["spending_fraction"].notna(), "budget"].unique().tolist())
    points = budget_points(table, budgets=budgets)
    return Aggregate(
        curves=table,
        frontier=pareto_frontier(table, axis=axis, gpu_hour_price=gpu_hour_price,
                                 label_unit_price=label_unit_price),
        regimes=regimes(table, tolerance=tolerance),
        budget_points=points,
        budget_table=budget_table(points),
        pgr=pgr(table),
    )


# ---- plots ----------------------------------------------------------------------------------------

def _panels(frame: pd.DataFrame, keys: list[str], what: str):
    """(figure, [(key, group, axes)], leftover axes) for one subplot per group, at most MAX_PANELS."""
    # Figure without pyplot needs no backend and touches no global state of the caller.
    from matplotlib.figure import Figure

    groups = list(frame.groupby(keys, sort=True, observed=True)) if not frame.empty else []
    if len(groups) > MAX_PANELS:
        warnings.warn(f"{what}: {len(groups)} groups, drawing the first {MAX_PANELS}", stacklevel=3)
        groups = groups[:MAX_PANELS]
    num_cols = min(3, max(1, len(groups)))
    num_rows = max(1, math.ceil(len(groups) / num_cols))
    width, height = 5 * num_cols, 3.8 * num_rows
    fig = Figure(figsize=(width, height))
    # Fixed margins (inches) instead of a constrained layout: as readable here, and it halves the time
    # a figure takes to draw.
    axes = fig.subplots(num_rows, num_cols, squeeze=False, gridspec_kw=dict(
        left=0.75 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 0.35 / height,
        wspace=0.3, hspace=0.55)).ravel()
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    if not groups:
        axes[0].text(0.5, 0.5, f"nothing to draw: {what}", ha="center", va="center")
    return fig, [(key, group, ax) for (key, group), ax in zip(groups, axes)]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _colors(methods) -> dict[str, str]:
    """One color per method, the same in every panel and every figure of a report."""
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted(m for m in set(methods) if m != ALL_METHODS)
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)} | {ALL_METHODS: "black"}


def _title(ax, key) -> None:
    ax.set_title(" / ".join(map(str, key if isinstance(key, tuple) else (key,))), fontsize=8)


def plot_curves(curves: pd.DataFrame) -> bytes:
    """PNG bytes: accuracy vs spending fraction, one subplot per GROUP, one line per budget.

    Error bars are the 95% t-interval over seeds (none with one seed); the dashed line is the weak
    supervisor's accuracy (the floor). Explicit (n_weak, n_oracle) pairs have no fraction: not drawn.
    """
    fractions = curves[curves["spending_fraction"].notna()]
    fig, panels = _panels(fractions, GROUP, "plot_curves")
    for key, group, ax in panels:
        for budget, line in group.groupby("budget", sort=True):
            half = (line["accuracy_ci_high"] - line["accuracy_mean"]).fillna(0.0)
            ax.errorbar(line["spending_fraction"], line["accuracy_mean"], yerr=half, marker="o",
                        capsize=3, label=f"budget {budget:g}")
        ax.axhline(group["weak_accuracy_mean"].mean(), color="gray", linestyle="--", label="weak supervisor")
        ax.set(xlabel="spending fraction (oracle share)", ylabel="accuracy", xlim=(-0.05, 1.05))
        _title(ax, key)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_frontier(curves: pd.DataFrame, frontier: pd.DataFrame, *, gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
                  label_unit_price: float = 1.0) -> bytes:
    """PNG bytes: the Pareto frontier of each method as a step line over all its points (faint), one
    subplot per (dataset, weak_supervisor, student); the across-method frontier is the black line."""
    axis = frontier["axis"].iloc[0] if len(frontier) else "label"
    cost, label = AXES[axis]
    points = with_costs(curves, gpu_hour_price=gpu_hour_price, label_unit_price=label_unit_price)
    fig, panels = _panels(frontier, MODELS, "plot_frontier")
    colors = _colors(points["method"].astype(str))
    for key, group, ax in panels:
        mask = np.ones(len(points), dtype=bool)
        for column, value in zip(MODELS, key):
            mask &= (points[column] == value).to_numpy()
        for method, line in group.groupby("method", sort=True, observed=True):
            across, color = method == ALL_METHODS, colors.get(method, "gray")
            if not across:
                mine = points[mask & (points["method"] == method).to_numpy()]
                ax.scatter(mine[cost], mine["accuracy_mean"], s=10, alpha=0.3, color=color)
            ax.step(line["cost"], line["accuracy_mean"], where="post", color=color,
                    linewidth=2.2 if across else 1.2, marker="" if across else "o", markersize=4,
                    label="all methods" if across else method, zorder=3 if across else 2)
        ax.set(xlabel=label, ylabel="accuracy")
        if (group["cost"] > 0).all() and group["cost"].max() / group["cost"].min() > 20:
            ax.set_xscale("log")
        _title(ax, key)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_budget_table(points: pd.DataFrame) -> bytes:
    """PNG bytes: best accuracy reachable at label cost <= budget, one line per method, one subplot
    per (dataset, weak_supervisor, student)."""
    fig, panels = _panels(points, MODELS, "plot_budget_table")
    colors = _colors(points["method"].astype(str))
    for key, group, ax in panels:
        for method, line in group.groupby("method", sort=True, observed=True):
            across = method == ALL_METHODS
            ax.plot(line["budget"], line["best_accuracy"], marker="" if across else "o",
                    color=colors.get(method, "gray"), linewidth=2.2 if across else 1.2,
                    label="all methods" if across else method)
        ax.set(xlabel="budget (label units)", ylabel="best accuracy at label cost <= budget")
        budgets = group["budget"]
        if budgets.min() > 0 and budgets.max() / budgets.min() > 20:
            ax.set_xscale("log")
        _title(ax, key)
        ax.legend(fontsize=7)
    return _png(fig)


# ---- writing a sweep's frontier -------------------------------------------------------------------

def _fmt(value: float) -> str:
    return format(value, "g")


def view_outputs(agg: Aggregate, *, title: str, summary: dict, gpu_hour_price: float,
                 label_unit_price: float, unreadable: dict[str, str] | None = None) -> dict[str, bytes]:
    """The files of one view: CSVs, PNGs and report.html, by file name. `unreadable` ({key: reason})
    is listed in the report only."""
    from w2sweep.report import render_report

    images = {
        "curves.png": plot_curves(agg.curves),
        "frontier.png": plot_frontier(agg.curves, agg.frontier, gpu_hour_price=gpu_hour_price,
                                      label_unit_price=label_unit_price),
        "budget_table.png": plot_budget_table(agg.budget_points),
    }
    tables = {
        "curves.csv": agg.curves,
        "frontier.csv": agg.frontier,
        "regimes.csv": agg.regimes,
        "budget_table.csv": agg.budget_table,
        "pgr.csv": agg.pgr,
    }
    outputs = {name: frame.to_csv(index=False).encode() for name, frame in tables.items()}
    outputs.update(images)
    shown = dict(tables)
    if unreadable:
        shown["unreadable objects"] = pd.DataFrame(sorted(unreadable.items()), columns=["object", "reason"])
    outputs["report.html"] = render_report(title=title, summary=summary, tables=shown, images=images).encode()
    return outputs


def results_parquet(results: pd.DataFrame) -> bytes:
    """The results table as read (one row per readable cell object) as Parquet bytes. Columns whose
    values JSON mixed types into become strings rather than failing the frontier."""
    import pyarrow as pa

    frame = results.assign(**{c: _numeric(results, c) for c in ("spending_fraction", "accuracy", "gpu_seconds")
                              if c in results})
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, index=False)
    except (pa.ArrowException, TypeError, ValueError):
        mixed = [c for c in frame.columns if frame[c].dtype == object]
        buffer = io.BytesIO()
        frame.astype({c: str for c in mixed}).to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_frontier(storage: Storage, sweep: str, *, tolerance: float = 0.01, axis: str = "label",
                   gpu_hour_price: float | None = None, label_unit_price: float = 1.0,
                   c_weak: list[float] = (), budgets: list[float] | None = None,
                   dataset_groups: dict[str, list[str]] | None = None, num_threads: int = 32) -> dict:
    """Read `sweep`'s results; write the CSVs, PNGs and report.html under ``<sweep>/frontier/`` (the
    results' own costs) and, for each value of `c_weak`, under ``<sweep>/frontier/c_weak=<v>/``
    (re-costed, nothing re-run); then ``frontier/results.parquet`` (the results table as read) and
    last ``frontier/manifest.json``, listing every file with its sha256 and the inputs it was
    computed from.

    `gpu_hour_price` ($/GPU-hour): None takes sweep.yaml's ``gpu_hour_price`` (top level or under
    ``costs``), else DEFAULT_GPU_HOUR_PRICE. `budgets` (label units): the budget table's rows; None
    takes sweep.yaml's ``budgets``, else the results' budgets. Results without ``gpu_seconds`` or
    ``config.resources.gpu`` use sweep.yaml's ``resources.gpu`` (else 0 GPUs) x wall_seconds.

    Returns {"num_results", "num_ignored", "num_unreadable", "unreadable" (keys), "unreadable_reasons"
    ({key: reason}), "keys" (written), "options" (as resolved)}. Raises ValueError when no cell has a
    usable result or an option is out of range.
    """
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: allowed: {', '.join(AXES)}")
    for name, value in (("gpu_hour_price", gpu_hour_price), ("label_unit_price", label_unit_price)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name}={value!r}: must be a number >= 0 ($)")
    # As asked (None: decided below from sweep.yaml or the results), kept so a later `pull` that
    # recomputes asks the same question of the new results.
    requested = dict(tolerance=tolerance, axis=axis, gpu_hour_price=gpu_hour_price,
                     label_unit_price=label_unit_price, c_weak=[float(v) for v in c_weak],
                     budgets=None if budgets is None else [float(b) for b in budgets],
                     dataset_groups={k: list(v) for k, v in (dataset_groups or {}).items()})
    keys = cell_keys(storage, sweep)
    sweep_yaml_key = layout.sweep_yaml(sweep)
    sweep_yaml_bytes = storage.read_bytes(sweep_yaml_key) if storage.exists(sweep_yaml_key) else b""
    settings = read_sweep_yaml(storage, sweep)
    price_source = "--gpu-hour-price"
    if gpu_hour_price is None:
        from_yaml = settings.get("gpu_hour_price", (settings.get("costs") or {}).get("gpu_hour_price"))
        gpu_hour_price, price_source = ((float(from_yaml), "sweep.yaml") if from_yaml is not None
                                        else (DEFAULT_GPU_HOUR_PRICE, "default"))
    if budgets is None and settings.get("budgets"):
        budgets = [float(b) for b in settings["budgets"]]
    default_gpus = float((settings.get("resources") or {}).get("gpu") or 0.0)

    results, unreadable = read_cells(storage, keys, num_threads=num_threads)
    num_read, num_usable = len(results), len(usable(results))
    if num_usable == 0:
        raise ValueError(f"no finished cells under {sweep}/cells")
    gpus = _numeric(results, "gpus_per_cell").fillna(default_gpus)
    results = results.assign(gpus_per_cell=gpus)
    measured = _numeric(results, "gpu_seconds").notna()
    compute_source = {
        "gpu_seconds recorded": int(measured.sum()),
        "wall_seconds x GPUs per cell": int((~measured & (gpus > 0)).sum()),
        "no GPU (0)": int((~measured & (gpus <= 0)).sum()),
    }
    raw_results = results
    results = add_dataset_groups(results, dataset_groups or {})

    resolved = requested | dict(gpu_hour_price=gpu_hour_price, budgets=budgets)
    summary = {
        "sweep": sweep,
        "storage": storage.uri,
        "results read": num_read,
        "results ignored (not ok or no accuracy)": num_read - num_usable,
        "objects unreadable": len(unreadable),
        "regime tolerance (accuracy)": tolerance,
        "frontier axis": AXES[axis][1],
        "GPU-hour price ($)": f"{_fmt(gpu_hour_price)} ({price_source})",
        "label unit price ($, total axis)": label_unit_price,
        "compute cost from": ", ".join(f"{k}: {v}" for k, v in compute_source.items()),
    }
    views = [("", None)] + [(f"c_weak={_fmt(v)}/", float(v)) for v in c_weak]
    files: dict[str, bytes] = {}
    for prefix, price in views:
        view_results = results if price is None else recost(results, c_weak=price)
        agg = aggregate(view_results, tolerance=tolerance, axis=axis, gpu_hour_price=gpu_hour_price,
                        label_unit_price=label_unit_price, budgets=budgets)
        costs = sorted(set(zip(agg.curves["c_weak"], agg.curves["c_oracle"])))
        view_summary = summary | {
            "label prices (c_weak, c_oracle)": ", ".join(f"({_fmt(w)}, {_fmt(o)})" for w, o in costs)
            + ("" if price is None else " (re-costed: n_weak and n_oracle as run)"),
        }
        title = f"w2sweep frontier: {sweep}" + ("" if price is None else f" (c_weak = {_fmt(price)})")
        for name, data in view_outputs(agg, title=title, summary=view_summary, gpu_hour_price=gpu_hour_price,
                                       label_unit_price=label_unit_price, unreadable=unreadable).items():
            files[prefix + name] = data
    files["results.parquet"] = results_parquet(raw_results)

    written = []
    for name, data in files.items():
        written.append(layout.frontier(sweep, name))
        storage.write_bytes(written[-1], data)
    manifest = {
        "sweep": sweep,
        "inputs_digest": inputs_digest(keys, sweep_yaml_bytes),
        "num_cells": len(keys),
        "options": requested,
        "resolved": resolved,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for name, data in files.items()},
    }
    written.append(layout.frontier(sweep, MANIFEST))
    storage.write_bytes(written[-1], json.dumps(manifest, indent=1, sort_keys=True).encode())
    return {
        "num_results": num_read,
        "num_ignored": num_read - num_usable,
        "num_unreadable": len(unreadable),
        "unreadable": sorted(unreadable),
        "unreadable_reasons": unreadable,
        "keys": written,
        "options": resolved,
    }


def manifest_key(sweep: str) -> str:
    return layout.frontier(sweep, MANIFEST)
