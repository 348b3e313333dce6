"""Regimes (is quantity or quality of labels worth more at a budget?) and performance gap recovered,
both read off the seed-averaged curves of `w2sweep.frontier.tables`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from w2sweep.frontier.tables import EPS, GROUP, MODELS

ORACLE_METHOD = "sft-oracle"  # its best accuracy at the largest budget is the default PGR ceiling
CEILING_METHOD = "ceiling"  # a result of this method, when present, is the PGR ceiling instead


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
            near[name] = np.isfinite(at) & (best - at <= tolerance + EPS)  # NaN is never near
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
        flat = ~no_ceiling & ~no_weak & (ceiling - weak <= EPS)
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
