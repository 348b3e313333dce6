"""Test-set metrics with 95% confidence intervals.

Scores are P(label=1), shape [N]; labels are gold 0/1, shape [N].

NumPy only: every cell process imports this module, and scipy.stats plus sklearn.metrics would add
~1 s to each one's start. The values are those of scipy's Wilson interval and percentile bootstrap
and of sklearn's roc_auc_score (tests/test_metrics.py checks them against those).
"""

from __future__ import annotations

import math

import numpy as np

_Z95 = 1.959963984540054  # the standard normal's 97.5% quantile (scipy.special.ndtri(0.975))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((scores > 0.5) == (labels == 1)))


def accuracy_ci(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Wilson interval: well-behaved near 0 and 1 and for small test sets, unlike the normal one."""
    n = len(labels)
    hits = int(np.sum((scores > 0.5) == (labels == 1)))
    p, z = hits / n, _Z95
    denom = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denom
    delta = z / denom * math.sqrt(4 * n * p * (1 - p) + z**2)
    return (0.0 if hits == 0 else center - delta), (1.0 if hits == n else center + delta)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N along the last axis of x [..., N], ties sharing their mean rank."""
    flat = x.reshape(-1, x.shape[-1])
    rows, n = flat.shape
    order = np.argsort(flat, axis=-1, kind="stable")
    ordered = np.take_along_axis(flat, order, axis=-1)
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(starts, axis=-1) - 1 + (np.arange(rows) * n)[:, None]  # tie group, unique per row
    position = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), group.shape)
    mean_rank = (np.bincount(group.ravel(), weights=position.ravel(), minlength=rows * n)
                 / np.maximum(np.bincount(group.ravel(), minlength=rows * n), 1))
    ranks = np.empty(flat.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, mean_rank[group], axis=-1)
    return ranks.reshape(x.shape)


def _auroc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every row at once (Mann-Whitney U from average ranks, so ties count one half, as in
    sklearn): scores and labels [..., N] -> [...]; NaN for a row with one class."""
    positive = np.asarray(labels) == 1
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    n1 = positive.sum(-1)
    n0 = positive.shape[-1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * positive).sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """NaN when only one class is present (AUROC is undefined there)."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(_auroc_rows(scores, labels))


def auroc_ci(scores: np.ndarray, labels: np.ndarray, *, seed: int = 0,
             num_resamples: int = 500) -> tuple[float, float]:
    """Percentile bootstrap over test examples (scores and labels resampled together), the resamples
    drawn as scipy.stats.bootstrap(paired=True) draws them, and all scored in one vectorized call."""
    if len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    idx = np.random.default_rng(seed).integers(0, len(labels), (num_resamples, len(labels)))
    low, high = np.quantile(_auroc_rows(scores[idx], labels[idx]), [0.025, 0.975])
    return float(low), float(high)


def evaluate(scores: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict:
    return dict(
        accuracy=accuracy(scores, labels), accuracy_ci=accuracy_ci(scores, labels),
        auroc=auroc(scores, labels), auroc_ci=auroc_ci(scores, labels, seed=seed),
    )
