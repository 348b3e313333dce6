"""Curves, frontiers, regimes, budget tables, PGR and re-costing on hand-made result tables whose
answers are known by construction."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pandas as pd
import pytest

from w2sweep.costs import label_cost, label_counts
from w2sweep.frontier import (
    ALL_METHODS,
    GROUP,
    add_dataset_groups,
    aggregate,
    budget_points,
    budget_table,
    curves,
    gpu_seconds,
    pareto_frontier,
    pgr,
    plot_budget_table,
    plot_curves,
    plot_frontier,
    recost,
    regimes,
    write_frontier,
)
from w2sweep.results import REQUIRED_FIELDS, CellResult, cell_key, read_cells
from w2sweep.storage import Storage

nan = math.nan


def row(accuracy: float, *, method="seq-sft", budget=10.0, fraction=0.5, seed=0, **overrides) -> dict:
    """One result row as `read_cells` returns it; counts and cost follow the cost model unless given."""
    c_weak, c_oracle = 0.1, 1.0
    n_weak, n_oracle = label_counts(budget, fraction, c_weak=c_weak, c_oracle=c_oracle) if fraction is not None else (0, 0)
    n_weak, n_oracle = overrides.pop("n_weak", n_weak), overrides.pop("n_oracle", n_oracle)
    base = dict(
        cell_id=f"{method}-{budget}-{fraction}-{n_weak}-{n_oracle}-{seed}", sweep="demo", dataset="boolq",
        weak_supervisor="qwen-0.5b", student="qwen-7b", method=method, budget=budget,
        spending_fraction=fraction, seed=seed, n_weak=n_weak, n_oracle=n_oracle,
        label_cost=label_cost(n_weak, n_oracle, c_weak=c_weak, c_oracle=c_oracle), c_weak=c_weak,
        c_oracle=c_oracle, accuracy=accuracy, accuracy_ci_low=accuracy - 0.05,
        accuracy_ci_high=accuracy + 0.05, auroc=accuracy + 0.1, auroc_ci_low=accuracy,
        auroc_ci_high=accuracy + 0.2, weak_accuracy=0.55, num_test=200, wall_seconds=1.5,
        status="ok", schema_version=1,
    )
    return base | overrides


def table(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def only(frame: pd.DataFrame, **where) -> pd.DataFrame:
    for column, value in where.items():
        frame = frame[frame[column] == value]
    return frame


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with categorical columns as plain values: what a CSV of it reads back as."""
    return frame.astype({c: object for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


# ---- curves ---------------------------------------------------------------------------------------

def test_curves_average_accuracy_over_seeds():
    c = curves(table(*(row(acc, seed=s) for s, acc in enumerate([0.6, 0.7, 0.8]))))
    assert len(c) == 1
    point = c.iloc[0]
    assert point["accuracy_mean"] == pytest.approx(0.7)
    assert point["accuracy_std"] == pytest.approx(0.1)  # ddof=1
    assert point["num_seeds"] == 3
    assert point["auroc_mean"] == pytest.approx(0.8)
    assert (point["n_weak"], point["n_oracle"], point["label_cost"]) == (50, 5, 10.0)


def test_a_missing_seed_shows_in_num_seeds():
    c = curves(table(
        row(0.6, fraction=0.0, seed=0), row(0.8, fraction=0.0, seed=1), row(0.7, fraction=0.0, seed=2),
        row(0.9, fraction=1.0, seed=0), row(0.7, fraction=1.0, seed=1),
        row(0.5, fraction=0.5, seed=0),
    ))
    assert list(c["spending_fraction"]) == [0.0, 0.5, 1.0]
    assert list(c["num_seeds"]) == [3, 1, 2]
    assert list(c["accuracy_mean"]) == pytest.approx([0.7, 0.5, 0.8])
    assert math.isnan(c["accuracy_std"][1])  # one seed: no spread to estimate


@pytest.mark.parametrize("bad", [dict(accuracy=nan), dict(status="failed", accuracy=0.0)])
def test_unusable_rows_are_ignored(bad):
    accuracy = bad.pop("accuracy")
    c = curves(table(row(0.6, seed=0), row(0.8, seed=1), row(accuracy, seed=2, **bad)))
    assert c["num_seeds"].tolist() == [2]
    assert c["accuracy_mean"].tolist() == pytest.approx([0.7])


def test_explicit_pairs_are_grouped_by_pair_with_fraction_nan():
    c = curves(table(
        row(0.6, fraction=None, n_weak=20, n_oracle=3, seed=0),
        row(0.8, fraction=None, n_weak=20, n_oracle=3, seed=1),
        row(0.9, fraction=None, n_weak=0, n_oracle=9, seed=0),
        row(0.5, fraction=0.0),
    ))
    assert c["spending_fraction"].isna().tolist() == [False, True, True]
    pairs = c[c["spending_fraction"].isna()]
    assert list(zip(pairs["n_weak"], pairs["n_oracle"], pairs["num_seeds"])) == [(20, 3, 2), (0, 9, 1)]
    assert pairs["accuracy_mean"].tolist() == pytest.approx([0.7, 0.9])


# ---- Pareto frontier ------------------------------------------------------------------------------

FRONTIER_ROWS = [
    row(0.60, method="A", fraction=0.2, label_cost=1.0),
    row(0.60, method="A", fraction=0.6, label_cost=1.0),  # exact tie with the line above: dropped
    row(0.70, method="A", fraction=0.3, label_cost=2.0),  # equal cost, lower accuracy: dropped
    row(0.75, method="A", fraction=0.4, label_cost=2.0),
    row(0.72, method="A", fraction=0.5, label_cost=3.0),  # dominated by (2.0, 0.75)
    row(0.80, method="A", fraction=1.0, label_cost=4.0),
    row(0.60, method="B", fraction=0.1, label_cost=1.0),  # ties A's first point: A wins by name
    row(0.78, method="B", fraction=0.7, label_cost=3.0),
    row(0.79, method="B", fraction=0.9, label_cost=5.0),  # on B's frontier; across methods A's (4.0, 0.80) wins
]


def points(frontier: pd.DataFrame, method: str) -> list[tuple]:
    f = only(frontier, method=method)
    return list(zip(f["label_cost"], f["accuracy_mean"], f["source_method"], f["spending_fraction"]))


def test_pareto_frontier_per_method_drops_dominated_and_tied_points():
    frontier = pareto_frontier(curves(table(*FRONTIER_ROWS)))
    assert points(frontier, "A") == [(1.0, 0.60, "A", 0.2), (2.0, 0.75, "A", 0.4), (4.0, 0.80, "A", 1.0)]
    assert points(frontier, "B") == [(1.0, 0.60, "B", 0.1), (3.0, 0.78, "B", 0.7), (5.0, 0.79, "B", 0.9)]


def test_frontier_across_methods_takes_points_from_each_method():
    frontier = pareto_frontier(curves(table(*FRONTIER_ROWS)))
    assert points(frontier, ALL_METHODS) == [
        (1.0, 0.60, "A", 0.2), (2.0, 0.75, "A", 0.4), (3.0, 0.78, "B", 0.7), (4.0, 0.80, "A", 1.0),
    ]


def test_frontier_does_not_depend_on_input_order():
    forward = pareto_frontier(curves(table(*FRONTIER_ROWS)))
    backward = pareto_frontier(curves(table(*reversed(FRONTIER_ROWS))))
    pd.testing.assert_frame_equal(forward, backward)
    for _, f in forward.groupby("method"):
        assert f["label_cost"].is_monotonic_increasing
        assert (f["accuracy_mean"].diff().dropna() > 0).all()


# ---- regimes --------------------------------------------------------------------------------------

SEED_OFFSETS = [-0.02, 0.02, -0.01, 0.01, 0.0, 0.015, -0.015, 0.0]  # mean 0


def seeded(accuracy_by_fraction: dict, *, budget: float = 10.0, **overrides) -> list[dict]:
    """Eight seeds per fraction: mean exactly as given, offsets shared across fractions (paired),
    +-0.0005 jitter that differs between fractions (so the paired differences have a spread)."""
    return [row(acc + offset + 0.0005 * (-1) ** (s + i), fraction=f, seed=s, budget=budget, **overrides)
            for i, (f, acc) in enumerate(accuracy_by_fraction.items()) for s, offset in enumerate(SEED_OFFSETS)]


@pytest.mark.parametrize(("accuracy_by_fraction", "tolerance", "expected"), [
    ({0.0: 0.70, 0.5: 0.705, 1.0: 0.60}, 0.01, "quantity-dominant"),
    ({0.0: 0.70, 0.5: 0.705, 1.0: 0.60}, 0.001, "mixed"),  # the same curve, a stricter tolerance
    ({0.0: 0.70, 0.5: 0.65}, 0.01, "quantity-dominant"),  # f=1 was not run
    ({0.0: 0.60, 0.5: 0.79, 1.0: 0.795}, 0.01, "quality-dominant"),
    ({0.0: 0.60, 0.5: 0.79, 1.0: 0.795}, 0.001, "quality-dominant"),  # f=1 is the best itself
    ({0.0: 0.60, 0.5: 0.80, 1.0: 0.70}, 0.01, "mixed"),
    ({0.3: 0.60, 0.6: 0.70}, 0.01, "mixed"),  # neither endpoint run
    ({0.0: 0.70, 0.5: 0.702, 1.0: 0.701}, 0.01, "indeterminate"),  # both endpoints near the best
    ({0.5: 0.70}, 0.01, "indeterminate"),  # one fraction
    ({0.0: 0.70}, 0.01, "indeterminate"),  # one fraction, even at an endpoint
])
def test_regime_of_a_budget(accuracy_by_fraction, tolerance, expected):
    # Eight seeds whose offsets are shared by every fraction (paired), plus a small jitter: the
    # differences are precise enough that each claim below is significant, not only beyond tolerance.
    rows = seeded(accuracy_by_fraction)
    r = regimes(curves(table(*rows)), tolerance=tolerance, results=table(*rows))
    assert r["regime"].tolist() == [expected]
    assert r["num_fractions"].tolist() == [len(accuracy_by_fraction)]
    assert r["best_accuracy"].tolist() == pytest.approx([max(accuracy_by_fraction.values())])
    assert r["tolerance"].tolist() == [tolerance]


def test_regimes_report_endpoints_and_break_ties_to_the_smallest_fraction():
    # Eight paired seeds per point (one seed could not separate 0.70 from 0.60 statistically).
    rows = table(*seeded({0.0: 0.70, 0.5: 0.70, 1.0: 0.60}, budget=10.0), *seeded({0.5: 0.60, 1.0: 0.65}, budget=50.0),
                 row(0.99, budget=50.0, fraction=None, n_weak=0, n_oracle=50))  # explicit pair: not a fraction
    c = curves(rows)
    r = regimes(c, tolerance=0.01, results=rows).set_index("budget")
    assert r.loc[10.0, "best_fraction"] == 0.0
    assert (r.loc[10.0, "accuracy_at_0"], r.loc[10.0, "accuracy_at_1"]) == pytest.approx((0.70, 0.60))
    assert r.loc[50.0, "best_fraction"] == 1.0
    assert r.loc[50.0, "best_accuracy"] == pytest.approx(0.65)
    assert math.isnan(r.loc[50.0, "accuracy_at_0"])
    assert r.loc[50.0, "num_fractions"] == 2
    assert r["regime"].tolist() == ["quantity-dominant", "quality-dominant"]


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance"):
        regimes(curves(table(row(0.7))), tolerance=-0.01)


# ---- plot and storage -----------------------------------------------------------------------------

def test_plot_curves_returns_png_bytes():
    png = plot_curves(curves(table(*FRONTIER_ROWS, row(0.5, fraction=None, n_weak=3, n_oracle=3))))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000


def as_cell_result(r: dict) -> CellResult:
    """The object a finished cell writes, holding row `r`."""
    fields = {k: v for k, v in r.items() if not k.startswith(("accuracy_ci", "auroc_ci"))}
    return CellResult(**fields, accuracy_ci=(r["accuracy_ci_low"], r["accuracy_ci_high"]),
                      auroc_ci=(r["auroc_ci_low"], r["auroc_ci_high"]))


RECORDED_LATER = ("num_gpus", "gpu_seconds")  # CellResult fields older results do not have


def cell_json(r: dict) -> bytes:
    """The JSON a finished cell writes for row `r`; keys CellResult does not know are added as they
    are. A row without ``num_gpus``/``gpu_seconds`` is written as an older result: without them."""
    known = {f.name for f in dataclasses.fields(CellResult)} | {
        "accuracy_ci_low", "accuracy_ci_high", "auroc_ci_low", "auroc_ci_high"}
    obj = json.loads(as_cell_result({k: v for k, v in r.items() if k in known}).to_json())
    obj = {k: v for k, v in obj.items() if k not in RECORDED_LATER or k in r}
    return json.dumps(obj | {k: v for k, v in r.items() if k not in known}).encode()


def write_cells(storage: Storage, rows: list[dict], sweep: str = "demo") -> None:
    for r in rows:
        storage.write_once(cell_key(sweep, r["cell_id"]), cell_json(r))


def test_write_frontier_stores_the_tables_it_computes(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    rows = [*FRONTIER_ROWS, row(0.65, method="A", fraction=0.2, seed=1, label_cost=1.0),
            row(0.9, method="A", fraction=0.2, seed=2, status="failed")]
    for r in rows:
        storage.write_once(cell_key("demo", r["cell_id"]), as_cell_result(r).to_json())
    storage.write_bytes("demo/cells/broken.json", b"{not json")

    summary = write_frontier(storage, "demo", tolerance=0.02)

    names = ["curves.csv", "frontier.csv", "regimes.csv", "budget_table.csv", "pgr.csv", "no_signal.csv", "curves.png",
             "frontier.png", "budget_table.png", "report.html", "results.parquet", "manifest.json"]
    assert summary["keys"] == [f"demo/frontier/{n}" for n in names]
    assert (summary["num_results"], summary["num_ignored"]) == (len(rows), 1)
    assert (summary["num_unreadable"], summary["unreadable"]) == (1, ["demo/cells/broken.json"])
    expected_curves = curves(table(*rows))
    expected = {
        "curves.csv": expected_curves,
        "frontier.csv": pareto_frontier(expected_curves),
        "regimes.csv": regimes(expected_curves, tolerance=0.02),
    }
    for name, frame in expected.items():
        stored = pd.read_csv(io.BytesIO(storage.read_bytes(f"demo/frontier/{name}")))
        text = [c for c in ("reason", "comparison", "ci_method") if c in stored]  # "" reads back as NaN
        pd.testing.assert_frame_equal(stored.fillna({c: "" for c in text}), plain(frame), check_dtype=False)
    assert storage.read_bytes("demo/frontier/curves.png").startswith(b"\x89PNG")
    stored = pd.read_parquet(io.BytesIO(storage.read_bytes("demo/frontier/results.parquet")))
    assert sorted(stored["cell_id"]) == sorted(r["cell_id"] for r in rows)  # every readable object
    assert "demo/cells/broken.json" in storage.read_bytes("demo/frontier/report.html").decode()


def test_write_frontier_without_finished_cells_raises(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    failed = row(0.7, status="failed")
    storage.write_once(cell_key("demo", failed["cell_id"]), as_cell_result(failed).to_json())
    with pytest.raises(ValueError, match="no finished cells under demo/cells"):
        write_frontier(storage, "demo")


# ---- confidence interval over seeds ---------------------------------------------------------------

def test_curves_ci_is_the_student_t_interval_over_seeds_and_with_one_seed_the_stored_ci():
    c = curves(table(*(row(acc, seed=s) for s, acc in enumerate([0.6, 0.7, 0.8])),
                     row(0.9, fraction=1.0, seed=0),
                     row(0.8, fraction=0.0, seed=0, accuracy_ci_low=None, accuracy_ci_high=None)))
    none, three, one = c.iloc[0], c.iloc[1], c.iloc[2]
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, dof=2) * std / sqrt(n)
    assert (three["accuracy_ci_low"], three["accuracy_ci_high"]) == pytest.approx((0.7 - half, 0.7 + half))
    assert three["ci_method"] == "t over seeds"
    # One seed, no predictions: the result's own stored 95% CI (was NaN before results' CIs were used).
    assert one["num_seeds"] == 1 and one["ci_method"] == "stored 95% CI (one seed)"
    assert (one["accuracy_ci_low"], one["accuracy_ci_high"]) == pytest.approx((0.85, 0.95))
    assert math.isnan(none["accuracy_ci_low"]) and math.isnan(none["accuracy_ci_high"])  # nothing stored


# ---- compute cost as a second axis ----------------------------------------------------------------

AXIS_ROWS = [  # label cost, GPU-seconds ($ at 2 $/GPU-hour), accuracy
    row(0.60, method="A", fraction=0.2, label_cost=1.0, gpu_seconds=7200.0),  # $4.0
    row(0.70, method="A", fraction=0.4, label_cost=2.0, gpu_seconds=360.0),   # $0.2
    row(0.80, method="A", fraction=0.6, label_cost=3.0, gpu_seconds=1800.0),  # $1.0
]


def cost_points(frontier: pd.DataFrame, method: str = "A") -> list[tuple]:
    """(cost, accuracy) along `method`'s frontier, rounded to 9 digits (0.1 + 0.2 is not 0.3)."""
    f = only(frontier, method=method)
    return [(round(c, 9), round(a, 9)) for c, a in zip(f["cost"], f["accuracy_mean"])]


@pytest.mark.parametrize(("axis", "options", "expected"), [
    ("label", {}, [(1.0, 0.60), (2.0, 0.70), (3.0, 0.80)]),
    ("compute", {}, [(0.2, 0.70), (1.0, 0.80)]),  # the $4 point is dominated
    ("compute", {"gpu_hour_price": 0.0}, [(0.0, 0.80)]),  # all free: the most accurate wins the tie
    ("total", {}, [(2.2, 0.70), (4.0, 0.80)]),  # label units at $1 + compute $
    ("total", {"label_unit_price": 0.0}, [(0.2, 0.70), (1.0, 0.80)]),
])
def test_frontier_on_each_cost_axis(axis, options, expected):
    frontier = pareto_frontier(curves(table(*AXIS_ROWS)), axis=axis, **options)
    assert cost_points(frontier) == expected
    assert set(frontier["axis"]) == {axis}


def test_unknown_axis_is_refused():
    with pytest.raises(ValueError, match="axis='gpu': allowed: label, compute, total"):
        pareto_frontier(curves(table(*AXIS_ROWS)), axis="gpu")


def test_gpu_seconds_are_recorded_else_wall_times_gpus_per_cell_else_zero():
    t = table(row(0.7, num_gpus=4.0, gpu_seconds=100.0, wall_seconds=1.5),  # as recorded, not 4 x 1.5
              row(0.7, num_gpus=0.0, gpu_seconds=0.0, wall_seconds=10.0),   # a CPU-only cell
              row(0.7, wall_seconds=10.0))  # an older result: neither recorded
    assert gpu_seconds(t).tolist() == [100.0, 0.0, 0.0]
    assert gpu_seconds(t, default_gpus=2.0).tolist() == [100.0, 0.0, 20.0]  # a recorded 0 stays 0
    assert gpu_seconds(table(row(0.7))).tolist() == [0.0]  # nothing recorded, no GPUs known


def test_stored_gpu_seconds_are_used_when_present_and_older_results_fall_back(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    write_cells(storage, [
        row(0.70, fraction=0.0, num_gpus=2.0, gpu_seconds=1200.0, wall_seconds=600.0),
        row(0.75, fraction=0.5, num_gpus=0.0, gpu_seconds=0.0, wall_seconds=600.0),  # ran on CPUs
        row(0.80, fraction=1.0, wall_seconds=600.0),  # older: sweep.yaml's 1 GPU per cell x 600 s
    ])
    storage.write_bytes("demo/sweep.yaml", b"resources: {cpu: 1, gpu: 1}\n")
    results, _ = read_cells(storage, storage.list("demo/cells", suffix=".json"))
    by_fraction = results.set_index("spending_fraction")
    assert by_fraction.loc[0.5, "gpu_seconds"] == 0.0 and math.isnan(by_fraction.loc[1.0, "gpu_seconds"])
    write_frontier(storage, "demo")
    c = pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/curves.csv")))
    assert c["gpu_seconds_mean"].tolist() == [1200.0, 0.0, 600.0]


def test_compute_cost_from_storage_uses_result_then_config_then_sweep_yaml(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    write_cells(storage, [
        row(0.70, fraction=0.0, gpu_seconds=3600.0),  # recorded by the runner
        row(0.75, fraction=0.5, wall_seconds=900.0, config={"resources": {"gpu": 2}}),  # 1800 GPU-s
        row(0.80, fraction=1.0, wall_seconds=600.0),  # sweep.yaml: 1 GPU per cell -> 600 GPU-s
    ])
    storage.write_bytes("demo/sweep.yaml", b"resources: {cpu: 1, gpu: 1}\ngpu_hour_price: 3.0\nbudgets: [10]\n")
    summary = write_frontier(storage, "demo", axis="compute")
    assert summary["options"]["gpu_hour_price"] == 3.0  # from sweep.yaml
    c = pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/curves.csv")))
    assert c["gpu_seconds_mean"].tolist() == [3600.0, 1800.0, 600.0]
    f = only(pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/frontier.csv"))), method="seq-sft")
    assert cost_points(f, "seq-sft") == [(0.5, 0.80)]  # 600 GPU-seconds at $3 per GPU-hour

    summary = write_frontier(storage, "demo", axis="compute", gpu_hour_price=6.0)  # the flag wins
    f = only(pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/frontier.csv"))), method="seq-sft")
    assert f["cost"].tolist() == pytest.approx([1.0])


# ---- budget table ---------------------------------------------------------------------------------

def test_budget_table_has_the_best_accuracy_within_each_budget_per_method():
    points = budget_points(curves(table(*FRONTIER_ROWS)), budgets=[0.5, 1.0, 2.5, 4.0, 10.0])
    wide = budget_table(points)
    assert list(wide.columns) == ["dataset", "weak_supervisor", "student", "budget", "A", "B", ALL_METHODS]
    assert wide["budget"].tolist() == [0.5, 1.0, 2.5, 4.0, 10.0]
    expected = {"A": [nan, 0.60, 0.75, 0.80, 0.80],  # cost 4.0 is within budget 4.0
                "B": [nan, 0.60, 0.60, 0.78, 0.79],
                ALL_METHODS: [nan, 0.60, 0.75, 0.80, 0.80]}
    for method, values in expected.items():
        assert wide[method].tolist() == pytest.approx(values, nan_ok=True)
    best = only(points, method=ALL_METHODS, budget=10.0).iloc[0]
    assert (best["source_method"], best["spending_fraction"], best["label_cost"]) == ("A", 1.0, 4.0)


def test_budget_table_defaults_to_the_budgets_run_and_counts_a_one_fraction_budget():
    agg = aggregate(table(row(0.70, budget=10.0, fraction=0.0), row(0.72, budget=10.0, fraction=1.0),
                          row(0.90, budget=50.0, fraction=1.0)))  # budget 50 ran one fraction
    assert agg.budget_table["budget"].tolist() == [10.0, 50.0]
    assert agg.budget_table["seq-sft"].tolist() == [0.72, 0.90]


# ---- performance gap recovered --------------------------------------------------------------------

PGR_ROWS = [
    row(0.70, method="seq-sft", budget=10.0, fraction=0.5),  # weak accuracy 0.55
    row(0.80, method="sft-oracle", budget=10.0, fraction=1.0),
    row(0.74, method="sft-oracle", budget=50.0, fraction=1.0, seed=0),  # the largest budget: mean 0.75
    row(0.76, method="sft-oracle", budget=50.0, fraction=1.0, seed=1),
]


def pgr_of(frame: pd.DataFrame, **where) -> pd.Series:
    return only(frame, **where).iloc[0]


def test_pgr_uses_the_best_sft_oracle_accuracy_at_the_largest_budget():
    p = pgr(curves(table(*PGR_ROWS)))
    point = pgr_of(p, method="seq-sft")
    assert point["ceiling_accuracy"] == pytest.approx(0.75)  # not the 0.80 at budget 10
    assert point["ceiling_source"] == "sft-oracle at budget 50"
    assert point["pgr"] == pytest.approx((0.70 - 0.55) / (0.75 - 0.55))
    assert point["reason"] == ""
    assert pgr_of(p, method="sft-oracle", budget=10.0)["pgr"] == pytest.approx(1.25)  # above the ceiling


def test_pgr_prefers_a_ceiling_result():
    p = pgr(curves(table(*PGR_ROWS, row(0.95, method="ceiling", budget=1000.0, fraction=1.0))))
    point = pgr_of(p, method="seq-sft")
    assert (point["ceiling_accuracy"], point["ceiling_source"]) == (0.95, "ceiling")
    assert point["pgr"] == pytest.approx(0.15 / 0.40)


@pytest.mark.parametrize(("rows", "reason"), [
    ([row(0.70)], "no ceiling"),  # no sft-oracle, no ceiling
    ([row(0.70, weak_accuracy=0.75), row(0.75, method="sft-oracle", fraction=1.0, weak_accuracy=0.75)],
     "ceiling accuracy is not above the weak accuracy"),
    ([row(0.70, weak_accuracy=nan), row(0.75, method="sft-oracle", fraction=1.0)], "no weak accuracy"),
])
def test_pgr_is_nan_with_a_reason_when_undefined(rows, reason):
    point = pgr_of(pgr(curves(table(*rows))), method="seq-sft")
    assert math.isnan(point["pgr"])
    assert point["reason"].startswith(reason)


def test_pgr_ceiling_is_per_dataset_weak_supervisor_and_student():
    p = pgr(curves(table(*PGR_ROWS, row(0.70, student="other", cell_id="other"))))
    assert pgr_of(p, method="seq-sft", student="qwen-7b")["pgr"] == pytest.approx(0.75)
    assert math.isnan(pgr_of(p, method="seq-sft", student="other")["pgr"])


def shared_ceiling_rows() -> list:
    """Two weak supervisors of one (dataset, student), each with a seq-sft point at two seeds, and one
    ceiling per seed run once for both (weak_supervisor "none", no weak accuracy): what a sweep with
    2 weak supervisors and `ceiling: true` stores."""
    rows = []
    for weak, acc, floor in (("weak-a", 0.70, 0.55), ("weak-b", 0.62, 0.60)):
        rows += [row(acc + 0.01 * s, weak_supervisor=weak, weak_accuracy=floor + 0.01 * s, seed=s,
                     cell_id=f"{weak}-{s}") for s in (0, 1)]
    rows += [row(0.90 + 0.01 * s, method="ceiling", budget=100.0, fraction=1.0, seed=s, weak_supervisor="none",
                 weak_accuracy=nan, cell_id=f"ceiling-{s}") for s in (0, 1)]
    return rows


def test_a_ceiling_run_once_per_dataset_and_student_is_every_weak_supervisors_ceiling():
    agg = aggregate(table(*shared_ceiling_rows()))
    for weak, acc, floor in (("weak-a", 0.705, 0.555), ("weak-b", 0.625, 0.605)):
        point = pgr_of(agg.pgr, method="seq-sft", weak_supervisor=weak)
        assert (point["ceiling_accuracy"], point["ceiling_source"]) == (pytest.approx(0.905), "ceiling")
        assert point["pgr"] == pytest.approx((acc - floor) / (0.905 - floor))
        # The ceiling's own point sits in each weak supervisor's tables, with that supervisor's floor.
        own = pgr_of(agg.pgr, method="ceiling", weak_supervisor=weak)
        assert (own["weak_accuracy_mean"], own["pgr"]) == (pytest.approx(floor), pytest.approx(1.0))
        frontier = only(agg.frontier, method=ALL_METHODS, weak_supervisor=weak)
        assert "ceiling" in set(frontier["source_method"])
    assert set(agg.curves["weak_supervisor"]) == {"weak-a", "weak-b"}  # no group of its own
    assert agg.no_signal.empty


def test_older_ceilings_run_per_weak_supervisor_still_join_on_their_triple():
    rows = [r for r in shared_ceiling_rows() if r["method"] != "ceiling"]
    rows += [row(0.95, method="ceiling", budget=100.0, fraction=1.0, weak_supervisor="weak-a", cell_id="old-a"),
             row(0.85, method="ceiling", budget=100.0, fraction=1.0, weak_supervisor="weak-b", cell_id="old-b")]
    p = aggregate(table(*rows)).pgr
    assert pgr_of(p, method="seq-sft", weak_supervisor="weak-a")["ceiling_accuracy"] == pytest.approx(0.95)
    assert pgr_of(p, method="seq-sft", weak_supervisor="weak-b")["ceiling_accuracy"] == pytest.approx(0.85)
    # A triple with a ceiling of its own keeps it; a shared one fills only the triples without.
    mixed = aggregate(table(*rows[:-1], *(r for r in shared_ceiling_rows() if r["method"] == "ceiling"))).pgr
    assert pgr_of(mixed, method="seq-sft", weak_supervisor="weak-a")["ceiling_accuracy"] == pytest.approx(0.95)
    assert pgr_of(mixed, method="seq-sft", weak_supervisor="weak-b")["ceiling_accuracy"] == pytest.approx(0.905)
    assert len(only(mixed, method="ceiling", weak_supervisor="weak-a")) == 1  # not averaged with the shared one


def test_a_shared_ceiling_alone_stays_under_no_weak_supervisor():
    ceiling = [r for r in shared_ceiling_rows() if r["method"] == "ceiling"]
    agg = aggregate(table(*ceiling))
    point = pgr_of(agg.pgr, method="ceiling")
    assert point["weak_supervisor"] == "none" and point["reason"] == "no weak accuracy"


# ---- re-costing -----------------------------------------------------------------------------------

# Budget 10 at c_weak 0.1: every fraction costs 10 label units (100 weak; 50 weak + 5 oracle; 10
# oracle). Eight paired seeds, so that the "mixed" regime below is significant and not only beyond
# the tolerance.
RECOST_ROWS = seeded({0.0: 0.70, 0.5: 0.72, 1.0: 0.71})


def test_recost_reprices_labels_and_recomputes_the_spending_fraction():
    r = recost(table(row(0.7, fraction=0.5), row(0.8, fraction=None, n_weak=20, n_oracle=3)), c_weak=0.5)
    assert r["label_cost"].tolist() == [30.0, 13.0]  # 50 * 0.5 + 5 * 1, 20 * 0.5 + 3 * 1
    assert r["spending_fraction"].tolist()[0] == pytest.approx(5 / 30)
    assert math.isnan(r["spending_fraction"].tolist()[1])  # an explicit pair stays a pair
    assert r["c_weak"].tolist() == [0.5, 0.5]
    assert r[["n_weak", "n_oracle", "accuracy", "budget"]].equals(
        table(row(0.7, fraction=0.5), row(0.8, fraction=None, n_weak=20, n_oracle=3))[
            ["n_weak", "n_oracle", "accuracy", "budget"]])


@pytest.mark.parametrize(("c_weak", "expected_frontier", "best_within_10"), [
    (0.1, [(10.0, 0.72)], 0.72),
    (0.01, [(1.0, 0.70), (5.5, 0.72)], 0.72),
    (0.5, [(10.0, 0.71), (30.0, 0.72)], 0.71),
])
def test_recosting_moves_the_frontier_and_budget_table_not_the_accuracies(c_weak, expected_frontier,
                                                                          best_within_10):
    agg = aggregate(recost(table(*RECOST_ROWS), c_weak=c_weak), tolerance=0.005, budgets=[10.0])
    assert cost_points(agg.frontier, "seq-sft") == expected_frontier
    assert agg.budget_table["seq-sft"].tolist() == pytest.approx([best_within_10])
    regime = agg.regimes.iloc[0]
    assert regime["regime"] == "mixed"  # the order of the accuracies did not change
    assert regime["best_fraction"] == pytest.approx(5 / (50 * c_weak + 5))


def test_recost_refuses_a_price_that_is_not_positive():
    with pytest.raises(ValueError, match="c_weak=0.0: must be a number > 0"):
        recost(table(row(0.7)), c_weak=0.0)


def test_write_frontier_writes_each_recosted_view_in_its_folder(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    write_cells(storage, RECOST_ROWS)
    summary = write_frontier(storage, "demo", c_weak=[0.5, 0.01])
    for view in ("c_weak=0.5", "c_weak=0.01"):
        for name in ("curves.csv", "frontier.csv", "regimes.csv", "budget_table.csv", "pgr.csv", "report.html"):
            assert f"demo/frontier/{view}/{name}" in summary["keys"]
    stored = pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/c_weak=0.01/frontier.csv")))
    expected = pareto_frontier(curves(recost(table(*RECOST_ROWS), c_weak=0.01)))
    pd.testing.assert_frame_equal(stored, plain(expected), check_dtype=False)
    base = pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/curves.csv")))
    assert base["label_cost"].tolist() == [10.0, 10.0, 10.0]  # the results' own prices
    manifest = json.loads(storage.read_bytes("demo/frontier/manifest.json"))
    assert "c_weak=0.5/report.html" in manifest["files"] and manifest["options"]["c_weak"] == [0.5, 0.01]


# ---- dataset groups -------------------------------------------------------------------------------

def test_a_dataset_group_averages_its_datasets_per_seed_where_all_are_present():
    rows = [row(0.6, dataset="boolq", seed=0), row(0.7, dataset="boolq", seed=1),
            row(0.8, dataset="sciq", seed=0), row(0.9, dataset="sciq", seed=1),
            row(0.5, dataset="boolq", fraction=1.0)]  # sciq has no f=1: the group has no such point
    c = curves(add_dataset_groups(table(*rows), {"qa": ["boolq", "sciq"]}))
    qa = only(c, dataset="qa")
    assert qa["spending_fraction"].tolist() == [0.5]
    assert qa["accuracy_mean"].tolist() == pytest.approx([0.75])  # seeds: 0.7 and 0.8
    assert qa["accuracy_std"].tolist() == pytest.approx([math.sqrt(0.005)])
    assert qa["num_seeds"].tolist() == [2]
    assert len(only(c, dataset="boolq")) == 2  # the members stay


@pytest.mark.parametrize(("groups", "message"), [
    ({"qa": ["boolq", "nope"]}, "dataset group 'qa': no usable results for datasets \\['nope'\\]"),
    ({"boolq": ["boolq"]}, "a dataset of that name exists"),
])
def test_a_bad_dataset_group_is_one_clear_error(groups, message):
    with pytest.raises(ValueError, match=message):
        add_dataset_groups(table(row(0.6)), groups)


# ---- NaN accuracies, reading, plots ---------------------------------------------------------------

def test_a_budget_whose_accuracies_are_all_nan_is_indeterminate():
    frame = curves(table(row(0.7, fraction=0.0), row(0.6, fraction=1.0)))
    frame["accuracy_mean"] = nan
    r = regimes(frame, tolerance=0.01).iloc[0]
    assert r["regime"] == "indeterminate"
    assert math.isnan(r["best_fraction"]) and math.isnan(r["best_accuracy"])
    assert pareto_frontier(frame).empty


def test_read_cells_reports_unreadable_objects_with_a_reason(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    good = row(0.7, gpu_seconds=12.0, config={"resources": {"gpu": 4}})
    write_cells(storage, [good, row(0.8, seed=1)])
    storage.write_bytes("demo/cells/a-not-json.json", b"{not json")
    storage.write_bytes("demo/cells/b-a-list.json", b"[1, 2]")
    storage.write_bytes("demo/cells/c-no-fields.json", b'{"dataset": "boolq"}')
    keys = storage.list("demo/cells", suffix=".json")
    results, unreadable = read_cells(storage, keys, num_threads=4)
    assert len(results) == 2
    assert sorted(unreadable) == ["demo/cells/a-not-json.json", "demo/cells/b-a-list.json",
                                  "demo/cells/c-no-fields.json"]
    assert unreadable["demo/cells/b-a-list.json"] == "TypeError: expected a JSON object, got list"
    assert "missing fields" in unreadable["demo/cells/c-no-fields.json"]
    by_seed = results.set_index("seed")
    assert (by_seed.loc[0, "gpu_seconds"], by_seed.loc[0, "gpus_per_cell"]) == (12.0, 4.0)
    assert math.isnan(by_seed.loc[1, "gpu_seconds"]) and math.isnan(by_seed.loc[1, "gpus_per_cell"])
    assert "config" not in results


def test_the_required_fields_are_cell_result_fields():
    assert set(REQUIRED_FIELDS) <= {f.name for f in dataclasses.fields(CellResult)}


def test_frontier_and_budget_plots_are_png_even_when_empty():
    agg = aggregate(table(*FRONTIER_ROWS), budgets=[1.0, 4.0])
    for png in (plot_frontier(agg.curves, agg.frontier), plot_budget_table(agg.budget_points),
                plot_frontier(agg.curves.iloc[:0], agg.frontier.iloc[:0]),
                plot_budget_table(agg.budget_points.iloc[:0])):
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_aggregate_groups_are_the_vocabulary_columns():
    agg = aggregate(table(*FRONTIER_ROWS))
    for frame in (agg.curves, agg.frontier, agg.regimes, agg.pgr):
        assert list(frame.columns[:len(GROUP)]) == GROUP
