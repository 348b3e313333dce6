"""Regimes: is quantity or quality of labels worth more at a budget? Decided from the curves of
`w2sweep.frontier.tables` by a tolerance *and* a paired significance test, so that noise is labelled
`indeterminate`, with the reason, rather than a regime.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from w2sweep.frontier import stats
from w2sweep.frontier.tables import EPS, GROUP, usable

ORACLE_METHOD = "sft-oracle"  # its best accuracy at the largest budget is the default PGR ceiling
CEILING_METHOD = "ceiling"  # a result of this method, when present, is the PGR ceiling instead
KEYS = GROUP + ["budget"]


def regimes(curves: pd.DataFrame, *, tolerance: float, confidence: float = stats.CONFIDENCE,
            metric: str = "accuracy", results: pd.DataFrame | None = None,
            predictions: dict[str, pd.DataFrame] | None = None,
            num_fractions: int | None = None) -> pd.DataFrame:
    """The regime of each GROUP x budget, from its spending-fraction rows (explicit pairs ignored).

    best_fraction is the argmax of ``<metric>_mean`` (ties: the smallest fraction). Each endpoint
    s in {0, 1} is compared with the best; when f=s was not run, the run fraction nearest to s stands
    in for it. The endpoint is *separated* from the best when both hold: ``best - value > tolerance``
    (metric units) and the interval of the paired difference (`stats.paired_differences`; paired over
    `results`' seeds and `predictions`' examples) excludes 0 at confidence ``1 - (1 - confidence) /
    (k - 1)`` (Bonferroni: picking the best of k, the chance that noise separates an endpoint stays
    below 1 - confidence per budget). k is `num_fractions`, the spending fractions the sweep asked for
    (sweep.yaml's), or the fractions run where more were run or it is None. The family is the
    question's, not what was run: an adaptive search that ran 7 of 21 fractions is held to the grid's
    level, so its regime is the one the grid's rule would give on the same cells, and running fewer
    fractions never makes a claim easier.

    - "quantity-dominant": f=0 run and not separated; f=1 separated (or not run, its stand-in the best);
                           and f=0 beats f=1 by the same two tests (``diff_ends_*``: f=0 - f=1);
    - "quality-dominant":  the same with 0 and 1 exchanged;
    - "mixed":             best strictly inside (0, 1), both endpoints separated (or not run, as above);
    - "indeterminate":     otherwise, with ``reason``: one fraction run, no value, no endpoint separated
                           ("within noise"), the endpoints not separable from each other, or an
                           endpoint not run whose stand-in is within noise of the best.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance={tolerance!r}: must be a number >= 0 ({metric} units)")
    stats.check_confidence(confidence)
    stats.check_metric(metric)
    value, best_name = f"{metric}_mean", f"best_{metric}"
    at = {0: f"{metric}_at_0", 1: f"{metric}_at_1"}
    columns = KEYS + ["regime", "reason", "best_fraction", best_name, at[0], at[1], "num_fractions",
                      "diff_0_low", "diff_0_high", "diff_1_low", "diff_1_high", "diff_ends_low",
                      "diff_ends_high", "comparison",
                      "majority_rate", "metric", "tolerance", "confidence"]
    fractions = curves.loc[curves["spending_fraction"].notna(), KEYS + ["spending_fraction", value,
                                                                        "majority_rate"]]
    if fractions.empty:
        return pd.DataFrame(columns=columns)
    table = _best_and_endpoints(fractions, value, best_name, at)
    rows = None
    if results is not None:  # already prepared by `aggregate` when it has ``has_predictions``
        rows = results if "has_predictions" in results else stats.with_predictions(usable(results), predictions)
    if num_fractions is not None:
        table["num_fractions_asked"] = np.maximum(table["num_fractions"], num_fractions)
    table = _compare(table, curves, rows, predictions, metric, confidence)
    table["regime"], table["reason"] = _decide(table, best_name, at, tolerance)
    table["best_fraction"] = table["best_fraction"].where(np.isfinite(table[best_name].to_numpy(float)))
    table = table.assign(metric=metric, tolerance=tolerance, confidence=confidence)
    return table.sort_values(KEYS, kind="mergesort").reset_index(drop=True)[columns]


def _best_and_endpoints(fractions: pd.DataFrame, value: str, best_name: str, at: dict) -> pd.DataFrame:
    """Per budget: best fraction and value, the value at f=0 and f=1 (NaN: not run), the number of
    fractions, and ``rep_0``/``rep_1``: the fraction compared for each endpoint (itself, or the run
    fraction nearest to it)."""
    ranked = fractions.sort_values(KEYS + [value, "spending_fraction"],
                                   ascending=[True] * len(KEYS) + [False, True], na_position="last",
                                   kind="mergesort")
    table = ranked.drop_duplicates(KEYS).rename(columns={"spending_fraction": "best_fraction", value: best_name})
    spread = fractions.groupby(KEYS, observed=True)["spending_fraction"].agg(
        num_fractions="size", rep_0="min", rep_1="max").reset_index()
    table = table.merge(spread, on=KEYS)
    for s in (0, 1):
        run = fractions[fractions["spending_fraction"] == float(s)].drop_duplicates(KEYS)
        table = table.merge(run[KEYS + [value]].rename(columns={value: at[s]}), on=KEYS, how="left")
    lookup = fractions.drop_duplicates(KEYS + ["spending_fraction"])[KEYS + ["spending_fraction", value]]
    for s in (0, 1):
        table = table.merge(lookup.rename(columns={"spending_fraction": f"rep_{s}", value: f"_rep_value_{s}"}),
                            on=KEYS + [f"rep_{s}"], how="left")
    return table


def _compare(table: pd.DataFrame, curves: pd.DataFrame, rows: pd.DataFrame | None,
             predictions: dict | None, metric: str, confidence: float) -> pd.DataFrame:
    """Add diff_<s>_low/high (best minus the endpoint or its stand-in) and ``comparison``."""
    k = table.get("num_fractions_asked", table["num_fractions"]).to_numpy(float)
    level = 1 - (1 - confidence) / np.maximum(k - 1, 1)
    parts = []
    for s in (0, 1):
        other = table[f"rep_{s}"] != table["best_fraction"]
        parts.append(table.loc[other, KEYS].assign(
            fraction_a=table.loc[other, "best_fraction"], fraction_b=table.loc[other, f"rep_{s}"],
            confidence=level[other.to_numpy()], _side=s))
    # The endpoints (or stand-ins) against each other: a claim that one of them is the best needs it.
    ends = table["rep_0"] != table["rep_1"]
    parts.append(table.loc[ends, KEYS].assign(fraction_a=table.loc[ends, "rep_0"], fraction_b=table.loc[ends, "rep_1"],
                                              confidence=level[ends.to_numpy()], _side="ends"))
    pairs = pd.concat(parts, ignore_index=True)
    diffs = stats.paired_differences(pairs.drop(columns="_side"), KEYS, rows, curves, predictions, metric)
    diffs["_side"] = pairs["_side"].to_numpy()
    for s in (0, 1, "ends"):
        side = diffs[diffs["_side"] == s][KEYS + ["diff_low", "diff_high", "comparison"]]
        side = side.rename(columns={"diff_low": f"diff_{s}_low", "diff_high": f"diff_{s}_high",
                                    "comparison": f"_comparison_{s}"})
        table = table.merge(side.astype({k: table[k].dtype for k in KEYS}), on=KEYS, how="left")
    methods = table[["_comparison_0", "_comparison_1", "_comparison_ends"]].fillna("")
    table["comparison"] = [" / ".join(dict.fromkeys(m for m in pair if m)) for pair in methods.to_numpy()]
    return table


def _decide(table: pd.DataFrame, best_name: str, at: dict, tolerance: float) -> tuple[np.ndarray, list[str]]:
    """(regime, reason) per budget from the endpoint states: "tied", "separated", "not run" (its
    stand-in is the best: counts as separated, with no evidence), "unknown" (stand-in within noise)."""
    best = table[best_name].to_numpy(float)
    state, why = {}, {}
    for s in (0, 1):
        gap = best - table[f"_rep_value_{s}"].to_numpy(float)
        low, high = table[f"diff_{s}_low"].to_numpy(float), table[f"diff_{s}_high"].to_numpy(float)
        with np.errstate(invalid="ignore"):
            beyond, significant = gap > tolerance + EPS, low > 0
        run = np.isfinite(table[at[s]].to_numpy(float))
        is_best = (table[f"rep_{s}"] == table["best_fraction"]).to_numpy()
        separated = ~is_best & beyond & significant
        state[s] = np.select([separated, run, is_best], ["separated", "tied", "not run"], default="unknown")
        why[s] = (table[f"rep_{s}"].to_numpy(float), gap, low, high, beyond, is_best)
    inside = ((table["best_fraction"] > 0) & (table["best_fraction"] < 1)).to_numpy()
    beaten = {s: np.isin(state[s], ["separated", "not run"]) for s in (0, 1)}
    evidence = (state[0] == "separated") | (state[1] == "separated")
    one = table["num_fractions"].to_numpy() < 2
    shape = {0: (state[0] == "tied") & beaten[1], 1: (state[1] == "tied") & beaten[0]}
    ends_gap = table["_rep_value_0"].to_numpy(float) - table["_rep_value_1"].to_numpy(float)
    ends_low, ends_high = table["diff_ends_low"].to_numpy(float), table["diff_ends_high"].to_numpy(float)
    with np.errstate(invalid="ignore"):  # the tied endpoint beats the other one, beyond noise
        apart = {0: (ends_gap > tolerance + EPS) & (ends_low > 0), 1: (-ends_gap > tolerance + EPS) & (ends_high < 0)}
    conditions = [one, ~np.isfinite(best), ~evidence, (state[0] == "unknown") | (state[1] == "unknown"),
                  shape[0] & apart[0], shape[1] & apart[1], shape[0] | shape[1], inside & beaten[0] & beaten[1]]
    regime = np.select(conditions, ["indeterminate"] * 4 + ["quantity-dominant", "quality-dominant",
                                                             "indeterminate", "mixed"], default="indeterminate")
    facts = dict(one=one, best=best, evidence=evidence, state=state, why=why, shape=shape, apart=apart,
                 ends=(table["rep_0"].to_numpy(float), table["rep_1"].to_numpy(float), ends_gap, ends_low, ends_high))
    reasons = [""] * len(table)
    for i in np.flatnonzero(regime == "indeterminate"):
        reasons[i] = _reason(i, facts, tolerance)
    return regime, reasons


def _reason(i: int, facts: dict, tolerance: float) -> str:
    """Why budget `i` is indeterminate, from the facts `_decide` established."""
    state, shape, apart = facts["state"], facts["shape"], facts["apart"]

    def explain(s: int) -> str:
        rep, gap, low, high, beyond, is_best = (a[i] for a in facts["why"][s])
        return "" if is_best else _why(s, rep, gap, low, high, beyond, tolerance)

    if facts["one"][i]:
        return "one spending fraction run"
    if not math.isfinite(facts["best"][i]):
        return "no value"
    if not facts["evidence"][i]:
        return "within noise: no endpoint separable from the best (" + "; ".join(
            filter(None, (explain(s) for s in (0, 1)))) + ")"
    if state[0][i] == "unknown" or state[1][i] == "unknown":
        return "; ".join(f"f={s} not run and " + explain(s) for s in (0, 1) if state[s][i] == "unknown")
    if (shape[0][i] and not apart[0][i]) or (shape[1][i] and not apart[1][i]):
        rep_0, rep_1, gap, low, high = (a[i] for a in facts["ends"])
        return (f"within noise: f={rep_0:g} and f={rep_1:g} are not separable from each other "
                f"(difference {gap:.3g}, interval [{low:.3g}, {high:.3g}], tolerance {tolerance:g})")
    return ""


def _why(s: int, rep: float, gap: float, low: float, high: float, beyond: bool, tolerance: float) -> str:
    """Why endpoint `s` (or its stand-in `rep`, not the best) is not separated from the best; "" if it is."""
    name = f"f={rep:g}" + ("" if rep == s else f" (for f={s})")
    if not math.isfinite(gap):
        return f"{name}: no value"
    if not beyond:
        return f"{name}: gap {gap:.3g} within tolerance {tolerance:g}"
    if not math.isfinite(low):
        return f"{name}: no interval for the difference"
    if low <= 0:
        return f"{name}: difference interval [{low:.3g}, {high:.3g}] includes 0"
    return ""

