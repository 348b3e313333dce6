"""`search: adaptive`: rounds of `run_sweep` over the cells `w2sweep.search` chooses from the results so far.

Why rounds of Tune runs and not a Tune `Searcher`: a Searcher suggests configs from a search space
for trials Tune numbers itself, and learns from the metrics those trials report. Here the cells are a
fixed, finite set whose ids (and result objects) exist before anything runs, and the results that
decide the next step live in storage, not in Tune: cells finished by an earlier run (or another
process) must count, failed ones must not loop, and a re-run must reach the same decisions without
training. Each round is therefore a plain `run_sweep` over chosen grid cells, which keeps dedup,
resume, failure records and progress exactly as for a grid; the decisions are a pure function of
storage (`w2sweep.search.choose`), and the cost of a round boundary is one Tune start (seconds),
small beside a cell's training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from w2sweep.frontier import CEILING_METHOD, MODELS, at_chance, curves
from w2sweep.grid import expand_cells
from w2sweep.results import cell_key, read_cells
from w2sweep.search import Observation, Options, choose
from w2sweep.storage import Storage


@dataclass
class AdaptiveReport:
    """`SweepReport`'s fields over the cells the search chose, with the grid's size and the rounds taken."""

    num_cells: int  # cells the search chose
    num_skipped: int  # of those, already had a result before this run
    num_done: int  # finished in this run
    failed: dict[str, str] = field(default_factory=dict)  # cell id -> one-line error
    num_grid: int = 0  # cells the full grid has
    num_rounds: int = 0  # rounds that had cells to train


def attempted_results(storage: Storage, sweep: str, attempted: list) -> pd.DataFrame:
    """The result rows of the cells in `attempted` that have one (read once per round)."""
    keys = [cell_key(sweep, c.cell_id) for c in attempted]
    rows, _ = read_cells(storage, [k for k in keys if storage.exists(k)])
    return rows


def observations(rows: pd.DataFrame, attempted: list) -> dict[str, Observation]:
    """cell id -> its result's accuracy and stored interval; NaN for a cell without a readable result
    (failed, or its result unreadable): attempted, so never chosen again in this run."""
    found = {}
    for row in rows.to_dict("records"):
        ok = row.get("status") == "ok"
        found[row["cell_id"]] = Observation(
            float(row["accuracy"]) if ok else math.nan,
            float(row.get("accuracy_ci_low") or math.nan), float(row.get("accuracy_ci_high") or math.nan))
    return {c.cell_id: found.get(c.cell_id, Observation(math.nan)) for c in attempted}


def ceilings_at_chance(rows: pd.DataFrame) -> frozenset[tuple]:
    """(dataset, weak supervisor, student) of the finished ceiling cells among `rows` whose AUROC
    interval does not exclude 0.5, by the frontier's own rule (`w2sweep.frontier.at_chance`): those
    groups get no regime, so the search adds no seeds to their units. From the result rows
    (a one-seed ceiling's interval is its stored one, where the frontier bootstraps its predictions;
    from two seeds on the two agree)."""
    if rows.empty:
        return frozenset()
    found = at_chance(curves(rows[rows["method"] == CEILING_METHOD]))
    return frozenset(map(tuple, found[MODELS].astype(str).to_numpy()))


def run_adaptive(config, run_sweep, **run_options) -> AdaptiveReport:
    """Run `config`'s search: choose cells, run those without a result (`run_sweep(config, cells=...)`),
    read their results, choose again, until the search chooses nothing new or a round has a failed
    cell. `run_options` pass to `run_sweep` (`run`, `run_on_workers`); `run_sweep` is passed in by
    `w2sweep.sweep.run.run_sweep`, which calls this, so the two modules do not import each other."""
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)  # with `grids:`, their union: the search chooses within it
    options = Options.of(config.search_options)
    report = AdaptiveReport(num_cells=0, num_skipped=0, num_done=0, num_grid=len(cells))
    attempted: list = []  # cells chosen so far
    while True:
        rows = attempted_results(storage, config.name, attempted)
        chosen = choose(cells, observations(rows, attempted), options, num_fractions=len(config.spending_fractions),
                        at_chance=ceilings_at_chance(rows))
        if not chosen:
            break
        attempted += chosen
        round_report = run_sweep(config, cells=chosen, **run_options)
        report.num_cells += round_report.num_cells
        report.num_skipped += round_report.num_skipped
        report.num_done += round_report.num_done
        report.failed.update(round_report.failed)
        report.num_rounds += round_report.num_skipped < round_report.num_cells
        if round_report.failed:
            # A cell that failed (or a run stopped with Ctrl-C, whose unfinished cells Tune reports as
            # failed) ends the search here: the next round would be chosen without those results. A
            # re-run retries them and continues from the stored results.
            break
    return report
