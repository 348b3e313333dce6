"""Writing a sweep's frontier: one view (tables, figures, report.html) per cost model, the results
table as read, and the manifest last, so that whoever finds the manifest finds every file it lists
with the sha256 it lists (object storage has no transactions; `w2sweep.pull` relies on this).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass

import pandas as pd

from w2sweep import consistency, layout
from w2sweep.frontier.plots import plot_budget_table, plot_curves, plot_frontier
from w2sweep.frontier.read import (Inputs, Results, default_gpus, inputs_digest, read_inputs, read_results,
                                   resolve_budgets, resolve_gpu_hour_price)
from w2sweep.frontier import stats
from w2sweep.frontier.gap import no_signal, pgr, with_shared_ceilings, without_signal
from w2sweep.frontier.regimes import regimes
from w2sweep.frontier.tables import (AXES, DEFAULT_GPU_HOUR_PRICE, GROUP, MODELS, add_dataset_groups,
                                     budget_points, budget_table, curves, numeric, pareto_frontier, recost,
                                     usable, with_baselines)
from w2sweep.results import read_predictions
from w2sweep.storage import Storage

MANIFEST = "manifest.json"  # under <sweep>/frontier: what was computed, from which inputs


# ---- one view -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Aggregate:
    """The tables of one view of a sweep (one cost model)."""

    curves: pd.DataFrame
    frontier: pd.DataFrame
    regimes: pd.DataFrame
    budget_points: pd.DataFrame
    budget_table: pd.DataFrame  # with the baselines majority_rate and auroc_chance
    pgr: pd.DataFrame
    no_signal: pd.DataFrame  # (dataset, weak_supervisor, student) showing no signal, with the reason
    metric: str = "accuracy"


def aggregate(results: pd.DataFrame, *, tolerance: float = 0.01, axis: str = "label",
              gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE, label_unit_price: float = 1.0,
              budgets: list[float] | None = None, metric: str = "accuracy",
              confidence: float = stats.CONFIDENCE,
              predictions: dict[str, pd.DataFrame] | None = None,
              num_fractions: int | None = None) -> Aggregate:
    """curves -> frontier, regimes, budget table (on `metric`: "accuracy" or "auroc"), PGR and the
    no-signal diagnostic, with intervals at `confidence`. `predictions` ({cell_id: per-example
    predictions}) replace the result rows wherever a cell has them. `budgets` (label units) are the
    budget table's rows; None: every budget a fraction cell was run at. A ceiling run once per
    (dataset, student) enters every weak supervisor's tables (`gap.with_shared_ceilings`).
    `num_fractions`: the spending fractions the sweep asked for, the regimes' Bonferroni family."""
    stats.check_metric(metric)
    rows = stats.with_predictions(usable(results), predictions)  # once, for curves and regimes
    rows = with_shared_ceilings(rows)  # a ceiling run once per (dataset, student) is every weak supervisor's
    # Categorical names: every groupby and merge below works on integer codes, not strings.
    rows = rows.astype({column: "category" for column in GROUP if column in rows})
    table = curves(rows, confidence=confidence, predictions=predictions)
    if budgets is None:
        budgets = sorted(table.loc[table["spending_fraction"].notna(), "budget"].unique().tolist())
    points = budget_points(table, budgets=budgets, metric=metric)
    return Aggregate(
        curves=table,
        frontier=pareto_frontier(table, axis=axis, gpu_hour_price=gpu_hour_price,
                                 label_unit_price=label_unit_price, metric=metric),
        regimes=without_signal(regimes(table, tolerance=tolerance, confidence=confidence, metric=metric,
                                       results=rows, predictions=predictions, num_fractions=num_fractions), table),
        budget_points=points,
        budget_table=with_baselines(budget_table(points, metric=metric), table),
        pgr=pgr(table),
        no_signal=no_signal(table),
        metric=metric,
    )


def _fmt(value: float) -> str:
    return format(value, "g")


def view_outputs(agg: Aggregate, *, title: str, summary: dict, gpu_hour_price: float,
                 label_unit_price: float, unreadable: dict[str, str] | None = None,
                 checks=None) -> dict[str, bytes]:
    """The files of one view: CSVs, PNGs and report.html, by file name. `unreadable` ({key: reason})
    is listed in the report only; `checks` (`w2sweep.consistency.Consistency`) adds its CSVs and
    a report section."""
    from w2sweep.report import render_report

    images = {
        "curves.png": plot_curves(agg.curves, metric=agg.metric),
        "frontier.png": plot_frontier(agg.curves, agg.frontier, gpu_hour_price=gpu_hour_price,
                                      label_unit_price=label_unit_price, metric=agg.metric),
        "budget_table.png": plot_budget_table(agg.budget_points, agg.curves, metric=agg.metric),
    }
    tables = {
        "curves.csv": agg.curves,
        "frontier.csv": agg.frontier,
        "regimes.csv": agg.regimes,
        "budget_table.csv": agg.budget_table,
        "pgr.csv": agg.pgr,
        "no_signal.csv": agg.no_signal,
    }
    outputs = {name: frame.to_csv(index=False).encode() for name, frame in tables.items()}
    outputs.update(images)
    shown = dict(tables)
    if unreadable:
        shown["unreadable objects"] = pd.DataFrame(sorted(unreadable.items()), columns=["object", "reason"])
    warnings = [f"No signal: {' / '.join(map(str, g[:len(MODELS)]))}: {g[len(MODELS)]}"
                for g in agg.no_signal[MODELS + ["reason"]].itertuples(index=False)]
    checked = None if checks is None else checks.tables()
    outputs.update({name: frame.to_csv(index=False).encode() for name, frame in (checked or {}).items()})
    outputs["report.html"] = render_report(title=title, summary=summary, tables=shown, images=images,
                                           warnings=warnings, consistency=checked).encode()
    return outputs


def results_parquet(results: pd.DataFrame) -> bytes:
    """The results table as read (one row per readable cell object) as Parquet bytes. Columns whose
    values JSON mixed types into become strings rather than failing the frontier."""
    import pyarrow as pa

    frame = results.assign(**{c: numeric(results, c) for c in ("spending_fraction", "accuracy", "gpu_seconds")
                              if c in results})
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, index=False)
    except (pa.ArrowException, TypeError, ValueError):
        mixed = [c for c in frame.columns if frame[c].dtype == object]
        buffer = io.BytesIO()
        frame.astype({c: str for c in mixed}).to_parquet(buffer, index=False)
    return buffer.getvalue()


# ---- writing a sweep's frontier -------------------------------------------------------------------

def write_frontier(storage: Storage, sweep: str, *, tolerance: float = 0.01, axis: str = "label",
                   gpu_hour_price: float | None = None, label_unit_price: float = 1.0,
                   c_weak: list[float] = (), budgets: list[float] | None = None,
                   dataset_groups: dict[str, list[str]] | None = None, metric: str = "accuracy",
                   confidence: float = stats.CONFIDENCE, num_threads: int = 32) -> dict:
    """Read `sweep`'s results and the per-example predictions of the cells that stored them; write
    the CSVs, PNGs and report.html under ``<sweep>/frontier/`` (the results' own costs) and, for each
    value of `c_weak`, under ``<sweep>/frontier/c_weak=<v>/`` (re-costed, nothing re-run); then
    ``frontier/results.parquet`` (the results table as read) and last ``frontier/manifest.json``,
    listing every file with its sha256 and the inputs it was computed from.

    `metric` ("accuracy" or "auroc") is what curves' plots, the frontier, the regimes and the budget
    table rank by; every interval is at `confidence`. `gpu_hour_price` ($/GPU-hour): None takes
    sweep.yaml's ``gpu_hour_price`` (top level or under ``costs``), else DEFAULT_GPU_HOUR_PRICE.
    `budgets` (label units): the budget table's rows; None takes sweep.yaml's ``budgets``, else the
    results' budgets. Compute is each result's recorded ``gpu_seconds``; only older results, written
    before the runner recorded it, are estimated as wall_seconds x their ``config.resources.gpu``,
    else sweep.yaml's ``resources.gpu``, else 0 GPUs.

    Returns {"num_results", "num_ignored", "num_unreadable", "unreadable" (keys), "unreadable_reasons"
    ({key: reason}), "num_predictions" (cells whose predictions were used), "no_signal" ([{dataset,
    weak_supervisor, student, reason}], also in no_signal.csv), "keys" (written), "options" (as
    resolved)}. Raises ValueError when no cell has a usable result or an option is out of range.
    """
    _check_options(axis=axis, gpu_hour_price=gpu_hour_price, label_unit_price=label_unit_price,
                   metric=metric, confidence=confidence)
    # As asked (None: decided below from sweep.yaml or the results), kept so a later `pull` that
    # recomputes asks the same question of the new results.
    requested = dict(tolerance=tolerance, axis=axis, gpu_hour_price=gpu_hour_price,
                     label_unit_price=label_unit_price, c_weak=[float(v) for v in c_weak],
                     budgets=None if budgets is None else [float(b) for b in budgets],
                     dataset_groups={k: list(v) for k, v in (dataset_groups or {}).items()},
                     metric=metric, confidence=confidence)
    inputs = read_inputs(storage, sweep)
    gpu_hour_price, price_source = resolve_gpu_hour_price(inputs.settings, gpu_hour_price)
    budgets = resolve_budgets(inputs.settings, budgets)
    read = read_results(storage, sweep, inputs.keys, gpus_per_cell=default_gpus(inputs.settings),
                        num_threads=num_threads)
    predictions = read_predictions(storage, sweep, usable(read.table).get("cell_id", []), num_threads=num_threads)
    results = add_dataset_groups(read.table, dataset_groups or {})
    resolved = requested | dict(gpu_hour_price=gpu_hour_price, budgets=budgets)
    options = dict(tolerance=tolerance, axis=axis, gpu_hour_price=gpu_hour_price, label_unit_price=label_unit_price,
                   budgets=budgets, metric=metric, confidence=confidence)
    summary = _summary(storage, sweep, read, options, price_source=price_source, num_predictions=len(predictions))
    # The regimes' family is the fractions asked for: an adaptive sweep runs only some (w2sweep.search).
    options["num_fractions"] = len(inputs.settings.get("spending_fractions") or []) or None
    checks = consistency.for_frontier(storage, sweep, read.table, predictions)  # label prices change no prediction
    files: dict[str, bytes] = {}
    signal = None
    for price in [None, *map(float, c_weak)]:
        view, agg = _view_files(sweep, results, read.unreadable, summary, options, c_weak=price,
                                predictions=predictions, checks=checks if price is None else None)
        files.update(view)
        signal = agg.no_signal if signal is None else signal
    files["results.parquet"] = results_parquet(read.table)
    manifest = _manifest(sweep, inputs, files, requested=requested, resolved=resolved)
    written = _store(storage, sweep, files, manifest)
    num_read = len(read.table)
    return {
        "num_results": num_read,
        "num_ignored": num_read - read.num_usable,
        "num_unreadable": len(read.unreadable),
        "unreadable": sorted(read.unreadable),
        "unreadable_reasons": read.unreadable,
        "num_predictions": len(predictions),
        "no_signal": [{k: str(v) for k, v in r.items()} for r in signal[MODELS + ["reason"]].to_dict("records")],
        "keys": written,
        "options": resolved,
    }


def _check_options(*, axis: str, gpu_hour_price: float | None, label_unit_price: float, metric: str,
                   confidence: float) -> None:
    """Refuse a bad option before anything is read: a typo must not cost a read of every result."""
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}: allowed: {', '.join(AXES)}")
    for name, value in (("gpu_hour_price", gpu_hour_price), ("label_unit_price", label_unit_price)):
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name}={value!r}: must be a number >= 0 ($)")
    stats.check_metric(metric)
    stats.check_confidence(confidence)


def _summary(storage: Storage, sweep: str, read: Results, options: dict, *, price_source: str,
             num_predictions: int) -> dict:
    """The report's header: what was read and how every number was priced, so that a reader of
    report.html alone can tell a measured compute cost from an estimated one."""
    num_read = len(read.table)
    return {
        "sweep": sweep,
        "storage": storage.uri,
        "results read": num_read,
        "results ignored (not ok or no accuracy)": num_read - read.num_usable,
        "objects unreadable": len(read.unreadable),
        "cells with per-example predictions": num_predictions,
        "metric (frontier, regimes, budget table)": options["metric"],
        "confidence of every interval": options["confidence"],
        f"regime tolerance ({options['metric']})": options["tolerance"],
        "frontier axis": AXES[options["axis"]][1],
        "GPU-hour price ($)": f"{_fmt(options['gpu_hour_price'])} ({price_source})",
        "label unit price ($, total axis)": options["label_unit_price"],
        "compute cost from": ", ".join(f"{k}: {v}" for k, v in read.compute_source.items()),
    }


def _view_files(sweep: str, results: pd.DataFrame, unreadable: dict[str, str], summary: dict, options: dict,
                *, c_weak: float | None, predictions: dict, checks=None) -> tuple[dict[str, bytes], Aggregate]:
    """The files of one view by their name under ``frontier/``: the results' own label prices
    (`c_weak` None) at the top, a re-costed view (nothing re-run) in ``c_weak=<v>/``; and its tables."""
    view_results = results if c_weak is None else recost(results, c_weak=c_weak)
    agg = aggregate(view_results, predictions=predictions, **options)
    costs = sorted(set(zip(agg.curves["c_weak"], agg.curves["c_oracle"])))
    view_summary = summary | {
        "label prices (c_weak, c_oracle)": ", ".join(f"({_fmt(w)}, {_fmt(o)})" for w, o in costs)
        + ("" if c_weak is None else " (re-costed: n_weak and n_oracle as run)"),
    }
    title = f"w2sweep frontier: {sweep}" + ("" if c_weak is None else f" (c_weak = {_fmt(c_weak)})")
    prefix = "" if c_weak is None else f"c_weak={_fmt(c_weak)}/"
    outputs = view_outputs(agg, title=title, summary=view_summary, gpu_hour_price=options["gpu_hour_price"],
                           label_unit_price=options["label_unit_price"], unreadable=unreadable,
                           checks=checks)
    return {prefix + name: data for name, data in outputs.items()}, agg


def _manifest(sweep: str, inputs: Inputs, files: dict[str, bytes], *, requested: dict, resolved: dict) -> dict:
    """What was computed from what: `pull` compares ``inputs_digest`` to decide whether to recompute,
    re-asks ``options``, and checks every file it copies against its sha256."""
    return {
        "sweep": sweep,
        "inputs_digest": inputs_digest(inputs.keys, inputs.sweep_yaml),
        "num_cells": len(inputs.keys),
        "options": requested,
        "resolved": resolved,
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for name, data in files.items()},
    }


def _store(storage: Storage, sweep: str, files: dict[str, bytes], manifest: dict) -> list[str]:
    """Write `files` under ``<sweep>/frontier/``, then the manifest: the keys written, in order."""
    written = []
    for name, data in files.items():
        written.append(layout.frontier(sweep, name))
        storage.write_bytes(written[-1], data)
    written.append(manifest_key(sweep))
    storage.write_bytes(written[-1], json.dumps(manifest, indent=1, sort_keys=True).encode())
    return written


def manifest_key(sweep: str) -> str:
    return layout.frontier(sweep, MANIFEST)
