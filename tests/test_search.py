"""`search: adaptive`: the decisions (`w2sweep.search`, no Ray) on planted tables with known answers,
the per-budget cell limit, cells that are the grid's own, and a live run through `run_sweep`."""

import math

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from w2sweep.config import ConfigError, parse_config
from w2sweep.frontier import curves, regimes
from w2sweep.grid import expand_cells, plan
from w2sweep.search import Observation, Options, choose, next_cells

FRACTIONS = [round(0.05 * i, 2) for i in range(21)]
SEEDS = [0, 1, 2, 3, 4]
PLANTED = [  # (true curve, its regime, its best fraction)
    (lambda f: 0.80 - 0.15 * f ** 1.2, "quantity-dominant", 0.0),
    (lambda f: 0.85 - 0.40 * (f - 0.3) ** 2, "mixed", 0.3),
    (lambda f: 0.88 - 0.60 * (f - 0.8) ** 2, "mixed", 0.8),
    (lambda f: 0.70 + 0.18 * f ** 0.7, "quality-dominant", 1.0),
]


def planted(curve, seed: int, noise: float = 0.005) -> dict:
    """A recorded full grid: the curve, a per-seed offset and per-cell noise (accuracy sd `noise` each)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, noise, len(SEEDS))
    return {(f, s): Observation(a := curve(f) + offsets[s] + rng.normal(0, noise), a - 0.035, a + 0.035)
            for f in FRACTIONS for s in SEEDS}


def replay(table: dict, options: Options) -> tuple[dict, str]:
    observed = {}
    while True:
        decision = next_cells(FRACTIONS, SEEDS, observed, options, num_fractions=len(FRACTIONS))
        if not decision.run:
            return observed, decision.reason
        assert not set(decision.run) & set(observed), "a cell is never proposed twice"
        observed.update({point: table[point] for point in decision.run})


def answer(cells: dict) -> tuple[float, str]:
    rows = pd.DataFrame([dict(dataset="d", weak_supervisor="w", student="s", method="seq-sft", budget=8.0,
                              spending_fraction=f, seed=s, n_weak=0, n_oracle=0, label_cost=8.0, c_weak=0.1,
                              c_oracle=1.0, accuracy=o.accuracy, accuracy_ci_low=o.ci_low,
                              accuracy_ci_high=o.ci_high, auroc=math.nan, status="ok", cell_id=f"{f}-{s}")
                         for (f, s), o in cells.items()])
    row = regimes(curves(rows), tolerance=0.01, results=rows, num_fractions=len(FRACTIONS)).iloc[0]
    return float(row["best_fraction"]), row["regime"]


def test_search_finds_the_grids_best_and_regime_with_a_third_of_the_cells():
    """Per budget the grid's regime and a best within tolerance; a third of the cells over all budgets
    (a mixed budget whose regime hinges on a tie near the peak takes more, a monotone one fewer)."""
    num_cells = num_grid = 0
    for curve, regime, best in PLANTED:
        for draw in range(3):
            table = planted(curve, draw)
            observed, reason = replay(table, Options(coarse_seeds=3))
            chosen, found = answer(observed)
            assert reason == "identified"
            assert curve(best) - curve(chosen) <= 0.01  # within tolerance of the true best
            assert found == regime == answer(table)[1]
            num_cells, num_grid = num_cells + len(observed), num_grid + len(table)
    assert num_cells * 3 <= num_grid


def test_the_regime_family_is_the_fractions_asked_for_not_those_run():
    """Running fewer fractions must not make a claim easier: 3 of 21 fractions run are tested at the
    Bonferroni level of 21, as the grid would be."""
    cells = {(f, s): Observation(acc + 0.004 * (-1) ** s * (f == 0.5))
             for f, acc in ((0.0, 0.80), (0.5, 0.83), (1.0, 0.70)) for s in SEEDS}
    rows = pd.DataFrame([dict(dataset="d", weak_supervisor="w", student="s", method="seq-sft", budget=8.0,
                              spending_fraction=f, seed=s, accuracy=o.accuracy, accuracy_ci_low=math.nan,
                              accuracy_ci_high=math.nan, status="ok", cell_id=f"{f}-{s}", n_weak=0, n_oracle=0,
                              label_cost=8.0, c_weak=0.1, c_oracle=1.0, auroc=math.nan)
                         for (f, s), o in cells.items()])
    run, asked = (regimes(curves(rows), tolerance=0.01, results=rows, num_fractions=k).iloc[0] for k in (None, 21))
    assert run["diff_0_low"] > asked["diff_0_low"]  # the wider family widens the interval
    assert regimes(curves(rows), tolerance=0.01, results=rows, num_fractions=2).iloc[0]["diff_0_low"] == \
        run["diff_0_low"]  # never narrower than the fractions run


def test_the_per_budget_cell_limit_is_respected():
    table = planted(PLANTED[1][0], 0)
    observed, reason = replay(table, Options(coarse_seeds=3, max_cells_per_budget=10))
    assert len(observed) == 10 and reason == "cell limit reached"


def test_seeds_are_added_only_where_the_best_is_not_separable():
    flat = {(f, s): Observation(0.8 + 0.001 * s + (0.02 if (f, s) == (0.5, 0) else 0.0))
            for f in FRACTIONS for s in SEEDS}  # one lucky seed: f=0.5 looks best on seed 0 alone
    observed, _ = replay(flat, Options(coarse_seeds=1, tolerance=0.001))
    assert {s for _, s in observed} != {0}  # more seeds were asked for
    clear = planted(PLANTED[0][0], 0)
    observed, _ = replay(clear, Options(coarse_seeds=5))
    assert len(observed) < 5 * 5


def tiny(tmp_path, **overrides) -> dict:
    return tiny_config(str(tmp_path / "store"), **{
        "budgets": [16], "spending_fractions": [round(0.1 * i, 1) for i in range(11)], **overrides})


def test_search_fields_parse_and_do_not_change_cell_ids(tmp_path):
    grid = parse_config(tiny(tmp_path))
    adaptive = parse_config(tiny(tmp_path, search="adaptive", search_options=dict(
        tolerance=0.02, coarse_fractions=[0, 1], coarse_seeds=1, max_cells_per_budget=4)))
    assert grid.search == "grid" and adaptive.search_options.max_cells_per_budget == 4
    assert [c.cell_id for c in expand_cells(grid)] == [c.cell_id for c in expand_cells(adaptive)]
    for bad in (dict(search="random"), dict(search_options=dict(tolerance=-1)),
                dict(search_options=dict(max_cells_per_budget=0)), dict(search_options=dict(colour=1))):
        with pytest.raises(ConfigError):
            parse_config(tiny(tmp_path, **bad))


def test_the_search_chooses_the_grids_own_cells(tmp_path):
    config = parse_config(tiny(tmp_path, seeds=[0, 1, 2], budgets=[4, 16], pairs=[[10, 1]], ceiling=True,
                               search="adaptive", search_options=dict(coarse_seeds=2)))
    config, cells = plan(config)  # what `w2sweep run` runs
    ids = {c.cell_id for c in cells}
    options = Options.of(config.search_options)
    observed: dict[str, Observation] = {}
    first = True
    while chosen := choose(cells, observed, options):
        assert {c.cell_id for c in chosen} <= ids and not {c.cell_id for c in chosen} & set(observed)
        if first:  # explicit pairs and ceiling cells need no search: they run at once
            assert {c.cell_id for c in cells if c.spending_fraction is None or c.method == "ceiling"} <= {
                c.cell_id for c in chosen}
            first = False
        observed.update({c.cell_id: Observation(0.8 - (c.spending_fraction or 0) ** 2 / 10 + c.seed / 1000)
                         for c in chosen})
    assert len(observed) < len(cells) / 2
    # budget 4 buys only 0-4 oracle labels: fractions buying the same labels are one candidate
    assert {c.spending_fraction for c in cells if c.cell_id in observed and c.budget == 4} <= {0.0, 0.3, 0.5, 0.8, 1.0}


@pytest.mark.ray
def test_a_live_adaptive_run_runs_fewer_cells_and_a_rerun_runs_nothing(tmp_path, capsys):
    from w2sweep.results import cell_keys
    from w2sweep.storage import Storage
    from w2sweep.sweep import run_sweep

    config = parse_config(tiny(tmp_path, search="adaptive", search_options=dict(max_cells_per_budget=5)))
    grid_ids = {c.cell_id for c in expand_cells(config)}
    with capsys.disabled():  # Tune pickles the progress bar with the stream it writes to
        report = run_sweep(config)
        rerun = run_sweep(config)
    storage = Storage.from_uri(config.storage)
    stored = {k.rsplit("/", 1)[1].removesuffix(".json") for k in cell_keys(storage, "tiny")}
    assert report.failed == {} and report.num_grid == len(grid_ids) == 11
    assert 3 <= report.num_done == len(stored) <= 5 and stored <= grid_ids
    assert (rerun.num_done, rerun.num_rounds, rerun.num_skipped) == (0, 0, report.num_done)


def test_a_round_with_a_failed_cell_ends_the_search(tmp_path):
    """Tune reports the unfinished cells of a run stopped with Ctrl-C as failed: the search must stop
    there, not choose its next round without them."""
    from types import SimpleNamespace

    from w2sweep.sweep.adaptive import run_adaptive

    config = parse_config(tiny(tmp_path, search="adaptive"))
    rounds = []

    def interrupted(config, *, cells, **_):
        rounds.append(cells)
        return SimpleNamespace(num_cells=len(cells), num_skipped=0, num_done=0,
                               failed={c.cell_id: "the trial ended without a result" for c in cells})

    report = run_adaptive(config, interrupted)
    assert len(rounds) == 1 and len(report.failed) == 3 and report.num_rounds == 1


def test_a_unit_whose_ceiling_is_at_chance_adds_no_seeds(tmp_path):
    """The frontier gives a group whose ceiling is at chance no regime (`without_signal`), so its units run
    the coarse round and bracket the best on the coarse seeds, and never add a seed; other groups do."""
    fractions, seeds = [0.0, 0.25, 0.5, 0.75, 1.0], [0, 1, 2]
    options = Options(coarse_seeds=2)

    def run(at_chance: bool) -> dict:
        observed = {}
        while decision := next_cells(fractions, seeds, observed, options, at_chance=at_chance).run:
            observed.update({(f, s): Observation(0.7 + 0.05 * f - 0.1 * (f - 0.6) ** 2 + 0.001 * s)
                             for f, s in decision})
        return observed

    silent, signal = run(True), run(False)
    assert {s for _, s in silent} == {0, 1} and 2 in {s for _, s in signal}
    assert {f for f, _ in silent} > {0.0, 0.5, 1.0}  # bracketed beyond the coarse round
    assert next_cells(fractions, seeds, silent, options, at_chance=True).reason.startswith("no signal")

    config = parse_config(tiny(tmp_path, seeds=[0, 1, 2], budgets=[4, 16], search="adaptive",
                               search_options=dict(coarse_seeds=2)))
    cells = expand_cells(config)
    for at_chance, seeds_run in ((frozenset({(cells[0].dataset.name, "none", cells[0].student.label)}), {0, 1}),
                                 (frozenset(), {0, 1, 2})):  # a shared ceiling's key; then no group at chance
        observed_ids: dict[str, Observation] = {}
        while chosen := choose(cells, observed_ids, Options.of(config.search_options), at_chance=at_chance):
            observed_ids.update({c.cell_id: Observation(0.7 + 0.05 * (c.spending_fraction or 0)) for c in chosen})
        assert {c.seed for c in cells if c.cell_id in observed_ids and c.spending_fraction is not None} == seeds_run
