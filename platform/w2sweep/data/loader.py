"""What a hub dataset family declares: its `Loader`s (hub id, configuration, row converter). The
family modules import this, and `registry` imports them, so no family module imports the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from w2sweep.data.task import _binary_label


@dataclass(frozen=True)
class Loader:
    name: str
    hub_id: str  # the default `path` of `source: hub`
    subset: str | None  # the hub configuration, if the dataset has several
    columns: tuple[str, ...]  # the hub columns the converter reads
    convert: Callable[[dict, np.random.Generator], tuple[str, int]]  # one row -> (text, label 0/1)
    description: str  # one line: how a row becomes a binary example
    # The default `group` of its datasets: the passage, question or sentences its examples share (see
    # DatasetSpec.group), over the hub columns and the fields `derive` adds. None: rows share nothing.
    group: str | tuple[str, ...] | None = None
    derive: Callable[[dict], dict] | None = None  # one row -> extra fields a `group` template may read


def hard_label(value, *, column: str) -> int:
    """A 0/1 label from a bool, 0/1 or "0"/"1"/"true"/"false"; ValueError otherwise (e.g. the -1 of
    an unlabeled GLUE test split)."""
    label = _binary_label(value, None)
    if label is None:
        raise ValueError(f"{column}={value!r} is not a binary label (an unlabeled split?)")
    return label
