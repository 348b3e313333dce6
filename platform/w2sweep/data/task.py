"""The `Task` every loader returns, and the one column mapping that local files and hub datasets share."""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from w2sweep.config import DatasetSpec


class DataError(ValueError):
    """A dataset that cannot become a binary task. The message is one line: the dataset, the
    column or value at fault, and what is allowed."""


@dataclass(frozen=True, eq=False)
class Task:
    """A binary text-classification task: `texts` [N] and `labels` [N] (int64, each 0 or 1), and
    optionally `weak_labels` [N] (float32 P(label=1) in [0, 1]) from a dataset's own weak-label column.

    The arrays are read-only copies, so a task cannot change under a pool that shares it."""

    name: str
    texts: list[str]
    labels: np.ndarray
    weak_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = np.array(self.labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(self.texts):
            raise DataError(f"dataset {self.name!r}: {len(self.texts)} texts but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise DataError(f"dataset {self.name!r}: labels must be 0 or 1; got {sorted(set(labels.tolist()))}")
        labels.flags.writeable = False
        object.__setattr__(self, "texts", list(self.texts))
        object.__setattr__(self, "labels", labels)
        if self.weak_labels is not None:
            weak = np.array(self.weak_labels, dtype=np.float32).reshape(-1)
            if len(weak) != len(labels) or not ((weak >= 0) & (weak <= 1)).all():
                raise DataError(f"dataset {self.name!r}: weak labels must be {len(labels)} values in [0, 1]")
            weak.flags.writeable = False
            object.__setattr__(self, "weak_labels", weak)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> Task:
        """The examples at `indices` (int array [M]), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        weak = None if self.weak_labels is None else self.weak_labels[indices]
        return Task(self.name, [self.texts[i] for i in indices], self.labels[indices], weak)


def one_line(err: Exception) -> str:
    """``"TypeName: first line of the message"``, for error messages that must stay one line."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


_LABEL_WORDS = {"0": 0, "1": 1, "false": 0, "true": 1}


def _binary_label(value, label_map: dict[str, int] | None) -> int | None:
    """`value` as 0/1: via `label_map` (keyed by str(value), or its lowercase), else a bool, the
    number 0/1 or the strings "0"/"1"/"true"/"false". None when it is none of these."""
    key = str(value).strip()
    if label_map is not None:
        for k in (key, key.lower()):
            if k in label_map:
                return label_map[k]
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        return _LABEL_WORDS.get(key.lower())
    return None


def _soft_label(value, label_map: dict[str, int] | None) -> float | None:
    """A weak label as P(label=1): whatever `_binary_label` accepts, or a number (or numeric string)
    in [0, 1]. None when it is neither."""
    hard = _binary_label(value, label_map)
    if hard is not None:
        return float(hard)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def table_to_task(frame: pd.DataFrame, spec: DatasetSpec) -> Task:
    """Map the rows of `frame` to a task: text from `spec.text` (a column, or a ``{column}``
    template), label from `spec.label` through `spec.label_map`, and when `spec.weak_label` names a
    column, weak labels from it (probabilities, or labels mapped like `label`). Texts are stripped of
    outer whitespace. Used by both the local-file and the hub loader."""
    name, columns = spec.name, list(frame.columns)
    if spec.label_map is not None and set(spec.label_map.values()) - {0, 1}:
        raise DataError(f"dataset {name!r}: label_map values must be 0 or 1; got {spec.label_map}")
    if "{" in spec.text:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(spec.text) if f is not None]
        except ValueError as e:
            raise DataError(f"dataset {name!r}: text template {spec.text!r} is malformed ({e})") from None
        if any(not f.isidentifier() for f in fields):
            raise DataError(f"dataset {name!r}: text template {spec.text!r}: fields must be plain column names")
    else:
        fields = [spec.text]
    for column in [*fields, spec.label]:
        if column not in columns:
            raise DataError(f"dataset {name!r}: column {column!r} not found; available: {columns}")

    rows = frame[sorted(set(fields))].to_dict("records")
    for i, row in enumerate(rows):
        bad = next((k for k, v in row.items() if v is None or (isinstance(v, float) and math.isnan(v))), None)
        if bad is not None:
            raise DataError(f"dataset {name!r}: column {bad!r} is empty at row {i}; every text field needs a value")
    if "{" in spec.text:
        texts = [spec.text.format_map(row).strip() for row in rows]
    else:
        texts = [str(row[spec.text]).strip() for row in rows]

    weak_labels = None
    if spec.weak_label is not None:
        if spec.weak_label not in columns:
            raise DataError(f"dataset {name!r}: weak-label column {spec.weak_label!r} not found; available: {columns}")
        raw_weak = frame[spec.weak_label].tolist()
        weak_labels = [_soft_label(raw, spec.label_map) for raw in raw_weak]
        bad = next((i for i, v in enumerate(weak_labels) if v is None), None)
        if bad is not None:
            raise DataError(
                f"dataset {name!r}: weak-label column {spec.weak_label!r} has value "
                f"{raw_weak[bad]!r} at row {bad}; allowed: a probability in [0, 1], "
                "0/1, true/false, or a key of label_map"
            )

    labels = []
    for i, raw in enumerate(frame[spec.label].tolist()):
        label = _binary_label(raw, spec.label_map)
        if label is None:
            keys = f" or a key of label_map {sorted(spec.label_map)}" if spec.label_map else ""
            raise DataError(
                f"dataset {name!r}: label column {spec.label!r} has value {raw!r} at row {i}; "
                f"allowed: 0/1, true/false{keys}"
            )
        labels.append(label)
    return Task(name, texts, np.array(labels, dtype=np.int64), weak_labels)
