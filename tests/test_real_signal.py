"""A real pretrained student on real data finds the signal it is known to have: all-MiniLM-L6-v2 (head
only, on its own mean pooling, trained as a probe: lr 3e-3, at least 300 steps) on a slice of SST-2 from ../shared/data, trained on 256 gold labels and
scored on 400 held-out sentences. Its accuracy is significantly above the test pool's majority rate
(one-sided exact binomial test) and its AUROC interval excludes 0.5: the platform's statistics must be
able to say "signal" as well as "noise"."""

import pytest
from scipy.stats import binomtest

from conftest import SHARED_DATA, tiny_config
from w2sweep.cells import run_cell
from w2sweep.config import parse_config
from w2sweep.grid import plan
from w2sweep.results import read_predictions
from w2sweep.storage import Storage


@pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="../shared/data/sst2 is not beside the checkout")
def test_minilm_on_an_sst2_slice_is_significantly_above_the_majority_rate(tmp_path):
    config = parse_config(tiny_config(
        str(tmp_path / "store"), name="sst2-signal",
        datasets=[dict(name="sst2", source="local", path=str(SHARED_DATA / "sst2"), text="sentence",
                       num_examples=2000, pools=dict(weak_train=50, val=100, test=400, weak_label=20,
                                                     oracle=300))],
        weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=32)],
        students=[dict(model="minilm-l6", name="minilm-head", mode="head", max_length=64, lr=3e-3, min_steps=300)],
        methods=["sft-oracle"], budgets=[256], spending_fractions=[1], seeds=[0]))
    _, cells = plan(config)
    (cell,) = cells
    storage = Storage.from_uri(config.storage)
    result = run_cell(cell, storage)

    predictions = read_predictions(storage, cell.sweep, [cell.cell_id])[cell.cell_id]
    correct = int(((predictions["p"] > 0.5) == (predictions["gold"] == 1)).sum())
    majority = max(result.test_label1_share, 1 - result.test_label1_share)
    test = binomtest(correct, len(predictions), p=majority, alternative="greater")
    assert correct / len(predictions) == pytest.approx(result.accuracy)
    assert test.pvalue < 1e-3, (result.accuracy, majority, test.pvalue)
    assert result.auroc_ci[0] > 0.5, result.auroc_ci
