"""The NumPy metrics give scipy's and sklearn's values (which they replace to keep cell processes'
imports short)."""

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from w2sweep.metrics import _auroc_rows, accuracy_ci, auroc, auroc_ci


def _scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int64)
    scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(n), 0, 1), 2)  # rounded: many ties
    return scores, labels


def test_auroc_equals_sklearn_with_ties_row_by_row():
    scores, labels = _scores()
    rows = np.stack([scores, scores[::-1], np.full_like(scores, 0.5), np.round(scores, 1)])
    expected = [roc_auc_score(labels, r) for r in rows]
    np.testing.assert_allclose(_auroc_rows(rows, np.broadcast_to(labels, rows.shape)), expected, rtol=1e-12)
    assert abs(auroc(scores, labels) - roc_auc_score(labels, scores)) < 1e-12
    assert np.isnan(auroc(scores, np.zeros_like(labels)))  # one class: undefined


def test_auroc_ci_is_scipys_paired_percentile_bootstrap():
    scores, labels = _scores(seed=1)
    slow = stats.bootstrap((scores, labels), lambda s, y: roc_auc_score(y, s), paired=True, vectorized=False,
                           n_resamples=200, method="percentile", rng=np.random.default_rng(7))
    low, high = auroc_ci(scores, labels, seed=7, num_resamples=200)
    assert abs(low - slow.confidence_interval.low) < 1e-12
    assert abs(high - slow.confidence_interval.high) < 1e-12
    assert low < auroc(scores, labels) < high


def test_accuracy_ci_is_scipys_wilson_interval():
    for hits, n in [(0, 10), (3, 10), (10, 10), (137, 200), (1, 1)]:
        scores = np.r_[np.ones(hits), np.zeros(n - hits)]
        expected = stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
        low, high = accuracy_ci(scores, np.ones(n))
        assert abs(low - expected.low) < 1e-12 and abs(high - expected.high) < 1e-12, (hits, n)
