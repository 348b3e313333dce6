"""Binary text-classification tasks and the five disjoint pools a sweep draws from.

`load_task(spec)` turns a `DatasetSpec` into a `Task` (texts [N], labels [N] of 0/1) from one of three
sources: a synthetic generator (`synthetic.py`), a local file (`local.py`) or the Hugging Face hub
(`hub.py`). Rows in a hub dataset's own format become a binary task through a loader of
`registry.py` (one module per family: `classification.py`, `multiple_choice.py`, `preference.py`).
`make_pools(task, sizes, seed=...)` dedupes it and splits it into weak_train / weak_label / oracle /
val / test by whole groups (`pools.py`, `keys.py`); `pools_for(spec, seed)` does both, once per process.

The config schema knows no dataset: `resolve_dataset` fills a hub loader's defaults and
`dataset_problem` says whether a spec names data that exists, when the grid is planned
(`w2sweep.grid.plan`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from w2sweep.data.pools import Pools, dedupe, make_pools, normalize_text, pool_capacity
from w2sweep.data.task import DataError, Task, table_to_task

if TYPE_CHECKING:
    from w2sweep.config import DatasetSpec

__all__ = ["DataError", "Pools", "Task", "dataset_problem", "dedupe", "load_task", "make_pools", "normalize_text",
           "pool_capacity", "pools_for", "resolve_dataset"]


def load_task(spec: DatasetSpec) -> Task:
    """The whole task `spec` names, before deduplication: texts [N] and labels [N] in {0, 1} (and
    weak_labels [N] when `spec.weak_label` names a column).

    Synthetic tasks are generated with seed 0 (the data stay fixed across sweep seeds; the pools
    shuffle by seed). Local and hub tasks keep their first `spec.num_examples` rows when it is set;
    with `spec.loader` those rows are in a hub dataset's own format and the loader's converter makes
    the (class-balanced, grouped) binary task, otherwise `text`/`label`/`group` map the columns and
    `spec.balance` undersamples the majority class the way loaders do (`task.balance`)."""
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
    task = table_to_task(frame, spec)
    return _balanced(task) if spec.balance else task


def _balanced(task: Task) -> Task:
    """`task` undersampled to 50/50 with `TASK_SEED`: the same subset for every sweep seed."""
    import numpy as np

    from w2sweep.data.task import TASK_SEED, balance

    if len(set(task.labels.tolist())) < 2:
        raise DataError(f"dataset {task.name!r}: `balance` needs both classes; every label is {task.labels[0]}")
    return task.subset(balance(task.labels, np.random.default_rng(TASK_SEED)))


@functools.lru_cache(maxsize=8)
def _pools_cached(dataset_json: str, seed: int) -> Pools:
    from w2sweep.config import DatasetSpec

    spec = DatasetSpec.model_validate_json(dataset_json)
    return make_pools(load_task(spec), spec.pools, seed=seed)


def pools_for(spec: DatasetSpec, seed: int) -> Pools:
    """The five disjoint pools of `spec` for `seed`, built once per process: the grid sizes its
    ceiling cells with them, and a cell, its weak supervisor and a head-only student's features
    read the same ones."""
    return _pools_cached(spec.model_dump_json(), seed)


def resolve_dataset(spec: DatasetSpec) -> DatasetSpec:
    """`spec` with a loader's defaults: `source: hub` with no `path` and a loader (named, or the
    dataset's own name, ``{name: boolq, source: hub}``) reads that loader's hub id and configuration;
    a spec with a loader and no `group` takes the loader's. Any other spec comes back as it is.

    Cell ids hash the resolved spec: a loader's grouping is part of what its pools are, so its
    datasets' ids moved when loaders began to group (their pools moved too)."""
    from w2sweep.data.registry import loaders

    if spec.source == "hub" and not spec.path:
        name = spec.loader or (spec.name if spec.name in loaders() else None)
        if name in loaders():
            loader = loaders()[name]
            subset = spec.subset if "subset" in spec.model_fields_set else loader.subset
            spec = spec.model_copy(update=dict(loader=name, path=loader.hub_id, subset=subset))
    if spec.loader in loaders() and spec.group is None and loaders()[spec.loader].group is not None:
        spec = spec.model_copy(update=dict(group=loaders()[spec.loader].group))
    return spec


def dataset_problem(spec: DatasetSpec) -> str | None:
    """What is wrong with the data a (resolved) spec names, in one line, or None: a synthetic task,
    loader or local path that does not exist here. Hub ids are checked when they are read."""
    from w2sweep.data.registry import loaders
    from w2sweep.data.synthetic import SYNTHETIC_TASKS

    if spec.source == "hub" and not spec.path:
        return f"source '{spec.source}' needs `path` (a file/directory or hub id)"
    if spec.source == "local" and not Path(os.path.expanduser(spec.path)).exists():
        return f"path {spec.path!r} does not exist"
    if spec.loader is not None and spec.loader not in loaders():
        return f"unknown loader {spec.loader!r}; allowed: {', '.join(sorted(loaders()))}"
    if spec.source == "synthetic" and spec.name not in SYNTHETIC_TASKS:
        return f"unknown synthetic dataset {spec.name!r}; allowed: {sorted(SYNTHETIC_TASKS)}"
    return None
