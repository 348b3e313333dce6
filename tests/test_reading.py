"""Students read tasks faithfully: a sentence-transformers checkpoint's head reads its own pooling, the
share of texts max_length cuts is reported, `max_length: auto` keeps 99% of texts whole, and
fewshot-prompt never pays for a shot its student does not see."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_config
from w2sweep.cli import main
from w2sweep.config import ConfigError, parse_config
from w2sweep.features import extract
from w2sweep.grid import expand_cells, plan
from w2sweep.models import checkpoint_pooling, fetch_packaged, load_classifier, planned_pooling
from w2sweep.train import TokenizedTexts

TEXTS = ["a wonderful, moving film that stays with you long after", "dull", "I loved it", "a mess"]


def _head_input(model, enc):
    seen = {}
    hook = model.classifier.register_forward_pre_hook(lambda _, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        logits = model(**enc).logits
    hook.remove()
    return seen["x"], logits


def test_minilm_head_reads_the_mean_of_its_real_tokens_in_every_mode():
    assert planned_pooling("minilm-l6") == checkpoint_pooling(fetch_packaged("minilm-l6")) == "mean"
    for mode in ("head", "full", "lora"):
        tokenizer, model = load_classifier("minilm-l6", seed=0, mode=mode)
        model.eval()
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        assert (enc["attention_mask"] == 0).any()  # padding present: a plain mean would differ
        body = model.base_model.model.bert if mode == "lora" else model.bert
        assert body.pooler is None  # BERT's pooler (first token, dense, tanh) is gone
        with torch.no_grad():
            hidden = body(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        seen, logits = _head_input(model if mode != "lora" else model.base_model.model, enc)
        torch.testing.assert_close(seen, mean, rtol=1e-5, atol=1e-5)
        assert logits.shape == (len(TEXTS), 2)
        assert not torch.allclose(seen, hidden[:, 0], atol=1e-3)


def test_head_only_features_are_the_mean_pooled_vectors_and_reproduce_the_logits():
    tokenizer, model = load_classifier("minilm-l6", seed=0, mode="head")
    feats, why = extract(model, TokenizedTexts(tokenizer, TEXTS, 32), pad_token_id=tokenizer.pad_token_id)
    assert why == "" and feats.shape == (len(TEXTS), 384)  # extract checks head(feature) == logits itself
    for i, text in enumerate(TEXTS):  # alone, unpadded: the mean over every token
        with torch.no_grad():
            alone = model.bert(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(0)
        np.testing.assert_allclose(feats[i], alone.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["cls", "max", "lasttoken", "mean"])
def test_a_local_checkpoint_is_read_with_the_pooling_it_declares(tmp_path, mode):
    tokenizer, model = load_classifier("tiny-bert", seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "1_Pooling").mkdir()
    keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
            "lasttoken": "pooling_mode_lasttoken", "mean": "pooling_mode_mean_tokens"}
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({k: k == keys[mode] for k in keys.values()}))
    assert planned_pooling(str(tmp_path)) == mode
    tok, loaded = load_classifier(str(tmp_path), seed=0)
    loaded.eval()
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = loaded.bert(**enc).last_hidden_state
    lengths = enc["attention_mask"].sum(-1)
    expected = torch.stack([{"cls": h[0], "max": h[:n].max(0).values, "lasttoken": h[n - 1],
                             "mean": h[:n].mean(0)}[mode] for h, n in zip(hidden, lengths)])
    seen, _ = _head_input(loaded, enc)
    torch.testing.assert_close(seen, expected, rtol=1e-5, atol=1e-5)


def _planted(tmp_path, n=400, long_share=0.2, long_words=120, name="planted"):
    """A local jsonl task whose first `long_share` of rows are long (`long_words` words)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        words = long_words if i < n * long_share else 5
        rows.append(dict(text=f"row {i} " + " ".join(rng.choice(["good", "bad", "film", "plot"], words)),
                         label=int(i % 2)))
    path = tmp_path / f"{name}.jsonl"  # pools and token lengths are cached per process by spec: one file each
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return dict(name="planted", source="local", path=str(path), pools=dict(weak_train=60, val=40, test=60))


def test_validate_warns_on_one_line_when_max_length_cuts_more_than_5_percent(tmp_path, capsys):
    config = tiny_config(str(tmp_path / "store"), datasets=[_planted(tmp_path)], budgets=[4],
                         spending_fractions=[0], weak_supervisors=[dict(model="tiny-bert", max_length=512)])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["validate", str(tmp_path / "c.yaml")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: dataset 'planted', student 'tiny-student': max_length 32 cuts 20.0% of texts "
                   "(above 5%); raise max_length or set max_length: auto"]  # the weak supervisor reads them whole


def test_max_length_auto_keeps_99_percent_of_texts_whole_up_to_the_model_limit(tmp_path):
    from w2sweep.truncation import cut_share, token_lengths

    dataset = _planted(tmp_path, long_share=0.2, long_words=40)
    students = [dict(model="tiny-bert", name="auto", max_length="auto")]
    cells = expand_cells(parse_config(tiny_config(str(tmp_path), datasets=[dataset], students=students,
                                                  budgets=[4], spending_fractions=[0])))
    student = cells[0].student
    lengths = token_lengths(cells[0].dataset, student)
    assert isinstance(student.max_length, int) and cells[0].settings.max_length == student.max_length
    assert cut_share(lengths, student.max_length) <= 0.01 < cut_share(lengths, student.max_length - 1)
    # Longer than the model reads: capped at tiny-bert's 512 positions.
    capped = expand_cells(parse_config(tiny_config(str(tmp_path), datasets=[_planted(tmp_path, long_words=700, name="long")],
                                                   students=students, budgets=[4], spending_fractions=[0])))
    assert capped[0].student.max_length == 512


def test_max_length_auto_sizes_fewshot_cells_for_their_prompts_and_leaves_other_cells_alone(tmp_path):
    """A +fewshot cell reads each text after fewshot_k shots: `auto` keeps 99% of those prompts whole,
    measured on prompts built as the cell builds them; the same student's plain cells keep the length
    (and ids) they have without a +fewshot method in the sweep."""
    from w2sweep.prompting import fewshot_prefix, prompt_text
    from w2sweep.truncation import cut_share, token_lengths

    students = [dict(model="tiny-qwen2", name="auto", max_length="auto")]
    common = dict(students=students, budgets=[4], spending_fractions=[1])
    both = expand_cells(parse_config(tiny_config(str(tmp_path), methods=["seq-sft", "seq-sft+fewshot"],
                                                 method_options=dict(fewshot_k=3), **common)))
    plain = expand_cells(parse_config(tiny_config(str(tmp_path), methods=["seq-sft"], **common)))
    by_method = {c.method: c for c in both}
    shown, bare = by_method["seq-sft+fewshot"], by_method["seq-sft"]
    assert {c.cell_id for c in plain} == {bare.cell_id}
    prompts = token_lengths(shown.dataset, shown.student, shots=3)
    assert cut_share(prompts, shown.student.max_length) <= 0.01 < cut_share(prompts, shown.student.max_length - 1)
    assert shown.student.max_length > 2 * bare.student.max_length  # 3 shots and the text, not the text alone
    # The lengths measured are those of the prompts a cell shows (its shots are its stage's first labels).
    from w2sweep.data import pools_for
    from w2sweep.models import load_tokenizer

    pool = pools_for(shown.dataset, 0).oracle
    tokenizer = load_tokenizer("smollm2-135m")
    cell_prompts = [prompt_text(fewshot_prefix(pool.texts[:3], pool.labels[:3]), t) for t in pool.texts[3:]]
    cell_lengths = np.array([len(ids) for ids in tokenizer(cell_prompts)["input_ids"]])
    assert cut_share(cell_lengths, shown.student.max_length) <= 0.05


def test_a_student_is_measured_for_each_way_its_cells_show_it_texts(tmp_path):
    """+fewshot cells show prompts of fewshot_k shots; ceiling cells (a method or `ceiling: true`) and
    other methods show the bare texts."""
    from w2sweep.truncation import readers

    def shots(**overrides):
        config = parse_config(tiny_config(str(tmp_path), budgets=[4], spending_fractions=[1], **overrides))
        return sorted(k for _, role, spec, k in readers(config) if role == "student")

    assert shots(methods=["seq-sft+fewshot"]) == [4]
    assert shots(methods=["seq-sft+fewshot"], ceiling=True) == [0, 4]
    assert shots(methods=["seq-sft+fewshot", "ceiling"], method_options=dict(fewshot_k=2)) == [0, 2]
    assert shots(methods=["seq-sft", "fewshot-prompt"], students=[dict(model="tiny-qwen2", name="lm")]) == [0]


def test_validate_warns_when_max_length_cuts_the_fewshot_prompts(tmp_path, capsys):
    config = tiny_config(str(tmp_path / "store"), methods=["seq-sft", "seq-sft+fewshot"], budgets=[4],
                         spending_fractions=[1], method_options=dict(fewshot_k=4),
                         students=[dict(model="tiny-qwen2", name="lm", max_length=32)])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["validate", str(tmp_path / "c.yaml")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    (line,) = [e for e in err if "(+fewshot" in e]  # a line for the prompts, beside any for the bare texts
    assert line.startswith("warning: dataset 'synthetic-sentiment', student 'lm' (+fewshot, 4 shots): max_length 32 cuts ")
    assert "of its 4-shot prompts (above 5%); a cut prompt loses its first shots" in line


def _prompt_config(tmp_path, budgets, max_length=512):
    return tiny_config(str(tmp_path / "store"), methods=["fewshot-prompt"], budgets=budgets,
                       spending_fractions=[0], students=[dict(model="tiny-qwen2", name="lm", max_length=max_length)])


def test_fewshot_prompt_config_that_pays_for_unseen_shots_is_refused_with_the_budget_that_fits(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_prompt_config(tmp_path, budgets=[0.2, 16])))
    assert main(["validate", str(tmp_path / "c.yaml")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("config error: budgets: 16.0: fewshot-prompt on dataset 'synthetic-sentiment' "
                           "with student 'lm' buys 160 shots")
    best = float(line.rsplit("budget at most ", 1)[1].split()[0])
    assert 0.2 <= best < 16
    plan(parse_config(_prompt_config(tmp_path, budgets=[best])))  # the budget it names is accepted
    with pytest.raises(ConfigError):
        plan(parse_config(_prompt_config(tmp_path, budgets=[best + 1])))


def test_fewshot_prompt_charges_exactly_the_shots_its_student_reads(tmp_path, monkeypatch):
    from w2sweep import cells as cells_module
    from w2sweep.cells import run_cell
    from w2sweep.models import load_tokenizer
    from w2sweep.storage import Storage

    config, cells = plan(parse_config(_prompt_config(tmp_path, budgets=[0.4])))
    seen = {}
    real = cells_module.prompt_scores

    def spy(model, tokenizer, prefix, texts, **kw):
        seen.update(prefix=prefix, texts=texts, max_length=kw["max_length"])
        return real(model, tokenizer, prefix, texts, **kw)

    monkeypatch.setattr(cells_module, "prompt_scores", spy)
    result = run_cell(cells[0], Storage.from_uri(config.storage))
    shown = len(seen["prefix"].split("\n\n")) - 1
    assert shown == result.n_weak + result.n_oracle == 4
    assert result.label_cost == pytest.approx(shown * 0.1)
    tokenizer = load_tokenizer("smollm2-135m")
    longest = max(len(tokenizer(seen["prefix"] + t + "\n")["input_ids"]) for t in seen["texts"])
    assert longest <= seen["max_length"]  # every test prompt holds every shot it paid for
    # A cell made outside `plan` with too little room is refused at run time, not charged.
    small = replace(cells[0], settings=replace(cells[0].settings, max_length=16))
    with pytest.raises(ValueError, match="would pay for shots the model never sees"):
        run_cell(small, Storage.from_uri(config.storage))
