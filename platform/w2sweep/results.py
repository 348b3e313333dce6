"""The result schema: what one finished cell writes, and the one reader that turns stored results
back into a table (the frontier, the benchmarks and the tests all read through `read_cells`).

One JSON object per cell at ``<sweep>/cells/<cell_id>.json``. JSON, not pickle: any tool can read it
and nothing in it can execute. Fields are only ever added, with a default, so that results written
before a field existed still read.
"""

from __future__ import annotations

import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import pandas as pd

from w2sweep import layout
from w2sweep.storage import Storage, StorageError

PREDICTION_COLUMNS = ("example_id", "gold", "p")  # position in the test pool, gold 0/1, P(label=1)

# Bump when the meaning of a field changes: it is part of every cell id, so old results are not
# mistaken for new ones.
RESULT_SCHEMA_VERSION = 1
# The weak_supervisor of a ceiling result: the ceiling reads no weak labels and runs once per
# (dataset, student, seed); the frontier joins it to every weak supervisor of that dataset and student.
NO_WEAK_SUPERVISOR = "none"
# The fields a stored result must have to enter the table; the rest (CellResult's other fields, and
# fields older results lack) are optional to the reader.
REQUIRED_FIELDS = ("dataset", "weak_supervisor", "student", "method", "budget", "spending_fraction",
                   "seed", "n_weak", "n_oracle", "label_cost", "c_weak", "c_oracle", "accuracy", "status")


@dataclass(frozen=True)
class CellResult:
    cell_id: str
    sweep: str
    dataset: str
    weak_supervisor: str
    student: str
    method: str
    budget: float  # label units
    spending_fraction: float | None  # None for an explicit (n_weak, n_oracle) pair
    seed: int
    n_weak: int
    n_oracle: int
    label_cost: float  # label units actually spent: n_weak * c_weak + n_oracle * c_oracle
    c_weak: float
    c_oracle: float
    accuracy: float  # on the test pool, against gold labels
    accuracy_ci: tuple[float, float]  # 95% Wilson interval
    auroc: float
    auroc_ci: tuple[float, float]  # 95% bootstrap interval
    weak_accuracy: float  # the weak supervisor's own test accuracy: the floor
    num_test: int
    wall_seconds: float
    num_gpus: float = 0.0  # GPUs the cell held while it ran: num_workers x gpus_per_worker
    gpu_seconds: float = 0.0  # num_gpus x wall_seconds: the frontier's compute-cost axis
    test_label1_share: float = math.nan  # share of label 1 in the test pool: the majority-class baseline
    status: str = "ok"
    config: dict = field(default_factory=dict)  # the cell's full canonical config
    schema_version: int = RESULT_SCHEMA_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()


def cell_key(sweep: str, cell_id: str) -> str:
    return layout.result(sweep, cell_id)


def cell_keys(storage: Storage, sweep: str) -> list[str]:
    """Keys of the sweep's result objects, sorted."""
    return storage.list(layout.folder(sweep, layout.RESULTS), suffix=".json")


def parse_result(data: bytes) -> dict:
    """One result object -> one flat table row; raises ValueError/KeyError/TypeError when malformed.

    Only REQUIRED_FIELDS must be there: results written before a field existed (``num_gpus`` and
    ``gpu_seconds`` before the runner recorded them) still read. ``gpu_seconds`` is NaN when the
    object lacks it, so an older result is told apart from a cell that used no GPU (0.0).
    ``accuracy_ci``/``auroc_ci`` become ``*_low``/``*_high``; ``config`` is dropped except
    ``config.resources.gpu``, kept as ``gpus_per_cell`` (NaN when absent): the frontier's fallback
    for results without ``gpu_seconds``.
    """
    row = json.loads(data)
    if not isinstance(row, dict):
        raise TypeError(f"expected a JSON object, got {type(row).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        raise KeyError(f"missing fields {missing}")
    for name in ("accuracy_ci", "auroc_ci"):
        low, high = row.pop(name, None) or (None, None)
        row[f"{name}_low"], row[f"{name}_high"] = low, high
    config = row.pop("config", None)
    resources = config.get("resources") if isinstance(config, dict) else None
    gpus = resources.get("gpu") if isinstance(resources, dict) else None
    row["gpus_per_cell"] = math.nan if gpus is None else float(gpus)
    if row.get("gpu_seconds") is None:
        row["gpu_seconds"] = math.nan
    return row


def read_cells(storage: Storage, keys: list[str], *, num_threads: int = 32
               ) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read result objects `keys` in a thread pool: (table, {unreadable key: one-line reason}).

    Rows come out in the order of `keys`. An object that cannot be read or parsed is reported, never
    fatal: one corrupt object must not hide a thousand good ones. Threads, because reading from
    object storage is waiting on the network, one request per object.
    """
    def load(key: str) -> dict | str:
        try:
            return parse_result(storage.read_bytes(key))
        except (OSError, StorageError, ValueError, KeyError, TypeError, AttributeError) as e:
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]

    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(keys)))) as pool:
        loaded = list(pool.map(load, keys))
    rows = [r for r in loaded if isinstance(r, dict)]
    unreadable = {k: r for k, r in zip(keys, loaded) if isinstance(r, str)}
    return pd.DataFrame(rows), unreadable


# ---- per-example test predictions -----------------------------------------------------------------

def write_predictions(storage: Storage, sweep: str, cell_id: str, example_ids, gold, p) -> str:
    """Store a cell's per-example test predictions as one Parquet object at
    ``layout.predictions(sweep, cell_id)``; written before the result object (the 'done' marker), so
    that a finished cell's predictions are there. Columns: ``example_id`` (int64, position in the test
    pool), ``gold`` (int8, 0/1), ``p`` (float32, P(label=1)). Returns the key; raises ValueError on
    arrays of different lengths, repeated ids, gold labels other than 0/1 or p outside [0, 1]."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, labels, scores = (np.asarray(a).ravel() for a in (example_ids, gold, p))
    if not len(ids) == len(labels) == len(scores):
        raise ValueError(f"predictions of {cell_id}: lengths differ ({len(ids)}, {len(labels)}, {len(scores)})")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"predictions of {cell_id}: repeated example ids")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"predictions of {cell_id}: gold labels must be 0 or 1")
    if not (np.isfinite(scores) & (scores >= 0) & (scores <= 1)).all():
        raise ValueError(f"predictions of {cell_id}: p must be probabilities in [0, 1]")
    table = pa.table({"example_id": pa.array(ids, pa.int64()), "gold": pa.array(labels, pa.int8()),
                      "p": pa.array(scores, pa.float32())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    key = layout.predictions(sweep, cell_id)
    storage.write_bytes(key, buffer.getvalue())
    return key


def read_predictions(storage: Storage, sweep: str, cell_ids, *, num_threads: int = 32) -> dict[str, pd.DataFrame]:
    """{cell_id: predictions sorted by example_id} for those of `cell_ids` whose predictions are
    stored; cells without them (older sweeps) or with unreadable ones are left out, and the
    statistics fall back to their result rows."""
    import pyarrow as pa

    stored = set(storage.list(layout.folder(sweep, layout.PREDICTIONS), suffix=".parquet"))
    wanted = [c for c in dict.fromkeys(map(str, cell_ids)) if layout.predictions(sweep, c) in stored]

    def load(cell_id: str) -> pd.DataFrame | None:
        try:
            frame = pd.read_parquet(io.BytesIO(storage.read_bytes(layout.predictions(sweep, cell_id))))
            return frame[list(PREDICTION_COLUMNS)].sort_values("example_id", kind="mergesort").reset_index(drop=True)
        except (OSError, StorageError, ValueError, KeyError, pa.ArrowException):
            return None

    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(wanted)))) as pool:
        loaded = list(pool.map(load, wanted))
    return {c: frame for c, frame in zip(wanted, loaded) if frame is not None}
