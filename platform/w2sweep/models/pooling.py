"""A sentence-transformers checkpoint's own pooling, in front of the classification head.

Such a checkpoint (all-MiniLM-L6-v2, bge, e5, gte, ...) was trained to be read through the pooling its
``1_Pooling/config.json`` names, usually the mean over the real tokens; its BERT pooler (first token,
dense, tanh) was never trained for that. Classifying from the pooler output throws away what the
model learned: on SST-2 a logistic probe on all-MiniLM-L6-v2 reaches AUROC 0.72 from the first
token and 0.81 from the mean at 64 labels (docs/benchmarks.md). So `load_classifier` gives such a
checkpoint a head that reads the pooled vector (`with_pooling`), and the pooler is dropped. Models
without a pooling config (plain BERT, causal LMs, tiny configs) keep transformers' own pooling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from w2sweep.models.registry import ModelError

# sentence-transformers' config keys -> our mode names (weightedmean and concatenations are refused)
_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
         "pooling_mode_lasttoken": "lasttoken", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}
MODES = tuple(_KEYS.values())


def checkpoint_pooling(path: str | Path) -> str | None:
    """The pooling mode a sentence-transformers checkpoint at `path` declares (its modules.json's
    Pooling module, else ``1_Pooling/``), or None when it declares none. Reads two small JSON files:
    cheap enough for planning."""
    root = Path(os.path.expanduser(path))
    folder = "1_Pooling"
    modules = root / "modules.json"
    if modules.is_file():
        entries = [m for m in json.loads(modules.read_text()) if str(m.get("type", "")).endswith(".Pooling")]
        if entries:
            folder = entries[0].get("path") or folder
    config = root / folder / "config.json"
    if not config.is_file():
        return None
    c = json.loads(config.read_text())
    if isinstance(c.get("pooling_mode"), str):  # newer sentence-transformers also write the name itself
        named = {"mean": "mean", "cls": "cls", "max": "max", "lasttoken": "lasttoken"}.get(c["pooling_mode"])
        chosen = [named] if named else []
    else:
        chosen = [mode for key, mode in _KEYS.items() if c.get(key)]
    unknown = [k for k, v in c.items() if k.startswith("pooling_mode_") and v and k not in _KEYS]
    if len(chosen) != 1 or unknown:
        raise ModelError(f"{config}: pooling {sorted(k for k, v in c.items() if k.startswith('pooling_mode') and v)} "
                         f"is not supported; w2sweep reads exactly one of {list(MODES)}")
    return chosen[0]


def planned_pooling(ref: str) -> str | None:
    """The pooling model `ref` will be read with, as far as planning knows without downloading or
    loading it: a packaged model's from the registry, a local checkpoint's from its files; None for
    tiny configs and hub ids (a hub checkpoint's is read when it is loaded). Stored features key on it."""
    from w2sweep.models.registry import PACKAGED, model_kind

    kind = model_kind(ref)
    if kind == "packaged":
        return PACKAGED[ref].pooling
    if kind == "local":
        return checkpoint_pooling(ref)
    return None


def pool(hidden, attention_mask, mode: str):
    """[B, T, H] hidden states -> [B, H], over the tokens `attention_mask` [B, T] marks real, as
    sentence-transformers pools them (padding on either side)."""
    import torch

    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    if mode == "lasttoken":
        length = attention_mask.shape[1]
        last = length - 1 - attention_mask.flip(-1).int().argmax(-1)  # last real token, left or right padding
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    total, count = (hidden * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len":
        return total / count.sqrt()
    raise ModelError(f"unknown pooling mode {mode!r}; allowed: {list(MODES)}")


def with_pooling(model_class, mode: str, *, head_reads_vector: bool):
    """A subclass of the transformers sequence classifier `model_class` whose head reads the body's
    `mode`-pooled last hidden state. With `head_reads_vector` (a Linear ``classifier``, BERT's, decided
    before peft wraps it) the head gets the pooled vector [B, H] after the model's dropout; a head that
    reads the first position of a sequence (RoBERTa's, MPNet's) gets it as a one-token sequence. Still a PreTrainedModel: from_pretrained, peft and DeepSpeed
    treat it as they treat the class it extends."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        body = getattr(self, self.base_model_prefix)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape[:2], dtype=torch.long, device=input_ids.device)
        inputs = {k: v for k, v in kwargs.items() if v is not None and k not in ("return_dict", "use_cache")}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = body(input_ids=input_ids, attention_mask=attention_mask, **inputs)[0]
        pooled = pool(hidden, attention_mask, self.pooling)
        if self.head_reads_vector:
            dropout = getattr(self, "dropout", None)
            logits = self.classifier(dropout(pooled) if isinstance(dropout, torch.nn.Module) else pooled)
        else:
            logits = self.classifier(pooled.unsqueeze(1))
        return SequenceClassifierOutput(logits=logits)

    return type(f"{mode.title()}Pooled{model_class.__name__}", (model_class,),
                {"forward": forward, "pooling": mode, "head_reads_vector": head_reads_vector})


def drop_pooler(model) -> None:
    """Remove the body's own pooler (BERT's dense + tanh on the first token): the pooled head never
    reads it, and a parameter that gets no gradient trips up distributed training."""
    body = getattr(model, model.base_model_prefix)
    if getattr(body, "pooler", None) is not None:
        body.pooler = None
