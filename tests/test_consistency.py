"""Consistency checks from per-example predictions: a planted cell whose predictions are flipped on
30% of the test pool is flagged and no other is; identical cells agree perfectly; the planted
conflicts are listed with their texts; the CLI's lines and exit codes."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from w2sweep import consistency
from w2sweep.config import DatasetSpec
from w2sweep.data import pools_for
from w2sweep.results import write_predictions
from w2sweep.storage import Storage

from test_frontier import row, write_cells

SPEC = DatasetSpec(name="synthetic-sentiment", source="synthetic", num_examples=1200,
                   pools=dict(weak_train=200, val=100, test=200))
GROUP = dict(dataset="synthetic-sentiment", student="tiny-student")
METHODS, FRACTIONS = ["seq-sft", "aux-conf"], [0.0, 0.25, 0.5, 0.75]


def planted_p(rng, gold: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A student's P(label=1): confident (0.85-0.99) and right except on the shared `wrong` examples,
    plus 6 examples of its own flipped without confidence (p 0.45/0.55). Returns (p, its noisy ids)."""
    pred = np.where(wrong, 1 - gold, gold)
    p = np.where(pred == 1, 0.85 + 0.14 * rng.random(len(gold)), 0.15 - 0.14 * rng.random(len(gold)))
    noisy = rng.choice(len(gold), 6, replace=False)
    p[noisy] = np.where(pred[noisy] == 1, 0.45, 0.55)
    return p, noisy


def plant(storage: Storage, *, flip: float = 0.3, seeds=(0,)) -> tuple[str, np.ndarray]:
    """8 cells of one (dataset, student) group per seed, results and predictions; the first cell of
    seed 0 has `flip` of its confident predictions flipped. Returns (its cell id, the flipped ids)."""
    rng = np.random.default_rng(0)
    cells, bad, flipped = [], None, np.array([], dtype=int)
    for seed in seeds:
        test = pools_for(SPEC, seed).test
        gold = np.asarray(test.labels)
        wrong = rng.random(len(gold)) < 0.15  # shared by every student: agreement is not accuracy
        for method in METHODS:
            for f in FRACTIONS:
                p, noisy = planted_p(rng, gold, wrong)
                r = row(0.8, method=method, fraction=f, seed=seed, **GROUP,
                        config=dict(dataset=SPEC.canonical_dump(), seed=seed))
                if bad is None:
                    clean = np.setdiff1d(np.arange(len(gold)), noisy)
                    flipped = np.sort(rng.choice(clean, int(flip * len(gold)), replace=False))
                    p[flipped] = 1 - p[flipped]
                    bad = r["cell_id"]
                write_predictions(storage, "demo", r["cell_id"], np.arange(len(gold)), gold, p)
                cells.append(r)
    write_cells(storage, cells)
    return bad, flipped


def test_a_cell_flipped_on_30_percent_is_flagged_and_no_other(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    bad, flipped = plant(storage)
    checks = consistency.read_and_check(storage, "demo")
    cells = checks.cells.set_index("cell_id")
    assert len(cells) == 8 and checks.flagged()["cell_id"].tolist() == [bad]
    assert cells.loc[bad, "consensus_agreement"] < 0.75
    assert (cells.drop(bad)["consensus_agreement"] > 0.95).all()
    group = checks.groups.iloc[0]
    assert (group["n_cells"], group["n_pairs"], group["n_flagged"]) == (8, 28, 1) and group["texts_rebuilt"]
    assert np.isfinite(group["spearman_rho"]) and group["spearman_note"] == "n=8"


def test_the_disagreements_are_the_planted_conflicts_with_their_texts(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    bad, flipped = plant(storage)
    d = consistency.read_and_check(storage, "demo").disagreements
    assert sorted(d["example_id"]) == flipped.tolist()
    texts = pools_for(SPEC, 0).test.texts
    assert d["text"].tolist() == [texts[i] for i in d["example_id"]]
    assert all(bad in cells for cells in d["cells_1"] + d["cells_0"])
    assert (d[["n_confident_1", "n_confident_0"]].min(axis=1) == 1).all()
    capped = consistency.read_and_check(storage, "demo", max_disagreements=5).disagreements
    assert len(capped) == 5


def test_identical_cells_agree_perfectly_and_few_cells_say_n_too_small():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"example_id": np.arange(50), "gold": rng.integers(0, 2, 50),
                          "p": rng.random(50).astype(np.float32)})
    rows = pd.DataFrame([row(0.7, method=m, **GROUP) for m in ("a", "b", "c", "d")])
    checks = consistency.check(rows, {c: frame for c in rows["cell_id"]})
    assert (checks.pairs["agreement"] == 1).all() and np.allclose(checks.pairs["kappa"], 1.0)
    assert (checks.pairs["differs"] == "method").all()
    assert (checks.cells["consensus_agreement"] == 1).all() and not checks.cells["flagged"].any()
    assert checks.groups["spearman_note"].iat[0] == "n too small (4 < 5 cells)"
    assert checks.disagreements.empty


def test_seeds_share_only_the_texts_in_both_test_pools(tmp_path):
    storage = Storage.from_uri(str(tmp_path))
    plant(storage, seeds=(0, 1))
    pairs = consistency.read_and_check(storage, "demo").pairs
    across = pairs[pairs["differs"].str.contains("seed")]
    shared = len(set(pools_for(SPEC, 0).test.texts) & set(pools_for(SPEC, 1).test.texts))
    assert 0 < shared < 200 and (across["n_shared"] == shared).all()
    assert (pairs.loc[~pairs["differs"].str.contains("seed"), "n_shared"] == 200).all()


def test_cli_prints_a_line_per_group_and_flag_writes_csvs_and_exits_1(tmp_path, capsys):
    from w2sweep.cli import main

    storage = Storage.from_uri(str(tmp_path))
    bad, _ = plant(storage)
    assert main(["consistency", str(tmp_path / "demo")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("synthetic-sentiment / tiny-student: 8 cells, 200 examples; pairwise agreement")
    assert "Spearman(agreement, accuracy): rho=" in out[0]
    assert [line for line in out if line.startswith("FLAGGED")] == [
        line for line in out if line.startswith(f"FLAGGED: synthetic-sentiment / tiny-student / {bad}: ")]
    assert len([line for line in out if line.startswith("FLAGGED")]) == 1
    assert out[-5] == "60 examples with confident disagreements (listed in disagreements.csv)"
    for name in consistency.FILES:
        assert out.count(f"  {tmp_path / 'demo' / 'frontier' / name}") == 1
    cells = pd.read_csv(io.BytesIO(storage.read_bytes("demo/frontier/consistency_cells.csv")))
    assert cells.loc[cells["flagged"], "cell_id"].tolist() == [bad]


def test_cli_exits_0_without_flags_and_2_with_one_line_without_predictions(tmp_path, capsys):
    from w2sweep.cli import main

    storage = Storage.from_uri(str(tmp_path))
    plant(storage, flip=0.0)
    assert main(["consistency", str(tmp_path / "demo")]) == 0
    assert "FLAGGED" not in capsys.readouterr().out
    write_cells(storage, [row(0.7)], sweep="old")
    assert main(["consistency", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("consistency: ") and "no per-example predictions" in err[0]
    assert main(["consistency", str(tmp_path / "empty")]) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert main(["consistency", str(tmp_path / "demo"), "--confident", "0.7"]) == 2


def test_write_frontier_adds_the_csvs_and_a_report_section(tmp_path):
    from w2sweep.frontier import write_frontier

    storage = Storage.from_uri(str(tmp_path))
    bad, _ = plant(storage)
    keys = write_frontier(storage, "demo")["keys"]
    assert all(f"demo/frontier/{name}" in keys for name in consistency.FILES)
    page = storage.read_bytes("demo/frontier/report.html").decode()
    assert '<h2 id="consistency">Consistency</h2>' in page and f"Flagged: synthetic-sentiment / tiny-student / {bad}" in page


def test_every_kappa_is_sklearns_on_the_shared_examples(tmp_path):
    """The pairs' kappas come from their 2x2 counts at once; each must be cohen_kappa_score's, NaN
    where sklearn's is undefined (both cells predict one and the same class)."""
    import warnings

    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(5)
    p = {"random": rng.random(40), "same": rng.random(40), "ones": np.full(40, 0.9), "ones2": np.full(40, 0.8),
         "zeros": np.full(40, 0.1), "few": np.where(np.arange(40) < 2, 0.9, 0.1)}
    p["same"][:30] = p["random"][:30]
    ids = {"random": np.arange(40), "same": np.arange(40), "ones": np.arange(40), "ones2": np.arange(40),
           "zeros": np.arange(40), "few": np.arange(40)}
    ids["few"] = np.arange(40) + 25  # shares 15 examples with the others (no texts: matched by id)
    rows = pd.DataFrame([row(0.7, method=m, **GROUP) | dict(cell_id=m) for m in p])
    preds = {m: pd.DataFrame({"example_id": ids[m], "gold": 0, "p": p[m]}) for m in p}
    pairs = consistency.check(rows, preds).pairs
    for r in pairs.itertuples(index=False):
        a, b = (pd.Series(preds[c]["p"].to_numpy() > 0.5, index=ids[c]) for c in (r.cell_a, r.cell_b))
        shared = a.index.intersection(b.index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = cohen_kappa_score(a[shared], b[shared], labels=[False, True])
        assert r.n_shared == len(shared) and r.agreement == pytest.approx(np.mean(a[shared] == b[shared]))
        assert r.kappa == pytest.approx(expected, nan_ok=True), (r.cell_a, r.cell_b)
