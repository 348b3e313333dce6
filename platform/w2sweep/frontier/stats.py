"""Intervals and paired comparisons: what the frontier may claim from the data it has.

Per cell, the metric comes from its per-example test predictions when they are stored (see
`w2sweep.results.read_predictions`), else from its result row. A point (budget x fraction x method)
gets a Student-t interval over seeds; with one seed a percentile bootstrap over test examples
(scipy.stats.bootstrap) from its predictions, else the result's own stored 95% CI. The difference of
two points of a budget is paired: a t-interval over the seeds both have (>= 2), else a paired bootstrap
over the same test examples (one seed, predictions of both), else the difference of the two points'
intervals (unpaired and conservative). No Ray import.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from w2sweep import metrics

CONFIDENCE = 0.95  # default confidence of every interval the frontier reports
METRICS = ("accuracy", "auroc")
CHANCE_AUROC = 0.5
_NAME_KEYS = ("dataset", "weak_supervisor", "student", "method")  # string (or categorical) keys
NUM_RESAMPLES = 2000  # bootstrap resamples; percentile intervals (BCa's jackknife is O(n^2) here)
T_OVER_SEEDS, BOOTSTRAP, STORED, UNPAIRED = (
    "t over seeds", "bootstrap over test examples", "stored 95% CI (one seed)", "unpaired: difference of intervals")


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """`column` as floats, NaN where absent or not a number: JSON leaves nulls, mixed types and
    columns no result had (fields older results lack)."""
    if column not in frame:
        return pd.Series(math.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def check_confidence(confidence: float) -> None:
    if not (0 < confidence < 1):
        raise ValueError(f"confidence={confidence!r}: must be a number in (0, 1), e.g. 0.95")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: allowed: {', '.join(METRICS)}")


def t_quantile(dof, confidence) -> np.ndarray:
    """Two-sided Student-t quantile t((1 + confidence) / 2, dof), elementwise; NaN where dof < 1."""
    from scipy import stats

    dof, level = np.broadcast_arrays(np.asarray(dof, dtype=float), np.asarray(confidence, dtype=float))
    out = np.full(dof.shape, math.nan)
    for value in np.unique(level[dof >= 1]):  # a few levels x a few seed counts: one ppf call each
        at = (dof >= 1) & (level == value)
        unique, inverse = np.unique(dof[at], return_inverse=True)
        out[at] = stats.t.ppf((1 + value) / 2, unique)[inverse.ravel()]
    return out


def majority_rate(label1_share) -> np.ndarray:
    """Accuracy of always answering the test pool's majority class: max(share, 1 - share)."""
    share = np.asarray(label1_share, dtype=float)
    return np.maximum(share, 1 - share)


# ---- per cell, from predictions -------------------------------------------------------------------

def with_predictions(rows: pd.DataFrame, predictions: dict[str, pd.DataFrame] | None) -> pd.DataFrame:
    """`rows` (usable results) with accuracy, AUROC and test_label1_share recomputed from the stored
    predictions of the cells that have them (same definitions as `w2sweep.metrics`), numeric
    ``auroc``/``test_label1_share`` columns, and ``has_predictions``."""
    if "has_predictions" in rows:  # done already
        return rows
    rows = rows.assign(auroc=numeric(rows, "auroc"), test_label1_share=numeric(rows, "test_label1_share"),
                       has_predictions=False)
    if not predictions or "cell_id" not in rows:
        return rows
    found = rows["cell_id"].isin(list(predictions)).to_numpy()
    if not found.any():
        return rows
    values = [_cell_values(predictions[c]) for c in rows.loc[found, "cell_id"]]
    for i, name in enumerate(("accuracy", "auroc", "test_label1_share")):
        column = rows[name].to_numpy(dtype=float, copy=True)
        column[found] = [v[i] for v in values]
        rows[name] = column
    rows["has_predictions"] = found
    return rows


def _cell_values(frame: pd.DataFrame) -> tuple[float, float, float]:
    p, gold = frame["p"].to_numpy(dtype=float), frame["gold"].to_numpy()
    return metrics.accuracy(p, gold), metrics.auroc(p, gold), float(np.mean(gold == 1))


def _correct(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["p"].to_numpy(dtype=float) > 0.5) == (frame["gold"].to_numpy() == 1)).astype(float)


def bootstrap_interval(frames: list[pd.DataFrame], metric: str, confidence: float, *, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap over test examples of `metric` of ``frames[0]`` or, with two frames (the
    same examples), of the paired difference frames[0] - frames[1]. AUROC resamples positives and
    negatives separately (as `metrics.auroc_ci`). (NaN, NaN) when undefined (one class only)."""
    from scipy import stats

    gold = frames[0]["gold"].to_numpy()
    options = dict(confidence_level=confidence, n_resamples=NUM_RESAMPLES, method="percentile",
                   vectorized=True, batch=250, rng=np.random.default_rng(seed))
    if metric == "accuracy":
        per_example = _correct(frames[0]) - (_correct(frames[1]) if len(frames) > 1 else 0.0)
        if len(per_example) < 2:
            return math.nan, math.nan
        if np.ptp(per_example) == 0:  # every resample is the same: the interval is that value
            return float(per_example[0]), float(per_example[0])
        ci = stats.bootstrap((per_example,), np.mean, **options).confidence_interval
        return float(ci.low), float(ci.high)
    positive, negative = np.flatnonzero(gold == 1), np.flatnonzero(gold != 1)
    if len(positive) < 2 or len(negative) < 2:
        return math.nan, math.nan
    aurocs = [_resampled_auroc(f["p"].to_numpy(dtype=float), positive, negative) for f in frames]

    def statistic(i, j, axis=-1):
        values = [auroc(i, j) for auroc in aurocs]
        return values[0] - values[1] if len(values) > 1 else values[0]

    ci = stats.bootstrap((np.arange(len(positive)), np.arange(len(negative))), statistic, paired=False,
                         **options).confidence_interval
    return float(ci.low), float(ci.high)


def _resampled_auroc(scores: np.ndarray, positive: np.ndarray, negative: np.ndarray):
    """AUROC of resamples given as index arrays into the positives (i, shape [..., n1]) and negatives
    (j, [..., n0]): the Mann-Whitney U over n1 * n0 (ties count one half, as sklearn), computed from
    how often each example is drawn, in O(n) per resample instead of sorting each one."""
    pos, neg = scores[positive], scores[negative]
    order = np.argsort(neg, kind="mergesort")
    sorted_neg = neg[order]
    left, right = np.searchsorted(sorted_neg, pos, "left"), np.searchsorted(sorted_neg, pos, "right")
    n1, n0 = len(pos), len(neg)

    def counts(idx: np.ndarray, n: int) -> np.ndarray:
        rows = idx.reshape(-1, idx.shape[-1]).astype(np.int64)
        offsets = (np.arange(len(rows)) * n)[:, None]
        return np.bincount((rows + offsets).ravel(), minlength=len(rows) * n).reshape(len(rows), n)

    def auroc(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        below = np.zeros((j.reshape(-1, j.shape[-1]).shape[0], n0 + 1))
        below[:, 1:] = np.cumsum(counts(j, n0)[:, order], axis=1)  # resampled negatives below each rank
        per_positive = below[:, left] + 0.5 * (below[:, right] - below[:, left])
        values = (counts(i, n1) * per_positive).sum(axis=1) / (n1 * n0)
        return values.reshape(i.shape[:-1])

    return auroc


# ---- per point ------------------------------------------------------------------------------------

def point_intervals(table: pd.DataFrame, predictions: dict[str, pd.DataFrame] | None,
                    confidence: float) -> pd.DataFrame:
    """Fill ``<metric>_ci_low/high`` and ``ci_method`` of a curves `table` that holds, per point,
    ``<metric>_mean/_std``, ``num_seeds``, and for one-seed points ``_cell_id`` and the stored CIs
    (``_<metric>_stored_low/high``)."""
    n = table["num_seeds"].to_numpy(dtype=float)
    q = t_quantile(n - 1, confidence)
    one = n == 1
    has = np.zeros(len(table), dtype=bool)
    if predictions and "_cell_id" in table:
        has = one & table["_cell_id"].isin(list(predictions)).to_numpy()
    for metric in METRICS:
        half = q * table[f"{metric}_std"].to_numpy(dtype=float) / np.sqrt(n)
        mean = table[f"{metric}_mean"].to_numpy(dtype=float)
        low, high = mean - half, mean + half
        stored = one & ~has
        for end, values in (("low", low), ("high", high)):
            column = f"_{metric}_stored_{end}"
            values[stored] = table.loc[stored, column].to_numpy(dtype=float) if column in table else math.nan
        for i in np.flatnonzero(has):
            low[i], high[i] = bootstrap_interval([predictions[table["_cell_id"].iat[i]]], metric, confidence)
        table[f"{metric}_ci_low"], table[f"{metric}_ci_high"] = low, high
    stored_ok = np.isfinite(table["accuracy_ci_low"].to_numpy(dtype=float))
    table["ci_method"] = np.select([n >= 2, has, one & stored_ok], [T_OVER_SEEDS, BOOTSTRAP, STORED], default="")
    return table


# ---- paired differences within a budget -----------------------------------------------------------

def paired_differences(pairs: pd.DataFrame, keys: list[str], rows: pd.DataFrame | None,
                       points: pd.DataFrame, predictions: dict[str, pd.DataFrame] | None,
                       metric: str) -> pd.DataFrame:
    """Interval of (metric at fraction_a) - (metric at fraction_b) for each row of `pairs` (`keys`,
    ``fraction_a``, ``fraction_b``, ``confidence``): a paired t-interval over the seeds both points
    have when >= 2; else, with one common seed whose two cells both have predictions on the same
    examples, a paired bootstrap over those examples; else the difference of the two points'
    intervals in `points` (curves): [low_a - high_b, high_a - low_b], which excludes 0 only when the
    intervals do not overlap. Returns `pairs` plus diff_low, diff_high, comparison, num_paired_seeds."""
    pairs = pairs.reset_index(drop=True).assign(_pair=lambda f: np.arange(len(f)))
    out = pairs.assign(diff_low=math.nan, diff_high=math.nan, comparison="", num_paired_seeds=0)
    if pairs.empty:
        return out
    if rows is not None and not rows.empty:
        seeds = _paired_seeds(pairs, keys, rows, metric)
        stats_ = seeds.groupby("_pair").agg(n=("_d", "size"), mean=("_d", "mean"), std=("_d", "std"),
                                             cell_a=("_cell_a", "first"), cell_b=("_cell_b", "first"))
        idx = stats_.index.to_numpy()
        out.loc[idx, "num_paired_seeds"] = stats_["n"].to_numpy()
        many = stats_[stats_["n"] >= 2]
        half = t_quantile(many["n"] - 1, out.loc[many.index, "confidence"]) * many["std"] / np.sqrt(many["n"])
        out.loc[many.index, ["diff_low", "diff_high"]] = np.c_[many["mean"] - half, many["mean"] + half]
        out.loc[many.index, "comparison"] = "paired " + T_OVER_SEEDS
        for pair, cell in stats_[stats_["n"] == 1].iterrows():
            a, b = (predictions or {}).get(cell["cell_a"]), (predictions or {}).get(cell["cell_b"])
            if a is not None and b is not None and np.array_equal(a["example_id"], b["example_id"]):
                low, high = bootstrap_interval([a, b], metric, out.at[pair, "confidence"])
                out.loc[pair, ["diff_low", "diff_high", "comparison"]] = [low, high, "paired " + BOOTSTRAP]
    return _unpaired(out, keys, points, metric)


def _paired_seeds(pairs: pd.DataFrame, keys: list[str], rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per pair x seed both fractions have a finite value at: ``_d`` = a - b, and the cells.

    Rows are numbered by point (keys + fraction) once; the pairs, a few per budget, are matched to
    those numbers by name, and the million-row joins are then on integers."""
    values = rows.loc[rows["spending_fraction"].notna() & np.isfinite(numeric(rows, metric))]
    grouped = values.groupby(keys + ["spending_fraction"], sort=False, observed=True)
    codes = grouped.ngroup().to_numpy()
    names = grouped.size().reset_index()[keys + ["spending_fraction"]].assign(_code=np.arange(grouped.ngroups))
    names = names.astype({k: str for k in _NAME_KEYS if k in keys})
    plain = pairs.astype({k: str for k in _NAME_KEYS if k in keys})
    cells = values["cell_id"].to_numpy() if "cell_id" in values else np.full(len(values), "")
    by_code = pd.DataFrame({"_code": codes, "seed": values["seed"].to_numpy(),
                            "_v": values[metric].to_numpy(dtype=float), "_cell": cells})
    sides = []
    for side in ("a", "b"):
        coded = plain[keys + [f"fraction_{side}", "_pair"]].rename(columns={f"fraction_{side}": "spending_fraction"})
        coded = coded.merge(names, on=keys + ["spending_fraction"])[["_pair", "_code"]]
        sides.append(coded.merge(by_code, on="_code").drop(columns="_code").rename(
            columns={"_v": f"_v_{side}", "_cell": f"_cell_{side}"}))
    both = sides[0].merge(sides[1], on=["_pair", "seed"])
    return both.assign(_d=both["_v_a"] - both["_v_b"])


def _unpaired(out: pd.DataFrame, keys: list[str], points: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Pairs no paired comparison could be made for: the difference of the points' intervals."""
    todo = out["comparison"] == ""
    if not todo.any():
        return out.drop(columns="_pair")
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    plain_keys = [k for k in keys if k in _NAME_KEYS]
    ends = points[keys + ["spending_fraction", low, high]].dropna(subset=["spending_fraction"])
    ends = ends.merge(out.loc[todo, keys].drop_duplicates(), on=keys)  # only the budgets asked about
    ends = ends.astype({k: str for k in plain_keys}).drop_duplicates(keys + ["spending_fraction"])
    sub = out.loc[todo, keys + ["fraction_a", "fraction_b", "_pair"]].astype({k: str for k in plain_keys})
    for side in ("a", "b"):
        named = ends.rename(columns={"spending_fraction": f"fraction_{side}", low: f"_low_{side}",
                                     high: f"_high_{side}"})
        sub = sub.merge(named, on=keys + [f"fraction_{side}"], how="left")
    sub = sub.set_index("_pair")
    diff_low, diff_high = sub["_low_a"] - sub["_high_b"], sub["_high_a"] - sub["_low_b"]
    out = out.set_index("_pair")
    out.loc[sub.index, "diff_low"], out.loc[sub.index, "diff_high"] = diff_low, diff_high
    out.loc[sub.index, "comparison"] = np.where(np.isfinite(diff_low.to_numpy(dtype=float)), UNPAIRED, "no interval")
    return out.reset_index(drop=True)
