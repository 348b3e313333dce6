import numpy as np
import pytest
import torch

from w2sweep.data import make_pools
from w2sweep.data.synthetic import make_sentiment
from w2sweep.config import PoolSizes
from w2sweep.metrics import accuracy, auroc
from w2sweep.models import load_classifier
from w2sweep.train import TokenizedTexts, TrainSettings, _val_score, fine_tune, predict

SETTINGS = TrainSettings(lr=2e-3, epochs=6, batch_size=32, max_length=32, patience=2)


def _tok(tokenizer, texts):
    return TokenizedTexts(tokenizer, texts, 32)


def _pools():
    return make_pools(make_sentiment(1500, seed=0), PoolSizes(weak_train=600, val=150, test=300), seed=0)


def test_fine_tune_learns_from_labels_and_restores_best_validation_weights():
    pools = _pools()
    tokenizer, model = load_classifier("tiny-bert", seed=0)
    test = _tok(tokenizer, pools.test.texts)
    before = accuracy(predict(model, test), pools.test.labels)
    stats = fine_tune(model, _tok(tokenizer, pools.weak_train.texts), pools.weak_train.labels.astype(np.float32),
                      val_examples=_tok(tokenizer, pools.val.texts), val_labels=pools.val.labels,
                      settings=SETTINGS, seed=0)
    scores = predict(model, test)
    after = accuracy(scores, pools.test.labels)
    assert stats["num_steps"] == stats["num_epochs"] * 19  # ceil(600 / 32) steps per epoch
    assert after > max(before, 0.5) + 0.05, (before, after)
    assert auroc(scores, pools.test.labels) > 0.6
    # The weights left in the model are the best epoch's: they reproduce the best validation score.
    val = predict(model, _tok(tokenizer, pools.val.texts))
    assert _val_score(val, pools.val.labels) == stats["best_val_auroc"]


def test_random_labels_teach_nothing():
    pools = _pools()
    tokenizer, model = load_classifier("tiny-bert", seed=0)
    noise = np.random.default_rng(1).integers(0, 2, len(pools.weak_train)).astype(np.float32)
    fine_tune(model, _tok(tokenizer, pools.weak_train.texts), noise, val_examples=_tok(tokenizer, pools.val.texts),
              val_labels=pools.val.labels, settings=SETTINGS, seed=0)
    assert abs(accuracy(predict(model, _tok(tokenizer, pools.test.texts)), pools.test.labels) - 0.5) < 0.12


def test_empty_stage_trains_nothing():
    tokenizer, model = load_classifier("tiny-bert", seed=0)
    before = [p.clone() for p in model.parameters()]
    stats = fine_tune(model, _tok(tokenizer, []), np.zeros(0, np.float32), val_examples=_tok(tokenizer, ["a"]),
                      val_labels=np.array([1]), settings=SETTINGS, seed=0)
    assert stats["num_steps"] == 0
    assert all((p == q).all() for p, q in zip(before, model.parameters()))


def test_few_labels_train_for_min_steps():
    pools = _pools()
    tokenizer, model = load_classifier("tiny-bert", seed=0)
    settings = TrainSettings(lr=1e-3, epochs=2, batch_size=32, max_length=32, patience=5, min_steps=20)
    stats = fine_tune(model, _tok(tokenizer, pools.oracle.texts[:8]), pools.oracle.labels[:8].astype(np.float32),
                      val_examples=_tok(tokenizer, pools.val.texts), val_labels=pools.val.labels,
                      settings=settings, seed=0)
    assert stats["num_steps"] == 20 and stats["num_epochs"] == 20


def test_learning_rate_warms_up_linearly_then_decays_along_a_cosine():
    import math

    import torch

    from w2sweep.train import get_cosine_schedule_with_warmup

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=4, num_training_steps=24)
    lrs = []
    for _ in range(24):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[4:] == pytest.approx([0.5 * (1 + math.cos(math.pi * k / 20)) for k in range(20)])


@pytest.mark.parametrize("ref,side", [("tiny-bert", "right"), ("tiny-qwen2", "right"), ("tiny-qwen2", "left")])
def test_tokenized_once_batches_equal_the_tokenizers_own_padding(ref, side):
    tokenizer, _ = load_classifier(ref, seed=0)
    tokenizer.truncation_side = tokenizer.padding_side = side
    texts = ["a wonderful, moving film that stays with you long after the credits roll", "dull", "", "fine film"]
    idx = np.array([3, 0, 1])
    got = TokenizedTexts(tokenizer, texts, 8).batch(idx, "cpu")
    want = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=8, return_tensors="pt")
    assert set(got) == set(want.keys())
    for name in got:
        assert torch.equal(got[name], want[name]), name
    assert got["input_ids"].shape == (3, 8)  # the long text was truncated, the others padded to it
