"""Performance gap recovered, with an interval, and the "no signal" diagnostic: both read off the
ceiling of each (dataset, weak supervisor, student) in the curves of `w2sweep.frontier.tables`, and
the join that gives every weak supervisor of a (dataset, student) its shared ceiling (`with_shared_ceilings`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from w2sweep.frontier.regimes import CEILING_METHOD, ORACLE_METHOD
from w2sweep.frontier.stats import CHANCE_AUROC
from w2sweep.frontier.tables import EPS, GROUP, MODELS, numeric
from w2sweep.results import NO_WEAK_SUPERVISOR

CEILING_COLUMNS = ["accuracy_mean", "accuracy_ci_low", "accuracy_ci_high", "auroc_mean", "auroc_ci_low",
                   "auroc_ci_high"]


def with_shared_ceilings(rows: pd.DataFrame) -> pd.DataFrame:
    """Result rows with each shared ceiling row (method "ceiling", weak_supervisor NO_WEAK_SUPERVISOR:
    run once per dataset x student x seed, since it reads no weak labels) copied into every weak
    supervisor that dataset and student have other results of, so that PGR, frontiers and tables see
    it in each (dataset, weak supervisor, student) as when it ran once per weak supervisor. A copy
    takes the weak accuracy of its weak supervisor at its seed (the floor of that triple).

    A triple that has ceiling rows of its own (an older sweep's, run per weak supervisor) keeps those
    and gets no copy. A shared ceiling that no triple takes (no other results of its dataset and
    student yet) stays as it is, under NO_WEAK_SUPERVISOR."""
    if rows.empty:
        return rows
    shared = (rows["method"] == CEILING_METHOD) & (rows["weak_supervisor"] == NO_WEAK_SUPERVISOR)
    if not shared.any():
        return rows
    others, ceiling = rows[~shared], rows[shared]
    pair = ["dataset", "student"]
    triples = others[MODELS].drop_duplicates()
    own = others.loc[others["method"] == CEILING_METHOD, MODELS].drop_duplicates()
    triples = triples.merge(own, on=MODELS, how="left", indicator=True)
    triples = triples.loc[triples["_merge"] == "left_only", MODELS]
    copies = ceiling.drop(columns="weak_supervisor").merge(triples, on=pair)
    at = ["dataset", "weak_supervisor", "seed"]
    floors = others[at].assign(weak_accuracy=numeric(others, "weak_accuracy")).groupby(
        at, observed=True)["weak_accuracy"].first().reset_index()
    copies = copies.drop(columns="weak_accuracy", errors="ignore").merge(floors, on=at, how="left")
    alone = ceiling[~ceiling.set_index(pair).index.isin(triples.set_index(pair).index)]
    return pd.concat([others, copies, alone], ignore_index=True)


def ceilings(points: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, weak_supervisor, student): the ceiling point: the best seed-mean accuracy of
    method "ceiling" when such results exist, else the best "sft-oracle" accuracy at that triple's
    largest sft-oracle budget. Columns: MODELS, ceiling_source, ``ceiling_`` + CEILING_COLUMNS."""
    points = points.dropna(subset=["accuracy_mean"])
    explicit = points[points["method"] == CEILING_METHOD].assign(ceiling_source=CEILING_METHOD, _rank=0)
    oracle = points[points["method"] == ORACLE_METHOD]
    oracle = oracle[oracle["budget"] == oracle.groupby(MODELS, observed=True)["budget"].transform("max")]
    oracle = oracle.assign(ceiling_source=[f"{ORACLE_METHOD} at budget {b:g}" for b in oracle["budget"]], _rank=1)
    both = pd.concat([explicit, oracle], ignore_index=True)
    # An explicit ceiling wins over sft-oracle; within one source the best accuracy wins.
    both = both.sort_values(MODELS + ["_rank", "accuracy_mean"], ascending=[True] * len(MODELS) + [True, False],
                            kind="mergesort").drop_duplicates(MODELS)
    return both[MODELS + ["ceiling_source"] + CEILING_COLUMNS].rename(
        columns={c: "ceiling_" + c for c in CEILING_COLUMNS}).rename(
        columns={"ceiling_accuracy_mean": "ceiling_accuracy", "ceiling_auroc_mean": "ceiling_auroc"})


def pgr(curves: pd.DataFrame) -> pd.DataFrame:
    """Performance gap recovered per curves point: (accuracy - weak) / (ceiling - weak), on accuracy.

    weak = the point's weak_accuracy_mean (the weak supervisor's test accuracy, taken as given:
    results record it without an interval); the ceiling is `ceilings`. ``pgr_low``/``pgr_high``:
    interval arithmetic on the point's and the ceiling's intervals (curves' ``accuracy_ci_*``), the
    extremes of (a - weak) / (c - weak) over both: it covers PGR with probability at least
    1 - 2 (1 - confidence). ``pgr`` is NaN, with ``reason``, when there is no ceiling, no weak accuracy,
    the ceiling is not above the weak accuracy, or ceiling - weak is not significantly above 0 (the
    ceiling's interval does not lie above the weak accuracy, or it has none).
    """
    columns = GROUP + ["budget", "spending_fraction", "n_weak", "n_oracle", "label_cost", "accuracy_mean",
                       "weak_accuracy_mean", "ceiling_accuracy", "ceiling_source", "pgr", "reason", "pgr_low",
                       "pgr_high", "ceiling_ci_low", "ceiling_ci_high", "majority_rate"]
    points = curves.dropna(subset=["accuracy_mean"])
    if points.empty:
        return pd.DataFrame(columns=columns)
    table = points.merge(ceilings(points).rename(columns={"ceiling_accuracy_ci_low": "ceiling_ci_low",
                                                          "ceiling_accuracy_ci_high": "ceiling_ci_high"}),
                         on=MODELS, how="left")
    acc, weak = table["accuracy_mean"].to_numpy(float), table["weak_accuracy_mean"].to_numpy(float)
    ceiling = table["ceiling_accuracy"].to_numpy(float)
    c_low, c_high = table["ceiling_ci_low"].to_numpy(float), table["ceiling_ci_high"].to_numpy(float)
    no_ceiling, no_weak = ~np.isfinite(ceiling), ~np.isfinite(weak)
    with np.errstate(invalid="ignore"):
        flat = ~no_ceiling & ~no_weak & (ceiling - weak <= EPS)
        noise = ~no_ceiling & ~no_weak & ~flat & ~(c_low - weak > EPS)
    bad = no_ceiling | no_weak | flat | noise
    with np.errstate(invalid="ignore", divide="ignore"):
        table["pgr"] = np.where(bad, math.nan, (acc - weak) / (ceiling - weak))
        corners = np.stack([(a - weak) / (c - weak) for a in (table["accuracy_ci_low"].to_numpy(float),
                                                                table["accuracy_ci_high"].to_numpy(float))
                            for c in (c_low, c_high)])
    table["pgr_low"] = np.where(bad, math.nan, corners.min(axis=0))
    table["pgr_high"] = np.where(bad, math.nan, corners.max(axis=0))
    noise_reason = np.full(len(table), "", dtype=object)
    noise_reason[noise] = [
        "ceiling - weak not significantly above 0: " + (
            f"the ceiling's interval [{lo:.4g}, {hi:.4g}] does not lie above the weak accuracy {w:.4g}"
            if np.isfinite(lo) else "the ceiling has no interval (one seed, no predictions, no stored CI)")
        for lo, hi, w in zip(c_low[noise], c_high[noise], weak[noise])]
    table["reason"] = np.select(
        [no_ceiling, no_weak, flat, noise],
        [f"no ceiling: no '{CEILING_METHOD}' or '{ORACLE_METHOD}' result for this dataset/weak supervisor/student",
         "no weak accuracy", "ceiling accuracy is not above the weak accuracy", noise_reason],
        default="",
    )
    table["ceiling_source"] = table["ceiling_source"].fillna("")
    return table[columns]


def at_chance(curves: pd.DataFrame) -> pd.DataFrame:
    """The (dataset, weak_supervisor, student) whose ceiling (`ceilings`) has an AUROC interval that
    includes 0.5 or lies below it: trained on every gold label it buys, the student does not rank the
    test pool better than chance. Columns: MODELS, reason."""
    found = ceilings(curves)
    with np.errstate(invalid="ignore"):
        found = found[found["ceiling_auroc_ci_low"].to_numpy(float) <= CHANCE_AUROC]
    reasons = [f"ceiling AUROC {g.ceiling_auroc:.3f} [{g.ceiling_auroc_ci_low:.3f}, {g.ceiling_auroc_ci_high:.3f}] "
               f"({g.ceiling_source}) does not exclude 0.5" for g in found.itertuples(index=False)]
    return found.assign(reason=reasons)[MODELS + ["reason"]].reset_index(drop=True)


def _reason_by_group(found: pd.DataFrame) -> dict[tuple, str]:
    """`at_chance`'s rows as {(dataset, weak_supervisor, student) as strings: reason}."""
    return dict(zip(map(tuple, found[MODELS].astype(str).to_numpy()), found["reason"]))


def without_signal(regimes: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """`regimes` with every budget of a group `at_chance` made ``indeterminate``, reason "no signal: ...".
    Why: with a student that cannot learn the task from all gold labels, any endpoint the paired test
    separates is a 1-in-20 (Bonferroni-corrected) draw of noise, not a regime; and the rule then depends
    on the ceiling alone, so an adaptive search that spends no seeds on such a group's regime
    (`w2sweep.search`) gives the grid's answer by construction."""
    silent = at_chance(curves)
    if silent.empty or regimes.empty:
        return regimes
    keys = pd.MultiIndex.from_frame(regimes[MODELS].astype(str))
    reason = _reason_by_group(silent)
    hit = keys.isin(list(reason))
    out = regimes.copy()
    out.loc[hit, "regime"] = "indeterminate"
    out.loc[hit, "reason"] = ["no signal: " + reason[k] for k in keys[hit]]
    return out


def no_signal(curves: pd.DataFrame) -> pd.DataFrame:
    """The (dataset, weak_supervisor, student) whose results show no signal, with the reason: the
    ceiling's AUROC interval includes 0.5 (or lies below it), or no point (any method, budget or
    fraction) has an accuracy interval whose lower end is above the test pool's majority-class rate.
    Columns: MODELS, reason, ceiling_auroc, ceiling_auroc_ci_low/high, majority_rate,
    best_accuracy_ci_low."""
    columns = MODELS + ["reason", "ceiling_auroc", "ceiling_auroc_ci_low", "ceiling_auroc_ci_high",
                        "majority_rate", "best_accuracy_ci_low"]
    points = curves.dropna(subset=["accuracy_mean"])
    if points.empty:
        return pd.DataFrame(columns=columns)
    groups = points.groupby(MODELS, observed=True).agg(
        majority_rate=("majority_rate", "mean"), best_accuracy_ci_low=("accuracy_ci_low", "max")).reset_index()
    majority = points["majority_rate"].fillna(
        points.groupby(MODELS, observed=True)["majority_rate"].transform("mean"))
    with np.errstate(invalid="ignore"):
        beats = (points["accuracy_ci_low"] > majority + EPS).groupby(
            [points[m] for m in MODELS], observed=True).any().rename("beats_majority").reset_index()
    groups = groups.merge(beats, on=MODELS).merge(ceilings(points), on=MODELS, how="left")
    chance = _reason_by_group(at_chance(points))
    reasons = []
    for g in groups.itertuples(index=False):
        parts = [chance.get(tuple(str(getattr(g, m)) for m in MODELS), "")]
        if np.isfinite(g.majority_rate) and not g.beats_majority:
            parts.append(f"no point's accuracy is significantly above the majority-class rate "
                         f"{g.majority_rate:.3f} (highest interval lower end: {g.best_accuracy_ci_low:.3f})")
        reasons.append("; ".join(filter(None, parts)))
    groups["reason"] = reasons
    return groups[groups["reason"] != ""].reset_index(drop=True)[columns]
