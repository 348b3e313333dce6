"""How far a sweep has come, from its storage alone (no Ray, no cluster connection).

Per dataset x student x method, each cell of the grid is in exactly one state, decided in this order:

    done     <sweep>/cells/<cell_id>.json exists (a result; final)
    running  <sweep>/running/<cell_id>.json exists and is fresh (the heartbeat a trial writes at its
             start, rewrites every `layout.HEARTBEAT_INTERVAL_S` and deletes at its end)
    failed   <sweep>/failures/<cell_id>.json exists (failed every attempt of its last run)
    stale    the heartbeat exists but was not rewritten for `layout.STALE_AFTER_INTERVALS` intervals
             (by its ``updated`` time, else ``started``, else the object's last-modified time): the
             trial's driver or node is gone; the next run of the sweep runs the cell again
    pending  none of these

The grid comes from <sweep>/sweep.yaml, the config as run. The ETA divides the remaining cell-seconds
of the running and pending cells (mean wall time of the group's finished cells, else of all finished
cells) by the number of cells running now; stale cells count in neither. With `failed=True` the
status also lists each failed cell's axes and the one-line error of its last attempt (`FailedCell`).
Cells waiting for resources are counted by the running driver alone: it writes <sweep>/progress.json
every few seconds (`w2sweep.sweep.progress`); an object older than `DRIVER_STALE_SECONDS` is ignored
(its driver is gone).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field

import yaml

from w2sweep import layout
from w2sweep.cell_objects import FailedCell, failed_cells, last_beats, listed, wall_seconds
from w2sweep.storage import Storage, StorageError

STATES = ("done", "running", "failed", "pending")  # the states every status shows
DRIVER_STALE_SECONDS = 180.0  # the driver rewrites progress.json at least every minute while it runs
STALE = "stale"  # shown beside them (table column, `totals` key) only when some heartbeat is stale


def stale_after_seconds() -> float:
    """Age beyond which a heartbeat is stale."""
    return layout.HEARTBEAT_INTERVAL_S * layout.STALE_AFTER_INTERVALS


@dataclass
class GroupStatus:
    dataset: str
    student: str
    method: str
    done: int = 0
    running: int = 0
    failed: int = 0
    pending: int = 0
    stale: int = 0  # a heartbeat left by a trial whose driver or node is gone
    mean_seconds: float | None = None  # mean wall time of the finished cells read, seconds

    @property
    def total(self) -> int:
        return self.done + self.running + self.failed + self.pending + self.stale


@dataclass
class SweepStatus:
    sweep: str
    groups: list[GroupStatus]
    num_outside_grid: int = 0  # results whose cell is not in sweep.yaml's grid (an older config)
    remaining_seconds: float | None = None  # cell-seconds left: running + pending cells x mean wall time
    eta_seconds: float | None = None  # remaining_seconds / cells running now; None when none runs
    warnings: list[str] = field(default_factory=list)
    failed: list[FailedCell] | None = None  # the failed cells; None unless asked for (`failed=True`)
    waiting_for_resources: int | None = None  # the live driver's count; None without a fresh progress.json
    driver_seconds_ago: float | None = None  # age of progress.json, when there is one

    def states(self) -> tuple[str, ...]:
        """The states shown: `STATES`, and `STALE` after ``running`` when some cell is stale."""
        if any(g.stale for g in self.groups):
            return STATES[:2] + (STALE,) + STATES[2:]
        return STATES

    def totals(self) -> dict[str, int]:
        return {s: sum(getattr(g, s) for g in self.groups) for s in self.states()}

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
        raise StatusError(f"status error: {storage.url(key)}: no such sweep (sweep.yaml is written when a "
                          "sweep starts)") from None
    except yaml.YAMLError:
        raise StatusError(f"status error: {storage.url(key)}: not valid YAML") from None
    try:
        with warnings.catch_warnings():  # options the run already warned about: not news here
            warnings.simplefilter("ignore")
            # The schema checks the values only (data files and models are looked up when a sweep is
            # planned), so a snapshot of a sweep that ran elsewhere parses here too.
            config = parse_config(raw)
    except ConfigError as e:
        raise StatusError(f"status error: sweep.yaml does not describe a sweep ({e.lines[0]})") from None
    return expand_cells(config)


def _state(cell_id: str, done: set[str], running: set[str], failed: set[str], stale: set[str]) -> str:
    if cell_id in done:
        return "done"
    if cell_id in running:
        return "running"
    if cell_id in failed:  # a trial that died with its node also leaves a stale heartbeat behind
        return "failed"
    return "stale" if cell_id in stale else "pending"


def _remaining(groups: dict, durations: dict) -> float | None:
    """Cell-seconds left over every group's running and pending cells; sets each group's mean."""
    everything = [s for d in durations.values() for s in d]
    if not everything:
        return None
    overall = sum(everything) / len(everything)
    remaining = 0.0
    for key, group in groups.items():
        if key in durations:
            group.mean_seconds = sum(durations[key]) / len(durations[key])
        mean = group.mean_seconds if group.mean_seconds is not None else overall
        remaining += (group.running + group.pending) * mean
    return remaining


def sweep_status(storage: Storage, sweep: str, *, failed: bool = False, now: float | None = None) -> SweepStatus:
    """The sweep's status; with `failed`, also its failed cells (`SweepStatus.failed`). `now`
    (epoch seconds, default the clock) is what heartbeats' ages are measured against."""
    cells = _grid(storage, sweep)
    done = set(listed(storage, layout.folder(sweep, layout.RESULTS)))
    beats = listed(storage, layout.folder(sweep, layout.RUNNING))
    failures = set(listed(storage, layout.folder(sweep, layout.FAILURES)))
    grid_ids = {c.cell_id for c in cells}
    seconds = wall_seconds(storage, [layout.result(sweep, i) for i in sorted(done & grid_ids)])
    now = time.time() if now is None else now
    last = last_beats(storage, sweep, {i: t for i, t in beats.items() if i in grid_ids - done})
    stale = {i for i, t in last.items() if now - t > stale_after_seconds()}
    fresh = set(last) - stale

    groups: dict[tuple[str, str, str], GroupStatus] = {}
    durations: dict[tuple[str, str, str], list[float]] = {}
    states = {}
    for cell in cells:
        key = (cell.dataset.name, cell.student.label, cell.method)
        group = groups.setdefault(key, GroupStatus(*key))
        i = cell.cell_id
        states[i] = _state(i, done, fresh, failures, stale)
        setattr(group, states[i], getattr(group, states[i]) + 1)
        if i in seconds:
            durations.setdefault(key, []).append(seconds[i])

    remaining = _remaining(groups, durations)
    status = SweepStatus(sweep=sweep, groups=list(groups.values()), num_outside_grid=len(done - grid_ids),
                         remaining_seconds=remaining)
    num_running = status.totals()["running"]
    if remaining is not None and num_running:
        status.eta_seconds = remaining / num_running
    left = set(beats) & done
    if left:
        status.warnings.append(f"{len(left)} heartbeat(s) of finished cells left in {layout.folder(sweep, layout.RUNNING)}/")
    if failed:
        status.failed = failed_cells(storage, sweep, [c for c in cells if states[c.cell_id] == "failed"])
    _driver_count(storage, sweep, status)
    return status


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


def _table(rows: list[tuple[str, ...]], *, right: range, rules: tuple[int, ...]) -> list[str]:
    """`rows` as aligned text: the columns in `right` aligned to the right, the others to the left; a
    rule under each row index in `rules`."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if j in rules:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _eta_line(status: SweepStatus, totals: dict[str, int]) -> str:
    if status.remaining_seconds is None:
        return "ETA: unknown until a cell has finished"
    if totals["running"] + totals["pending"] == 0:
        return "ETA: nothing left to run" + (" (rerun the sweep to retry failed cells)" if totals["failed"] else "")
    if status.eta_seconds is None:
        return f"ETA: no cell is running ({_duration(status.remaining_seconds)} of cell time left)"
    return (f"ETA: {_duration(status.eta_seconds)} at {totals['running']} cells at a time "
            f"({_duration(status.remaining_seconds)} of cell time left)")


def format_status(status: SweepStatus) -> str:
    states = status.states()
    rows = [("dataset", "student", "method", *states, "mean/cell")]
    for g in sorted(status.groups, key=lambda g: (g.dataset, g.student, g.method)):
        rows.append((g.dataset, g.student, g.method, *(str(getattr(g, s)) for s in states),
                     _duration(g.mean_seconds)))
    totals = status.totals()
    rows.append(("total", "", "", *(str(totals[s]) for s in states), ""))
    lines = _table(rows, right=range(3, len(rows[0])), rules=(0, len(rows) - 2))
    num_cells = sum(totals.values())
    counts = ", ".join(f"{totals[s]} {s}" for s in states[1:])
    lines.append(f"{status.sweep}: {totals['done']}/{num_cells} cells done, {counts}")
    if status.waiting_for_resources is not None:
        lines.append(f"waiting for resources: {status.waiting_for_resources} (the driver's count "
                     f"{_duration(status.driver_seconds_ago)} ago), {totals['running']} running")
    elif status.driver_seconds_ago is not None:
        lines.append(f"waiting for resources: unknown (the driver's last count is {_duration(status.driver_seconds_ago)} "
                     "old: no driver is running?)")
    lines.append(_eta_line(status, totals))
    if totals.get(STALE):
        lines.append(f"{totals[STALE]} stale cell(s): heartbeat not rewritten for over "
                     f"{_duration(stale_after_seconds())} (driver or node gone); rerun the sweep to run them again")
    if status.num_outside_grid:
        lines.append(f"{status.num_outside_grid} result(s) are not in this grid (from an earlier config)")
    lines.extend(f"warning: {w}" for w in status.warnings)
    if status.failed is not None:
        lines.extend(["", *format_failed(status.failed)])
    return "\n".join(lines)


def format_failed(failed: list[FailedCell]) -> list[str]:
    """The failed cells as a table: axes, then the one-line error of the last attempt."""
    if not failed:
        return ["no failed cells"]
    rows = [("cell", "dataset", "weak supervisor", "student", "method", "budget", "f", "seed", "error")]
    for c in sorted(failed, key=lambda c: (c.dataset, c.weak_supervisor, c.student, c.method, c.budget,
                                           c.spending_fraction if c.spending_fraction is not None else 2.0,
                                           c.n_oracle, c.seed)):
        f = f"{c.spending_fraction:g}" if c.spending_fraction is not None else f"pair {c.n_weak}w/{c.n_oracle}o"
        rows.append((c.cell_id, c.dataset, c.weak_supervisor, c.student, c.method, f"{c.budget:g}", f,
                     str(c.seed), c.error))
    return [f"failed cells ({len(failed)}), with the last attempt's error:", *_table(rows, right=range(5, 8), rules=(0,))]
