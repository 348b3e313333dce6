"""Frozen-body features of head-only students (`mode: head`): computed once per key, stored, reused.

A head-only student trains its classification head on a body that never changes, so the body's
output for an example is the same in every epoch and every cell. `ensure_features` computes it once
and stores it next to the weak labels; every cell of that student then trains and scores its head on
the stored vectors (`Features`, `HeadOnFeatures`) instead of running the body at every step.

How often is "once": a pretrained body is the same in every seed (the seed draws the pools and the
head, which reads the features), so one pass over the whole deduplicated task serves every seed and
every pool size: a sweep of S seeds pays one feature pass per (dataset, body, max_length), not S. A
tiny model's body is drawn from the seed, so its features are per seed, over that seed's pools.
Either way rows are stored by their text's `text_key` and a cell picks its pools' rows by text.

The stored vector of an example is what the head reads: its input at the position the model pools
(the pooled output of a BERT-style encoder, or a sentence-transformers checkpoint's own pooling, e.g.
the mean over real tokens for minilm-l6; the last non-pad token's hidden state of a causal LM),
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
from w2sweep.data.keys import text_key
from w2sweep.storage import Storage

FEATURES_VERSION = 2  # 2: rows keyed by text; a pretrained body's features cover the whole task
POOLS = ("weak_label", "oracle", "val", "test")  # every pool a student reads


def uses_features(mode: str, *, train: bool, fewshot: bool) -> bool:
    """Whether a cell can train on stored features: a head-only student reading the pools' texts as
    they are (a +fewshot prefix changes every text per cell; fewshot-prompt trains nothing)."""
    return mode == "head" and train and not fewshot


def seed_free(student) -> bool:
    """Whether the student's body is the same in every seed: a pretrained body is loaded, a tiny
    model's is drawn at random from the seed."""
    from w2sweep.models import model_kind

    return model_kind(student.model) != "tiny"


def features_key(dataset, student, seed: int, *, max_length: int) -> str:
    """Content hash of what determines the features: the dataset, the body (model, tokenizer,
    trust_remote_code), the truncation length and, for a body drawn from the seed, the seed and the
    pools it reads. A seed-free body's features cover the whole task, whatever the pool sizes."""
    body = {name: getattr(student, name) for name in ("model", "tokenizer", "trust_remote_code")}
    data = dataset.canonical_dump()
    blob = dict(body=body, max_length=max_length, version=FEATURES_VERSION)
    if seed_free(student):
        blob["dataset"] = {name: value for name, value in data.items() if name != "pools"}
    else:
        blob.update(dataset=data, seed=seed)
    from w2sweep.models import planned_pooling

    pooling = planned_pooling(student.model)
    if pooling is not None:  # a sentence-transformers checkpoint: features from before its pooling differ
        blob["pooling"] = pooling
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def object_key(sweep: str, key: str) -> str:
    return layout.features(sweep, key)


@dataclass(frozen=True)
class StoredFeatures:
    """Feature vectors `values` [N, H] of N texts, row i for the text whose `text_key` is keys[i]; or
    no rows (`values` None) and `reason` when the model's head cannot train on stored features."""

    keys: list[str]
    values: np.ndarray | None
    reason: str = ""

    def for_pools(self, pools) -> dict[str, np.ndarray] | None:
        """One array [n, H] per pool a student reads, row for row with the pool's texts; None when
        there are no stored features."""
        if self.values is None:
            return None
        row = {key: i for i, key in enumerate(self.keys)}
        return {name: self.values[np.array([row[text_key(t)] for t in getattr(pools, name).texts], dtype=np.int64)]
                for name in POOLS}


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
    position) is read at the position transformers pools: the last token that is not padding.
    Batches hold texts of similar length (each is padded to its longest), so little of the pass is
    spent on padding; the rows come back in the order of `examples`."""
    import torch

    from w2sweep.train import model_device

    head = _head_module(model)
    if head is None:
        return None, f"{type(model).__name__}'s head is more than one module"
    seen = {}
    hook = head.register_forward_pre_hook(lambda _, args: seen.__setitem__("input", args[0]))
    device, out = model_device(model), []
    order = np.argsort(examples.lengths(), kind="stable")
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                batch = examples.batch(order[start:start + batch_size], device)
                logits = model(**batch).logits.float()
                h = seen.pop("input")
                if h.dim() == 3 and h.shape[1] == 1:  # a pooled vector handed to a sequence head
                    h = h[:, 0]
                elif h.dim() == 3:
                    ids = batch["input_ids"]
                    positions = torch.arange(ids.shape[-1], device=ids.device)
                    last = (positions * (ids != pad_token_id)).argmax(-1)
                    h = h[torch.arange(len(h), device=h.device), last]
                if not _reproduces(head, h, logits):
                    return None, f"{type(model).__name__}'s head does not read one pooled vector per example"
                out.append(h.float().cpu())
    finally:
        hook.remove()
    if not out:
        return np.zeros((0, 0), dtype=np.float32), ""
    values = np.empty((len(examples), out[0].shape[1]), dtype=np.float32)
    values[order] = torch.cat(out).numpy()
    return values, ""


def _reproduces(head, h, logits) -> bool:
    """Whether the head on the pooled vectors `h` [B, H] gives the model's own logits [B, 2]."""
    import torch

    if h.dim() != 2:
        return False
    try:
        return torch.allclose(head(h).float(), logits, rtol=1e-4, atol=1e-4)
    except (IndexError, RuntimeError):  # a head that indexes a sequence itself (RoBERTa's)
        return False


def feature_texts(dataset, student, seed: int) -> list[str]:
    """The texts whose features are stored: the whole deduplicated task for a seed-free body, else the
    texts of every pool the student reads in this seed."""
    from w2sweep.data import dedupe, load_task, pools_for

    if seed_free(student):
        return dedupe(load_task(dataset)).texts
    pools = pools_for(dataset, seed)
    return [text for name in POOLS for text in getattr(pools, name).texts]


def compute_features(dataset, student, seed: int, max_length: int) -> StoredFeatures:
    """Load the student as `load_classifier` does for a cell and record its head's input on every
    text of `feature_texts`."""
    from w2sweep.models import load_classifier, load_kwargs
    from w2sweep.train import TokenizedTexts

    texts = feature_texts(dataset, student, seed)
    tokenizer, model = load_classifier(student.model, seed=seed, **load_kwargs(student))
    values, reason = extract(model, TokenizedTexts(tokenizer, texts, max_length), pad_token_id=tokenizer.pad_token_id)
    if values is None:
        return StoredFeatures([], None, reason)
    return StoredFeatures([text_key(t) for t in texts], values)


def _to_parquet(stored: StoredFeatures) -> bytes:
    if stored.values is None:
        table = pa.table({"key": pa.array([], pa.string())}).replace_schema_metadata({"unusable": stored.reason})
    else:
        width = stored.values.shape[1]
        table = pa.table({
            "key": pa.array(stored.keys, pa.string()),
            "feature": pa.FixedSizeListArray.from_arrays(pa.array(stored.values.reshape(-1), pa.float32()), width),
        })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _from_parquet(data: bytes) -> StoredFeatures:
    table = pq.read_table(io.BytesIO(data))
    meta = table.schema.metadata or {}
    if b"unusable" in meta:
        return StoredFeatures([], None, meta[b"unusable"].decode())
    column = table["feature"].combine_chunks()
    values = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return StoredFeatures(table["key"].to_pylist(), values)


def load_features(storage: Storage, sweep: str, key: str) -> StoredFeatures:
    return _from_parquet(storage.read_bytes(object_key(sweep, key)))


def ensure_features(storage: Storage, sweep: str, dataset, student, seed: int, max_length: int) -> str:
    """Compute and store the features of (dataset, student body[, seed]) unless already stored; returns
    the key. Safe to call concurrently: the first writer wins."""
    key = features_key(dataset, student, seed, max_length=max_length)
    storage.compute_once(object_key(sweep, key),
                         lambda: _to_parquet(compute_features(dataset, student, seed, max_length)))
    return key
