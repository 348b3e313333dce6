"""Frozen-body features of head-only students (`mode: head`): computed once per key, stored, reused.

A head-only student trains its classification head on a body that never changes, so the body's
output for an example is the same in every epoch and every cell. `ensure_features` computes it once
per (dataset and pools, student body, max_length, seed) and stores it next to the weak labels; every
cell of that student then trains and scores its head on the stored vectors (`Features`,
`HeadOnFeatures`) instead of running the body at every step.

The stored vector of an example is what the head reads: its input at the position the model pools
(the pooled output of a BERT-style encoder; the last non-pad token's hidden state of a causal LM),
taken in eval mode, so the head trains as a linear probe, without the body's dropout. Where a model's
head is not one module applied to one pooled vector (RoBERTa's reads the first token itself,
DistilBERT's is two modules), the stored object says so and its cells run the body as before: at
computation time, head(feature) must reproduce the model's own logits.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from w2sweep import layout
from w2sweep.storage import Storage

FEATURES_VERSION = 1
POOLS = ("weak_label", "oracle", "val", "test")  # every pool a student reads


def uses_features(mode: str, *, train: bool, fewshot: bool) -> bool:
    """Whether a cell can train on stored features: a head-only student reading the pools' texts as
    they are (a +fewshot prefix changes every text per cell; fewshot-prompt trains nothing)."""
    return mode == "head" and train and not fewshot


def features_key(dataset, student, seed: int, *, max_length: int) -> str:
    """Content hash of what determines the features: the dataset and its pools, the body (model,
    tokenizer, trust_remote_code), the truncation length and the seed (pools and tiny models' weights)."""
    body = {name: getattr(student, name) for name in ("model", "tokenizer", "trust_remote_code")}
    blob = dict(dataset=dataset.canonical_dump(), body=body, max_length=max_length, seed=seed,
                version=FEATURES_VERSION)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def object_key(sweep: str, key: str) -> str:
    return layout.features(sweep, key)


@dataclass(frozen=True)
class StoredFeatures:
    """One array [N, H] per pool in pool order; None everywhere with `reason` when the model's head
    cannot train on stored features."""

    pools: dict[str, np.ndarray] | None
    reason: str = ""


class Features:
    """Examples as stored feature vectors, for the training loop (`w2sweep.train`): a batch is rows."""

    def __init__(self, values: np.ndarray):
        import torch

        self.values = torch.as_tensor(np.asarray(values, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.values)

    def batch(self, idx, device) -> dict:
        import torch

        return {"features": self.values[torch.as_tensor(np.asarray(idx), dtype=torch.long)].to(device)}


def _head_module(model):
    from w2sweep.models import classifier_head

    heads = classifier_head(model)
    return getattr(model, heads[0]) if len(heads) == 1 else None


def head_on_features(model):
    """The model's head as a module mapping `features` [B, H] to `.logits` [B, 2]. It holds the model's
    own head parameters, so training it trains the model's head in place."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class HeadOnFeatures(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, features):
            return SequenceClassifierOutput(logits=self.head(features))

    return HeadOnFeatures(_head_module(model))


def extract(model, examples, *, pad_token_id: int, batch_size: int = 64) -> tuple[np.ndarray | None, str]:
    """(features [N, H], "") of `examples` (`w2sweep.train.TokenizedTexts`), or (None, why not).

    A forward hook records the head's input; a [B, T, H] input (a causal LM's head runs on every
    position) is read at the position transformers pools: the last token that is not padding."""
    import torch

    from w2sweep.train import model_device

    head = _head_module(model)
    if head is None:
        return None, f"{type(model).__name__}'s head is more than one module"
    seen = {}
    hook = head.register_forward_pre_hook(lambda _, args: seen.__setitem__("input", args[0]))
    device, out = model_device(model), []
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = examples.batch(np.arange(start, min(start + batch_size, len(examples))), device)
                logits = model(**batch).logits.float()
                h = seen.pop("input")
                if h.dim() == 3:
                    ids = batch["input_ids"]
                    positions = torch.arange(ids.shape[-1], device=ids.device)
                    last = (positions * (ids != pad_token_id)).argmax(-1)
                    h = h[torch.arange(len(h), device=h.device), last]
                if not _reproduces(head, h, logits):
                    return None, f"{type(model).__name__}'s head does not read one pooled vector per example"
                out.append(h.float().cpu())
    finally:
        hook.remove()
    return torch.cat(out).numpy(), ""


def _reproduces(head, h, logits) -> bool:
    """Whether the head on the pooled vectors `h` [B, H] gives the model's own logits [B, 2]."""
    import torch

    if h.dim() != 2:
        return False
    try:
        return torch.allclose(head(h).float(), logits, rtol=1e-4, atol=1e-4)
    except (IndexError, RuntimeError):  # a head that indexes a sequence itself (RoBERTa's)
        return False


def compute_features(dataset, student, seed: int, max_length: int) -> StoredFeatures:
    """Load the student as `load_classifier` does for a cell and record its head's input on every pool."""
    from w2sweep.data import pools_for
    from w2sweep.models import load_classifier, load_kwargs
    from w2sweep.train import TokenizedTexts

    pools = pools_for(dataset, seed)
    tokenizer, model = load_classifier(student.model, seed=seed, **load_kwargs(student))
    arrays = {}
    for name in POOLS:
        values, reason = extract(model, TokenizedTexts(tokenizer, getattr(pools, name).texts, max_length),
                                 pad_token_id=tokenizer.pad_token_id)
        if values is None:
            return StoredFeatures(None, reason)
        arrays[name] = values
    return StoredFeatures(arrays)


def _to_parquet(stored: StoredFeatures) -> bytes:
    if stored.pools is None:
        table = pa.table({"pool": pa.array([], pa.string()), "position": pa.array([], pa.int32())})
        table = table.replace_schema_metadata({"unusable": stored.reason})
    else:
        width = next(iter(stored.pools.values())).shape[1]
        flat = np.concatenate([stored.pools[p] for p in POOLS]).reshape(-1)
        table = pa.table({
            "pool": pa.array([p for p in POOLS for _ in range(len(stored.pools[p]))], pa.string()),
            "position": pa.array([i for p in POOLS for i in range(len(stored.pools[p]))], pa.int32()),
            "feature": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width),
        })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _from_parquet(data: bytes) -> StoredFeatures:
    table = pq.read_table(io.BytesIO(data))
    meta = table.schema.metadata or {}
    if b"unusable" in meta:
        return StoredFeatures(None, meta[b"unusable"].decode())
    pools = np.asarray(table["pool"].to_pylist())
    column = table["feature"].combine_chunks()
    values = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return StoredFeatures({p: values[pools == p] for p in POOLS})


def load_features(storage: Storage, sweep: str, key: str) -> StoredFeatures:
    return _from_parquet(storage.read_bytes(object_key(sweep, key)))


def ensure_features(storage: Storage, sweep: str, dataset, student, seed: int, max_length: int) -> str:
    """Compute and store the features of (dataset, student body, seed) unless already stored; returns
    the key. Safe to call concurrently: the first writer wins."""
    key = features_key(dataset, student, seed, max_length=max_length)
    storage.compute_once(object_key(sweep, key),
                         lambda: _to_parquet(compute_features(dataset, student, seed, max_length)))
    return key
