"""Consistency checks of a sweep's students, from their stored per-example test predictions.

Why: what scalable oversight lacks is gold labels, so a student trained from weak labels has to be
cross-checked against its peers. Students of one (dataset, student) group, trained on the same data
with other methods, seeds or label mixes, should mostly agree; one that disagrees with the rest far
more than they disagree with each other deserves a look (a bug, a diverged run, a label mix gone
wrong) before its accuracy is believed, and whether agreement tracks accuracy says whether agreement
can stand in for the gold labels one does not have.

Examples are matched across cells by their text (`w2sweep.data.keys.text_key`): each seed cuts its
own test pool (`w2sweep.data.pools_for(spec, seed).test`; example_id is the position in it), so two
seeds share only the texts that fell into both pools. Where the pool cannot be rebuilt here (a result
without config, data not available), an example is (seed, example_id): only cells of one seed are
compared, and texts are blank.

Flagging rule: a cell is flagged when its leave-one-out consensus agreement is below its group's
median by more than max(3 x MAD, MIN_GAP) (MAD scaled to a normal's sd), in groups of at least
MIN_CELLS_TO_FLAG cells. Robust: the flagged cell itself moves neither the median nor the MAD, and
MIN_GAP keeps near-identical groups (MAD ~ 0) from flagging a cell for a handful of examples. A flag
asks for a look; a method that is legitimately different (a ceiling, a weak-only fraction) can be one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from w2sweep import layout
from w2sweep.storage import Storage

GROUP = ["dataset", "student"]
AXES = ["weak_supervisor", "method", "budget", "spending_fraction", "seed"]  # what may differ in a group
CONFIDENT = 0.3  # |p - 0.5| above this is a confident prediction
MAX_DISAGREEMENTS = 100  # rows of disagreements.csv per group, most contested first
MAD_FACTOR = 3.0
MIN_GAP = 0.02  # agreement below the median by less than this is never flagged
MIN_CELLS_TO_FLAG = 4  # with fewer, the leave-one-out consensus is one or two cells: no outlier to find
MIN_CELLS_SPEARMAN = 5
RULE = (f"Per (dataset, student): pairwise agreement and Cohen's kappa of hard predictions (p > 0.5) on shared "
        f"test examples (matched by text across seeds); each cell's leave-one-out agreement with the others' "
        f"majority vote; a cell is flagged when that is below the group median by more than "
        f"max({MAD_FACTOR:g} x MAD, {MIN_GAP:g}) (groups of at least {MIN_CELLS_TO_FLAG} cells). Spearman "
        f"(consensus agreement, accuracy) says whether agreement predicts accuracy without gold labels "
        f"(at least {MIN_CELLS_SPEARMAN} cells). Disagreements: examples with p > 0.5 + c in one cell and "
        f"p < 0.5 - c in another.")
FILES = ("consistency_groups.csv", "consistency_cells.csv", "consistency_pairs.csv", "disagreements.csv")


class NoPredictions(ValueError):
    """The sweep has no usable cell with stored predictions: nothing to compare."""


@dataclass(frozen=True)
class Consistency:
    groups: pd.DataFrame  # per (dataset, student): medians, threshold, Spearman(agreement, accuracy)
    cells: pd.DataFrame  # per cell: accuracy, mean pairwise and consensus agreement, flagged
    pairs: pd.DataFrame  # per pair of cells in a group: shared examples, agreement, kappa, what differs
    disagreements: pd.DataFrame  # examples on which confident cells of a group disagree, with text

    def tables(self) -> dict[str, pd.DataFrame]:
        return dict(zip(FILES, (self.groups, self.cells, self.pairs, self.disagreements)))

    def flagged(self) -> pd.DataFrame:
        return self.cells[self.cells["flagged"]]


def hard(p: np.ndarray) -> np.ndarray:
    """Hard predictions as `w2sweep.metrics.accuracy` makes them (p > 0.5 is label 1); NaN stays NaN."""
    return np.where(np.isnan(p), np.nan, (p > 0.5).astype(float))


# ---- test texts -----------------------------------------------------------------------------------

def test_texts(storage: Storage, sweep: str, rows: pd.DataFrame) -> dict[tuple[str, int], list[str]]:
    """{(dataset, seed): test-pool texts} rebuilt from the config of one result per (dataset, seed);
    a pair whose pool cannot be rebuilt here is left out (its examples then match by id only)."""
    import json

    from pydantic import ValidationError

    from w2sweep.config import DatasetSpec
    from w2sweep.data import DataError, pools_for

    texts = {}
    for (dataset, seed), cell_id in rows.groupby(["dataset", "seed"])["cell_id"].first().items():
        try:
            config = json.loads(storage.read_bytes(layout.result(sweep, cell_id))).get("config") or {}
            spec = DatasetSpec.model_validate(config["dataset"])
            texts[(dataset, int(seed))] = list(pools_for(spec, int(seed)).test.texts)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, DataError, ValidationError, ImportError):
            continue
    return texts


def _long(rows: pd.DataFrame, predictions: dict, texts: dict) -> pd.DataFrame:
    """One row per (cell, example) with the example's matching key, gold label and text."""
    from w2sweep.data.keys import text_key

    parts = []
    for cell_id, dataset, seed in rows[["cell_id", "dataset", "seed"]].itertuples(index=False):
        frame = predictions[cell_id]
        ids = frame["example_id"].to_numpy()
        pool = texts.get((dataset, int(seed)))
        if pool is not None and len(ids) and ids.max() < len(pool):
            text = [pool[i] for i in ids]
            key = [text_key(t) for t in text]
        else:
            text, key = [""] * len(ids), [f"seed={seed}:{i}" for i in ids]
        parts.append(pd.DataFrame({"key": key, "cell_id": cell_id, "seed": seed, "example_id": ids,
                                   "gold": frame["gold"].to_numpy(), "p": frame["p"].to_numpy(float),
                                   "text": text}))
    return pd.concat(parts, ignore_index=True).drop_duplicates(["key", "cell_id"])


# ---- one group ------------------------------------------------------------------------------------

def _pairs(rows: pd.DataFrame, h: np.ndarray) -> pd.DataFrame:
    """Raw agreement and Cohen's kappa of every pair's hard predictions on their shared examples.

    From the pairs' 2x2 counts, all at once (matrix products): sklearn's cohen_kappa_score costs ~3 ms
    a call, 3.5 minutes for a 375-cell group's 70k pairs in every frontier write; the test checks
    that every kappa here is sklearn's. NaN where undefined (one class only), as sklearn's."""
    ones, zeros = (h == 1).astype(float), (h == 0).astype(float)
    n11, n10, n00 = ones.T @ ones, ones.T @ zeros, zeros.T @ zeros
    n = n11 + n10 + n10.T + n00
    i, j = np.triu_indices(h.shape[1], 1)
    n, n11, n10, n01, n00 = n[i, j], n11[i, j], n10[i, j], n10.T[i, j], n00[i, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = (n11 + n00) / n
        expected = ((n11 + n10) * (n11 + n01) + (n00 + n01) * (n00 + n10)) / n**2
        kappa = np.where(expected < 1, (agreement - expected) / (1 - expected), np.nan)
    axes = rows[AXES].astype(str).to_numpy()
    differs = [",".join(name for name, x, y in zip(AXES, axes[a], axes[b]) if x != y) for a, b in zip(i, j)]
    ids = rows["cell_id"].to_numpy()
    return pd.DataFrame({"cell_a": ids[i], "cell_b": ids[j], "differs": differs, "n_shared": n.astype(int),
                         "agreement": agreement, "kappa": kappa})


def _consensus(p: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Each cell's agreement with the majority vote of the others on its examples (leave-one-out);
    a tied vote goes to the others' mean p. NaN for a cell sharing no example with another."""
    present = ~np.isnan(h)
    count = present.sum(axis=1, keepdims=True)
    votes, total = np.nansum(h, axis=1, keepdims=True), np.nansum(p, axis=1, keepdims=True)
    others = count - present
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (votes - np.nan_to_num(h)) / others
        mean_p = (total - np.nan_to_num(p)) / others
    consensus = np.where(share == 0.5, mean_p > 0.5, share > 0.5)
    scored = present & (others > 0)
    agree = np.where(scored, h == consensus, False).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return agree / scored.sum(axis=0)


def _flag(cells: pd.DataFrame) -> pd.DataFrame:
    """The group's median consensus agreement, its MAD, the threshold and the flag (module docstring)."""
    x = cells["consensus_agreement"]
    median = float(x.median())
    mad = float(stats.median_abs_deviation(x, scale="normal", nan_policy="omit")) if x.notna().any() else np.nan
    threshold = median - max(MAD_FACTOR * mad, MIN_GAP)
    flagged = (x < threshold) & (x.notna().sum() >= MIN_CELLS_TO_FLAG)
    return cells.assign(group_median=median, group_mad=mad, threshold=threshold, flagged=flagged)


def _spearman(cells: pd.DataFrame) -> dict:
    """Does agreement predict accuracy without gold labels? Spearman's rho over the group's cells."""
    ok = cells[["consensus_agreement", "accuracy"]].dropna()
    if len(ok) < MIN_CELLS_SPEARMAN:
        return dict(spearman_rho=np.nan, spearman_p=np.nan,
                    spearman_note=f"n too small ({len(ok)} < {MIN_CELLS_SPEARMAN} cells)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, said below
        rho, p = stats.spearmanr(ok["consensus_agreement"], ok["accuracy"])
    note = f"n={len(ok)}" if np.isfinite(rho) else f"n={len(ok)}; constant agreement or accuracy"
    return dict(spearman_rho=float(rho), spearman_p=float(p), spearman_note=note)


def _disagreements(long: pd.DataFrame, p: pd.DataFrame, *, confident: float, cap: int) -> pd.DataFrame:
    """Examples on which some cell is confidently 1 and another confidently 0, most contested first."""
    sure1, sure0 = p.to_numpy() > 0.5 + confident, p.to_numpy() < 0.5 - confident
    n1, n0 = sure1.sum(axis=1), sure0.sum(axis=1)
    hit = np.flatnonzero((n1 > 0) & (n0 > 0))
    names = p.columns.to_numpy()
    meta = long.drop_duplicates("key").set_index("key").loc[p.index[hit]]
    out = pd.DataFrame({
        "seed": meta["seed"].to_numpy(), "example_id": meta["example_id"].to_numpy(),
        "gold": meta["gold"].to_numpy(), "n_cells": (~np.isnan(p.to_numpy()[hit])).sum(axis=1),
        "n_confident_1": n1[hit], "n_confident_0": n0[hit],
        "cells_1": ["; ".join(names[r]) for r in sure1[hit]],
        "cells_0": ["; ".join(names[r]) for r in sure0[hit]],
        "text": meta["text"].to_numpy(),
    })
    out["contested"] = np.minimum(out["n_confident_1"], out["n_confident_0"])
    out = out.sort_values(["contested", "seed", "example_id"], ascending=[False, True, True], kind="mergesort")
    return out.drop(columns="contested").head(cap).reset_index(drop=True)


def _group(rows: pd.DataFrame, predictions: dict, texts: dict, *, confident: float, cap: int):
    """The four tables of one (dataset, student) group, rows in cell_id order."""
    rows = rows.sort_values("cell_id").reset_index(drop=True)
    long = _long(rows, predictions, texts)
    p = long.pivot(index="key", columns="cell_id", values="p")[rows["cell_id"]]
    h = hard(p.to_numpy())
    pairs = _pairs(rows, h)
    both = pd.concat([pairs.rename(columns={"cell_a": "cell_id"}), pairs.rename(columns={"cell_b": "cell_id"})])
    means = both.groupby("cell_id")[["agreement", "kappa"]].mean()
    accuracy = long.assign(right=(long["p"] > 0.5) == (long["gold"] == 1)).groupby("cell_id")["right"].mean()
    cells = rows[["cell_id", *AXES]].assign(
        n_examples=rows["cell_id"].map(long.groupby("cell_id").size()).to_numpy(),
        accuracy=rows["cell_id"].map(accuracy).to_numpy(),
        mean_pair_agreement=rows["cell_id"].map(means["agreement"]).to_numpy(),
        mean_pair_kappa=rows["cell_id"].map(means["kappa"]).to_numpy(),
        consensus_agreement=_consensus(p.to_numpy(), h),
    )
    cells = _flag(cells)
    group = dict(n_cells=len(cells), n_pairs=len(pairs), n_examples=len(p),
                 texts_rebuilt=bool((long["text"] != "").any()),
                 median_pair_agreement=pairs["agreement"].median(), median_pair_kappa=pairs["kappa"].median(),
                 median_consensus_agreement=cells["group_median"].iat[0], mad=cells["group_mad"].iat[0],
                 threshold=cells["threshold"].iat[0], n_flagged=int(cells["flagged"].sum()), **_spearman(cells))
    return group, cells, pairs, _disagreements(long, p, confident=confident, cap=cap)


# ---- a sweep --------------------------------------------------------------------------------------

def check(results: pd.DataFrame, predictions: dict[str, pd.DataFrame], texts: dict | None = None, *,
          confident: float = CONFIDENT, max_disagreements: int = MAX_DISAGREEMENTS) -> Consistency:
    """The consistency tables of every (dataset, student) group of `results` (rows as `read_cells`
    returns them) over the cells with status ok and stored `predictions`; `texts` ({(dataset, seed):
    test-pool texts}, `test_texts`) match examples across seeds and fill the disagreement list.
    Raises NoPredictions when no such cell exists."""
    if not 0 <= confident < 0.5:
        raise ValueError(f"confident={confident!r}: must be in [0, 0.5) (|p - 0.5| of a confident prediction)")
    if results.empty or not {"cell_id", "status", *GROUP, *AXES} <= set(results):
        raise NoPredictions("no usable results to compare")
    rows = results[(results["status"] == "ok") & results["cell_id"].isin(list(predictions))]
    rows = rows.drop_duplicates("cell_id")
    if rows.empty:
        raise NoPredictions("no finished cell has per-example predictions")
    tables: list[list] = [[], [], [], []]
    for name, group_rows in rows.groupby(GROUP, sort=True):
        key = dict(zip(GROUP, name))
        parts = _group(group_rows, predictions, texts or {}, confident=confident, cap=max_disagreements)
        tables[0].append(pd.DataFrame([key | parts[0]]))
        for table, frame in zip(tables[1:], parts[1:]):
            table.append(frame.assign(**key)[[*GROUP, *frame.columns]])
    return Consistency(*(pd.concat(t, ignore_index=True) for t in tables))


def read_and_check(storage: Storage, sweep: str, **options) -> Consistency:
    """`check` on the sweep as stored: its results, predictions and rebuilt test texts."""
    from w2sweep.results import cell_keys, read_cells, read_predictions

    results, _ = read_cells(storage, cell_keys(storage, sweep))
    if results.empty or "cell_id" not in results:
        raise NoPredictions(f"no readable results under {layout.folder(sweep, layout.RESULTS)}")
    ok = results[results["status"] == "ok"]
    predictions = read_predictions(storage, sweep, ok["cell_id"])
    if not predictions:
        raise NoPredictions(f"no per-example predictions under {layout.folder(sweep, layout.PREDICTIONS)} "
                            "(sweeps run before predictions were stored have none)")
    texts = test_texts(storage, sweep, ok[ok["cell_id"].isin(list(predictions))])
    return check(results, predictions, texts, **options)


def for_frontier(storage: Storage, sweep: str, results: pd.DataFrame, predictions: dict) -> Consistency | None:
    """`check` for `write_frontier`, which has read results and predictions already; None when no
    cell stored predictions (a frontier does not fail for want of them)."""
    if not predictions or results.empty or "cell_id" not in results:
        return None
    rows = results[(results["status"] == "ok") & results["cell_id"].isin(list(predictions))]
    try:
        return check(results, predictions, test_texts(storage, sweep, rows))
    except NoPredictions:
        return None


def write(storage: Storage, sweep: str, consistency: Consistency) -> list[str]:
    """Write the four CSVs under the sweep's frontier folder; the keys written."""
    keys = []
    for name, frame in consistency.tables().items():
        keys.append(layout.frontier(sweep, name))
        storage.write_bytes(keys[-1], frame.to_csv(index=False).encode())
    return keys


def summary_lines(c: Consistency) -> list[str]:
    """A few lines for a terminal: one per group, one per flagged cell, the disagreement count."""
    lines = []
    for g in c.groups.itertuples(index=False):
        rho = g.spearman_note if np.isnan(g.spearman_rho) else f"rho={g.spearman_rho:.3f} p={g.spearman_p:.3g}"
        lines.append(f"{g.dataset} / {g.student}: {g.n_cells} cells, {g.n_examples} examples; pairwise agreement "
                     f"median {g.median_pair_agreement:.3f} (kappa {g.median_pair_kappa:.3f}); consensus agreement "
                     f"median {g.median_consensus_agreement:.3f}, flag below {g.threshold:.3f}; "
                     f"Spearman(agreement, accuracy): {rho}")
    for r in c.flagged().itertuples(index=False):
        lines.append(f"FLAGGED: {r.dataset} / {r.student} / {r.cell_id}: consensus agreement "
                     f"{r.consensus_agreement:.3f} < {r.threshold:.3f} (group median {r.group_median:.3f})")
    lines.append(f"{len(c.disagreements)} examples with confident disagreements (listed in disagreements.csv)")
    return lines
