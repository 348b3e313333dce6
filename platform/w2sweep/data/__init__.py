"""Binary text-classification tasks and the five disjoint pools a sweep draws from.

`load_task(spec)` turns a `DatasetSpec` into a `Task` (texts [N], labels [N] of 0/1) from one of three
sources: a synthetic generator (`synthetic.py`), a local file (`local.py`) or the Hugging Face hub
(`hub.py`). Rows in a hub dataset's own format become a binary task through a loader of
`registry.py` (one module per family: `classification.py`, `multiple_choice.py`, `preference.py`).
`make_pools(task, sizes, seed=...)` dedupes it and splits it into weak_train / weak_label / oracle /
val / test (`pools.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from w2sweep.data.pools import Pools, dedupe, make_pools, normalize_text, pool_capacity
from w2sweep.data.task import DataError, Task, table_to_task

if TYPE_CHECKING:
    from w2sweep.config import DatasetSpec

__all__ = ["DataError", "Pools", "Task", "dedupe", "load_task", "make_pools", "normalize_text", "pool_capacity"]


def load_task(spec: DatasetSpec) -> Task:
    """The whole task `spec` names, before deduplication: texts [N] and labels [N] in {0, 1} (and
    weak_labels [N] when `spec.weak_label` names a column).

    Synthetic tasks are generated with seed 0 (the data stay fixed across sweep seeds; the pools
    shuffle by seed). Local and hub tasks keep their first `spec.num_examples` rows when it is set;
    with `spec.loader` those rows are in a hub dataset's own format and the loader's converter makes
    the (class-balanced) binary task, otherwise `text`/`label` map the columns."""
    if spec.source == "synthetic":
        from w2sweep.data.synthetic import DEFAULT_NUM_EXAMPLES, SYNTHETIC_TASKS

        if spec.name not in SYNTHETIC_TASKS:
            raise DataError(f"dataset {spec.name!r}: unknown synthetic task; allowed: {sorted(SYNTHETIC_TASKS)}")
        return SYNTHETIC_TASKS[spec.name](spec.num_examples or DEFAULT_NUM_EXAMPLES, seed=0)
    if spec.source == "local":
        from w2sweep.data.local import read_local as read
    elif spec.source == "hub":
        from w2sweep.data.hub import read_hub as read
    else:
        raise DataError(f"dataset {spec.name!r}: source {spec.source!r} is not one of: synthetic, local, hub")
    frame = read(spec)
    if spec.loader is not None:
        from w2sweep.data.registry import convert_rows, loaders

        if spec.loader not in loaders():
            raise DataError(f"dataset {spec.name!r}: unknown loader {spec.loader!r}; allowed: {sorted(loaders())}")
        return convert_rows(loaders()[spec.loader], frame, spec)
    return table_to_task(frame, spec)
