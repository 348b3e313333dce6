"""The storage layout: every key under ``<sweep>/`` is built here, and nowhere else.

Keys are relative to a storage root (`w2sweep.storage.Storage`); a sweep owns one folder::

    <sweep>/sweep.yaml                     the resolved config, as run
    <sweep>/progress.json                  the running driver's count of cells running and waiting
    <sweep>/weak_labels/<key>.parquet      weak supervisor outputs, one per content key
    <sweep>/features/<key>.parquet         a head-only student's frozen-body features
    <sweep>/predictions/<cell_id>.parquet  per-example test predictions, written before the result
    <sweep>/cells/<cell_id>.json           one result per finished cell: the 'done' marker
    <sweep>/running/<cell_id>.json         the heartbeat of a cell that runs now (`HEARTBEAT_INTERVAL_S`)
    <sweep>/failures/<cell_id>.json        the last error of a cell that failed every attempt
    <sweep>/checkpoints/<cell_id>/         training state for resuming an interrupted cell
    <sweep>/logs/<file>                    Ray's logs and tracebacks of a run (local storage roots)
    <sweep>/tune/                          Ray Tune's experiment state
    <sweep>/frontier/<file>                CSVs, plots, report.html and their manifest

Nothing here imports anything: a key is a string.

A heartbeat (``running/<cell_id>.json``) is a JSON object ``{"cell_id", "started", "updated", "host"}``:
``started`` is when the trial began and ``updated`` when the heartbeat was last rewritten, both in
seconds since the epoch (``time.time()``). A trial rewrites it every `HEARTBEAT_INTERVAL_S` seconds
and deletes it when the cell ends. `w2sweep status` calls a heartbeat older than
`STALE_AFTER_INTERVALS` intervals (by ``updated``, else ``started``, else the object's last-modified
time) stale: its driver or node is gone.
"""

from __future__ import annotations

SWEEP_YAML = "sweep.yaml"
PROGRESS = "progress.json"
RESULTS = "cells"
RUNNING = "running"
FAILURES = "failures"
WEAK_LABELS = "weak_labels"
FEATURES = "features"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
TUNE = "tune"
FRONTIER = "frontier"
LOGS = "logs"

# How often a running cell's trial rewrites its heartbeat (``running/<cell_id>.json``, field
# ``updated``, epoch seconds); a reader calls it stale after 3 intervals without a write.
HEARTBEAT_INTERVAL_S = 30

HEARTBEAT_INTERVAL_S = 30.0  # seconds between rewrites of a running cell's heartbeat
STALE_AFTER_INTERVALS = 3  # a heartbeat not rewritten for this many intervals is stale


def sweep_yaml(sweep: str) -> str:
    return f"{sweep}/{SWEEP_YAML}"


def progress(sweep: str) -> str:
    """Written by the driver of a running sweep every few seconds, deleted when it ends."""
    return f"{sweep}/{PROGRESS}"


def folder(sweep: str, name: str) -> str:
    """One of the sweep's folders (`RESULTS`, `RUNNING`, ...), as a key prefix without a trailing slash."""
    return f"{sweep}/{name}"


def result(sweep: str, cell_id: str) -> str:
    return f"{sweep}/{RESULTS}/{cell_id}.json"


def running(sweep: str, cell_id: str) -> str:
    return f"{sweep}/{RUNNING}/{cell_id}.json"


def failure(sweep: str, cell_id: str) -> str:
    return f"{sweep}/{FAILURES}/{cell_id}.json"


def predictions(sweep: str, cell_id: str) -> str:
    return f"{sweep}/{PREDICTIONS}/{cell_id}.parquet"


def weak_labels(sweep: str, key: str) -> str:
    return f"{sweep}/{WEAK_LABELS}/{key}.parquet"


def features(sweep: str, key: str) -> str:
    return f"{sweep}/{FEATURES}/{key}.parquet"


def checkpoints(sweep: str, cell_id: str | None = None) -> str:
    """The sweep's checkpoint folder, or one cell's folder in it."""
    base = f"{sweep}/{CHECKPOINTS}"
    return base if cell_id is None else f"{base}/{cell_id}"


def checkpoint_latest(sweep: str, cell_id: str) -> str:
    """A one-worker cell's pointer to its last complete checkpoint (`checkpoint_version`)."""
    return f"{checkpoints(sweep, cell_id)}/latest.json"


def checkpoint_version(sweep: str, cell_id: str, version: str) -> str:
    """One saved training state of a one-worker cell: a folder, complete once the pointer names it."""
    return f"{checkpoints(sweep, cell_id)}/{version}"


def logs(sweep: str, name: str) -> str:
    return f"{sweep}/{LOGS}/{name}"


def frontier(sweep: str, name: str | None = None) -> str:
    """The sweep's frontier folder, or one file in it."""
    base = f"{sweep}/{FRONTIER}"
    return base if name is None else f"{base}/{name}"
