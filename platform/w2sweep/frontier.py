"""From result rows to curves, frontiers and regimes: the sweep's answer, as tables and a plot.

Units: budget and label cost are in label units (one oracle label costs ``c_oracle``); accuracy and
AUROC are fractions in [0, 1] on the test pool; a spending fraction is the oracle share of the budget.
Only rows with ``status == "ok"`` and a finite accuracy enter the statistics; `write_frontier` counts
the others. No Ray import: this runs anywhere the result objects can be read.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd

from w2sweep.results import read_results
from w2sweep.storage import Storage

GROUP = ["dataset", "weak_supervisor", "student", "method"]
ALL_METHODS = "*all*"  # the `method` of the frontier taken across every method
MAX_PANELS = 12  # a figure with more subplots than this is unreadable; the rest are left out

# Slack on "within tolerance": accuracies are means of floats, and 0.71 - 0.70 is 0.0100000000000000009.
_EPS = 1e-12


def usable(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that count: status "ok" and a finite accuracy, with numeric fraction/accuracy columns."""
    if results.empty:
        return results
    results = results.assign(
        # JSON null (an explicit pair) arrives as None; an all-None column would stay dtype object.
        spending_fraction=pd.to_numeric(results["spending_fraction"], errors="coerce"),
        accuracy=pd.to_numeric(results["accuracy"], errors="coerce"),
    )
    ok = (results["status"] == "ok") & np.isfinite(results["accuracy"])
    return results[ok].reset_index(drop=True)


def curves(results: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged accuracy per GROUP x budget x spending fraction (label units, accuracy in [0, 1]).

    Columns: GROUP, budget, spending_fraction, n_weak, n_oracle, label_cost, accuracy_mean,
    accuracy_std (ddof=1, NaN with one seed), num_seeds, auroc_mean, weak_accuracy_mean. Explicit
    (n_weak, n_oracle) pairs keep spending_fraction NaN and are grouped by the pair instead.
    Unusable rows (status != "ok", NaN accuracy) are dropped first.
    """
    rows = usable(results)
    explicit = rows["spending_fraction"].isna()
    # One key column that is constant for fraction rows and names the pair for explicit rows, so one
    # groupby handles both without splitting a fraction's seeds.
    pair = rows["n_weak"].astype(str) + "," + rows["n_oracle"].astype(str)
    rows = rows.assign(_pair=pair.where(explicit, ""))
    table = (
        rows.groupby(GROUP + ["budget", "spending_fraction", "_pair"], dropna=False, sort=False)
        .agg(
            n_weak=("n_weak", "first"),  # deterministic per budget + fraction
            n_oracle=("n_oracle", "first"),
            label_cost=("label_cost", "first"),
            accuracy_mean=("accuracy", "mean"),
            accuracy_std=("accuracy", "std"),
            num_seeds=("accuracy", "size"),
            auroc_mean=("auroc", "mean"),
            weak_accuracy_mean=("weak_accuracy", "mean"),
        )
        .reset_index()
        .drop(columns="_pair")
    )
    order = GROUP + ["budget", "spending_fraction", "n_oracle", "n_weak"]
    return table.sort_values(order, na_position="last").reset_index(drop=True)


def _pareto(points: pd.DataFrame) -> pd.DataFrame:
    """The points no other point dominates (cost <= and accuracy >=, one strict), by cost ascending.

    After sorting by cost ascending, accuracy descending, a point survives iff it beats every point
    before it: those are cheaper or equally cheap and at least as accurate. Exact ties keep the first
    by (source_method, spending_fraction), so the result does not depend on input order.
    """
    points = points.sort_values(
        ["label_cost", "accuracy_mean", "source_method", "spending_fraction", "n_oracle"],
        ascending=[True, False, True, True, True],
        na_position="last",
        kind="mergesort",
    )
    best_before = points["accuracy_mean"].cummax().shift(fill_value=-math.inf)
    return points[points["accuracy_mean"] > best_before]


def pareto_frontier(curves: pd.DataFrame) -> pd.DataFrame:
    """Pareto set of (label_cost in label units: lower is better, accuracy_mean: higher is better).

    Computed per GROUP, and across methods per (dataset, weak_supervisor, student) with
    ``method == "*all*"``; ``source_method`` names the method each point came from. Each frontier is
    sorted by cost ascending and its accuracy strictly increases along it.
    """
    points = curves.dropna(subset=["accuracy_mean"]).assign(source_method=curves["method"])
    both = pd.concat([points, points.assign(method=ALL_METHODS)], ignore_index=True)
    parts = [_pareto(group) for _, group in both.groupby(GROUP, sort=True)]
    if not parts:
        return both
    frontier = pd.concat(parts)
    return frontier.sort_values(GROUP + ["label_cost"], kind="mergesort").reset_index(drop=True)


def _regime(best_fraction: float, best: float, at_0: float, at_1: float, num_fractions: int,
            tolerance: float) -> str:
    """The regime rule of `regimes`, for one budget; a missing endpoint (NaN) is never within tolerance."""
    if num_fractions < 2 or math.isnan(best):
        return "indeterminate"
    near_0 = not math.isnan(at_0) and best - at_0 <= tolerance + _EPS
    near_1 = not math.isnan(at_1) and best - at_1 <= tolerance + _EPS
    if near_0 and not near_1:
        return "quantity-dominant"
    if near_1 and not near_0:
        return "quality-dominant"
    # Implied by the line's first half (an endpoint that is the best is within tolerance of itself);
    # kept because it is the rule as stated.
    if not near_0 and not near_1 and 0 < best_fraction < 1:
        return "mixed"
    return "indeterminate"


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
    fractions = curves[curves["spending_fraction"].notna()]
    rows = []
    for key, group in fractions.groupby(GROUP + ["budget"], sort=True):
        group = group.sort_values("spending_fraction")
        by_fraction = group.set_index("spending_fraction")["accuracy_mean"]
        best_fraction = by_fraction.idxmax() if by_fraction.notna().any() else math.nan  # first max
        best = by_fraction.max()
        at_0, at_1 = by_fraction.get(0.0, math.nan), by_fraction.get(1.0, math.nan)
        rows.append(dict(
            zip(GROUP + ["budget"], key),
            regime=_regime(best_fraction, best, at_0, at_1, len(group), tolerance),
            best_fraction=best_fraction,
            best_accuracy=best,
            accuracy_at_0=at_0,
            accuracy_at_1=at_1,
            num_fractions=len(group),
            tolerance=tolerance,
        ))
    columns = GROUP + ["budget", "regime", "best_fraction", "best_accuracy", "accuracy_at_0",
                       "accuracy_at_1", "num_fractions", "tolerance"]
    return pd.DataFrame(rows, columns=columns)


def plot_curves(curves: pd.DataFrame) -> bytes:
    """PNG bytes: accuracy vs spending fraction, one subplot per GROUP, one line per budget.

    Error bars are the std over seeds; the dashed line is the weak supervisor's accuracy (the floor).
    At most MAX_PANELS subplots; explicit (n_weak, n_oracle) pairs have no fraction and are not drawn.
    """
    # Figure without pyplot needs no backend and touches no global state of the caller.
    from matplotlib.figure import Figure

    fractions = curves[curves["spending_fraction"].notna()]
    groups = list(fractions.groupby(GROUP, sort=True))
    if len(groups) > MAX_PANELS:
        warnings.warn(f"plot_curves: {len(groups)} groups, drawing the first {MAX_PANELS}", stacklevel=2)
        groups = groups[:MAX_PANELS]
    num_cols = min(3, max(1, len(groups)))
    num_rows = max(1, math.ceil(len(groups) / num_cols))
    fig = Figure(figsize=(5 * num_cols, 3.8 * num_rows), layout="constrained")
    axes = fig.subplots(num_rows, num_cols, squeeze=False).ravel()
    for ax, (key, group) in zip(axes, groups):
        for budget, line in group.groupby("budget", sort=True):
            ax.errorbar(line["spending_fraction"], line["accuracy_mean"],
                        yerr=line["accuracy_std"].fillna(0.0), marker="o", capsize=3,
                        label=f"budget {budget:g}")
        ax.axhline(group["weak_accuracy_mean"].mean(), color="gray", linestyle="--", label="weak supervisor")
        ax.set(title=" / ".join(map(str, key)), xlabel="spending fraction (oracle share)",
               ylabel="accuracy", xlim=(-0.05, 1.05))
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    if not groups:
        axes[0].text(0.5, 0.5, "no spending-fraction cells", ha="center", va="center")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_frontier(storage: Storage, sweep: str, *, tolerance: float = 0.01) -> dict:
    """Read `sweep`'s results, write curves/frontier/regimes CSVs and curves.png under ``<sweep>/frontier``.

    Returns {"num_results", "num_ignored", "num_unreadable", "unreadable", "keys"}: readable rows,
    of which ignored (not ok or NaN accuracy), the unreadable cell keys, and the keys written.
    Raises ValueError when no cell has a usable result.
    """
    results, unreadable = read_results(storage, sweep)
    num_usable = len(usable(results))
    if num_usable == 0:
        raise ValueError(f"no finished cells under {sweep}/cells")
    table = curves(results)
    outputs = {
        "curves.csv": table.to_csv(index=False).encode(),
        "frontier.csv": pareto_frontier(table).to_csv(index=False).encode(),
        "regimes.csv": regimes(table, tolerance=tolerance).to_csv(index=False).encode(),
        "curves.png": plot_curves(table),
    }
    keys = []
    for name, data in outputs.items():
        keys.append(f"{sweep}/frontier/{name}")
        storage.write_bytes(keys[-1], data)
    return {
        "num_results": len(results),
        "num_ignored": len(results) - num_usable,
        "num_unreadable": len(unreadable),
        "unreadable": unreadable,
        "keys": keys,
    }
