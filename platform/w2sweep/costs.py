"""The cost model: how a budget in label units buys weak and oracle labels.

Arithmetic is exact: YAML floats are read through their decimal text (0.1 is one tenth, not
0.1000000000000000055...), so ``floor(0.3 * 10 / 1.0)`` is 3, as a researcher expects.
"""

from __future__ import annotations

import math
from fractions import Fraction


def exact(x: float | int | str) -> Fraction:
    """The decimal number a config author wrote, as an exact fraction."""
    return Fraction(str(x))


def label_counts(budget: float, fraction: float, *, c_weak: float, c_oracle: float) -> tuple[int, int]:
    """(n_weak, n_oracle) bought by `budget` label units when a share `fraction` goes to oracle labels.

    n_oracle = floor(f * B / c_oracle); n_weak = floor((B - n_oracle * c_oracle) / c_weak): the budget
    left after the oracle labels, including rounding leftovers, buys weak labels.
    """
    b, f, co, cw = exact(budget), exact(fraction), exact(c_oracle), exact(c_weak)
    n_oracle = math.floor(f * b / co)
    n_weak = math.floor((b - n_oracle * co) / cw)
    return n_weak, n_oracle


def label_cost(n_weak: int, n_oracle: int, *, c_weak: float, c_oracle: float) -> float:
    """Label units spent on `n_weak` weak and `n_oracle` oracle labels."""
    return float(n_weak * exact(c_weak) + n_oracle * exact(c_oracle))
