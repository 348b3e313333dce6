"""Reading the per-cell objects a run leaves in a sweep's storage, for `w2sweep.status`: which cells
have objects in a folder, results' wall times, heartbeats' last beats and failure records. Every read
is one small GET; they go out in parallel, and an unreadable object never fails the status."""

from __future__ import annotations

import json
import math
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from w2sweep import layout
from w2sweep.storage import Storage, StorageError


@dataclass
class FailedCell:
    """A failed cell: its axes (from the grid) and the one-line error of its last attempt."""

    cell_id: str
    dataset: str
    weak_supervisor: str
    student: str
    method: str
    budget: float
    spending_fraction: float | None  # None: an explicit (n_weak, n_oracle) pair
    n_weak: int
    n_oracle: int
    seed: int
    error: str


def listed(storage: Storage, prefix: str) -> dict[str, float]:
    """cell id -> last-modified time of the objects in one of the sweep's folders."""
    return {posixpath.basename(k)[: -len(".json")]: t
            for k, t in storage.list_modified(prefix, suffix=".json").items()}


def _read_all(fn, items) -> list:
    with ThreadPoolExecutor(max_workers=16) as pool:  # object stores answer many small GETs in parallel
        return [r for r in pool.map(fn, items) if r is not None]


def wall_seconds(storage: Storage, keys: list[str]) -> dict[str, float]:
    """cell id -> wall_seconds of its result; unreadable results are left out."""

    def read(key: str):
        try:
            row = json.loads(storage.read_bytes(key))
            return row["cell_id"], float(row["wall_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    return dict(_read_all(read, keys))


def last_beats(storage: Storage, sweep: str, modified: dict[str, float]) -> dict[str, float]:
    """cell id -> when its heartbeat was last rewritten (epoch seconds): its ``updated`` time, else
    its ``started`` time, else the object's last-modified time (also for an unreadable heartbeat)."""

    def read(item: tuple[str, float]):
        cell_id, mtime = item
        try:
            beat = json.loads(storage.read_bytes(layout.running(sweep, cell_id)))
        except (OSError, ValueError, StorageError):  # gone meanwhile, or not JSON
            return cell_id, mtime
        for name in ("updated", "started"):
            value = beat.get(name) if isinstance(beat, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return cell_id, float(value)
        return cell_id, mtime

    return dict(_read_all(read, sorted(modified.items())))


def failed_cells(storage: Storage, sweep: str, cells: list) -> list[FailedCell]:
    """The failed `cells` (grid order) with the error their failure object holds."""

    def read(cell) -> FailedCell:
        try:
            error = json.loads(storage.read_bytes(layout.failure(sweep, cell.cell_id)))["error"]
            error = " ".join(str(error).split()) or "(empty error)"
        except (OSError, ValueError, KeyError, TypeError, StorageError) as e:
            error = f"(failure record unreadable: {type(e).__name__})"
        return FailedCell(cell_id=cell.cell_id, dataset=cell.dataset.name, weak_supervisor=cell.weak_name,
                          student=cell.student.label, method=cell.method, budget=cell.budget,
                          spending_fraction=cell.spending_fraction, n_weak=cell.n_weak,
                          n_oracle=cell.n_oracle, seed=cell.seed, error=error)

    return _read_all(read, cells)
