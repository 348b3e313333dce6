"""The five disjoint pools a sweep draws from: weak_train (trains the weak supervisor), weak_label
(gets weak labels), oracle (gets oracle labels), val and test.

Near-duplicates never straddle two pools: texts are compared after `normalize_text` (lowercase, no
punctuation, single spaces) and deduplicated across the whole task before it is split.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from w2sweep.data.task import DataError, Task

if TYPE_CHECKING:
    from w2sweep.config import PoolSizes

POOL_NAMES = ("weak_train", "val", "test", "weak_label", "oracle")  # the order pools are sliced in


@dataclass(frozen=True, eq=False)
class Pools:
    """Disjoint subsets of one deduplicated task."""

    weak_train: Task
    weak_label: Task
    oracle: Task
    val: Task
    test: Task


_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """Lowercase, punctuation replaced by spaces, whitespace collapsed: ``"Not  GOOD!"`` -> ``"not good"``."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def text_key(text: str) -> str:
    """sha1 hex digest of the normalized text: equal for texts that differ only in case, punctuation
    or whitespace."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()


def dedupe(task: Task) -> Task:
    """`task` with one example per normalized text, in first-occurrence order. Texts whose copies
    disagree on the label are dropped entirely."""
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    for i, text in enumerate(task.texts):
        key = text_key(text)
        if key not in first:
            first[key] = i
        elif task.labels[first[key]] != task.labels[i]:
            conflicting.add(key)
    keep = sorted(i for key, i in first.items() if key not in conflicting)
    return task.subset(keep)


def pool_capacity(num_examples: int, sizes: PoolSizes, *, name: str = "dataset") -> dict[str, int]:
    """Examples per pool for a task of `num_examples` (after deduplication), keyed by `POOL_NAMES`.

    weak_train, val and test take their sizes; weak_label and oracle take theirs when set, and
    share the remainder when unset (weak_label gets the odd one). Raises DataError when the
    task is too small for every pool to get its count and at least one example."""
    counts = {"weak_train": sizes.weak_train, "val": sizes.val, "test": sizes.test}
    rest = num_examples - sum(counts.values())
    if sizes.weak_label is None and sizes.oracle is None:
        counts["weak_label"], counts["oracle"] = rest - rest // 2, rest // 2
    else:
        counts["weak_label"] = sizes.weak_label if sizes.weak_label is not None else rest - sizes.oracle
        counts["oracle"] = sizes.oracle if sizes.oracle is not None else rest - sizes.weak_label
    if sum(counts.values()) > num_examples or min(counts.values()) < 1:
        asked = {k: getattr(sizes, k) for k in POOL_NAMES}
        required = sum(n or 1 for n in asked.values())
        shown = ", ".join(f"{k}={'rest' if n is None else n}" for k, n in asked.items())
        raise DataError(
            f"dataset {name!r}: pool sizes ({shown}) need at least {required} examples but only "
            f"{num_examples} remain after deduplication; lower the pool sizes or use more data"
        )
    return counts


def make_pools(task: Task, sizes: PoolSizes, *, seed: int) -> Pools:
    """Dedupe `task`, shuffle it with `numpy.random.default_rng(seed)` and slice weak_train, val,
    test, weak_label, oracle in that order (sizes from `pool_capacity`)."""
    unique = dedupe(task)
    counts = pool_capacity(len(unique), sizes, name=task.name)
    order = np.random.default_rng(seed).permutation(len(unique))
    bounds = np.cumsum([0, *(counts[k] for k in POOL_NAMES)])
    return Pools(**{k: unique.subset(order[a:b]) for k, a, b in zip(POOL_NAMES, bounds[:-1], bounds[1:])})
