import numpy as np
from scipy import stats

from w2sweep.metrics import _auroc_of_classes, auroc, auroc_ci


def _scores(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int64)
    scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(n), 0, 1), 2)  # rounded: many ties
    return scores, labels


def test_vectorized_auroc_equals_sklearn_with_ties():
    scores, labels = _scores()
    rows = np.stack([scores, scores[::-1], np.full_like(scores, 0.5)])
    expected = [auroc(r, labels) for r in rows]
    got = _auroc_of_classes(rows[:, labels == 1], rows[:, labels == 0])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert expected[2] == 0.5 and expected[0] > 0.6


def test_auroc_ci_is_the_per_resample_stratified_bootstrap_interval():
    scores, labels = _scores(seed=1)
    pos, neg = scores[labels == 1], scores[labels == 0]

    def one_resample(p, n):  # sklearn on each resample, rebuilt from its two classes
        return auroc(np.concatenate([p, n]), np.r_[np.ones(len(p)), np.zeros(len(n))])

    slow = stats.bootstrap((pos, neg), one_resample, paired=False, vectorized=False,
                           n_resamples=200, method="percentile", rng=np.random.default_rng(7))
    low, high = auroc_ci(scores, labels, seed=7, num_resamples=200)
    assert abs(low - slow.confidence_interval.low) < 1e-12
    assert abs(high - slow.confidence_interval.high) < 1e-12
    assert low < auroc(scores, labels) < high


def test_auroc_ci_is_nan_with_one_class_and_narrows_with_more_examples():
    scores, labels = _scores()
    assert all(np.isnan(auroc_ci(scores, np.zeros_like(labels))))
    small = auroc_ci(*_scores(n=60, seed=2))
    large = auroc_ci(*_scores(n=2000, seed=2))
    assert large[1] - large[0] < small[1] - small[0]
