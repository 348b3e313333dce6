"""The sweep's console progress and its Prometheus metrics: one Tune callback on the driver that
counts cells as their trials start, finish and fail, and feeds `w2sweep.telemetry`.
"""

from __future__ import annotations

import os
import time

from ray import tune
from tqdm import tqdm

from w2sweep.config import Resources
from w2sweep.grid import Cell, cell_gpus
from w2sweep.telemetry import CellTags, SweepMetrics


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


class Progress(tune.Callback):
    """One progress bar for the whole grid: done/total, failures in the postfix. It also feeds the
    sweep's Prometheus metrics (`w2sweep.telemetry`), from the driver only."""

    def __init__(self, total: int, initial: int, *, cells: list[Cell], todo: list[Cell], resources: Resources):
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
