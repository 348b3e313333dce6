"""The result row: what one finished cell writes, and how a sweep's rows are read back.

One JSON object per cell at ``<sweep>/cells/<cell_id>.json``. JSON, not pickle: any tool can read it
and nothing in it can execute.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pandas as pd

from w2sweep import layout
from w2sweep.storage import Storage

# Bump when the meaning of a field changes: it is part of every cell id, so old results are not
# mistaken for new ones.
RESULT_SCHEMA_VERSION = 1


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
    status: str = "ok"
    config: dict = field(default_factory=dict)  # the cell's full canonical config
    schema_version: int = RESULT_SCHEMA_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()


def cell_key(sweep: str, cell_id: str) -> str:
    return layout.result(sweep, cell_id)


def read_results(storage: Storage, sweep: str) -> tuple[pd.DataFrame, list[str]]:
    """All cell results of `sweep` as one table, plus the keys that could not be read.

    The tuple columns ``accuracy_ci``/``auroc_ci`` become ``*_ci_low``/``*_ci_high``; ``config`` is dropped.
    """
    rows, unreadable = [], []
    for key in storage.list(layout.folder(sweep, layout.RESULTS), suffix=".json"):
        try:
            row = json.loads(storage.read_bytes(key))
            for name in ("accuracy_ci", "auroc_ci"):
                low, high = row.pop(name)
                row[f"{name}_low"], row[f"{name}_high"] = low, high
            row.pop("config", None)
            rows.append(row)
        except (OSError, ValueError, KeyError, TypeError):
            unreadable.append(key)
    return pd.DataFrame(rows), unreadable
