import numpy as np
import pytest
import torch

from w2sweep.data import make_pools
from w2sweep.data.synthetic import make_sentiment
from w2sweep.config import PoolSizes
from w2sweep.metrics import accuracy, auroc
from w2sweep.models import load_classifier
from w2sweep.losses import xent as train_xent
from w2sweep.train import TokenizedTexts, TrainSettings, fine_tune, predict
from w2sweep.train.loop import _val_score

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


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_bf16_weights_train_with_fp32_master_weights(monkeypatch, mode):
    """The GPU path, forced on the CPU: bf16 parameters while training, the fp32 masters put back after."""
    import w2sweep.train.plain as plain

    monkeypatch.setattr(plain, "bf16_weights", lambda device: True)
    pools = _pools()
    tokenizer, model = load_classifier("tiny-bert", seed=0, mode=mode)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    test = _tok(tokenizer, pools.test.texts)
    before = accuracy(predict(model, test), pools.test.labels)
    dtypes = set()

    def loss(logits, soft_labels, *, progress):
        dtypes.update(p.dtype for p in model.parameters())
        return train_xent(logits, soft_labels, progress=progress)

    fine_tune(model, _tok(tokenizer, pools.weak_train.texts), pools.weak_train.labels.astype(np.float32),
              val_examples=_tok(tokenizer, pools.val.texts), val_labels=pools.val.labels,
              settings=TrainSettings(lr=2e-3, epochs=4, batch_size=32, max_length=32,
                                     patience=2, micro_batch_size=16),
              seed=0, loss_fn=loss)
    assert dtypes == {torch.bfloat16}
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    assert all(torch.equal(params[name], value) for name, value in frozen.items())  # not rounded through bf16
    # Updates below bf16's resolution were kept: trained weights are not all bf16 values.
    trained = [p for p in params.values() if p.requires_grad]
    assert any(not torch.equal(p, p.bfloat16().float()) for p in trained)
    if mode == "full":  # a random tiny body with LoRA adapters learns too little to tell
        after = accuracy(predict(model, test), pools.test.labels)
        assert after > max(before, 0.5) + 0.05, (before, after)


def test_a_last_validation_that_is_the_best_copies_no_weights(monkeypatch):
    """Keeping the best weights costs a copy of every trained weight; when the best is the last state
    and no checkpoint needs it, the model already holds it."""
    import w2sweep.train.plain as plain

    copies = []
    monkeypatch.setattr(plain, "copy_weights", lambda named: copies.append(1) or {n: p.detach().clone() for n, p in named})
    pools = _pools()
    tokenizer, model = load_classifier("tiny-bert", seed=0)
    args = dict(val_examples=_tok(tokenizer, pools.val.texts), val_labels=pools.val.labels, seed=0)
    fine_tune(model, _tok(tokenizer, pools.weak_train.texts), pools.weak_train.labels.astype(np.float32),
              settings=TrainSettings(lr=2e-3, epochs=1, batch_size=32, max_length=32), **args)
    assert copies == []
    fine_tune(model, _tok(tokenizer, pools.weak_train.texts), pools.weak_train.labels.astype(np.float32),
              settings=TrainSettings(lr=2e-3, epochs=3, batch_size=32, max_length=32, patience=3), **args)
    assert len(copies) >= 1  # an earlier epoch's best is kept while later epochs may be worse


@pytest.mark.slow
def test_compiled_training_matches_eager_training():
    from torch._dynamo.utils import counters

    pools = _pools()
    runs = []
    for compile_ in (False, True):
        tokenizer, model = load_classifier("tiny-bert", seed=0)
        losses = []

        def loss(logits, soft_labels, *, progress):
            value = train_xent(logits, soft_labels, progress=progress)
            losses.append(float(value))
            return value

        graphs = counters["stats"]["unique_graphs"]
        fine_tune(model, _tok(tokenizer, pools.weak_train.texts), pools.weak_train.labels.astype(np.float32),
                  val_examples=_tok(tokenizer, pools.val.texts), val_labels=pools.val.labels, loss_fn=loss,
                  settings=TrainSettings(lr=2e-3, epochs=3, batch_size=32, max_length=32, compile=compile_), seed=0)
        runs.append((losses, accuracy(predict(model, _tok(tokenizer, pools.test.texts)), pools.test.labels),
                     counters["stats"]["unique_graphs"] - graphs))
    (eager, eager_acc, eager_graphs), (compiled, compiled_acc, compiled_graphs) = runs
    assert eager_graphs == 0 and compiled_graphs >= 1
    # The same first batch through the same weights (dropout masks differ: compiled code draws them
    # from its own generator).
    assert compiled[0] == pytest.approx(eager[0], abs=5e-3)
    assert len(compiled) == len(eager) and compiled_acc == pytest.approx(eager_acc, abs=0.05)
    assert compiled_acc > 0.6


@pytest.mark.parametrize("bf16", [False, True])
def test_one_process_resumes_from_its_checkpoint_to_the_same_weights(monkeypatch, tmp_path, bf16):
    """A `TrainHooks` that checkpoints every epoch and dies after epoch 2; the restarted loop resumes
    there (in bf16, from the fp32 masters) and trains on as a run that never stopped."""
    import w2sweep.train as train
    import w2sweep.train.plain as plain

    monkeypatch.setattr(plain, "bf16_weights", lambda device: bf16)

    class Hooks(train.TrainHooks):
        checkpoints = True

        def __init__(self, die_after=None):
            super().__init__()
            self.die_after = die_after

        def resume_dir(self):
            return str(tmp_path) if (tmp_path / "loop.json").exists() else None

        def on_epoch_end(self, save, metrics):
            save(str(tmp_path))
            if metrics["epoch"] == self.die_after:
                raise RuntimeError("killed")

    pools = _pools()
    settings = TrainSettings(lr=2e-3, epochs=4, batch_size=32, max_length=32, patience=4)
    weights, losses = [], []
    for run in ("steady", "killed"):
        tokenizer, model = load_classifier("tiny-bert", seed=0)
        args = dict(val_examples=_tok(tokenizer, pools.val.texts), val_labels=pools.val.labels, settings=settings, seed=0)
        data = (_tok(tokenizer, pools.weak_train.texts[:200]), pools.weak_train.labels[:200].astype(np.float32))
        if run == "killed":
            with pytest.raises(RuntimeError, match="killed"):
                fine_tune(model, *data, hooks=Hooks(die_after=2), **args)
            tokenizer, model = load_classifier("tiny-bert", seed=0)
        stats = fine_tune(model, *data, hooks=Hooks(), **args)
        assert stats["resumed_from_epoch"] == (2 if run == "killed" else 0)
        weights.append({name: p.detach().clone() for name, p in model.named_parameters()})
        losses.append(stats["train_losses"])
        for f in tmp_path.iterdir():
            f.unlink()
    assert losses[0] == losses[1]  # epochs 3 and 4 trained on from the same weights and optimizer state
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


class _RunsCode:
    """A pickle that, unpickled by a full unpickler, calls `open(marker, "w")`: code chosen by whoever
    wrote the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_in_a_checkpoint_is_refused_not_run(tmp_path):
    """Checkpoints come back from the sweep's storage: whoever can write there must not run code on the
    workers. Every file a resume reads is loaded with weights_only=True, so a pickle that names a
    callable raises instead of calling it."""
    import pickle
    import re
    from pathlib import Path

    from w2sweep.train.plain import PlainLoop

    model = torch.nn.Linear(4, 2)
    loop = PlainLoop(model, TrainSettings(lr=1e-3, epochs=1, batch_size=4, max_length=8), total_steps=10)
    loop.save(tmp_path)  # what the loop writes loads back under weights_only
    loop.load(tmp_path)
    marker = tmp_path / "pwned"
    torch.save(dict(model=_RunsCode(marker)), tmp_path / "plain_loop.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        loop.load(tmp_path)
    assert not marker.exists()
    # Every torch.load in the package reads weights only; DeepSpeed's own loader is the documented exception.
    sources = Path(__file__).resolve().parents[1] / "platform" / "w2sweep"
    loads = [(p.name, m.group(0)) for p in sources.rglob("*.py")
             for m in re.finditer(r"torch\.load\([^\n]*", p.read_text())]
    assert loads and all("weights_only=True" in call for _, call in loads), loads
