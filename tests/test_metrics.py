import numpy as np
from scipy import stats

from w2sweep.metrics import _auroc_rows, auroc, auroc_ci


def _scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int64)
    scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(n), 0, 1), 2)  # rounded: many ties
    return scores, labels


def test_vectorized_auroc_equals_sklearn_with_ties():
    scores, labels = _scores()
    rows = np.stack([scores, scores[::-1], np.full_like(scores, 0.5)])
    expected = [auroc(r, labels) for r in rows]
    np.testing.assert_allclose(_auroc_rows(rows, np.broadcast_to(labels, rows.shape)), expected, rtol=1e-12)
    assert np.isnan(_auroc_rows(scores, np.zeros_like(labels)))  # one class: undefined


def test_auroc_ci_is_the_per_resample_bootstrap_interval():
    scores, labels = _scores(seed=1)
    slow = stats.bootstrap((scores, labels), lambda s, y: auroc(s, y), paired=True, vectorized=False,
                           n_resamples=200, method="percentile", rng=np.random.default_rng(7))
    low, high = auroc_ci(scores, labels, seed=7, num_resamples=200)
    assert abs(low - slow.confidence_interval.low) < 1e-12
    assert abs(high - slow.confidence_interval.high) < 1e-12
    assert low < auroc(scores, labels) < high
