"""Students: encoders and causal LMs with a binary head, trained in full, with LoRA, or as a linear
probe; the packaged SmolLM2 from its GGUF file; per-model training defaults."""

import time

import numpy as np
import pytest
import torch

from w2sweep.config import ModelSpec
from w2sweep.models import (ModelError, default_settings, fetch_packaged, load_classifier, load_tokenizer,
                            resolve_settings)
from w2sweep.train import TokenizedTexts, TrainSettings, fine_tune

TEXTS = ["a wonderful, moving film", "dull", "I loved every minute of it", "a dreadful mess of a movie"] * 8
LABELS = np.array([1, 0, 1, 0] * 8, dtype=np.float32)
SETTINGS = TrainSettings(lr=1e-2, epochs=2, batch_size=8, max_length=16, patience=5)


def _train(model, tokenizer):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fine_tune(model, TokenizedTexts(tokenizer, TEXTS, 16), LABELS, val_examples=TokenizedTexts(tokenizer, TEXTS[:8], 16),
              val_labels=LABELS[:8].astype(int), settings=SETTINGS, seed=0)
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_causal_student_reads_its_last_real_token_whatever_the_padding():
    tokenizer, model = load_classifier("tiny-qwen2", seed=0)
    assert tokenizer.padding_side == "right" and model.config.pad_token_id == tokenizer.pad_token_id
    model.eval()
    texts = ["a wonderful, moving film that stays with you", "dull"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    assert (enc["input_ids"][1] == tokenizer.pad_token_id).sum() > 3  # the short text is padded
    with torch.no_grad():
        batch = model(**enc).logits
        alone = model(**tokenizer(texts[1:], return_tensors="pt")).logits
        hidden = model.model(**enc).last_hidden_state
    torch.testing.assert_close(batch[1], alone[0], rtol=1e-5, atol=1e-5)
    last = enc["attention_mask"].sum(-1) - 1
    torch.testing.assert_close(batch, model.score(hidden[torch.arange(2), last]), rtol=1e-5, atol=1e-5)


def test_lora_student_trains_its_adapters_and_head_and_nothing_else():
    tokenizer, model = load_classifier("tiny-qwen2", seed=0, mode="lora", lora_rank=4, lora_alpha=8,
                                       lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".o_proj.lora_A." in n for n in trainable) and any(".k_proj.lora_B." in n for n in trainable)
    assert all(".lora_" in n or ".score." in n for n in trainable), sorted(trainable)
    assert model.peft_config["default"].r == 4
    changed = _train(model, tokenizer)
    assert any(".lora_B." in n for n in changed) and any(".score." in n for n in changed)
    assert changed <= trainable  # the pretrained body did not move


def test_lora_target_modules_that_do_not_exist_are_one_clear_error():
    with pytest.raises(ModelError, match=r"lora_target_modules \['nonexistent_proj'\]"):
        load_classifier("tiny-qwen2", seed=0, mode="lora", lora_target_modules=["nonexistent_proj"])


def test_head_mode_is_a_linear_probe_on_a_frozen_body():
    tokenizer, model = load_classifier("tiny-bert", seed=0, mode="head")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    assert _train(model, tokenizer) == {"classifier.weight", "classifier.bias"}


def test_smollm2_tokenizer_comes_from_its_gguf_file():
    tokenizer = load_tokenizer("smollm2-135m")
    assert len(tokenizer) == 49152 and tokenizer.padding_side == "right"
    assert tokenizer.pad_token is not None
    assert tokenizer.decode(tokenizer("The capital of France")["input_ids"]) == "The capital of France"


def test_default_settings_follow_model_size_and_training_mode():
    lora = {ref: default_settings(ref, mode="lora")["lr"] for ref in
            ("Qwen/Qwen2.5-0.5B", "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-70B")}
    assert lora == {"Qwen/Qwen2.5-0.5B": 5e-4, "meta-llama/Meta-Llama-3-8B": 8e-5, "meta-llama/Llama-3.1-70B": 3e-5}
    assert default_settings("Qwen/Qwen2.5-0.5B")["lr"] < lora["Qwen/Qwen2.5-0.5B"]  # full fine-tuning: smaller
    assert default_settings("EleutherAI/pythia-410m", mode="head")["lr"] == 5e-4
    assert default_settings("tiny-qwen2")["lr"] == 1e-3  # trained from scratch
    # A config value beats the default; the mode picks the default.
    assert resolve_settings(ModelSpec(model="Qwen/Qwen2.5-0.5B", mode="lora")).lr == 5e-4
    assert resolve_settings(ModelSpec(model="Qwen/Qwen2.5-0.5B", mode="lora", lr=1e-4)).lr == 1e-4


def test_smollm2_weights_are_dequantized_once_and_cached_as_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("W2SWEEP_CACHE", str(tmp_path))
    start = time.monotonic()
    tokenizer, model = load_classifier("smollm2-135m", seed=0)
    first = time.monotonic() - start
    converted = fetch_packaged("smollm2-135m")
    assert (converted / "model.safetensors").exists() and (converted / "config.json").exists()
    start = time.monotonic()
    _, again = load_classifier("smollm2-135m", seed=0)
    assert time.monotonic() - start < first / 2, (first, time.monotonic() - start)
    assert torch.equal(model.model.embed_tokens.weight, again.model.embed_tokens.weight)
    assert 130e6 < sum(p.numel() for p in model.model.parameters()) < 140e6

    # The weights are SmolLM2's: the causal LM read back from the cache knows where Paris is.
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(converted)
    assert torch.equal(lm.model.embed_tokens.weight, model.model.embed_tokens.weight)
    enc = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        top = lm(**enc).logits[0, -1].argmax().item()
    assert tokenizer.decode([top]).strip() == "Paris"
