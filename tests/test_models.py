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
