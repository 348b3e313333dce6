"""Model-resident workers: a process that runs many cells (a Tune trial actor reused across cells)
keeps its student's base weights, its tokenizer and its tokenized texts between them, instead of
loading the checkpoint again for every cell.

A cell must not be able to tell: `load_student` returns exactly what `load_classifier` would, bit for
bit. The body of a pretrained checkpoint does not depend on the seed; what does is the weights the
checkpoint lacks (the classification head), which transformers initialises from the seed, and then
the LoRA adapters `_set_trainable` draws. So a resident student keeps a host copy of every weight as
loaded (pinned where CUDA is), puts back the weights the last cell may have changed, reseeds and
re-runs transformers' own initialisation of the missing weights (on the CPU, as the fresh load ran
it), and applies the cell's mode. When it is first loaded that replay is checked against the fresh
load itself (same weights, same CPU RNG state after it); a model whose initialisation does not
replay exactly is never kept (one warning), so the guarantee never rests on an assumption about
transformers' internals. Tiny models (every weight drawn from the seed) are always loaded afresh.

Bounded: `W2SWEEP_RESIDENT_MODELS` students per process (default 1; 0 turns residency off); before
loading a different student the least recently used one is dropped, so two never sit in memory side by
side at the default. Nothing is kept under torch.distributed with more than one rank (DeepSpeed
partitions and wraps the weights it trains). No Ray import.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from w2sweep.models.load import _set_trainable, default_device, load_classifier
from w2sweep.models.registry import model_kind

ENV = "W2SWEEP_RESIDENT_MODELS"
TOKEN_CACHES = 4  # (tokenizer, max_length) pairs whose tokenized texts a process keeps
TOKEN_CACHE_TEXTS = 200_000  # texts per pair; past that its cache starts again empty

_MODELS: OrderedDict[tuple, _Resident] = OrderedDict()  # least recently used first
_TOKENS: OrderedDict[tuple, dict] = OrderedDict()
_NOT_REPLAYABLE: set[tuple] = set()
_LORA_DEFAULTS = dict(lora_rank=8, lora_alpha=16.0, lora_target_modules=None)  # load_classifier's
stats = {"loads": 0, "reuses": 0}  # this process's counts, for tests and benchmarks


def resident_limit() -> int:
    """How many students a process keeps (`W2SWEEP_RESIDENT_MODELS`, default 1; 0: none)."""
    value = os.environ.get(ENV, "1").strip()
    try:
        return max(0, int(value))
    except ValueError:
        raise ValueError(f"{ENV}={value!r}: expected a whole number of students (0 turns residency off)") from None


def load_student(ref: str, *, seed: int, tokenizer_ref: str | None = None, trust_remote_code: bool = False,
                 mode: str = "full", **lora):
    """What `load_classifier(ref, seed=seed, ...)` returns, from the resident copy where this process
    holds one (and keeping it afterwards where it may). `lora`: lora_rank, lora_alpha, lora_target_modules."""
    base = dict(tokenizer_ref=tokenizer_ref, trust_remote_code=trust_remote_code)
    key = _key(ref, base)
    if key is None:
        return load_classifier(ref, seed=seed, mode=mode, **base, **lora)
    entry = _MODELS.get(key)
    if entry is not None:
        _MODELS.move_to_end(key)
        try:
            entry.reset(seed)
            stats["reuses"] += 1
        except Exception as e:  # a cell left it in a state we cannot undo: load afresh
            warnings.warn(f"resident student {ref!r} dropped ({type(e).__name__}: {e}); loading it again", stacklevel=2)
            _evict(key)
            entry = None
    if entry is None:
        entry, tokenizer, model = _load(ref, key, seed, base)
        if entry is None:  # its initialisation does not replay: this one load serves this cell only
            return tokenizer, _set_trainable(model, mode, **{**_LORA_DEFAULTS, **lora})
    entry.handed_out = entry.base  # until the mode is applied: a failure there is undone (or dropped) next time
    model = _set_trainable(entry.base, mode, **{**_LORA_DEFAULTS, **lora})
    entry.handed_out = model
    return entry.tokenizer, model


def warm(ref: str, *, seed: int, tokenizer_ref: str | None = None, trust_remote_code: bool = False, **_mode) -> None:
    """Load the student into residency ahead of its cell (a process waiting on a prerequisite does
    this), so the cell itself does not load; without residency, just load it once (page cache)."""
    base = dict(tokenizer_ref=tokenizer_ref, trust_remote_code=trust_remote_code)
    key = _key(ref, base)
    if key is None:
        load_classifier(ref, seed=seed, **base, **_mode)
    elif key in _MODELS:
        _MODELS.move_to_end(key)
    else:
        _load(ref, key, seed, base)


def token_cache(tokenizer, max_length: int) -> dict | None:
    """The text -> token rows this process keeps for `tokenizer` at `max_length` (a
    `TokenizedTexts(cache=...)`), or None with residency off. Keyed by what decides a text's tokens:
    the tokenizer's class, files, vocabulary size, pad id, padding and truncation sides, and
    `max_length`; the texts themselves key the rows (so the dataset, its seed and its pool are in the key)."""
    if resident_limit() <= 0:
        return None
    key = (type(tokenizer).__name__, tokenizer.name_or_path, tokenizer.vocab_size, tokenizer.pad_token_id,
           tokenizer.padding_side, tokenizer.truncation_side, max_length)
    cache = _TOKENS.pop(key, None)
    if cache is None or len(cache) > TOKEN_CACHE_TEXTS:
        cache = {}
    _TOKENS[key] = cache
    while len(_TOKENS) > TOKEN_CACHES:
        _TOKENS.popitem(last=False)
    return cache


def clear() -> None:
    """Drop every resident student and tokenized text of this process."""
    for key in list(_MODELS):
        _evict(key)
    _TOKENS.clear()
    _NOT_REPLAYABLE.clear()
    stats.update(loads=0, reuses=0)


def _key(ref: str, base: dict) -> tuple | None:
    """The residency key of a student, or None where it is not kept (off, tiny, distributed, not replayable)."""
    from w2sweep.train.state import world

    if resident_limit() <= 0 or model_kind(ref) == "tiny" or world()[1] > 1:
        return None
    key = (ref, base["tokenizer_ref"], base["trust_remote_code"], str(default_device()))
    return None if key in _NOT_REPLAYABLE else key


def _load(ref: str, key: tuple, seed: int, base: dict) -> tuple[_Resident | None, object, object]:
    """Load the student's base (mode full: every weight as the checkpoint and the seed give it), after
    dropping least recently used students down to the bound: (entry, tokenizer, model), the entry None
    if its initialisation does not replay (the model is then as loaded, for this cell alone)."""
    while len(_MODELS) >= resident_limit():
        _evict(next(iter(_MODELS)))
    tokenizer, model = load_classifier(ref, seed=seed, mode="full", **base)
    stats["loads"] += 1
    entry = _Resident.capture(tokenizer, model, seed)
    if entry is None:
        _NOT_REPLAYABLE.add(key)
        warnings.warn(f"student {ref!r}: its initialisation from the seed does not replay exactly; it is "
                      "loaded afresh for every cell", stacklevel=3)
        return None, tokenizer, model
    _MODELS[key] = entry
    return entry, tokenizer, model


def _evict(key: tuple) -> None:
    import torch

    entry = _MODELS.pop(key)
    del entry
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class _Resident:
    """One kept student: its tokenizer (and the sides and pad token it was loaded with), its base
    model, a host copy of every weight as loaded, and the names of the weights its checkpoint lacks."""

    tokenizer: object
    sides: tuple
    base: object
    host: dict
    missing: frozenset
    handed_out: object = None  # the model the last cell got (the base, or a peft model around it)

    @classmethod
    def capture(cls, tokenizer, model, seed: int) -> _Resident | None:
        """Keep a freshly loaded base, once replaying its seeded initialisation gives what the load gave."""
        import torch

        from w2sweep.train.state import copy_weights

        rng = torch.get_rng_state()
        missing = frozenset(n for n, p in model.named_parameters() if not getattr(p, "_is_hf_initialized", False))
        fresh = copy_weights((n, p) for n, p in model.named_parameters() if n in missing)
        try:
            _replay(model, missing, seed)
            same = torch.equal(torch.get_rng_state(), rng) and all(
                torch.equal(p.detach().cpu(), fresh[n]) for n, p in model.named_parameters() if n in missing)
        except Exception:
            same = False
        if not same:  # put back what the load gave: this model still serves its cell
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in missing:
                        p.data = fresh[n].to(default_device())
            torch.set_rng_state(rng)
            return None
        host = copy_weights(model.named_parameters())
        if torch.cuda.is_available():
            host = {n: t.pin_memory() for n, t in host.items()}
        sides = (tokenizer.padding_side, tokenizer.truncation_side, tokenizer.pad_token)
        return cls(tokenizer, sides, model, host, missing)

    def reset(self, seed: int) -> None:
        """Make the base what `load_classifier(seed=seed, mode="full")` returns, and the tokenizer what
        `load_tokenizer` returns."""
        if self.handed_out is not None:
            self._restore()
        _replay(self.base, self.missing, seed)
        self.tokenizer.padding_side, self.tokenizer.truncation_side, self.tokenizer.pad_token = self.sides

    def _restore(self) -> None:
        """Undo the last cell: take peft's adapters out, put back from the host copy every weight it
        could have changed (those it trained, and any left in another dtype or place by a cell that
        stopped half way), make every weight trainable again, as loaded."""
        import torch
        from peft import PeftModel

        if isinstance(self.handed_out, PeftModel):
            self.handed_out.unload()  # the base's own modules back in place; the adapters gone
        self.handed_out = None
        params = dict(self.base.named_parameters())
        if params.keys() != self.host.keys():
            raise RuntimeError("its weights are not the ones it was loaded with")
        device = default_device()
        with torch.no_grad():
            for name, p in params.items():
                kept = self.host[name]
                if p.dtype != kept.dtype or p.shape != kept.shape or p.device != device:
                    p.data = kept.to(device, copy=True)
                elif p.requires_grad:
                    p.copy_(kept, non_blocking=True)
                p.requires_grad_(True)
                p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.base.eval()


def _replay(model, missing: frozenset, seed: int) -> None:
    """Seed torch and run transformers' initialisation of the weights the checkpoint lacks, as
    `from_pretrained` did inside `load_classifier`: every module unmarked, every loaded weight marked
    initialised (transformers' init functions skip those), the missing ones on the CPU where the fresh
    load drew them, so the same draws come in the same order from the same generator."""
    import torch

    for module in model.modules():
        module._is_hf_initialized = False
    moved = []
    for name, p in model.named_parameters():
        p._is_hf_initialized = name not in missing
        if name in missing and p.device.type != "cpu":
            moved.append((p, p.device))
            p.data = p.data.cpu()
    torch.manual_seed(seed)
    model.initialize_weights()
    for p, device in moved:
        p.data = p.data.to(device)
