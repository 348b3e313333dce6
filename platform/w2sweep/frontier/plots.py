"""The figures of a frontier report, as PNG bytes.

Matplotlib's `Figure` is used without pyplot: no backend to pick, no global state shared with the
caller, and figures can be drawn from any thread.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd

from w2sweep.frontier.tables import ALL_METHODS, AXES, DEFAULT_GPU_HOUR_PRICE, GROUP, MODELS, with_costs

MAX_PANELS = 12  # a figure with more subplots than this is unreadable; the rest are left out


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


def _baseline(ax, group: pd.DataFrame, metric: str) -> None:
    """The dashed line a metric must beat: the test pool's majority-class rate (accuracy; not drawn
    when unknown) or 0.5 (AUROC)."""
    if metric == "auroc":
        ax.axhline(0.5, color="firebrick", linestyle="--", linewidth=1, label="chance (AUROC 0.5)")
        return
    rate = group["majority_rate"].mean() if "majority_rate" in group else math.nan
    if np.isfinite(rate):
        ax.axhline(rate, color="firebrick", linestyle="--", linewidth=1, label=f"majority class ({rate:.3f})")


def _band(ax, x, low, high, color) -> None:
    """A light band between an interval's ends (where both are known)."""
    x, low, high = (np.asarray(v, dtype=float) for v in (x, low, high))
    known = np.isfinite(x) & np.isfinite(low) & np.isfinite(high)
    if known.sum() >= 2:
        ax.fill_between(x[known], low[known], high[known], color=color, alpha=0.15, linewidth=0)


def _log_budgets(ax, budgets) -> None:
    """Budgets grow geometrically: a log axis (base 2) ticked at the budgets run, when there are several."""
    values = sorted({float(b) for b in budgets if np.isfinite(b)})
    if len(values) >= 2 and values[0] > 0:
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()


def _best_intervals(points: pd.DataFrame, curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`points` (budget_points) with the interval (<metric>_ci_low/_ci_high) of the curves point each
    best value was read from (same group, source method, label cost and fraction); NaN when not found."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if curves is None or points.empty or low not in curves or high not in curves:
        return points.assign(**{low: np.nan, high: np.nan})
    keys = MODELS + ["label_cost", "spending_fraction"]
    right = curves[keys + ["method", low, high]].rename(columns={"method": "source_method"})
    right = right.astype({k: str for k in MODELS + ["source_method"]})
    left = points.astype({k: str for k in MODELS + ["source_method"]})
    for frame in (left, right):
        frame["_cost"] = frame["label_cost"].astype(float).round(6)
        frame["_f"] = frame["spending_fraction"].astype(float).round(6)
    right = right.drop(columns=["label_cost", "spending_fraction"]).drop_duplicates(
        MODELS + ["source_method", "_cost", "_f"])
    merged = left[MODELS + ["source_method", "_cost", "_f"]].merge(
        right, on=MODELS + ["source_method", "_cost", "_f"], how="left")
    return points.assign(**{low: merged[low].to_numpy(), high: merged[high].to_numpy()})


def _rows_of(frame: pd.DataFrame, key) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in zip(MODELS, key):
        mask &= (frame[column] == value).to_numpy()
    return frame[mask]


def _title(ax, key) -> None:
    ax.set_title(" / ".join(map(str, key if isinstance(key, tuple) else (key,))), fontsize=8)


def plot_curves(curves: pd.DataFrame, *, metric: str = "accuracy") -> bytes:
    """PNG bytes: `metric` vs spending fraction, one subplot per GROUP, one line per budget.

    Error bars are the points' intervals (curves' ``<metric>_ci_*``); dashed lines: the weak
    supervisor's accuracy (gray, the floor; accuracy only) and the baseline to beat (red: the
    majority-class rate, or AUROC 0.5). Explicit (n_weak, n_oracle) pairs have no fraction: not drawn.
    """
    fractions = curves[curves["spending_fraction"].notna()]
    fig, panels = _panels(fractions, GROUP, "plot_curves")
    for key, group, ax in panels:
        for budget, line in group.groupby("budget", sort=True):
            mean = line[f"{metric}_mean"]
            errors = np.stack([(mean - line[f"{metric}_ci_low"]).fillna(0.0).clip(lower=0),
                               (line[f"{metric}_ci_high"] - mean).fillna(0.0).clip(lower=0)])
            drawn = ax.errorbar(line["spending_fraction"], mean, yerr=errors, marker="o", capsize=3,
                                label=f"budget {budget:g}")
            _band(ax, line["spending_fraction"], line[f"{metric}_ci_low"], line[f"{metric}_ci_high"],
                  drawn.lines[0].get_color())
        if metric == "accuracy":
            ax.axhline(group["weak_accuracy_mean"].mean(), color="gray", linestyle="--", label="weak supervisor")
        _baseline(ax, group, metric)
        ax.set(xlabel="spending fraction (oracle share)", ylabel=metric, xlim=(-0.05, 1.05))
        _title(ax, key)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_frontier(curves: pd.DataFrame, frontier: pd.DataFrame, *, gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
                  label_unit_price: float = 1.0, metric: str = "accuracy") -> bytes:
    """PNG bytes: the Pareto frontier of each method as a step line over all its points (faint), one
    subplot per (dataset, weak_supervisor, student); the across-method frontier is the black line,
    the baseline to beat the dashed red one."""
    value = f"{metric}_mean"
    axis = frontier["axis"].iloc[0] if len(frontier) else "label"
    cost, label = AXES[axis]
    points = with_costs(curves, gpu_hour_price=gpu_hour_price, label_unit_price=label_unit_price)
    fig, panels = _panels(frontier, MODELS, "plot_frontier")
    colors = _colors(points["method"].astype(str))
    for key, group, ax in panels:
        mask = np.ones(len(points), dtype=bool)
        for column, name in zip(MODELS, key):
            mask &= (points[column] == name).to_numpy()
        for method, line in group.groupby("method", sort=True, observed=True):
            across, color = method == ALL_METHODS, colors.get(method, "gray")
            if not across:
                mine = points[mask & (points["method"] == method).to_numpy()]
                ax.scatter(mine[cost], mine[value], s=10, alpha=0.3, color=color)
            ax.step(line["cost"], line[value], where="post", color=color,
                    linewidth=2.2 if across else 1.2, marker="" if across else "o", markersize=4,
                    label="all methods" if across else method, zorder=3 if across else 2)
        _baseline(ax, points[mask], metric)
        ax.set(xlabel=label, ylabel=metric)
        if (group["cost"] > 0).all() and group["cost"].max() / group["cost"].min() > 20:
            ax.set_xscale("log")
        _title(ax, key)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_budget_table(points: pd.DataFrame, curves: pd.DataFrame | None = None, *,
                      metric: str = "accuracy") -> bytes:
    """PNG bytes: best `metric` reachable at label cost <= budget, one line per method, one subplot
    per (dataset, weak_supervisor, student), budgets on a log axis; bands: the interval of each best
    point (from `curves`, when given); dashed red: the baseline (from `curves`, when given)."""
    points = _best_intervals(points, curves, metric)
    fig, panels = _panels(points, MODELS, "plot_budget_table")
    colors = _colors(points["method"].astype(str))
    for key, group, ax in panels:
        for method, line in group.groupby("method", sort=True, observed=True):
            across = method == ALL_METHODS
            color = colors.get(method, "gray")
            ax.plot(line["budget"], line[f"best_{metric}"], marker="" if across else "o",
                    color=color, linewidth=2.2 if across else 1.2,
                    label="all methods" if across else method)
            if not across:
                _band(ax, line["budget"], line[f"{metric}_ci_low"], line[f"{metric}_ci_high"], color)
        if curves is not None:
            _baseline(ax, _rows_of(curves, key), metric)
        ax.set(xlabel="budget (label units)", ylabel=f"best {metric} at label cost <= budget")
        _log_budgets(ax, group["budget"])
        _title(ax, key)
        ax.legend(fontsize=7)
    return _png(fig)
