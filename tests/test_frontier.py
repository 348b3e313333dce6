"""Curves, frontiers and regimes on hand-made result tables whose answers are known by construction."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from w2sweep.costs import label_cost, label_counts
from w2sweep.frontier import ALL_METHODS, curves, pareto_frontier, plot_curves, regimes, write_frontier
from w2sweep.results import CellResult, cell_key
from w2sweep.storage import Storage

nan = math.nan


def row(accuracy: float, *, method="seq-sft", budget=10.0, fraction=0.5, seed=0, **overrides) -> dict:
    """One result row as `read_results` returns it; counts and cost follow the cost model unless given."""
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
    c = curves(table(*(row(acc, fraction=f) for f, acc in accuracy_by_fraction.items())))
    r = regimes(c, tolerance=tolerance)
    assert r["regime"].tolist() == [expected]
    assert r["num_fractions"].tolist() == [len(accuracy_by_fraction)]
    assert r["best_accuracy"].tolist() == [max(accuracy_by_fraction.values())]
    assert r["tolerance"].tolist() == [tolerance]


def test_regimes_report_endpoints_and_break_ties_to_the_smallest_fraction():
    c = curves(table(
        row(0.70, budget=10.0, fraction=0.0), row(0.70, budget=10.0, fraction=0.5), row(0.60, budget=10.0, fraction=1.0),
        row(0.60, budget=50.0, fraction=0.5), row(0.65, budget=50.0, fraction=1.0),
        row(0.99, budget=50.0, fraction=None, n_weak=0, n_oracle=50),  # explicit pair: not a fraction
    ))
    r = regimes(c, tolerance=0.01).set_index("budget")
    assert r.loc[10.0, "best_fraction"] == 0.0
    assert (r.loc[10.0, "accuracy_at_0"], r.loc[10.0, "accuracy_at_1"]) == (0.70, 0.60)
    assert r.loc[50.0, "best_fraction"] == 1.0
    assert r.loc[50.0, "best_accuracy"] == 0.65
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


def test_write_frontier_stores_the_tables_it_computes(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    rows = [*FRONTIER_ROWS, row(0.65, method="A", fraction=0.2, seed=1, label_cost=1.0),
            row(0.9, method="A", fraction=0.2, seed=2, status="failed")]
    for r in rows:
        storage.write_once(cell_key("demo", r["cell_id"]), as_cell_result(r).to_json())
    storage.write_bytes("demo/cells/broken.json", b"{not json")

    summary = write_frontier(storage, "demo", tolerance=0.02)

    names = ["curves.csv", "frontier.csv", "regimes.csv", "budget_table.csv", "pgr.csv", "curves.png",
             "frontier.png", "budget_table.png", "report.html", "manifest.json"]
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
        pd.testing.assert_frame_equal(stored, frame, check_dtype=False)
    assert storage.read_bytes("demo/frontier/curves.png").startswith(b"\x89PNG")


def test_write_frontier_without_finished_cells_raises(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    failed = row(0.7, status="failed")
    storage.write_once(cell_key("demo", failed["cell_id"]), as_cell_result(failed).to_json())
    with pytest.raises(ValueError, match="no finished cells under demo/cells"):
        write_frontier(storage, "demo")
