"""Test-set metrics with 95% confidence intervals.

Scores are P(label=1), shape [N]; labels are gold 0/1, shape [N].
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((scores > 0.5) == (labels == 1)))


def accuracy_ci(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Wilson interval: well-behaved near 0 and 1 and for small test sets, unlike the normal one."""
    hits = int(np.sum((scores > 0.5) == (labels == 1)))
    ci = stats.binomtest(hits, len(labels)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """NaN when only one class is present (AUROC is undefined there)."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _auroc_rows(scores: np.ndarray, labels: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC of every row at once (Mann-Whitney U from average ranks, so ties count one half, as in
    sklearn): scores and labels [..., N] -> [...]; NaN for a row with one class."""
    scores, positive = np.moveaxis(scores, axis, -1), np.moveaxis(labels, axis, -1) == 1
    ranks = stats.rankdata(scores, axis=-1)
    n1 = positive.sum(-1)
    n0 = positive.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auroc_ci(scores: np.ndarray, labels: np.ndarray, *, seed: int = 0,
             num_resamples: int = 500) -> tuple[float, float]:
    """Percentile bootstrap over test examples (scores and labels resampled together). All resamples
    are scored in one vectorized call: ~30x faster than one roc_auc_score per resample, same interval."""
    if len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    res = stats.bootstrap(
        (np.asarray(scores, dtype=np.float64), np.asarray(labels)), _auroc_rows, paired=True,
        vectorized=True, n_resamples=num_resamples, method="percentile", rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def evaluate(scores: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict:
    return dict(
        accuracy=accuracy(scores, labels), accuracy_ci=accuracy_ci(scores, labels),
        auroc=auroc(scores, labels), auroc_ci=auroc_ci(scores, labels, seed=seed),
    )
