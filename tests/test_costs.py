import itertools
from fractions import Fraction

import pytest

from w2sweep.costs import label_cost, label_counts

C = dict(c_weak=0.1, c_oracle=1.0)


def test_cost_model_has_no_float_surprises():
    # In floats (10 - 3*1.0)/0.1 == 69.99999999999999, which floors to 69; the exact answer is 70.
    assert label_counts(10, 0.3, **C) == (70, 3)
    # 0.3/0.1 == 2.9999999999999996 in floats.
    assert label_counts(0.3, 0, **C) == (3, 0)


@pytest.mark.parametrize("budget,fraction,expected", [
    (100, 0.0, (1000, 0)),
    (100, 1.0, (0, 100)),
    (10.5, 1.0, (5, 10)),  # the oracle rounding remainder (0.5) buys weak labels
    (16, 0.05, (160, 0)),  # 0.8 oracle labels round down to none
    (4096, 0.2, (32770, 819)),  # 819.2 -> 819 oracle; 4096 - 819 = 3277 units -> 32770 weak
])
def test_label_counts_examples(budget, fraction, expected):
    assert label_counts(budget, fraction, **C) == expected


def test_label_counts_never_overspend_and_leave_less_than_one_weak_label():
    for budget, fraction, c_weak in itertools.product([1, 7.5, 16, 333, 4096], [0, .05, .2, .4, .6, .8, 1],
                                                      [0.5, 0.1, 0.01]):
        n_weak, n_oracle = label_counts(budget, fraction, c_weak=c_weak, c_oracle=1.0)
        spent = n_weak * Fraction(str(c_weak)) + n_oracle
        left = Fraction(str(budget)) - spent
        assert 0 <= left < Fraction(str(c_weak))
        assert n_oracle <= fraction * budget + 1e-9


def test_label_cost_is_exact():
    assert label_cost(3, 7, **C) == 7.3
    assert label_cost(70, 3, **C) == 10.0
