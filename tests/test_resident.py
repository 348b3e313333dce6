"""Model-resident workers (`w2sweep.models.resident`): a process keeps its student between cells, and
a cell cannot tell: its weights, its training and its test scores are bit for bit those of a fresh
`load_classifier`, in every mode and after any mode before it, while the checkpoint is read once."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from w2sweep.models import TINY, default_tokenizer, load_classifier, load_tokenizer, resident
from w2sweep.train import TokenizedTexts, TrainSettings, fine_tune, predict

SETTINGS = TrainSettings(lr=5e-3, epochs=1, batch_size=8, max_length=16, patience=2)
WORDS = "good bad great awful fine poor nice terrible lovely dull".split()


def _save_body(path, tiny: str) -> str:
    """A pretrained checkpoint without a classification head (the head is then drawn from the seed,
    as for a real pretrained student): a tiny config's body, or its causal LM."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    tokenizer = load_tokenizer(default_tokenizer(tiny))
    params = dict(TINY[tiny])
    config = AutoConfig.for_model(params.pop("model_type"), vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, **params)
    torch.manual_seed(123)
    body = AutoModel.from_config(config) if tiny == "tiny-bert" else AutoModelForCausalLM.from_config(config)
    body.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {tiny: _save_body(root / tiny, tiny) for tiny in ("tiny-bert", "tiny-qwen2")}


@pytest.fixture(autouse=True)
def fresh_residency(monkeypatch):
    monkeypatch.setenv(resident.ENV, "1")
    resident.clear()
    yield
    resident.clear()


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    """How many times a checkpoint was read (AutoModelForSequenceClassification.from_pretrained)."""
    from transformers import AutoModelForSequenceClassification

    calls = []
    original = AutoModelForSequenceClassification.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        calls.append(args[0] if args else kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", classmethod(counted))
    return calls


def _texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=6)) for _ in range(n)]
    labels = np.array([float(sum(w in ("good", "great", "fine", "nice", "lovely") for w in t.split()) >= 3)
                       for t in texts], dtype=np.float32)
    return texts, labels


def _cell(tokenizer, model, seed: int, cache=None) -> tuple[dict, np.ndarray]:
    """What a cell does with its student: weights as handed over, then train and score."""
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    (train, y), (val, vy), (test, _) = _texts(32, 1), _texts(16, 2), _texts(24, 3)

    def examples(texts):
        return TokenizedTexts(tokenizer, texts, SETTINGS.max_length, cache=cache)

    fine_tune(model, examples(train), y, val_examples=examples(val), val_labels=vy.astype(np.int64),
              settings=SETTINGS, seed=seed * 1000)
    return weights, predict(model, examples(test))


SEQUENCE = [("full", 1), ("lora", 2), ("lora", 1), ("head", 3), ("full", 2)]


@pytest.mark.parametrize("tiny", ["tiny-bert", "tiny-qwen2"])
def test_a_resident_student_is_bit_for_bit_a_fresh_load_in_every_mode(checkpoints, from_pretrained_calls, tiny):
    """Cells of one student in every mode, one after another in one process: each gets the weights a
    fresh load gives for its seed and mode, trains to the same test scores, and only the first loads."""
    ref = checkpoints[tiny]
    resident_loads = 0
    for mode, seed in SEQUENCE:
        before = len(from_pretrained_calls)
        tokenizer, model = resident.load_student(ref, seed=seed, mode=mode, lora_rank=4)
        resident_loads += len(from_pretrained_calls) - before
        kept = _cell(tokenizer, model, seed, cache=resident.token_cache(tokenizer, SETTINGS.max_length))
        fresh = _cell(*load_classifier(ref, seed=seed, mode=mode, lora_rank=4), seed)
        assert kept[0].keys() == fresh[0].keys()
        for name in fresh[0]:
            assert torch.equal(kept[0][name], fresh[0][name]), (mode, seed, name)
        assert np.array_equal(kept[1], fresh[1]), (mode, seed)
    assert resident_loads == 1 and resident.stats["loads"] == 1


def test_seed_dependent_weights_differ_by_seed_and_the_body_does_not(checkpoints):
    """The replay does draw the head from each seed (the equality above is not two fixed heads)."""
    ref = checkpoints["tiny-bert"]
    a = {n: p.detach().clone() for n, p in resident.load_student(ref, seed=1)[1].named_parameters()}
    b = dict(resident.load_student(ref, seed=2)[1].named_parameters())
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
    assert torch.equal(a["bert.embeddings.word_embeddings.weight"], b["bert.embeddings.word_embeddings.weight"])


def test_at_most_the_bound_of_students_stay_and_the_least_recent_goes_first(checkpoints, monkeypatch,
                                                                           from_pretrained_calls):
    bert, qwen = checkpoints["tiny-bert"], checkpoints["tiny-qwen2"]
    for ref in (bert, qwen, bert):  # bound 1: each switch drops the other before loading
        resident.load_student(ref, seed=0)
        assert len(resident._MODELS) == 1
    assert len(from_pretrained_calls) == 3
    resident.clear()
    monkeypatch.setenv(resident.ENV, "2")
    for ref in (bert, qwen, bert, qwen):
        resident.load_student(ref, seed=0)
    assert len(from_pretrained_calls) == 5 and len(resident._MODELS) == 2
    monkeypatch.setenv(resident.ENV, "0")  # off: every cell loads, nothing is kept or tokenized twice
    resident.clear()
    resident.load_student(bert, seed=0)
    resident.load_student(bert, seed=0)
    assert len(from_pretrained_calls) == 7 and not resident._MODELS
    assert resident.token_cache(load_tokenizer(bert), 16) is None


def test_tiny_models_are_loaded_afresh(from_pretrained_calls, monkeypatch):
    """Every weight of a tiny model is drawn from the seed: nothing to keep."""
    resident.load_student("tiny-bert", seed=0)
    assert not resident._MODELS and resident.stats["loads"] == 0


def test_a_student_whose_initialisation_does_not_replay_is_never_kept(checkpoints, monkeypatch,
                                                                      from_pretrained_calls):
    """Checked at its first load: a model whose seeded initialisation does not replay exactly (here:
    a replay drawing from another seed) is used as loaded, once, and loaded afresh for the next cell."""
    ref = checkpoints["tiny-bert"]
    expected = dict(load_classifier(ref, seed=4)[1].named_parameters())
    rng = torch.get_rng_state()

    def off_by_one_draw(model, missing, seed):
        torch.manual_seed(seed + 1)
        model.initialize_weights()

    monkeypatch.setattr(resident, "_replay", off_by_one_draw)
    with pytest.warns(UserWarning, match="does not replay exactly"):
        _, model = resident.load_student(ref, seed=4)
    assert not resident._MODELS and len(from_pretrained_calls) == 2  # the reference load, and this one
    assert all(torch.equal(p, expected[n]) for n, p in model.named_parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # the RNG where the fresh load above left it
    resident.load_student(ref, seed=4)
    assert len(from_pretrained_calls) == 3 and not resident._MODELS


def test_tokenized_texts_from_the_cache_are_the_tokenizers_own(checkpoints):
    tokenizer = load_tokenizer(checkpoints["tiny-bert"])
    texts, _ = _texts(20, 5)
    cache = resident.token_cache(tokenizer, 8)
    first = TokenizedTexts(tokenizer, texts[:12], 8, cache=cache)
    calls = []
    tokenizer_call = type(tokenizer).__call__
    type(tokenizer).__call__ = lambda self, batch, **kw: calls.append(list(batch)) or tokenizer_call(self, batch, **kw)
    try:
        again = TokenizedTexts(tokenizer, texts[5:] + texts[:3], 8, cache=resident.token_cache(tokenizer, 8))
    finally:
        type(tokenizer).__call__ = tokenizer_call
    assert calls == [list(dict.fromkeys(t for t in texts[12:]))]  # only the texts it had not seen
    plain = TokenizedTexts(tokenizer, texts[5:] + texts[:3], 8)
    idx = np.arange(len(plain))
    assert all(torch.equal(a, b) for a, b in zip(again.batch(idx, "cpu").values(), plain.batch(idx, "cpu").values()))
    assert len(first) == 12 and resident.token_cache(tokenizer, 9) is not cache  # max_length is in the key


def test_run_cell_scores_the_same_with_and_without_residency(checkpoints, tmp_path, monkeypatch,
                                                             from_pretrained_calls):
    """Whole cells (full, lora and head students of one checkpoint, as one reused trial actor runs
    them): the same test-pool scores bit for bit, with the checkpoint loaded once for all of them."""
    from w2sweep.cells import run_cell
    from w2sweep.config import parse_config
    from w2sweep.grid import Cell, expand_cells
    from w2sweep.results import read_predictions
    from w2sweep.storage import Storage

    ref = checkpoints["tiny-bert"]
    scores, loads = {}, {}
    for limit in ("1", "0"):
        monkeypatch.setenv(resident.ENV, limit)
        resident.clear()
        before = len(from_pretrained_calls)
        config = parse_config(tiny_config(
            str(tmp_path / f"store{limit}"),
            datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=300,
                           pools=dict(weak_train=40, val=30, test=40, weak_label=60, oracle=60))],
            weak_supervisors=[dict(model="tiny-bert", name="weak", epochs=1, max_length=16)],
            students=[dict(model=ref, name=mode, mode=mode, epochs=1, max_length=16, lr=1e-3)
                      for mode in ("full", "lora", "head", "full")][:3],
            budgets=[8], spending_fractions=[0.5], methods=["seq-sft"]))
        storage = Storage.from_uri(config.storage)
        cells = sorted(expand_cells(config), key=lambda c: c.student.label)
        for cell in cells:
            run_cell(Cell.from_json(cell.to_json()), storage)
        preds = read_predictions(storage, config.name, [c.cell_id for c in cells])
        scores[limit] = {c.cell_id: np.asarray(preds[c.cell_id]["p"]) for c in cells}
        loads[limit] = len(from_pretrained_calls) - before
        assert json.loads(storage.read_bytes(cells[0].result_key))["cell_id"] == cells[0].cell_id
    assert scores["1"].keys() == scores["0"].keys() and len(scores["1"]) == 3
    for cell_id in scores["0"]:
        assert np.array_equal(scores["1"][cell_id], scores["0"][cell_id])
    assert loads["0"] - loads["1"] == 2  # three cells, one load (features of the head student load apart)
