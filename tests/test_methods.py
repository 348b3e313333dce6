"""Methods as recipes: names parse into stages, shots are paid from the budget, every method trains
and evaluates end to end on a tiny model through `run_cell` (no Ray), and few-shot prompts carry
the labels the recipe paid for."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import tiny_config
from w2sweep import cells as cells_module
from w2sweep.cells import _stage_data, run_cell
from w2sweep.data import pools_for
from w2sweep.grid import Cell, expand_cells, method_options_for, resolve_cell
from w2sweep.config import ConfigError, MethodOptions, parse_config
from w2sweep.data.synthetic import make_sentiment
from w2sweep.losses import LOSSES, loss_defaults
from w2sweep.methods import MethodError, Stage, canonical_name, parse_method
from w2sweep.prompting import fewshot_prefix, prompt_scores, prompt_text, target_token_ids
from w2sweep.storage import Storage
from w2sweep.weak import ensure_weak_labels, load_weak_labels

# ---- names -> recipes -----------------------------------------------------------------------------


def test_method_names_parse_into_stages():
    assert parse_method("sft-oracle").stages == (Stage("oracle"),)
    assert parse_method("seq-sft").stages == (Stage("weak"), Stage("oracle"))
    assert parse_method("seq-sft+logconf").stages == (Stage("weak", loss="logconf"), Stage("oracle"))
    assert parse_method("sft-weak+window").stages == (Stage("weak", loss="window"),)
    assert parse_method("seq-sft+active").stages == (Stage("weak"), Stage("oracle", select="uncertain"))
    both = parse_method("seq-sft+logconf+fewshot+active")
    assert both.name == "seq-sft+fewshot+active+logconf" and both.fewshot and both.train
    assert both.stages == (Stage("weak", loss="logconf"), Stage("oracle", select="uncertain"))
    assert canonical_name("seq-sft+logconf+fewshot") == canonical_name("seq-sft+fewshot+logconf")
    prompt = parse_method("fewshot-prompt")
    assert not prompt.train and prompt.fewshot and prompt.fixed_fraction is None
    assert parse_method("sft-weak+logconf").fixed_fraction == 0.0
    assert parse_method("sft-oracle+fewshot").fixed_fraction == 1.0
    # Every non-default loss is a suffix that sets the weak stage's loss.
    for loss in set(LOSSES) - {"xent"}:
        assert parse_method(f"seq-sft+{loss}").stages[0].loss == loss


@pytest.mark.parametrize("name,expected", [
    ("magic", "'magic' is not a base"),
    ("seq-sft+turbo", "'+turbo' is not a suffix"),
    ("sft-oracle+logconf", "trains none"),
    ("fewshot-prompt+logconf", "trains none"),
    ("sft-weak+active", "has none; use it with seq-sft"),
    ("fewshot-prompt+fewshot", "already prompts"),
    ("seq-sft+logconf+entropy", "give one loss suffix"),
    ("seq-sft+active+active", "repeats a suffix"),
    ("ceiling+fewshot", "takes no suffixes"),
])
def test_bad_method_names_say_what_is_allowed(name, expected):
    with pytest.raises(MethodError, match=re.escape(expected)):
        parse_method(name)


def small_config(tmp_path, **overrides):
    return parse_config(tiny_config(str(tmp_path / "store"), **{
        "name": "m",
        "datasets": [dict(name="synthetic-sentiment", source="synthetic", num_examples=400,
                          pools=dict(weak_train=100, val=40, test=60))],
        "students": [dict(model="tiny-bert", name="student", epochs=1, max_length=48)],
        "budgets": [10], "spending_fractions": [0.5], **overrides}))


def test_config_writes_methods_canonically_and_refuses_duplicates(tmp_path):
    config = small_config(tmp_path, methods=["seq-sft+logconf+fewshot", "sft-weak"])
    assert config.methods == ["seq-sft+fewshot+logconf", "sft-weak"]
    with pytest.raises(ConfigError, match="listed twice"):
        small_config(tmp_path, methods=["seq-sft+logconf+fewshot", "seq-sft+fewshot+logconf"])
    with pytest.raises(ConfigError, match=r"config error: methods: .*'\+turbo' is not a suffix"):
        small_config(tmp_path, methods=["seq-sft+turbo"])
    with pytest.raises(ConfigError, match="no option 'radius'"):
        small_config(tmp_path, method_options=dict(loss_options=dict(logconf=dict(radius=0.2))))


def test_method_options_enter_only_the_cells_that_read_them(tmp_path):
    methods = ["seq-sft", "seq-sft+fewshot", "seq-sft+logconf"]
    base = {c.method: c for c in expand_cells(small_config(tmp_path, methods=methods))}
    more_shots = {c.method: c for c in expand_cells(small_config(
        tmp_path, methods=methods, method_options=dict(fewshot_k=8, loss_options=dict(logconf=dict(aux_coef=0.25)))))}
    assert base["seq-sft"].cell_id == more_shots["seq-sft"].cell_id
    assert base["seq-sft+fewshot"].cell_id != more_shots["seq-sft+fewshot"].cell_id
    assert base["seq-sft+logconf"].cell_id != more_shots["seq-sft+logconf"].cell_id
    assert more_shots["seq-sft+fewshot"].options == {"fewshot_k": 8}
    assert more_shots["seq-sft+logconf"].options == {"losses": {"logconf": {"aux_coef": 0.25, "warmup_frac": 0.1}}}
    assert method_options_for(parse_method("seq-sft+fewshot+kl"), MethodOptions()) == {"fewshot_k": 4}
    # A cell travels as JSON (to a Tune trial) with its options.
    cell = more_shots["seq-sft+logconf"]
    assert Cell.from_json(cell.to_json()) == cell and Cell.from_json(cell.to_json()).options == cell.options


def test_unused_method_options_warn(tmp_path):
    with pytest.warns(UserWarning, match="fewshot_k is set but no method has"):
        small_config(tmp_path, method_options=dict(fewshot_k=2))
    with pytest.warns(UserWarning, match="loss_options.window is set but no method trains"):
        small_config(tmp_path, method_options=dict(loss_options=dict(window=dict(radius=0.2))))


# ---- budget accounting ----------------------------------------------------------------------------


def test_fewshot_shots_are_paid_from_the_stage_labels(tmp_path):
    """A stage that bought n labels shows k of them as shots and trains on the other n - k: the
    labels used never exceed the labels paid for, and shots never double as training examples."""
    config = small_config(tmp_path, methods=["seq-sft+fewshot"], budgets=[4, 9],
                          spending_fractions=[0, 0.3, 1], method_options=dict(fewshot_k=3))
    pools = pools_for(config.datasets[0], 0)
    rng = np.random.default_rng(0)
    from w2sweep.weak import WeakLabels

    weak = WeakLabels(rng.random(len(pools.weak_label)).astype(np.float32), rng.random(len(pools.val)),
                      rng.random(len(pools.test)), 0.5)
    for cell in expand_cells(config):
        assert cell.label_cost <= cell.budget + 1e-9
        for source, n in (("weak", cell.n_weak), ("oracle", cell.n_oracle)):
            data = _stage_data(source, n, pools, weak, num_shots=cell.options["fewshot_k"])
            assert len(data.shot_texts) == min(3, n) and len(data.shot_texts) + len(data.texts) == n
            assert not set(data.shot_texts) & set(data.texts)
            pool = pools.weak_label if source == "weak" else pools.oracle
            assert data.shot_texts + data.texts == pool.texts[:n]


def test_ceiling_is_one_whole_pool_cell_per_model_pair_and_seed(tmp_path):
    config = small_config(tmp_path, methods=["seq-sft", "sft-oracle"], budgets=[4, 10],
                          spending_fractions=[0, 0.5, 1], seeds=[0, 1], ceiling=True)
    grid = expand_cells(config)
    ceilings = [c for c in grid if c.method == "ceiling"]
    assert len(ceilings) == 2 and {c.seed for c in ceilings} == {0, 1}
    for c in ceilings:
        assert c.n_weak == 0 and c.n_oracle == len(pools_for(config.datasets[0], c.seed).oracle) == 100
        assert c.spending_fraction == 1.0 and c.budget == c.label_cost
    assert len(grid) - len(ceilings) == len(expand_cells(small_config(
        tmp_path, methods=["seq-sft", "sft-oracle"], budgets=[4, 10], spending_fractions=[0, 0.5, 1], seeds=[0, 1])))


def test_ceiling_runs_once_per_dataset_student_and_seed_whatever_the_weak_supervisors(tmp_path):
    """It reads no weak labels: one per weak supervisor would compute the same result again."""
    config = small_config(tmp_path, methods=["seq-sft"], seeds=[0, 1], ceiling=True,
                          weak_supervisors=[dict(model="tiny-bert", name="weak-a", epochs=1),
                                            dict(model="tiny-bert", name="weak-b", epochs=2)],
                          students=[dict(model="tiny-bert", name="s1", epochs=1, max_length=48),
                                    dict(model="tiny-bert", name="s2", epochs=2, max_length=48)])
    grid = expand_cells(config)
    ceilings = [c for c in grid if c.method == "ceiling"]
    assert sorted((c.student.label, c.seed) for c in ceilings) == [("s1", 0), ("s1", 1), ("s2", 0), ("s2", 1)]
    for c in ceilings:
        assert c.weak_supervisor is None and c.weak_name == "none" and c.weak_key is None
        assert c.prerequisites == [] and c.n_oracle == len(pools_for(c.dataset, c.seed).oracle)
        assert Cell.from_json(c.to_json()) == c
    assert {c.weak_name for c in grid if c.method != "ceiling"} == {"weak-a", "weak-b"}


def test_a_ceiling_runs_with_no_weak_labels_stored(tmp_path, spy, monkeypatch):
    """No weak supervisor is trained for it, and none of its labels is read."""
    config = small_config(tmp_path, methods=["sft-oracle"], ceiling=True)
    storage = Storage.from_uri(config.storage)
    (cell,) = [c for c in expand_cells(config) if c.method == "ceiling"]

    def no_weak_labels(*args, **kwargs):
        raise AssertionError("the ceiling read or computed weak labels")

    monkeypatch.setattr(cells_module, "load_weak_labels", no_weak_labels)
    monkeypatch.setattr("w2sweep.weak.train_weak_supervisor", no_weak_labels)
    result = run_cell(cell, storage)
    assert (result.method, result.weak_supervisor, result.n_weak) == ("ceiling", "none", 0)
    assert np.isnan(result.weak_accuracy) and 0 <= result.accuracy <= 1
    assert len(spy) == 1 and spy[0]["texts"] == pools_for(cell.dataset, 0).oracle.texts
    assert not list(tmp_path.rglob("*weak_labels*")) and storage.exists(cell.result_key)


# ---- end to end, per method ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A config, local storage with the weak labels already computed, and its pools."""
    tmp = tmp_path_factory.mktemp("methods")
    config = small_config(tmp, methods=["seq-sft+fewshot+logconf"], method_options=dict(
        fewshot_k=2, loss_options=dict(logconf=dict(aux_coef=0.3))))
    storage = Storage.from_uri(config.storage)
    dataset, weak, _ = config.datasets[0], config.weak_supervisors[0], config.students[0]
    ensure_weak_labels(storage, config.name, dataset, weak, 0)
    return config, storage


@pytest.fixture
def spy(monkeypatch):
    """Records every fine_tune call run_cell makes: (texts, soft labels, loss name, val labels)."""
    calls = []
    real = cells_module.fine_tune

    def fine_tune(model, examples, soft_labels, **kw):
        loss = kw["loss_fn"]
        calls.append(dict(texts=examples.texts, labels=np.asarray(soft_labels), val_labels=kw["val_labels"],
                          val_texts=kw["val_examples"].texts, loss=getattr(loss, "func", loss).__name__,
                          loss_options=getattr(loss, "keywords", {})))
        return real(model, examples, soft_labels, **kw)

    monkeypatch.setattr(cells_module, "fine_tune", fine_tune)
    return calls


def make_cell(config, method, n_weak, n_oracle, *, student=None):
    m = parse_method(method)
    if student is None:  # shots need room: a few-shot prompt is several examples long
        student = config.students[0]
        student = student.model_copy(update=dict(max_length=160)) if m.fewshot else student
    return resolve_cell(config.name, config.datasets[0], config.weak_supervisors[0], student,
                        m.name, float(n_weak * 0.1 + n_oracle), None, n_weak, n_oracle, 0, config.costs,
                        method_options_for(m, config.method_options))


# method, n_weak, n_oracle, expected stages: (source, loss, number of texts trained on)
RECIPES = [  # seq-sft+active: test_active_trains_on_the_oracle_examples_the_student_is_least_sure_of
    ("sft-oracle", 0, 16, [("oracle", "xent", 16)]),
    ("sft-weak", 40, 0, [("weak", "xent", 40)]),
    ("seq-sft", 40, 16, [("weak", "xent", 40), ("oracle", "xent", 16)]),
    ("seq-sft+logconf", 40, 16, [("weak", "logconf", 40), ("oracle", "xent", 16)]),
    ("sft-weak+logconf", 40, 0, [("weak", "logconf", 40)]),
    ("seq-sft+product", 40, 16, [("weak", "product", 40), ("oracle", "xent", 16)]),
    ("seq-sft+entropy", 40, 16, [("weak", "entropy", 40), ("oracle", "xent", 16)]),
    ("seq-sft+window", 40, 16, [("weak", "window", 40), ("oracle", "xent", 16)]),
    ("seq-sft+kl", 40, 16, [("weak", "kl", 40), ("oracle", "xent", 16)]),
    ("seq-sft+fewshot", 40, 16, [("weak", "xent", 38), ("oracle", "xent", 14)]),
    ("sft-oracle+fewshot", 0, 16, [("oracle", "xent", 14)]),
    ("seq-sft+fewshot+logconf", 40, 16, [("weak", "logconf", 38), ("oracle", "xent", 14)]),
]


@pytest.mark.parametrize("method,n_weak,n_oracle,stages", RECIPES, ids=[r[0] for r in RECIPES])
def test_method_trains_and_evaluates_end_to_end(world, spy, method, n_weak, n_oracle, stages):
    config, storage = world
    cell = make_cell(config, method, n_weak, n_oracle)
    result = run_cell(cell, storage)
    pools = pools_for(cell.dataset, 0)
    weak = load_weak_labels(storage, config.name, cell.weak_key)

    assert [(s, c["loss"], len(c["texts"])) for s, c in zip([s for s, _, _ in stages], spy)] == stages
    assert len(spy) == len(stages)
    # The sweep's loss options reach the loss: logconf runs with the configured aux_coef.
    for c in spy:
        configured = dict(aux_coef=0.3) if c["loss"] == "logconf" else {}
        assert c["loss_options"] == {**loss_defaults(c["loss"]), **configured}
    for (source, _, _), call in zip(stages, spy):
        # A weak stage trains and stops early on weak labels only; an oracle stage on gold ones.
        if source == "weak":
            assert np.array_equal(call["val_labels"], (weak.val > 0.5).astype(np.int64))
            assert set(call["labels"].tolist()) <= set(weak.weak_label.tolist())
        else:
            assert np.array_equal(call["val_labels"], pools.val.labels)
            assert set(call["labels"].tolist()) <= {0.0, 1.0}
    stored = json.loads(storage.read_bytes(f"{config.name}/cells/{cell.cell_id}.json"))
    assert stored["method"] == method and stored["num_test"] == len(pools.test) == 60
    assert stored["n_weak"] == n_weak and stored["n_oracle"] == n_oracle
    assert 0 <= result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1] <= 1
    assert result.weak_accuracy == weak.test_accuracy and result.weak_supervisor == "tiny-bert"


def test_active_trains_on_the_oracle_examples_the_student_is_least_sure_of(world, spy, monkeypatch):
    config, storage = world
    pools = pools_for(config.datasets[0], 0)
    scored = []
    real = cells_module.predict

    def predict(model, examples, **kw):
        scores = real(model, examples, **kw)
        if examples.texts == pools.oracle.texts:
            scored.append(scores)
        return scores

    monkeypatch.setattr(cells_module, "predict", predict)
    result = run_cell(make_cell(config, "seq-sft+active", 40, 16), storage)
    (scores,) = scored  # the oracle pool is scored once, after the weak stage
    uncertainty = np.abs(scores - 0.5)
    assert [len(c["texts"]) for c in spy] == [40, 16] and result.method == "seq-sft+active"
    chosen = [pools.oracle.texts.index(t) for t in spy[1]["texts"]]
    assert len(set(chosen)) == 16 and chosen != list(range(16))
    assert uncertainty[chosen].max() <= np.sort(uncertainty)[15] + 1e-12
    assert np.array_equal(spy[1]["labels"], pools.oracle.labels[chosen].astype(np.float32))


def test_ceiling_trains_on_the_whole_oracle_pool(world, spy):
    config, storage = world
    ceiling = [c for c in expand_cells(config.model_copy(update=dict(ceiling=True))) if c.method == "ceiling"]
    (cell,) = ceiling
    result = run_cell(cell, storage)
    assert len(spy) == 1 and spy[0]["texts"] == pools_for(cell.dataset, 0).oracle.texts
    assert result.method == "ceiling" and result.n_oracle == len(spy[0]["texts"])


def test_fewshot_prompt_uses_weak_labels(tmp_path, spy, monkeypatch):
    """Weak labels that are all wrong (weak = 1 - gold): every shot of a weak stage's prompt shows
    the weak label, in training and at test time, and an oracle stage's shots show the gold label."""
    task = make_sentiment(260, seed=3)
    rows = [dict(text=t, label=int(y), weak=1 - int(y)) for t, y in zip(task.texts, task.labels)]
    path = tmp_path / "flipped.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = parse_config(dict(
        name="flip", storage=str(tmp_path / "store"),
        datasets=[dict(name="flipped", source="local", path=str(path), weak_label="weak",
                       pools=dict(weak_train=10, val=20, test=30))],
        students=[dict(model="tiny-bert", epochs=1, max_length=200)],
        methods=["sft-weak+fewshot", "seq-sft+fewshot"], budgets=[5], spending_fractions=[0.8],
        method_options=dict(fewshot_k=3),
    ))
    storage = Storage.from_uri(config.storage)
    dataset = config.datasets[0]
    ensure_weak_labels(storage, config.name, dataset, None, 0)
    pools = pools_for(dataset, 0)
    gold = {t: int(y) for t, y in zip(pools.weak_label.texts + pools.oracle.texts,
                                      np.concatenate([pools.weak_label.labels, pools.oracle.labels]))}

    tested = []
    real = cells_module.predict
    monkeypatch.setattr(cells_module, "predict", lambda m, examples, **kw: tested.append(examples.texts) or real(m, examples, **kw))
    cells = {c.method: c for c in expand_cells(config)}
    result = run_cell(cells["sft-weak+fewshot"], storage)
    assert result.weak_supervisor == "column:weak" and result.weak_accuracy == 0.0  # the column is always wrong

    shots = pools.weak_label.texts[:3]
    weak_prefix = fewshot_prefix(shots, np.array([1 - gold[t] for t in shots]))
    assert all(f"{t}\n{1 - gold[t]}\n\n" in weak_prefix for t in shots)
    for texts in (spy[0]["texts"], spy[0]["val_texts"], tested[-1]):
        for text in texts:
            assert text.startswith(weak_prefix)
            assert not any(f"{t}\n{gold[t]}\n\n" in text for t in shots)  # never the gold label
    assert spy[0]["texts"] == [prompt_text(weak_prefix, t) for t in pools.weak_label.texts[3:cells["sft-weak+fewshot"].n_weak]]

    spy.clear()
    run_cell(cells["seq-sft+fewshot"], storage)
    oracle_shots = pools.oracle.texts[:3]
    assert spy[0]["texts"][0].startswith(weak_prefix)
    oracle_prefix = fewshot_prefix(oracle_shots, np.array([gold[t] for t in oracle_shots]))
    assert all(text.startswith(oracle_prefix) for text in spy[1]["texts"])
    assert tested[-1][0].startswith(oracle_prefix)  # the test prompt has the last stage's shots


# ---- fewshot-prompt: a causal LM, no training ------------------------------------------------------


def tiny_causal_lm(path, texts):
    """A random 2-layer Qwen2 with a word-level tokenizer over `texts`, saved as a local checkpoint."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())} | {"0", "1"})
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(path)
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=2048,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path)


def assert_whole_prompt_scores(model, tokenizer, prefix, texts, got):
    """Each score is sigmoid(logit("1") - logit("0")) at the end of its whole prompt, run alone."""
    zero, one = target_token_ids(tokenizer)
    for text, score in zip(texts, got, strict=True):
        ids = tokenizer(prompt_text(prefix, text), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1]
        assert score == pytest.approx(torch.sigmoid(last[one] - last[zero]).item(), abs=1e-5)


def test_prompt_score_is_the_logit_of_1_minus_0_after_the_prompt(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = make_sentiment(12, seed=5).texts
    path = tiny_causal_lm(tmp_path / "lm", texts)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    tokenizer.pad_token = "<pad>"
    prefix = fewshot_prefix(texts[:3], np.array([1.0, 0.0, 0.8]))
    assert prefix == f"{texts[0]}\n1\n\n{texts[1]}\n0\n\n{texts[2]}\n1\n\n"
    got = prompt_scores(model, tokenizer, prefix, texts[3:], max_length=1024, batch_size=4)  # padded batches
    assert_whole_prompt_scores(model, tokenizer, prefix, texts[3:], got)


def test_prompt_scores_run_the_shared_shots_once_and_score_as_the_whole_prompt(tmp_path):
    """The shots every prompt starts with go through the model once; each batch runs only its texts
    against their cache, and every score equals the whole prompt's (an uneven last batch included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = make_sentiment(40, seed=7).texts
    path = tiny_causal_lm(tmp_path / "lm", texts)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    tokenizer.pad_token = "<pad>"
    prefix = fewshot_prefix(texts[:20], np.arange(20) % 2)
    lengths = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
                                           with_kwargs=True)
    got = prompt_scores(model, tokenizer, prefix, texts[20:], max_length=4096, batch_size=6)
    hook.remove()
    shared = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    longest_text = max(len(tokenizer(prompt_text("", t))["input_ids"]) for t in texts[20:])
    assert shared > 100 and lengths[0] >= shared - 2  # the shots, once
    assert len(lengths) == 1 + 4 and max(lengths[1:]) <= longest_text + 2  # 20 texts in batches of 6
    assert_whole_prompt_scores(model, tokenizer, prefix, texts[20:], got)
    assert np.ptp(got) > 0


def test_prompt_score_skips_appended_special_tokens():
    """A BERT-style tokenizer appends [SEP]; the score is read at the prompt's last real token."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from w2sweep.models import load_tokenizer

    tokenizer = load_tokenizer("minilm-l6")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=64))
    texts = ["a fine film", "the soup was cold and the waiter was rude"]
    got = prompt_scores(model, tokenizer, "good\n1\n\n", texts, max_length=64)
    zero, one = target_token_ids(tokenizer)
    for text, score in zip(texts, got):
        ids = tokenizer(prompt_text("good\n1\n\n", text), return_tensors="pt")["input_ids"]
        assert ids[0, -1] == tokenizer.sep_token_id
        with torch.no_grad():
            before_sep = model(input_ids=ids).logits[0, -2]
        assert score == pytest.approx(torch.sigmoid(before_sep[one] - before_sep[zero]).item(), abs=1e-5)


def test_fewshot_prompt_method_scores_a_causal_lm_with_every_bought_label_as_a_shot(world, tmp_path, monkeypatch):
    config, storage = world
    pools = pools_for(config.datasets[0], 0)
    path = tiny_causal_lm(tmp_path / "lm", pools.weak_label.texts + pools.oracle.texts + pools.test.texts)
    student = config.students[0].model_copy(update=dict(model=path, name="tiny-lm", max_length=2048))
    seen = {}
    real = cells_module.prompt_scores

    def prompt_scores_spy(model, tokenizer, prefix, texts, **kw):
        seen.update(prefix=prefix, texts=texts)
        return real(model, tokenizer, prefix, texts, **kw)

    monkeypatch.setattr(cells_module, "prompt_scores", prompt_scores_spy)
    monkeypatch.setattr(cells_module, "fine_tune", lambda *a, **k: pytest.fail("fewshot-prompt must not train"))
    cell = make_cell(config, "fewshot-prompt", 5, 3, student=student)
    result = run_cell(cell, storage)
    weak = load_weak_labels(storage, config.name, cell.weak_key)
    shots = seen["prefix"].split("\n\n")[:-1]
    assert len(shots) == 8 and seen["texts"] == pools.test.texts
    expected = {f"{t}\n{int(w > 0.5)}" for t, w in zip(pools.weak_label.texts[:5], weak.weak_label[:5])}
    expected |= {f"{t}\n{y}" for t, y in zip(pools.oracle.texts[:3], pools.oracle.labels[:3])}
    assert set(shots) == expected
    assert result.method == "fewshot-prompt" and result.student == "tiny-lm" and result.num_test == 60
    assert 0 <= result.accuracy <= 1 and result.n_weak == 5 and result.n_oracle == 3


def test_fewshot_prompt_cells_are_made_only_for_students_that_can_be_prompted(tmp_path):
    from w2sweep.prompting import is_encoder

    assert is_encoder("tiny-bert") and is_encoder("minilm-l6")
    assert not is_encoder("tiny-qwen2") and not is_encoder("smollm2-135m")
    assert is_encoder("Qwen/Qwen2.5-0.5B") is None  # unknown without the hub: its cells are kept
    students = [dict(model="tiny-bert", name="encoder"), dict(model="tiny-qwen2", name="lm")]
    with pytest.warns(UserWarning, match="student 'encoder' is an encoder: it gets no fewshot-prompt cells"):
        grid = expand_cells(small_config(tmp_path, students=students, methods=["seq-sft", "fewshot-prompt"]))
    assert {(c.student.label, c.method) for c in grid} == {
        ("encoder", "seq-sft"), ("lm", "seq-sft"), ("lm", "fewshot-prompt")}


def test_fewshot_prompt_refuses_an_encoder_student(world):
    from w2sweep.models import ModelError

    config, storage = world
    with pytest.raises(ModelError, match="needs a causal LM student"):
        run_cell(make_cell(config, "fewshot-prompt", 2, 2), storage)
