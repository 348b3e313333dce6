"""P4: weak labels and head-only students' frozen-body features are computed once per key across a
sweep's cells and its re-runs.

The weak supervisor's training is counted by wrapping `w2sweep.weak.train_weak_supervisor`, and the
features' computation by wrapping `w2sweep.features.compute_features`; the cells and the re-run go
through the same plain functions a Tune trial calls (`run_cell`, which makes sure of its
prerequisites under the claims it is handed: `w2sweep.prerequisites`), so no Ray is needed.
tests/test_claims.py counts them in a real Ray sweep whose trials start together.
"""

from contextlib import contextmanager

import numpy as np
import pytest
import torch

import w2sweep.features
import w2sweep.weak
from conftest import tiny_config
from w2sweep.cells import run_cell
from w2sweep.grid import expand_cells
from w2sweep.config import parse_config
from w2sweep.data import dedupe, load_task, pools_for
from w2sweep.features import Features, extract, head_on_features, load_features
from w2sweep.models import load_classifier
from w2sweep.prerequisites import ensure_prerequisites
from w2sweep.storage import Storage
from w2sweep.sweep import prerequisites_to_compute
from w2sweep.train import TokenizedTexts, predict
from w2sweep.weak import ensure_weak_labels


@pytest.fixture
def count_weak_trainings(monkeypatch):
    """Every call of train_weak_supervisor, as (dataset name, supervisor label, seed)."""
    calls = []
    train = w2sweep.weak.train_weak_supervisor

    def counted(dataset, weak_supervisor, seed):
        calls.append((dataset.name, weak_supervisor.label, seed))
        return train(dataset, weak_supervisor, seed)

    monkeypatch.setattr(w2sweep.weak, "train_weak_supervisor", counted)
    return calls


@pytest.fixture
def count_features(monkeypatch):
    """Every call of compute_features, as (dataset name, student model, seed)."""
    calls = []
    compute = w2sweep.features.compute_features

    def counted(dataset, student, seed, max_length):
        calls.append((dataset.name, student.model, seed))
        return compute(dataset, student, seed, max_length)

    monkeypatch.setattr(w2sweep.features, "compute_features", counted)
    return calls


def _small(storage, **overrides):
    config = tiny_config(
        storage,
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=400,
                       pools=dict(weak_train=32, val=32, test=32, weak_label=64, oracle=64))],
        weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=16)],
        students=[dict(model="tiny-bert", name="tiny-student", epochs=1, max_length=16)],
        budgets=[2], spending_fractions=[0, 0.5],
    )
    config.update(overrides)
    return parse_config(config)


def _run(config):
    """What one `w2sweep run` does with the plain functions: weak labels for every cell's key, then
    every cell without a result. A fresh Storage object each time, as a new process would have."""
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)
    for need in prerequisites_to_compute(storage, cells):
        need.ensure(storage)
    for cell in cells:
        if not storage.exists(f"{config.name}/cells/{cell.cell_id}.json"):
            run_cell(cell, storage)
    return cells


def test_weak_labels_are_computed_once_per_key_across_cells_and_reruns(tmp_path, count_weak_trainings):
    config = _small(str(tmp_path / "store"))
    storage = Storage.from_uri(config.storage)
    assert len(prerequisites_to_compute(storage, expand_cells(config))) == 1  # the sweep's task list
    cells = _run(config)
    assert len(cells) == 2 and len({c.weak_key for c in cells}) == 1
    assert count_weak_trainings == [("synthetic-sentiment", "tiny-weak", 0)]

    # The re-run: every cell is done, the weak labels are stored, and `w2sweep run` would start no
    # weak-label claim at all (no claims actor: `w2sweep.sweep.prerequisites.start_claims`).
    assert prerequisites_to_compute(storage, cells) == []
    _run(config)
    assert len(count_weak_trainings) == 1


class _HeldByOneThatFails:
    """Claims where another process holds every key when asked, then fails without storing it."""

    def __init__(self):
        self.events = []

    def try_hold(self, keys):
        self.events.append(("try", tuple(keys)))
        return set()

    def release(self, key):
        self.events.append(("release", key))

    @contextmanager
    def holding(self, key):
        self.events.append(("wait", key))  # until the holder let go: here, at once
        yield
        self.events.append(("release", key))


def test_a_cell_warms_up_while_others_hold_its_keys_and_computes_what_a_failed_holder_left(
        tmp_path, count_weak_trainings):
    config = _small(str(tmp_path / "store"), spending_fractions=[0])
    (cell,) = expand_cells(config)
    (need,) = cell.prerequisites
    storage = Storage.from_uri(config.storage)
    claims, warmed = _HeldByOneThatFails(), []
    ensure_prerequisites(cell, storage, claims, warmed.append)
    assert warmed == [cell]  # instead of idling while the holder computes
    assert claims.events == [("try", (need.key,)), ("wait", need.key), ("release", need.key)]
    assert count_weak_trainings == [("synthetic-sentiment", "tiny-weak", 0)]  # once, by this waiter
    ensure_prerequisites(cell, storage, claims, warmed.append)  # stored now: one lookup, no claim
    assert len(claims.events) == 3 and warmed == [cell] and len(count_weak_trainings) == 1


def test_each_new_weak_label_key_is_computed_exactly_once(tmp_path, count_weak_trainings):
    # A second seed is a second key; so is a changed supervisor setting. Nothing else recomputes.
    config = _small(str(tmp_path / "store"), seeds=[0, 1], spending_fractions=[0])
    for cell in expand_cells(config):
        for _ in range(2):
            ensure_weak_labels(Storage.from_uri(config.storage), config.name, cell.dataset,
                               cell.weak_supervisor, cell.seed)
    assert sorted(count_weak_trainings) == [("synthetic-sentiment", "tiny-weak", 0),
                                            ("synthetic-sentiment", "tiny-weak", 1)]

    changed = _small(str(tmp_path / "store"), spending_fractions=[0],
                     weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=2, max_length=16)])
    for _ in range(2):
        for cell in expand_cells(changed):
            ensure_weak_labels(Storage.from_uri(changed.storage), changed.name, cell.dataset,
                               cell.weak_supervisor, cell.seed)
    assert len(count_weak_trainings) == 3


def _head_only(storage, **overrides):
    students = [dict(model="tiny-bert", name="probe", mode="head", epochs=2, max_length=16),
                dict(model="tiny-qwen2", name="qwen-probe", mode="head", epochs=2, max_length=16)]
    return _small(storage, **{"students": students, "methods": ["seq-sft", "seq-sft+active"], **overrides})


def test_head_only_features_are_computed_once_per_key_across_cells_and_reruns(tmp_path, count_features,
                                                                              count_weak_trainings):
    config = _head_only(str(tmp_path / "store"))
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)
    assert len(cells) == 8  # 2 students x 2 methods x 2 fractions
    kinds = sorted(need.kind for need in prerequisites_to_compute(storage, cells))
    assert kinds == ["features", "features", "weak labels"]  # one features key per student
    _run(config)
    assert sorted(count_features) == [("synthetic-sentiment", "tiny-bert", 0), ("synthetic-sentiment", "tiny-qwen2", 0)]
    assert len(count_weak_trainings) == 1
    assert all(storage.exists(f"{config.name}/cells/{c.cell_id}.json") for c in cells)
    for cell in cells:  # the stored vectors are the pools', row for row
        stored = load_features(storage, config.name, cell.features_key).for_pools(pools_for(cell.dataset, cell.seed))
        assert stored is not None and len(stored["test"]) == 32 and len(stored["oracle"]) == 64

    assert prerequisites_to_compute(storage, cells) == []
    _run(config)  # the re-run: nothing to compute, nothing to train
    assert len(count_features) == 2

    # A changed body setting is a new key; a changed head-training setting is not.
    lr_only = _head_only(str(tmp_path / "store"), students=[dict(model="tiny-bert", name="probe", mode="head",
                                                                 epochs=3, lr=1e-3, max_length=16)])
    assert prerequisites_to_compute(storage, expand_cells(lr_only)) == []
    longer = _head_only(str(tmp_path / "store"), students=[dict(model="tiny-bert", name="probe", mode="head",
                                                                epochs=2, max_length=24)])
    assert [n.kind for n in prerequisites_to_compute(storage, expand_cells(longer))] == ["features"]


def test_full_and_fewshot_students_read_no_features(tmp_path):
    config = _small(str(tmp_path / "store"), methods=["seq-sft", "seq-sft+fewshot"],
                    students=[dict(model="tiny-bert", name="full", epochs=1, max_length=16),
                              dict(model="tiny-bert", name="probe", mode="head", epochs=1, max_length=16)])
    keyed = {(c.student.label, c.method): c.features_key for c in expand_cells(config)}
    assert keyed[("probe", "seq-sft")] is not None
    assert keyed[("full", "seq-sft")] is None and keyed[("probe", "seq-sft+fewshot")] is None


@pytest.mark.parametrize("ref", ["tiny-bert", "tiny-qwen2"])
def test_head_on_stored_features_gives_the_whole_models_scores(ref):
    # Uneven lengths, so the causal LM's last real token sits at different positions under padding.
    texts = ["a wonderful, moving film that stays with you long after", "dull", "fine", "I loved it"] * 5
    tokenizer, model = load_classifier(ref, seed=3, mode="head")
    examples = TokenizedTexts(tokenizer, texts, 16)
    values, reason = extract(model, examples, pad_token_id=tokenizer.pad_token_id, batch_size=8)
    assert reason == "" and values.shape == (20, model.config.hidden_size)
    whole = predict(model, examples)
    head = predict(head_on_features(model), Features(values))
    np.testing.assert_allclose(head, whole, rtol=1e-5, atol=1e-6)
    assert np.ptp(whole) > 0  # the scores differ between texts: the comparison means something


def test_a_head_that_reads_the_sequence_itself_is_refused():
    # RoBERTa's head picks the first token out of the whole sequence: no single stored vector per
    # example feeds it, so the features object says why and the cells run the body instead.
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tokenizer, _ = load_classifier("tiny-bert", seed=0)
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=2, pad_token_id=tokenizer.pad_token_id))
    values, reason = extract(model, TokenizedTexts(tokenizer, ["a b c", "d"], 8), pad_token_id=tokenizer.pad_token_id)
    assert values is None and "does not read one pooled vector" in reason


def _rank_ensures(rank: int, world: int, port: int, config_json: str, out: str):
    import json
    import os

    import torch.distributed as dist

    from w2sweep.config import SweepConfig
    from w2sweep.prerequisites import NoClaims

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = SweepConfig.model_validate_json(config_json)
        (cell,) = expand_cells(config)
        warmed = []
        ensure_prerequisites(cell, Storage.from_uri(config.storage), NoClaims(), warmed.append)
        dist.barrier()  # both ranks got past it
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"warmed": len(warmed)}, f)
    finally:
        dist.destroy_process_group()


def test_in_a_process_group_rank_0_computes_the_keys_and_the_other_ranks_wait_for_them(tmp_path):
    """A Ray Train cell's ranks, without Ray: rank 0 computes the weak labels (in a child process,
    outside the group its training would otherwise join), rank 1 waits until they are stored."""
    import json
    import socket

    import torch.multiprocessing as mp

    config = _small(str(tmp_path / "store"), spending_fractions=[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_ensures, args=(2, port, config.model_dump_json(), str(tmp_path / "rank")), nprocs=2)
    (cell,) = expand_cells(config)
    assert all(Storage.from_uri(config.storage).exists(need.key) for need in cell.prerequisites)
    assert [json.loads((tmp_path / f"rank.{r}").read_text())["warmed"] for r in (0, 1)] == [0, 0]


def test_a_pretrained_body_has_one_features_key_for_every_seed_and_pool_size(tmp_path, count_features):
    # minilm-l6 is loaded, not drawn from the seed: its features are one pass over the whole task,
    # and each seed's pools pick their rows by text. A tiny body stays per seed.
    students = [dict(model="minilm-l6", name="minilm-probe", mode="head", epochs=1, max_length=16),
                dict(model="tiny-bert", name="tiny-probe", mode="head", epochs=1, max_length=16)]
    config = _small(str(tmp_path / "store"), students=students, seeds=[0, 1])
    bigger = _small(str(tmp_path / "store"), students=students, seeds=[0, 1],
                    datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=400,
                                   pools=dict(weak_train=32, val=32, test=32, weak_label=128, oracle=96))])
    keys = {}
    for cfg in (config, bigger):
        for cell in expand_cells(cfg):
            keys.setdefault(cell.student.label, set()).add(cell.features_key)
    assert len(keys["minilm-probe"]) == 1
    assert len(keys["tiny-probe"]) == 4  # 2 seeds x 2 pool layouts

    storage = Storage.from_uri(config.storage)
    needs = [n for n in prerequisites_to_compute(storage, expand_cells(config) + expand_cells(bigger))
             if n.kind == "features"]
    for need in needs:
        need.ensure(storage)
    assert [model for _, model, _ in count_features].count("minilm-l6") == 1
    assert [model for _, model, _ in count_features].count("tiny-bert") == 4

    # The rows a seed's pools pick are the body's features of exactly those texts.
    cell = next(c for c in expand_cells(bigger) if c.student.label == "minilm-probe" and c.seed == 1)
    pools = pools_for(cell.dataset, 1)
    stored = load_features(storage, bigger.name, cell.features_key)
    assert len(stored.keys) == len(set(stored.keys)) == len(dedupe(load_task(cell.dataset)))  # the whole task
    picked = stored.for_pools(pools)
    tokenizer, model = load_classifier("minilm-l6", seed=1, mode="head")
    for name in ("test", "oracle"):
        direct, _ = extract(model, TokenizedTexts(tokenizer, getattr(pools, name).texts, 16),
                            pad_token_id=tokenizer.pad_token_id)
        np.testing.assert_allclose(picked[name], direct, rtol=1e-4, atol=1e-5)
    assert len(picked["oracle"]) == 96 and np.ptp(picked["test"]) > 0


def test_the_first_trials_compute_different_missing_prerequisites_side_by_side(tmp_path):
    """A trial waits on its slot for a key another trial computes, so the run starts first the cells whose
    missing keys no earlier one computes, then the cells that need nothing missing, then the rest."""
    from w2sweep.sweep.prerequisites import start_order

    students = [dict(model="minilm-l6", name="a", mode="head", epochs=2, max_length=16),
                dict(model="minilm-l6", name="b", mode="head", epochs=2, max_length=24)]
    config = _small(str(tmp_path / "store"), students=students, seeds=[0, 1])
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)
    keys = {c.cell_id: {need.key for need in c.prerequisites} for c in cells}
    missing = {need.key for need in prerequisites_to_compute(storage, cells)}
    assert len(missing) == 4  # weak labels of 2 seeds; one features key per student (a pretrained body)
    assert keys[cells[0].cell_id] & keys[cells[1].cell_id]  # grid order: the second waits for the first
    order = start_order(cells, missing)
    assert sorted(c.cell_id for c in order) == sorted(c.cell_id for c in cells)
    first, second = (keys[c.cell_id] for c in order[:2])
    assert not first & second and first | second == missing  # two trials compute all four keys
    assert order[2:] == [c for c in cells if c not in order[:2]]  # the rest keep grid order

    # With some keys stored: the cells that need nothing missing run before those that would wait.
    for key in {k for c in cells if c.student.label == "a" for k in keys[c.cell_id]}:
        storage.write_bytes(key, b"stored")  # both seeds' weak labels and student a's features
    missing = {need.key for need in prerequisites_to_compute(storage, cells)}
    assert len(missing) == 1  # student b's features
    order = start_order(cells, missing)
    ready = [c for c in cells if c.student.label == "a"]
    assert order[0].student.label == "b" and order[1:1 + len(ready)] == ready
    assert start_order(cells, set()) == cells  # a re-run: nothing missing, grid order
