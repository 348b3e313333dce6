"""The sweep's console progress and its Prometheus metrics: one Tune callback on the driver that
counts cells as their trials start, finish and fail, and feeds `w2sweep.telemetry`. It also keeps
`layout.progress(sweep)` up to date: how many cells run and how many wait for resources, which only
the driver knows (`w2sweep status` reads it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter

from ray import tune
from tqdm import tqdm

from w2sweep import layout
from w2sweep.config import Resources
from w2sweep.grid import Cell, cell_gpus
from w2sweep.storage import Storage, StorageError
from w2sweep.telemetry import CellTags, SweepMetrics

RECORD_SECONDS = 5.0  # the progress object is written at most this often, when its counts change
RECORD_ALIVE_SECONDS = 60.0  # and at least this often: `w2sweep status` ignores an object much older


def one_line(error) -> str:
    """The last line of a trial's error (its exception's own message), cut to 500 characters."""
    lines = str(error).strip().splitlines()
    return lines[-1][:500] if lines else type(error).__name__


def _last_error(trial) -> str:
    """The last line of the trial's error file, which Tune writes on the driver before this callback
    (`Trial.get_error` reads the copy in storage, which may not be synced yet)."""
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path) as f:
            return one_line(f.read())
    return "no error recorded"


def _tags(cell: Cell) -> CellTags:
    return CellTags(sweep=cell.sweep, dataset=cell.dataset.name, student=cell.student.label, method=cell.method)


class ProgressObject:
    """`layout.progress(sweep)`: the counts of this run's cells running and waiting, with the time
    they were taken. Written when they change (at most every RECORD_SECONDS) and every
    RECORD_ALIVE_SECONDS anyway, so that a fresh object means a live driver; removed at the end."""

    def __init__(self, storage: Storage, sweep: str, num_cells: int):
        self.storage, self.key, self.num_cells = storage, layout.progress(sweep), num_cells
        self.last: tuple[float, dict] = (-float("inf"), {})  # time.monotonic() and counts of the last write

    def counts(self, trials) -> dict[str, int]:
        """Cells running now, and waiting: their trial is pending (its resources not granted yet) or
        not made yet (Tune makes trials a few at a time), so they wait for a slot as well."""
        status = Counter(t.status for t in trials)
        running, ended = status["RUNNING"], status["TERMINATED"] + status["ERROR"]
        return {"running": running, "waiting": max(0, self.num_cells - running - ended),
                "pending_trials": status["PENDING"], "cells": self.num_cells}

    def update(self, trials) -> None:
        now = time.monotonic()
        last, before = self.last
        if now - last < RECORD_SECONDS:  # before counting: Tune steps many times a second, over every trial
            return
        counts = self.counts(trials)
        if counts == before and now - last < RECORD_ALIVE_SECONDS:
            return
        self.last = (now, counts)
        try:
            self.storage.write_bytes(self.key, json.dumps(counts | {"updated": time.time()}).encode())
        except (OSError, StorageError) as e:  # a status line is not worth a sweep
            print(f"warning: could not write {self.key}: {type(e).__name__}", file=sys.stderr)

    def remove(self) -> None:
        """No driver, no count (an object a killed driver leaves behind is ignored once stale)."""
        try:
            self.storage.delete(self.key)
        except (OSError, StorageError):
            pass


class Progress(tune.Callback):
    """One progress bar for the whole grid: done/total, failures in the postfix. It also feeds the
    sweep's Prometheus metrics (`w2sweep.telemetry`), from the driver only, and, given `storage`,
    keeps the sweep's `ProgressObject` for `w2sweep status`."""

    def __init__(self, total: int, initial: int, *, cells: list[Cell], todo: list[Cell], resources: Resources,
                 storage: Storage | None = None):
        self.record = ProgressObject(storage, todo[0].sweep, len(todo)) if storage is not None and todo else None
        self.bar = tqdm(total=total, initial=initial, desc="cells", unit="cell", dynamic_ncols=True)
        self.num_failed = 0
        self.cells = {c.cell_id: c for c in todo}
        self.num_gpus = {c.cell_id: cell_gpus(c.student, resources) for c in todo}
        self.started: dict[str, float] = {}  # trial id -> time.monotonic() at its (last) start
        self.metrics = SweepMetrics()
        todo_ids = set(self.cells)
        groups: dict[CellTags, list[int]] = {}
        for c in cells:
            counts = groups.setdefault(_tags(c), [0, 0])
            counts[0] += 1
            counts[1] += c.cell_id not in todo_ids
        for tags, (num_cells, num_skipped) in groups.items():
            self.metrics.grid(tags, num_cells=num_cells, num_skipped=num_skipped)

    def _cell(self, trial) -> Cell:
        return self.cells[trial.config["cell_id"]]

    def _stop(self, trial) -> float:
        """Seconds since the trial's start; takes it out of the running cells."""
        start = self.started.pop(trial.trial_id, None)
        if start is None:
            return 0.0
        self.metrics.stopped(_tags(self._cell(trial)))
        return time.monotonic() - start

    def on_step_end(self, iteration, trials, **info):
        self.metrics.refresh()  # gauges fade from Prometheus unless set again (telemetry)
        if self.record is not None:
            self.record.update(trials)

    def on_experiment_end(self, trials, **info):
        if self.record is not None:
            self.record.remove()

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.started:
            self.metrics.started(_tags(self._cell(trial)))
        self.started[trial.trial_id] = time.monotonic()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._stop(trial)  # back to pending for a retry

    def on_trial_complete(self, iteration, trials, trial, **info):
        seconds = self._stop(trial)
        cell = self._cell(trial)
        seconds = float((trial.last_result or {}).get("wall_seconds", seconds))
        self.metrics.finished(_tags(cell), seconds=seconds, label_cost=cell.label_cost,
                              n_weak=cell.n_weak, n_oracle=cell.n_oracle, num_gpus=self.num_gpus[cell.cell_id])
        self.bar.update(1)

    def on_trial_error(self, iteration, trials, trial, **info):
        seconds = self._stop(trial)
        cell = self._cell(trial)
        self.metrics.failed(_tags(cell), seconds=seconds, num_gpus=self.num_gpus[cell.cell_id])
        self.num_failed += 1
        self.bar.set_postfix(failed=self.num_failed)
        # One line per failed cell; its traceback is in the run's log file (`w2sweep.sweep.logs`).
        self.bar.write(f"cell {cell.cell_id} ({cell.student.label}, {cell.method}, budget {cell.budget:g}) "
                       f"failed: {_last_error(trial)}")
        self.bar.update(1)
