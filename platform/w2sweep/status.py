"""How far a sweep has come, from its storage alone (no Ray, no cluster connection).

Per dataset x student x method, each cell of the grid is in exactly one state, decided in this order:

    done     <sweep>/cells/<cell_id>.json exists (a result; final)
    running  <sweep>/running/<cell_id>.json exists (the heartbeat a trial writes at its start and
             deletes at its end; a trial killed with its node leaves it behind until the cell reruns)
    failed   <sweep>/failures/<cell_id>.json exists (failed every attempt of its last run)
    pending  none of these

Cells waiting for resources are counted by the running driver alone: it writes <sweep>/progress.json
every few seconds (`w2sweep.sweep.progress`); an object older than `DRIVER_STALE_SECONDS` is ignored
(its driver is gone). The grid comes from <sweep>/sweep.yaml, the config as run. The ETA divides the remaining cell-seconds
(mean wall time of the group's finished cells, else of all finished cells) by the number of cells
running now.
"""

from __future__ import annotations

import json
import posixpath
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import yaml

from w2sweep import layout
from w2sweep.storage import Storage, StorageError

STATES = ("done", "running", "failed", "pending")
DRIVER_STALE_SECONDS = 180.0  # the driver rewrites progress.json at least every minute while it runs


@dataclass
class GroupStatus:
    dataset: str
    student: str
    method: str
    done: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0
    mean_seconds: float | None = None  # mean wall time of the finished cells read, seconds

    @property
    def total(self) -> int:
        return self.done + self.running + self.failed + self.pending


@dataclass
class SweepStatus:
    sweep: str
    groups: list[GroupStatus]
    num_outside_grid: int = 0  # results whose cell is not in sweep.yaml's grid (an older config)
    remaining_seconds: float | None = None  # cell-seconds left: running + pending cells x mean wall time
    eta_seconds: float | None = None  # remaining_seconds / cells running now; None when none runs
    warnings: list[str] = field(default_factory=list)
    waiting_for_resources: int | None = None  # the live driver's count; None without a fresh progress.json
    driver_seconds_ago: float | None = None  # age of progress.json, when there is one

    def totals(self) -> dict[str, int]:
        return {s: sum(getattr(g, s) for g in self.groups) for s in STATES}

    def to_json(self) -> str:
        d = asdict(self)
        d["totals"] = self.totals()
        return json.dumps(d, indent=1)


class StatusError(ValueError):
    """The sweep cannot be found or read; the message is one line."""


def _grid(storage: Storage, sweep: str):
    """The cells of the sweep's grid, from the config snapshot it was run with."""
    from w2sweep.grid import expand_cells
    from w2sweep.config import ConfigError, parse_config

    key = layout.sweep_yaml(sweep)
    try:
        raw = yaml.safe_load(storage.read_bytes(key))
    except FileNotFoundError:
        raise StatusError(f"status error: {storage.path(key)}: no such sweep (sweep.yaml is written when a "
                          "sweep starts)") from None
    except yaml.YAMLError:
        raise StatusError(f"status error: {storage.path(key)}: not valid YAML") from None
    try:
        with warnings.catch_warnings():  # options the run already warned about: not news here
            warnings.simplefilter("ignore")
            # The schema checks the values only (data files and models are looked up when a sweep is
            # planned), so a snapshot of a sweep that ran elsewhere parses here too.
            config = parse_config(raw)
    except ConfigError as e:
        raise StatusError(f"status error: sweep.yaml does not describe a sweep ({e.lines[0]})") from None
    return expand_cells(config)


def _ids(storage: Storage, prefix: str) -> set[str]:
    return {posixpath.basename(k)[: -len(".json")] for k in storage.list(prefix, suffix=".json")}


def _wall_seconds(storage: Storage, keys: list[str]) -> dict[str, float]:
    """cell id -> wall_seconds of its result; unreadable results are left out."""

    def read(key: str):
        try:
            row = json.loads(storage.read_bytes(key))
            return row["cell_id"], float(row["wall_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    with ThreadPoolExecutor(max_workers=16) as pool:  # object stores answer many small GETs in parallel
        return dict(r for r in pool.map(read, keys) if r is not None)


def _driver_count(storage: Storage, sweep: str, status: SweepStatus) -> None:
    """The waiting count of the driver's progress object, when it is fresh enough to believe."""
    try:
        counts = json.loads(storage.read_bytes(layout.progress(sweep)))
        age = max(0.0, time.time() - float(counts["updated"]))
        waiting = int(counts["waiting"])
    except (OSError, StorageError, ValueError, KeyError, TypeError):  # none (no driver ever, or it ended), or unreadable
        return
    status.driver_seconds_ago = age
    if age <= DRIVER_STALE_SECONDS:
        status.waiting_for_resources = waiting


def sweep_status(storage: Storage, sweep: str) -> SweepStatus:
    cells = _grid(storage, sweep)
    done = _ids(storage, layout.folder(sweep, layout.RESULTS))
    running = _ids(storage, layout.folder(sweep, layout.RUNNING))
    failed = _ids(storage, layout.folder(sweep, layout.FAILURES))
    grid_ids = {c.cell_id for c in cells}
    seconds = _wall_seconds(storage, [layout.result(sweep, i) for i in sorted(done & grid_ids)])

    groups: dict[tuple[str, str, str], GroupStatus] = {}
    durations: dict[tuple[str, str, str], list[float]] = {}
    for cell in cells:
        key = (cell.dataset.name, cell.student.label, cell.method)
        group = groups.setdefault(key, GroupStatus(*key))
        i = cell.cell_id
        state = "done" if i in done else "running" if i in running else "failed" if i in failed else "pending"
        setattr(group, state, getattr(group, state) + 1)
        if i in seconds:
            durations.setdefault(key, []).append(seconds[i])

    everything = [s for d in durations.values() for s in d]
    overall = sum(everything) / len(everything) if everything else None
    remaining = 0.0 if overall is not None else None
    for key, group in groups.items():
        if key in durations:
            group.mean_seconds = sum(durations[key]) / len(durations[key])
        mean = group.mean_seconds if group.mean_seconds is not None else overall
        if mean is not None and remaining is not None:
            remaining += (group.running + group.pending) * mean

    status = SweepStatus(sweep=sweep, groups=list(groups.values()), num_outside_grid=len(done - grid_ids),
                         remaining_seconds=remaining)
    num_running = status.totals()["running"]
    if remaining is not None and num_running:
        status.eta_seconds = remaining / num_running
    _driver_count(storage, sweep, status)
    stale = running & done
    if stale:
        status.warnings.append(f"{len(stale)} heartbeat(s) of finished cells left in {layout.folder(sweep, layout.RUNNING)}/")
    return status


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m"


def format_status(status: SweepStatus) -> str:
    rows = [("dataset", "student", "method", *STATES, "mean/cell")]
    for g in sorted(status.groups, key=lambda g: (g.dataset, g.student, g.method)):
        rows.append((g.dataset, g.student, g.method, *(str(getattr(g, s)) for s in STATES),
                     _duration(g.mean_seconds)))
    totals = status.totals()
    rows.append(("total", "", "", *(str(totals[s]) for s in STATES), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if j == 0 or j == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    num_cells = sum(totals.values())
    lines.append(f"{status.sweep}: {totals['done']}/{num_cells} cells done, {totals['running']} running, "
                 f"{totals['failed']} failed, {totals['pending']} pending")
    if status.waiting_for_resources is not None:
        lines.append(f"waiting for resources: {status.waiting_for_resources} (the driver's count "
                     f"{_duration(status.driver_seconds_ago)} ago), {totals['running']} running")
    elif status.driver_seconds_ago is not None:
        lines.append(f"waiting for resources: unknown (the driver's last count is {_duration(status.driver_seconds_ago)} "
                     "old: no driver is running?)")
    if status.remaining_seconds is None:
        lines.append("ETA: unknown until a cell has finished")
    elif totals["running"] + totals["pending"] == 0:
        lines.append("ETA: nothing left to run" + (" (rerun the sweep to retry failed cells)"
                                                   if totals["failed"] else ""))
    elif status.eta_seconds is None:
        lines.append(f"ETA: no cell is running ({_duration(status.remaining_seconds)} of cell time left)")
    else:
        lines.append(f"ETA: {_duration(status.eta_seconds)} at {totals['running']} cells at a time "
                     f"({_duration(status.remaining_seconds)} of cell time left)")
    if status.num_outside_grid:
        lines.append(f"{status.num_outside_grid} result(s) are not in this grid (from an earlier config)")
    lines.extend(f"warning: {w}" for w in status.warnings)
    return "\n".join(lines)
