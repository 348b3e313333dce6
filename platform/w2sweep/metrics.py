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


def _auroc_of_classes(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC from the two classes' scores: the Mann-Whitney U of the positives over n1 * n0 (ties count
    one half, as in sklearn). scipy computes it along an axis, so every bootstrap resample is scored in
    one call; the asymptotic method skips the exact null distribution, whose p-value is not used."""
    u = stats.mannwhitneyu(positive, negative, axis=axis, method="asymptotic").statistic
    return u / (positive.shape[axis] * negative.shape[axis])


def auroc_ci(scores: np.ndarray, labels: np.ndarray, *, seed: int = 0,
             num_resamples: int = 500) -> tuple[float, float]:
    """Stratified percentile bootstrap (positives and negatives resampled separately, as pROC does):
    every resample keeps the test set's class balance, so none has a single class, and all of them are
    scored in one vectorized call (~30x faster than one roc_auc_score per resample)."""
    if len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    res = stats.bootstrap(
        (scores[labels == 1], scores[labels != 1]), _auroc_of_classes, paired=False, vectorized=True,
        n_resamples=num_resamples, method="percentile", rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def evaluate(scores: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> dict:
    return dict(
        accuracy=accuracy(scores, labels), accuracy_ci=accuracy_ci(scores, labels),
        auroc=auroc(scores, labels), auroc_ci=auroc_ci(scores, labels, seed=seed),
    )
