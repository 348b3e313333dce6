"""What a sweep's frontier is computed from: its result objects and its sweep.yaml, resolved into
the options the frontier is drawn with, and the digest by which `pull` knows a stored frontier is
still current.

Result objects are parsed only by `w2sweep.results.read_cells`, the one reader of the result schema;
this module adds what only the frontier needs: sweep.yaml's defaults for prices, budgets and the GPUs
of older results that did not record their GPU-seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from w2sweep import layout
from w2sweep.frontier.stats import numeric
from w2sweep.frontier.tables import DEFAULT_GPU_HOUR_PRICE, usable
from w2sweep.results import cell_keys, read_cells
from w2sweep.storage import Storage


@dataclass(frozen=True)
class Inputs:
    """A sweep's inputs as found, read once so that the frontier and its manifest's digest agree."""

    keys: list[str]  # the result objects, sorted
    sweep_yaml: bytes  # b"" when the sweep has none
    settings: dict  # sweep.yaml parsed; {} when absent or unreadable


def read_inputs(storage: Storage, sweep: str) -> Inputs:
    """The keys of the sweep's results and its sweep.yaml (raw, for the digest, and parsed)."""
    keys = cell_keys(storage, sweep)
    key = layout.sweep_yaml(sweep)
    raw = storage.read_bytes(key) if storage.exists(key) else b""
    return Inputs(keys=keys, sweep_yaml=raw, settings=read_sweep_yaml(storage, sweep))


def read_sweep_yaml(storage: Storage, sweep: str) -> dict:
    """``<sweep>/sweep.yaml`` as a dict; {} when absent or unreadable (hand-made results have none)."""
    import yaml

    key = layout.sweep_yaml(sweep)
    try:
        if not storage.exists(key):
            return {}
        loaded = yaml.safe_load(storage.read_bytes(key))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def inputs_digest(keys: list[str], sweep_yaml: bytes) -> str:
    """What the frontier was computed from: the set of cell keys (written once, never changed) and
    sweep.yaml. A new result, a deleted one or an edited sweep.yaml changes it."""
    h = hashlib.sha256()
    for key in sorted(keys):
        h.update(key.encode() + b"\n")
    h.update(b"\0sweep.yaml\0" + sweep_yaml)
    return h.hexdigest()


def resolve_gpu_hour_price(settings: dict, requested: float | None) -> tuple[float, str]:
    """($ per GPU-hour, where it came from): the report says which, since a price silently taken
    from a default would make compute costs look measured."""
    if requested is not None:
        return requested, "--gpu-hour-price"
    from_yaml = settings.get("gpu_hour_price", (settings.get("costs") or {}).get("gpu_hour_price"))
    return (float(from_yaml), "sweep.yaml") if from_yaml is not None else (DEFAULT_GPU_HOUR_PRICE, "default")


def resolve_budgets(settings: dict, requested: list[float] | None) -> list[float] | None:
    """The budget table's rows: as asked, else sweep.yaml's ``budgets``, else None (the results')."""
    if requested is None and settings.get("budgets"):
        return [float(b) for b in settings["budgets"]]
    return requested


def default_gpus(settings: dict) -> float:
    """GPUs per cell for older results that recorded neither GPU-seconds nor their own GPUs:
    sweep.yaml's ``resources.gpu``, else 0."""
    return float((settings.get("resources") or {}).get("gpu") or 0.0)


@dataclass(frozen=True)
class Results:
    """The sweep's results as read, with the counts the report shows next to the answer."""

    table: pd.DataFrame  # one row per readable object, ``gpus_per_cell`` filled with the default
    unreadable: dict[str, str]  # {key: one-line reason}
    num_usable: int  # rows that enter the statistics (status "ok", finite accuracy)
    compute_source: dict[str, int]  # how many rows' GPU-seconds were recorded, estimated, or 0


def read_results(storage: Storage, sweep: str, keys: list[str], *, gpus_per_cell: float,
                 num_threads: int = 32) -> Results:
    """Read every result through `w2sweep.results.read_cells`, filling an unknown GPU count with
    `gpus_per_cell` (`default_gpus`); raises ValueError when none is usable, since a frontier of
    nothing would look like an answer."""
    table, unreadable = read_cells(storage, keys, num_threads=num_threads)
    num_usable = len(usable(table))
    if num_usable == 0:
        raise ValueError(f"no finished cells under {layout.folder(sweep, layout.RESULTS)}")
    gpus = numeric(table, "gpus_per_cell").fillna(gpus_per_cell)
    table = table.assign(gpus_per_cell=gpus)
    measured = numeric(table, "gpu_seconds").notna()
    compute_source = {
        "gpu_seconds recorded": int(measured.sum()),
        "wall_seconds x GPUs per cell": int((~measured & (gpus > 0)).sum()),
        "no GPU (0)": int((~measured & (gpus <= 0)).sum()),
    }
    return Results(table=table, unreadable=unreadable, num_usable=num_usable, compute_source=compute_source)
