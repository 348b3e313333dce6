"""The sweep's own Prometheus metrics, emitted through `ray.util.metrics`.

Ray Tune exports no metrics of its own, so a Grafana dashboard on a cluster could show node load but
not how far a sweep has come. The Tune driver (`w2sweep.sweep`) calls `SweepMetrics` as trials start,
finish and fail; Ray's metrics agent on the driver's node serves the values to Prometheus with the
prefix ``ray_`` (``w2sweep_cells_done`` is scraped as ``ray_w2sweep_cells_done``).

Tags are low-cardinality on purpose: the sweep name, dataset, student, method (and, for label counts,
the label source). Never a cell id, budget or seed: one time series per cell would swamp Prometheus.

Only `w2sweep.sweep` imports this module (`w2sweep.sweep.progress`); the science core never does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ray.util import metrics

from w2sweep.raycompat import record_zero

TAG_KEYS = ("sweep", "dataset", "student", "method")

# Seconds. Cells range from seconds (tiny CPU models) to hours (7B students on GPUs).
DURATION_BOUNDARIES = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800]

# Every metric this module emits, by the name Prometheus sees: Ray adds the prefix `ray_`, a counter
# gets the suffix `_total`, a histogram the series `_bucket`, `_sum` and `_count`. The dashboards may
# use these and Ray's own metrics, nothing else (tests/test_dashboards.py).
EXPORTED = {
    "ray_w2sweep_grid_cells": "gauge: cells in the sweep's grid",
    "ray_w2sweep_cells_skipped": "gauge: cells that already had a result when this run started",
    "ray_w2sweep_cells_running": "gauge: cells training now",
    "ray_w2sweep_cells_done_total": "counter: cells finished by this run",
    "ray_w2sweep_cells_failed_total": "counter: cells that failed all their attempts",
    "ray_w2sweep_cell_duration_seconds": "histogram: wall time of one finished cell, seconds",
    "ray_w2sweep_label_cost_total": "counter: label units spent by finished cells (n_weak*c_weak + n_oracle*c_oracle)",
    "ray_w2sweep_labels_total": "counter: labels used by finished cells, tag `source` = weak | oracle",
    "ray_w2sweep_gpu_seconds_total": "counter: GPU-seconds held by finished and failed cells (GPUs per cell x seconds)",
}
# Gauges are served only while the driver that set them runs; counters and histograms stay until
# the Ray node stops.


def _start_at_zero(counter: metrics.Counter, tags: dict[str, str]) -> None:
    """Record 0 on `counter` (`w2sweep.raycompat.record_zero`: the public `inc` refuses values <= 0)."""
    record_zero(counter, tags)


@dataclass(frozen=True)
class CellTags:
    """The tags one cell's metrics carry."""

    sweep: str
    dataset: str
    student: str
    method: str

    def as_dict(self) -> dict[str, str]:
        return {"sweep": self.sweep, "dataset": self.dataset, "student": self.student, "method": self.method}


class SweepMetrics:
    """The metric objects of one driver. Create it after `ray.init`."""

    def __init__(self) -> None:
        self.grid_cells = metrics.Gauge(
            "w2sweep_grid_cells", description="Cells in the sweep's grid.", tag_keys=TAG_KEYS)
        self.cells_skipped = metrics.Gauge(
            "w2sweep_cells_skipped", description="Cells that had a result when this run started.",
            tag_keys=TAG_KEYS)
        self.cells_done = metrics.Counter(
            "w2sweep_cells_done", description="Cells finished by this run.", tag_keys=TAG_KEYS)
        self.cells_failed = metrics.Counter(
            "w2sweep_cells_failed", description="Cells that failed all their attempts.", tag_keys=TAG_KEYS)
        self.cells_running = metrics.Gauge(
            "w2sweep_cells_running", description="Cells training now.", tag_keys=TAG_KEYS)
        self.cell_duration = metrics.Histogram(
            "w2sweep_cell_duration_seconds", description="Wall time of one finished cell.",
            boundaries=DURATION_BOUNDARIES, tag_keys=TAG_KEYS)
        self.label_cost = metrics.Counter(
            "w2sweep_label_cost", description="Label units spent by finished cells.", tag_keys=TAG_KEYS)
        self.labels = metrics.Counter(
            "w2sweep_labels", description="Labels used by finished cells, by source.",
            tag_keys=(*TAG_KEYS, "source"))
        self.gpu_seconds = metrics.Counter(
            "w2sweep_gpu_seconds", description="GPU-seconds held by cells (GPUs per cell x seconds).",
            tag_keys=TAG_KEYS)
        self._running: dict[CellTags, int] = {}
        self._grid: dict[CellTags, tuple[int, int]] = {}  # tags -> (cells, skipped)
        self._refreshed = 0.0  # time.monotonic() of the last refresh

    def grid(self, tags: CellTags, *, num_cells: int, num_skipped: int) -> None:
        """Called once per (dataset, student, method) group when the run starts."""
        self._grid[tags] = (num_cells, num_skipped)
        self._running.setdefault(tags, 0)
        self._refreshed = 0.0  # set every group's gauges now
        self.refresh()
        # A counter appears in Prometheus at its first event. Starting each at 0 makes "0 failed" a
        # value rather than no data, and gives rate() its first sample.
        for counter in (self.cells_done, self.cells_failed, self.label_cost, self.gpu_seconds):
            _start_at_zero(counter, tags.as_dict())
        for source in ("weak", "oracle"):
            _start_at_zero(self.labels, {**tags.as_dict(), "source": source})

    def started(self, tags: CellTags) -> None:
        self._set_running(tags, +1)

    def stopped(self, tags: CellTags) -> None:
        """A running cell left the running state (finished, failed, or is being retried)."""
        self._set_running(tags, -1)

    def finished(self, tags: CellTags, *, seconds: float, label_cost: float, n_weak: int, n_oracle: int,
                 num_gpus: float) -> None:
        """One cell wrote its result; `seconds` is its wall time, `label_cost` in label units."""
        t = tags.as_dict()
        self.cells_done.inc(1, tags=t)
        self.cell_duration.observe(max(seconds, 0.0), tags=t)
        if label_cost > 0:
            self.label_cost.inc(label_cost, tags=t)
        for source, n in (("weak", n_weak), ("oracle", n_oracle)):
            if n > 0:
                self.labels.inc(n, tags={**t, "source": source})
        if num_gpus > 0 and seconds > 0:
            self.gpu_seconds.inc(num_gpus * seconds, tags=t)

    def failed(self, tags: CellTags, *, seconds: float, num_gpus: float) -> None:
        """One cell failed all its attempts; the GPUs it held still count as spent."""
        t = tags.as_dict()
        self.cells_failed.inc(1, tags=t)
        if num_gpus > 0 and seconds > 0:
            self.gpu_seconds.inc(num_gpus * seconds, tags=t)

    def refresh(self) -> None:
        """Set every gauge of every group again. Ray exports a gauge's value once and its metrics
        agent forgets it two report intervals later, so a gauge set only when it changes vanishes
        from Prometheus during long cells, and groups set at different moments never appear in one
        scrape together (a sum over them undercounts). The driver calls this at least once a second."""
        now = time.monotonic()
        if now - self._refreshed < 1.0:
            return
        self._refreshed = now
        for tags, (num_cells, num_skipped) in self._grid.items():
            t = tags.as_dict()
            self.grid_cells.set(num_cells, tags=t)
            self.cells_skipped.set(num_skipped, tags=t)
            self.cells_running.set(self._running.get(tags, 0), tags=t)

    def _set_running(self, tags: CellTags, delta: int) -> None:
        self._running[tags] = max(0, self._running.get(tags, 0) + delta)
        self.cells_running.set(self._running[tags], tags=tags.as_dict())
