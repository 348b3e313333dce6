"""The frontier says when its answer is noise: planted result tables and planted per-example
predictions with known answers (pure noise; a clear effect per budget)."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from w2sweep.frontier import aggregate, curves, pgr, regimes, write_frontier
from w2sweep.frontier.stats import paired_differences
from w2sweep.results import read_predictions, write_predictions
from w2sweep.storage import Storage

from test_frontier import row, table, write_cells

FRACTIONS = [0.0, 0.5, 1.0]
BUDGETS = [10.0, 100.0, 1000.0]
# Planted accuracy by budget and fraction: quantity-dominant, mixed, quality-dominant.
EFFECT = {10.0: {0.0: 0.80, 0.5: 0.74, 1.0: 0.66},
          100.0: {0.0: 0.76, 0.5: 0.84, 1.0: 0.77},
          1000.0: {0.0: 0.78, 0.5: 0.85, 1.0: 0.90}}
EXPECTED = {10.0: "quantity-dominant", 100.0: "mixed", 1000.0: "quality-dominant"}


NOISE_BUDGETS = [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]
NOISE_FRACTIONS = [0.0, 0.25, 0.5, 0.75, 1.0]


def noise_rows(num_seeds: int = 10, *, sd: float = 0.02, seed: int = 0) -> list[dict]:
    """Every model at the majority rate 0.69 plus noise, AUROC around 0.5; a ceiling that is noise too."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in NOISE_BUDGETS:
        for f in NOISE_FRACTIONS:
            for s in range(num_seeds):
                acc = 0.69 + rng.normal(0, sd)
                rows.append(row(acc, budget=budget, fraction=f, seed=s, auroc=0.5 + rng.normal(0, 0.02),
                                weak_accuracy=0.69, test_label1_share=0.31))
    for s in range(num_seeds):
        rows.append(row(0.69 + rng.normal(0, sd), method="ceiling", budget=1e4, fraction=1.0, seed=s,
                        auroc=0.5 + rng.normal(0, 0.02), weak_accuracy=0.69, test_label1_share=0.31))
    return rows


def effect_rows(num_seeds: int = 6, *, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.01, num_seeds)  # a seed's offset is shared by every fraction: paired
    rows = [row(EFFECT[b][f] + shared[s] + rng.normal(0, 0.003), budget=b, fraction=f, seed=s,
                auroc=EFFECT[b][f] + 0.1, weak_accuracy=0.6, test_label1_share=0.5)
            for b in BUDGETS for f in FRACTIONS for s in range(num_seeds)]
    rows += [row(0.92 + shared[s], method="ceiling", budget=1e4, fraction=1.0, seed=s, auroc=0.97,
                 weak_accuracy=0.6, test_label1_share=0.5) for s in range(num_seeds)]
    return rows


def test_pure_noise_is_indeterminate_with_pgr_nan_and_no_signal():
    rows = table(*noise_rows())
    agg = aggregate(rows, tolerance=0.0)
    r = agg.regimes[agg.regimes["method"] == "seq-sft"]
    assert len(r) == len(NOISE_BUDGETS)
    # The tolerance alone would have claimed a regime at every budget of this noise: the test can fail.
    assert (r["best_accuracy"] - r[["accuracy_at_0", "accuracy_at_1"]].min(axis=1) > 0).all()
    assert ((r["best_fraction"] > 0) & (r["best_fraction"] < 1)).sum() >= 3  # "mixed" by tolerance alone
    assert set(r["regime"]) == {"indeterminate"}
    assert r["reason"].str.startswith("no signal: ceiling AUROC").all()  # the ceiling is at chance
    alone = regimes(agg.curves, tolerance=0.0, results=rows)  # and the paired tests say so on their own
    assert alone.loc[alone["method"] == "seq-sft", "reason"].str.startswith("within noise").all()
    p = agg.pgr[agg.pgr["method"] == "seq-sft"]
    assert p["pgr"].isna().all()
    assert p["reason"].str.startswith("ceiling").all()
    assert len(agg.no_signal) == 1
    reason = agg.no_signal["reason"].iloc[0]
    assert "does not exclude 0.5" in reason and "majority-class rate 0.690" in reason
    assert agg.curves["majority_rate"].tolist() == pytest.approx([0.69] * len(agg.curves))


def test_a_planted_effect_is_found_at_every_budget_with_pgr_and_no_warning():
    rows = table(*effect_rows())
    agg = aggregate(rows, tolerance=0.01)
    r = agg.regimes[agg.regimes["method"] == "seq-sft"].set_index("budget")
    assert r["regime"].to_dict() == EXPECTED
    assert (r["reason"] == "").all()
    assert set(r["comparison"]) == {"paired t over seeds"}
    assert agg.no_signal.empty
    p = agg.pgr[(agg.pgr["method"] == "seq-sft") & (agg.pgr["budget"] == 1000.0) & (agg.pgr["spending_fraction"] == 1.0)]
    point = p.iloc[0]
    assert point["pgr"] == pytest.approx((0.90 - 0.6) / (0.92 - 0.6), abs=0.02)
    assert point["pgr_low"] < point["pgr"] < point["pgr_high"]


def test_a_separable_effect_gets_no_regime_when_the_ceiling_is_at_chance():
    """Endpoints the paired test separates, under a student that cannot rank the test pool from every gold
    label: no regime, "no signal" with the ceiling's interval, at every budget."""
    rng = np.random.default_rng(1)
    rows = [r if r["method"] != "ceiling" else {**r, "auroc": 0.5 + rng.normal(0, 0.02)} for r in effect_rows()]
    agg = aggregate(table(*rows), tolerance=0.01)
    r = agg.regimes[agg.regimes["method"] == "seq-sft"].set_index("budget")
    assert set(r["regime"]) == {"indeterminate"}
    assert r["reason"].str.match(r"no signal: ceiling AUROC 0\.\d+ \[0\.\d+, 0\.\d+\] \(ceiling\) does not exclude 0\.5").all()
    alone = regimes(agg.curves, tolerance=0.01, results=table(*rows))
    assert alone[alone["method"] == "seq-sft"].set_index("budget")["regime"].to_dict() == EXPECTED


def test_the_paired_t_interval_is_scipys():
    rows = table(*effect_rows())
    c = curves(rows)
    keys = ["dataset", "weak_supervisor", "student", "method", "budget"]
    pairs = pd.DataFrame([dict(dataset="boolq", weak_supervisor="qwen-0.5b", student="qwen-7b", method="seq-sft",
                               budget=100.0, fraction_a=0.5, fraction_b=0.0, confidence=0.9)])
    d = paired_differences(pairs, keys, rows, c, None, "accuracy").iloc[0]
    at = {f: rows[(rows["budget"] == 100.0) & (rows["spending_fraction"] == f) & (rows["method"] == "seq-sft")]
          .sort_values("seed")["accuracy"].to_numpy() for f in (0.5, 0.0)}
    ci = sps.ttest_rel(at[0.5], at[0.0]).confidence_interval(0.9)
    assert (d["diff_low"], d["diff_high"]) == pytest.approx((ci.low, ci.high))


def test_metric_auroc_ranks_by_auroc():
    rows = table(*effect_rows())
    agg = aggregate(rows, tolerance=0.01, metric="auroc")
    assert "best_auroc" in agg.regimes and "auroc_at_0" in agg.regimes
    assert agg.regimes.set_index("budget").loc[10.0, "best_fraction"] == 0.0
    with pytest.raises(ValueError, match="metric='f1'"):
        aggregate(rows, metric="f1")


# ---- from per-example predictions -----------------------------------------------------------------

NUM_TEST = 400


def planted_predictions(rng, accuracy: float, gold: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """P(label=1) per example whose accuracy is about `accuracy`: an example is right when its shared
    difficulty (the same for every cell: paired) is below `accuracy`."""
    right = shared < accuracy
    confidence = 0.55 + 0.4 * rng.random(len(gold))
    return np.where(right == (gold == 1), confidence, 1 - confidence)


def write_planted(storage: Storage, *, effect: bool, num_seeds: int = 1) -> None:
    rng = np.random.default_rng(1)
    gold = (rng.random(NUM_TEST) < (0.5 if effect else 0.31)).astype(int)
    shared = rng.random(NUM_TEST)
    cells = []
    points = [(b, f, (EFFECT[b][f] if effect else 0.69)) for b in BUDGETS for f in FRACTIONS]
    points.append((1e4, 1.0, 0.95 if effect else 0.69))
    for budget, f, acc in points:
        for s in range(num_seeds):
            method = "ceiling" if budget == 1e4 else "seq-sft"
            r = row(acc, method=method, budget=budget, fraction=f, seed=s, weak_accuracy=0.6)
            if effect:
                p = planted_predictions(rng, acc, gold, shared)
            else:  # noise: the majority class, whatever the example
                p = np.where(rng.random(NUM_TEST) < 0.9, 0.3, 0.7) + rng.normal(0, 0.01, NUM_TEST)
            write_predictions(storage, "demo", r["cell_id"], np.arange(NUM_TEST), gold, np.clip(p, 0, 1))
            cells.append(r)
    write_cells(storage, cells)


def read_csv(storage: Storage, name: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(f"demo/frontier/{name}"))).fillna(
        {"reason": "", "comparison": ""})


def test_predictions_round_trip_and_are_checked(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    key = write_predictions(storage, "demo", "c1", [2, 0, 1], [1, 0, 1], np.array([0.9, 0.2, 0.4]))
    assert key == "demo/predictions/c1.parquet"
    got = read_predictions(storage, "demo", ["c1", "absent"])
    assert list(got) == ["c1"]
    assert got["c1"]["example_id"].tolist() == [0, 1, 2] and got["c1"]["gold"].tolist() == [0, 1, 1]
    assert got["c1"]["p"].dtype == np.float32
    with pytest.raises(ValueError, match="gold labels"):
        write_predictions(storage, "demo", "c2", [0, 1], [0, 2], [0.1, 0.2])


def test_planted_predictions_with_one_seed_find_each_regime(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    write_planted(storage, effect=True)
    summary = write_frontier(storage, "demo", tolerance=0.01)
    assert summary["num_predictions"] == 3 * len(BUDGETS) + 1 and summary["no_signal"] == []
    r = read_csv(storage, "regimes.csv").query("method == 'seq-sft'").set_index("budget")
    assert r["regime"].to_dict() == EXPECTED
    assert set(r["comparison"]) == {"paired bootstrap over test examples"}
    c = read_csv(storage, "curves.csv")
    assert set(c["ci_method"]) == {"bootstrap over test examples"}
    assert c["majority_rate"].between(0.45, 0.55).all()  # from the predictions' gold labels
    assert (c["accuracy_ci_low"] < c["accuracy_mean"]).all() and (c["accuracy_mean"] < c["accuracy_ci_high"]).all()


def test_planted_noise_predictions_are_flagged(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    write_planted(storage, effect=False)
    summary = write_frontier(storage, "demo", tolerance=0.0)
    assert [g["dataset"] for g in summary["no_signal"]] == ["boolq"]
    assert "does not exclude 0.5" in summary["no_signal"][0]["reason"]
    assert set(read_csv(storage, "regimes.csv")["regime"]) == {"indeterminate"}
    assert read_csv(storage, "pgr.csv")["pgr"].isna().all()
    assert len(read_csv(storage, "no_signal.csv")) == 1
    assert "No signal: boolq / qwen-0.5b / qwen-7b" in storage.read_bytes("demo/frontier/report.html").decode()
    manifest = storage.read_bytes("demo/frontier/manifest.json").decode()
    assert '"metric": "accuracy"' in manifest and '"confidence": 0.95' in manifest


def test_pgr_is_nan_when_the_ceiling_is_within_noise_of_the_weak_accuracy():
    rows = [row(0.70, weak_accuracy=0.689), row(0.69, method="ceiling", fraction=1.0, weak_accuracy=0.689)]
    point = pgr(curves(table(*rows))).query("method == 'seq-sft'").iloc[0]
    assert math.isnan(point["pgr"])  # 0.69 > 0.689, but its stored CI [0.64, 0.74] does not lie above it
    assert point["reason"].startswith("ceiling - weak not significantly above 0")


def test_confidence_out_of_range_is_refused():
    with pytest.raises(ValueError, match="confidence=1.5"):
        regimes(curves(table(row(0.7))), tolerance=0.01, confidence=1.5)


def test_cli_frontier_prints_one_no_signal_line_per_group_and_takes_metric_and_confidence(tmp_path, capsys):
    from w2sweep.cli import main

    storage = Storage.from_uri(str(tmp_path))
    write_cells(storage, noise_rows(num_seeds=4))
    assert main(["frontier", str(tmp_path / "demo"), "--metric", "auroc", "--confidence", "0.9"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("NO SIGNAL")]
    assert len(lines) == 1 and lines[0].startswith("NO SIGNAL: boolq / qwen-0.5b / qwen-7b: ")
    manifest = storage.read_bytes("demo/frontier/manifest.json").decode()
    assert '"metric": "auroc"' in manifest and '"confidence": 0.9' in manifest
    assert main(["frontier", str(tmp_path / "demo"), "--confidence", "1.5"]) == 2
    assert "confidence=1.5" in capsys.readouterr().err


def test_the_resampled_auroc_is_sklearns_on_every_resample():
    from sklearn.metrics import roc_auc_score

    from w2sweep.frontier.stats import _resampled_auroc

    rng = np.random.default_rng(3)
    gold = (rng.random(300) < 0.4).astype(int)
    p = np.round(np.clip(0.2 * gold + 0.8 * rng.random(300), 0, 1), 2)  # rounded: ties count one half
    positive, negative = np.flatnonzero(gold == 1), np.flatnonzero(gold == 0)
    i = rng.integers(0, len(positive), (6, len(positive)))
    j = rng.integers(0, len(negative), (6, len(negative)))
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    expected = [roc_auc_score(labels, np.r_[p[positive][i[k]], p[negative][j[k]]]) for k in range(6)]
    assert _resampled_auroc(p, positive, negative)(i, j) == pytest.approx(expected)
