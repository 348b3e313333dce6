"""Weak labels: a weak supervisor trained on ground truth, its soft labels cached in storage; or,
for a dataset with its own weak-label column (`DatasetSpec.weak_label`), that column's values.

The cache key is a content hash of everything that determines the labels (dataset, pools, supervisor
and its settings, seed), so every cell that needs them reads one object, and a change to any of those
inputs makes a new one instead of silently reusing a stale one.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from w2sweep import layout
from w2sweep.storage import Storage

WEAK_LABELS_VERSION = 1
_POOLS = ("weak_label", "val", "test")


@dataclass(frozen=True)
class WeakLabels:
    """Soft labels P(label=1) from the weak supervisor, one array per pool, in pool order."""

    weak_label: np.ndarray  # [len(weak-label pool)]
    val: np.ndarray  # [len(validation pool)]
    test: np.ndarray  # [len(test pool)]
    test_accuracy: float  # against gold labels: the weak floor


def weak_source_name(dataset, weak_supervisor) -> str:
    """How results call the weak labels' source: the supervisor's label, or ``column:<name>``."""
    if weak_supervisor is None:
        return f"column:{dataset.weak_label}"
    return weak_supervisor.label


def weak_labels_key(dataset, weak_supervisor, seed: int) -> str:
    """Content hash of what determines the weak labels; `weak_supervisor` is None for a dataset's own column."""
    weak = None if weak_supervisor is None else weak_supervisor.canonical_dump()
    blob = dict(dataset=dataset.canonical_dump(), weak=weak, seed=seed, version=WEAK_LABELS_VERSION)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def object_key(sweep: str, key: str) -> str:
    return layout.weak_labels(sweep, key)


def _to_parquet(labels: WeakLabels) -> bytes:
    pools = [p for p in _POOLS for _ in range(len(getattr(labels, p)))]
    table = pa.table({
        "pool": pa.array(pools, pa.string()),
        "position": pa.array([i for p in _POOLS for i in range(len(getattr(labels, p)))], pa.int32()),
        "soft_label": pa.array(np.concatenate([getattr(labels, p) for p in _POOLS]), pa.float32()),
    }).replace_schema_metadata({"test_accuracy": str(labels.test_accuracy)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _from_parquet(data: bytes) -> WeakLabels:
    table = pq.read_table(io.BytesIO(data))
    pools = np.asarray(table["pool"].to_pylist())
    soft = table["soft_label"].to_numpy()
    arrays = {p: soft[pools == p] for p in _POOLS}
    return WeakLabels(**arrays, test_accuracy=float(table.schema.metadata[b"test_accuracy"]))


def load_weak_labels(storage: Storage, sweep: str, key: str) -> WeakLabels:
    return _from_parquet(storage.read_bytes(object_key(sweep, key)))


def train_weak_supervisor(dataset, weak_supervisor, seed: int) -> WeakLabels:
    """Fit the supervisor on its pool with gold labels and label the weak-label, validation and test
    pools. Its own early stopping uses gold validation labels: it is trained on ground truth."""
    from w2sweep.data import pools_for
    from w2sweep.metrics import accuracy
    from w2sweep.models import load_classifier, load_kwargs, resolve_settings
    from w2sweep.train import TokenizedTexts, fine_tune, predict

    pools = pools_for(dataset, seed)
    settings = resolve_settings(weak_supervisor)
    tokenizer, model = load_classifier(weak_supervisor.model, seed=seed, **load_kwargs(weak_supervisor))
    def tokenized(pool: str):
        return TokenizedTexts(tokenizer, getattr(pools, pool).texts, settings.max_length)

    val = tokenized("val")
    fine_tune(model, tokenized("weak_train"), pools.weak_train.labels.astype(np.float32),
              val_examples=val, val_labels=pools.val.labels, settings=settings, seed=seed)
    scores = {p: predict(model, val if p == "val" else tokenized(p)) for p in _POOLS}
    return WeakLabels(**scores, test_accuracy=accuracy(scores["test"], pools.test.labels))


def column_weak_labels(dataset, seed: int) -> WeakLabels:
    """The dataset's own weak-label column on the weak-label, validation and test pools; the floor
    is the column's test accuracy against gold labels. No model is trained."""
    from w2sweep.data import pools_for
    from w2sweep.metrics import accuracy

    pools = pools_for(dataset, seed)
    if pools.test.weak_labels is None:
        raise ValueError(f"dataset {dataset.name!r}: weak_label column {dataset.weak_label!r} was not loaded")
    scores = {p: np.asarray(getattr(pools, p).weak_labels, dtype=np.float32) for p in _POOLS}
    return WeakLabels(**scores, test_accuracy=accuracy(scores["test"], pools.test.labels))


def ensure_weak_labels(storage: Storage, sweep: str, dataset, weak_supervisor, seed: int) -> str:
    """Compute and store the weak labels for (dataset, supervisor, seed) unless already stored:
    train the supervisor, or with `weak_supervisor` None read the dataset's weak-label column.
    Returns the cache key. Safe to call concurrently: the first writer wins."""
    key = weak_labels_key(dataset, weak_supervisor, seed)

    def make() -> bytes:
        if weak_supervisor is None:
            return _to_parquet(column_weak_labels(dataset, seed))
        return _to_parquet(train_weak_supervisor(dataset, weak_supervisor, seed))

    storage.compute_once(object_key(sweep, key), make)
    return key
