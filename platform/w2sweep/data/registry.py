"""Hub dataset families as binary tasks, the way the anchors build them (EleutherAI/w2s and
EleutherAI/scalable-elicitation, `w2s/ds_registry.py`).

A `Loader` names a hub dataset (id, configuration) and a converter from one row in the hub's own
format to ``(text, label)``. The rows come from `datasets.load_dataset(hub_id)` or from local files
in the same format (`source: local` + `loader:`); either way the converter is the same. The families
live one module each, declaring `Loader`s (`loader.py`): `classification` (datasets with a binary label), `multiple_choice` (question +
one option -> is it the correct one) and `preference` (one response -> is it the preferred one).

Randomness (which option a multiple-choice row shows, which response a preference row shows) and
class balancing (`task.balance`) use `numpy.random.default_rng(0)`: the task is fixed data, like the
synthetic tasks; a sweep's seeds reshuffle the pools, not the task.

A loader's `group` (the passage, question or sentences its rows share) is its datasets' default
`group`, so one passage's questions or one question's options never span two pools.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from w2sweep.data import classification, multiple_choice, preference
from w2sweep.data.loader import Loader
from w2sweep.data.task import TASK_SEED, DataError, Task, balance, one_line, read_groups

if TYPE_CHECKING:
    from w2sweep.config import DatasetSpec

__all__ = ["TASK_SEED", "balance", "convert_rows", "loaders"]


def convert_rows(loader: Loader, frame: pd.DataFrame, spec: DatasetSpec) -> Task:
    """The balanced binary task of `frame`'s rows (hub format of `loader`): texts [N], labels [N],
    and groups [N] from `spec.group`, else the loader's own (`_groups`)."""
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
    groups = _groups(loader, frame, spec)
    return Task(spec.name, [texts[i] for i in keep], labels[keep], None, None if groups is None else groups[keep])


def _groups(loader: Loader, frame: pd.DataFrame, spec: DatasetSpec):
    """Group ids [N] of the rows (before balancing), or None: `spec.group` (or the loader's default)
    over the hub columns and the fields the loader derives from them."""
    group = spec.group if spec.group is not None else loader.group
    if group is None:
        return None
    if loader.derive is not None:
        derived = [loader.derive(row) for row in frame[list(loader.columns)].to_dict("records")]
        frame = pd.concat([frame.reset_index(drop=True), pd.DataFrame.from_records(derived)], axis=1)
    return read_groups(frame, group, spec.name)


@functools.cache
def loaders() -> dict[str, Loader]:
    """Every registered loader by name (boolq, hellaswag, ...), from the family modules."""
    return {loader.name: loader
            for loader in (*classification.LOADERS, *multiple_choice.LOADERS, *preference.LOADERS)}
