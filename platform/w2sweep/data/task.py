"""The `Task` every loader returns, and the one column mapping that local files and hub datasets share
(text, label, weak labels, groups), and the one class balancing that hub loaders and `balance: true` share."""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from w2sweep.data.keys import group_ids

if TYPE_CHECKING:
    import pandas as pd

    from w2sweep.config import DatasetSpec


class DataError(ValueError):
    """A dataset that cannot become a binary task. The message is one line: the dataset, the
    column or value at fault, and what is allowed."""


@dataclass(frozen=True, eq=False)
class Task:
    """A binary text-classification task: `texts` [N] and `labels` [N] (int64, each 0 or 1), and
    optionally `weak_labels` [N] (float32 P(label=1) in [0, 1]) from a dataset's own weak-label column
    and `groups` [N] (int64 group ids, `keys.group_ids`): examples of one group (one passage, question
    or sentence) never land in two pools. No groups: each example is its own.

    The arrays are read-only copies, so a task cannot change under a pool that shares it."""

    name: str
    texts: list[str]
    labels: np.ndarray
    weak_labels: np.ndarray | None = None
    groups: np.ndarray | None = None

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
        if self.groups is not None:
            groups = np.array(self.groups, dtype=np.int64).reshape(-1)
            if len(groups) != len(labels):
                raise DataError(f"dataset {self.name!r}: {len(groups)} group ids for {len(labels)} examples")
            groups.flags.writeable = False
            object.__setattr__(self, "groups", groups)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> Task:
        """The examples at `indices` (int array [M]), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        weak = None if self.weak_labels is None else self.weak_labels[indices]
        groups = None if self.groups is None else self.groups[indices]
        return Task(self.name, [self.texts[i] for i in indices], self.labels[indices], weak, groups)


TASK_SEED = 0  # a task is fixed data, like the synthetic tasks: a sweep's seeds reshuffle the pools, not it


def balance(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices [M] (ascending) of a 50/50 subset: all of the minority class and an equally large
    random subset of the majority class, as the anchors undersample. A skewed test pool lets a
    one-class predictor look accurate; hub loaders and `balance: true` both cut it here."""
    ones, zeros = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    minority, majority = (ones, zeros) if len(ones) <= len(zeros) else (zeros, ones)
    kept = rng.choice(majority, size=len(minority), replace=False)
    return np.sort(np.concatenate([minority, kept]))


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


def template_fields(template: str, name: str, what: str) -> list[str]:
    """The columns a `text` or `group` value reads: the value itself when it is a column name, else
    the ``{column}`` fields of the template."""
    if "{" not in template:
        return [template]
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise DataError(f"dataset {name!r}: {what} template {template!r} is malformed ({e})") from None
    if any(not f.isidentifier() for f in fields):
        raise DataError(f"dataset {name!r}: {what} template {template!r}: fields must be plain column names")
    return fields


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_groups(frame: pd.DataFrame, group: str | tuple[str, ...], name: str) -> np.ndarray:
    """Group ids [N] of `frame`'s rows (`keys.group_ids`) from `group`: a column or template, or
    several (rows sharing any one value are one group, e.g. either sentence of a pair). A missing
    value is an empty key: that row joins no other row through it."""
    templates = (group,) if isinstance(group, str) else tuple(group)
    fields = sorted({f for t in templates for f in template_fields(t, name, "group")})
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise DataError(f"dataset {name!r}: group column {missing[0]!r} not found; available: {list(frame.columns)}")
    keys = []
    for row in frame[fields].to_dict("records"):
        row = {k: "" if _missing(v) else v for k, v in row.items()}
        keys.append(tuple((t.format_map(row) if "{" in t else str(row[t])).strip() for t in templates))
    return group_ids(keys)


def table_to_task(frame: pd.DataFrame, spec: DatasetSpec) -> Task:
    """Map the rows of `frame` to a task: text from `spec.text` (a column, or a ``{column}``
    template), label from `spec.label` through `spec.label_map`, weak labels from `spec.weak_label`
    when it names a column (probabilities, or labels mapped like `label`), and groups from
    `spec.group` when set (`read_groups`). Texts are stripped of outer whitespace. Used by both the
    local-file and the hub loader."""
    name, columns = spec.name, list(frame.columns)
    if spec.label_map is not None and set(spec.label_map.values()) - {0, 1}:
        raise DataError(f"dataset {name!r}: label_map values must be 0 or 1; got {spec.label_map}")
    fields = template_fields(spec.text, name, "text")
    for column in [*fields, spec.label]:
        if column not in columns:
            raise DataError(f"dataset {name!r}: column {column!r} not found; available: {columns}")

    rows = frame[sorted(set(fields))].to_dict("records")
    for i, row in enumerate(rows):
        bad = next((k for k, v in row.items() if _missing(v)), None)
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
    groups = None if spec.group is None else read_groups(frame, spec.group, name)
    return Task(name, texts, np.array(labels, dtype=np.int64), weak_labels, groups)
