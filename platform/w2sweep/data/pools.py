"""The five disjoint pools a sweep draws from: weak_train (trains the weak supervisor), weak_label
(gets weak labels), oracle (gets oracle labels), val and test.

Near-duplicates never straddle two pools: texts are compared after `normalize_text` (lowercase, no
punctuation, single spaces) and deduplicated across the whole task before it is split. Nor do groups
(`Task.groups`: the examples of one passage, question or sentence): pools are cut by whole groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from w2sweep.data.keys import normalize_text, text_key  # noqa: F401 (normalize_text: re-exported)
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

    @property
    def test_label1_share(self) -> float:
        """The share of label 1 in the test pool: an accuracy means little beside its majority-class
        rate, max(share, 1 - share), which a constant predictor reaches."""
        return float(self.test.labels.mean())


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


def _cut(sizes: np.ndarray, order: np.ndarray, targets: list[int], *, last_takes_rest: bool) -> list[list[int]]:
    """The groups of each pool: groups in `order` (their sizes in `sizes`), each pool filled in turn to
    its target by first fit. A group larger than the room left waits for the next pool, so pools
    reach their exact size whenever small groups remain (always, when every group is one example:
    then pool k is order[bounds[k]:bounds[k+1]], as before groups existed). With `last_takes_rest`
    the last pool also takes every group left over (its size was "the rest").

    Only the few groups met when a pool is nearly full wait, so large groups are barely more likely to
    land late. When every group left is larger than the room, the pool ends short by less than one
    group and the sizes may then differ by seed (the grid sizes ceiling cells from the first seed)."""
    remaining, cut = list(order), []
    for k, target in enumerate(targets):
        if last_takes_rest and k == len(targets) - 1:
            cut.append(remaining)
            break
        taken, waiting, room = [], [], target
        for pos, g in enumerate(remaining):
            if room == 0:
                waiting.extend(remaining[pos:])
                break
            if sizes[g] <= room:
                taken.append(g)
                room -= sizes[g]
            else:
                waiting.append(g)
        cut.append(taken)
        remaining = waiting
    return cut


def _by_first_appearance(groups: np.ndarray) -> np.ndarray:
    """Group ids renumbered 0, 1, ... in order of each group's first example, so the pools depend on
    which examples share a group, not on how the ids were numbered."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.reshape(-1)]


def make_pools(task: Task, sizes: PoolSizes, *, seed: int) -> Pools:
    """Dedupe `task`, shuffle its groups with `numpy.random.default_rng(seed)` and fill weak_train,
    val, test, weak_label, oracle in that order with whole groups (sizes from `pool_capacity`; see
    `_cut`), so no group spans two pools. A task without groups gives every example its own group:
    its pools are the shuffled examples sliced in that order, as they always were."""
    unique = dedupe(task)
    counts = pool_capacity(len(unique), sizes, name=task.name)
    groups = np.arange(len(unique)) if unique.groups is None else _by_first_appearance(unique.groups)
    members = np.split(np.argsort(groups, kind="stable"), np.cumsum(np.bincount(groups))[:-1])
    order = np.random.default_rng(seed).permutation(len(members))
    cut = _cut(np.array([len(m) for m in members]), order, [counts[k] for k in POOL_NAMES],
               last_takes_rest=sizes.oracle is None)
    pools = {k: unique.subset(np.concatenate([members[g] for g in gs]).astype(np.int64) if gs else [])
             for k, gs in zip(POOL_NAMES, cut)}
    short = [k for k in POOL_NAMES if len(pools[k]) == 0]
    if short:
        raise DataError(f"dataset {task.name!r}: pool {short[0]} got no example: every group left was larger "
                        f"than its size {counts[short[0]]}; raise the pool sizes or group more finely")
    return Pools(**pools)
