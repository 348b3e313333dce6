import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from w2sweep.models import ModelError, check_model_reference, fetch_packaged, load_classifier, model_kind


def test_packaged_model_carries_its_pretrained_weights():
    tokenizer, model = load_classifier("minilm-l6", seed=0)
    weights = load_file(str(fetch_packaged("minilm-l6") / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    assert np.array_equal(model.bert.embeddings.word_embeddings.weight.detach().numpy(), weights[name])
    enc = tokenizer(["a wonderful film", "a dreadful film"], padding=True, return_tensors="pt")
    assert model(**enc).logits.shape == (2, 2)


def test_tiny_model_is_seeded_and_borrows_a_real_tokenizer():
    tok_a, a = load_classifier("tiny-bert", seed=1)
    _, b = load_classifier("tiny-bert", seed=1)
    _, c = load_classifier("tiny-bert", seed=2)
    assert len(tok_a) == 30522
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_local_directory_checkpoint_round_trips(tmp_path):
    tokenizer, model = load_classifier("tiny-bert", seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert model_kind(str(tmp_path)) == "local"
    _, loaded = load_classifier(str(tmp_path), seed=99)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), loaded.parameters()))


def test_uncached_hub_id_offline_is_one_clear_error():
    assert model_kind("Qwen/Qwen2.5-0.5B") == "hub"
    with pytest.raises(ModelError, match="cannot load model 'w2sweep-test/absent'"):
        load_classifier("w2sweep-test/absent", seed=0)


def test_unknown_reference_lists_what_is_allowed():
    with pytest.raises(ModelError, match=r"unknown model 'gpt-17'; allowed: packaged \['minilm-l6', 'smollm2-135m'\]"):
        check_model_reference("gpt-17")


@pytest.mark.parametrize("files,says", [
    ([], "is empty; save a model there with save_pretrained"),
    (["tokenizer_config.json"], "has no config.json (config.json); no weights (*.safetensors, "),
    (["config.json", "model.safetensors", "tokenizer_config.json"],
     "has no tokenizer files (tokenizer.json, vocab.txt, vocab.json, *.model, *.tiktoken); save the model"),
    (["config.json", "vocab.txt"], "has no weights (*.safetensors, pytorch_model*.bin,"),
])
def test_a_broken_local_model_directory_says_what_it_lacks(tmp_path, files, says):
    """Instead of transformers' "You need to have sentencepiece or tiktoken installed..." when a cell loads it."""
    for name in files:
        (tmp_path / name).write_text("{}")
    with pytest.raises(ModelError) as e:
        check_model_reference(str(tmp_path))
    assert str(e.value).startswith(f"local model directory {str(tmp_path)!r} ") and says in str(e.value)
    assert "\n" not in str(e.value)


def test_validate_names_a_broken_model_directory_in_one_line(tmp_path, write_config, capsys):
    from conftest import tiny_config
    from w2sweep.cli import main

    broken = tmp_path / "my-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_text("")
    assert main(["validate", str(write_config(tiny_config("out", students=[dict(model=str(broken))])))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"config error: students.0.model: '{broken}': local model directory")
    assert "has no tokenizer files" in err[0]


def test_a_complete_local_directory_passes_the_check(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("{}")
    check_model_reference(str(tmp_path))


def test_trust_remote_code_is_one_warning_line_at_validate(tmp_path, write_config, capsys):
    from conftest import tiny_config
    from w2sweep.cli import main

    config = tiny_config(str(tmp_path / "out"), students=[dict(model="tiny-bert", name="s", trust_remote_code=True)])
    assert main(["validate", str(write_config(config))]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: students.0.model 'tiny-bert': trust_remote_code is true: loading it runs the Python "
                   "code its files bring, on every worker; use it only for a model whose source you trust"]
