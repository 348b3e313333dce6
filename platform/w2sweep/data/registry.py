"""Hub dataset families as binary tasks, the way the anchors build them (EleutherAI/w2s and
EleutherAI/scalable-elicitation, `w2s/ds_registry.py`).

A `Loader` names a hub dataset (id, configuration) and a converter from one row in the hub's own
format to ``(text, label)``. The rows come from `datasets.load_dataset(hub_id)` or from local files
in the same format (`source: local` + `loader:`); either way the converter is the same. The families
live one module each, declaring `Loader`s (`loader.py`): `classification` (datasets with a binary label), `multiple_choice` (question +
one option -> is it the correct one) and `preference` (one response -> is it the preferred one).

Randomness (which option a multiple-choice row shows, which response a preference row shows) and
class balancing use `numpy.random.default_rng(0)`: the task is fixed data, like the synthetic
tasks; a sweep's seeds reshuffle the pools, not the task.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from w2sweep.data import classification, multiple_choice, preference
from w2sweep.data.loader import Loader
from w2sweep.data.task import DataError, Task, one_line

if TYPE_CHECKING:
    import pandas as pd

    from w2sweep.config import DatasetSpec

TASK_SEED = 0


def balance(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices [M] (ascending) of a 50/50 subset: all of the minority class and an equally large
    random subset of the majority class, as the anchors undersample."""
    ones, zeros = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    minority, majority = (ones, zeros) if len(ones) <= len(zeros) else (zeros, ones)
    kept = rng.choice(majority, size=len(minority), replace=False)
    return np.sort(np.concatenate([minority, kept]))


def convert_rows(loader: Loader, frame: pd.DataFrame, spec: DatasetSpec) -> Task:
    """The balanced binary task of `frame`'s rows (hub format of `loader`): texts [N], labels [N]."""
    missing = [c for c in loader.columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"dataset {spec.name!r}: loader {loader.name!r} needs column {missing[0]!r} (hub format of "
            f"{loader.hub_id}); the rows have {list(frame.columns)}"
        )
    rng = np.random.default_rng(TASK_SEED)
    texts, labels = [], []
    for i, row in enumerate(frame[list(loader.columns)].to_dict("records")):
        try:
            text, label = loader.convert(row, rng)
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise DataError(f"dataset {spec.name!r}: row {i} does not fit loader {loader.name!r} ({one_line(e)})") from None
        texts.append(text.strip())
        labels.append(int(label))
    labels = np.array(labels, dtype=np.int64)
    if len(set(labels.tolist())) < 2:
        raise DataError(f"dataset {spec.name!r}: loader {loader.name!r} made {len(labels)} examples of one class; "
                        "a binary task needs both")
    keep = balance(labels, rng)
    return Task(spec.name, [texts[i] for i in keep], labels[keep])


@functools.cache
def loaders() -> dict[str, Loader]:
    """Every registered loader by name (boolq, hellaswag, ...), from the family modules."""
    return {loader.name: loader
            for loader in (*classification.LOADERS, *multiple_choice.LOADERS, *preference.LOADERS)}
