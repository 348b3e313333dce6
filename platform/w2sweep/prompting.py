"""Few-shot prompts: the shot prefix that `+fewshot` and `fewshot-prompt` share, and the prompt scorer
of `fewshot-prompt` (a causal LM, no training).

The format follows EleutherAI/scalable-elicitation: each shot is its text, a newline and its label
as a target token ("0" or "1"); shots are separated by a blank line, and the example to classify
comes last, followed by a newline:

    {shot 1 text}\\n{0|1}\\n\\n{shot 2 text}\\n{0|1}\\n\\n{text}\\n

A shot's label is hardened (P(label=1) > 0.5 -> "1"): a weak shot shows the weak supervisor's label,
an oracle shot the gold label. Which shots a stage gets is decided in `w2sweep.cells`.
"""

from __future__ import annotations

import warnings

import numpy as np

from w2sweep.models import TINY, ModelError, load_tokenizer, model_kind, resolve_path

TARGETS = ("0", "1")  # target tokens for label 0 and label 1
# Model types that have no causal-LM head worth prompting: fewshot-prompt refuses them.
ENCODER_TYPES = frozenset({"bert", "roberta", "distilbert", "albert", "electra", "mpnet", "deberta",
                           "deberta-v2", "xlm-roberta", "camembert", "modernbert"})


def fewshot_prefix(texts: list[str], soft_labels: np.ndarray) -> str:
    """The shots as one prefix: ``"{text}\\n{target}\\n\\n"`` per shot, in order ("" for no shots).
    soft_labels: P(label=1) of each shot, shape [k]; hardened at 0.5."""
    return "".join(f"{text}\n{TARGETS[int(label > 0.5)]}\n\n" for text, label in zip(texts, soft_labels))


def prompt_text(prefix: str, text: str) -> str:
    """What the model reads for `text` after the shots in `prefix`."""
    return f"{prefix}{text}\n"


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def warn_if_truncated(tokenizer, prefix: str, *, max_length: int, where: str) -> int:
    """Number of tokens of `prefix`; warns when the prefix alone fills `max_length` tokens (prompts
    are truncated from the left, so the oldest shots are the ones cut)."""
    num_tokens = count_tokens(tokenizer, prefix) if prefix else 0
    if num_tokens >= max_length:
        warnings.warn(f"{where}: the few-shot prefix is {num_tokens} tokens but max_length is {max_length}; "
                      "the first shots are cut off (raise the model's max_length to keep them)", stacklevel=2)
    return num_tokens


def target_token_ids(tokenizer) -> list[int]:
    """Token ids of TARGETS: the first token of each, without a leading whitespace-only token."""
    ids = []
    for target in TARGETS:
        tokens = tokenizer.encode(target, add_special_tokens=False)
        if tokens and tokenizer.decode(tokens[:1]).strip() == "":
            tokens = tokens[1:]
        if not tokens:
            raise ModelError(f"the tokenizer encodes target {target!r} as nothing")
        ids.append(tokens[0])
    if ids[0] == ids[1] or tokenizer.unk_token_id in ids:
        raise ModelError(f"the tokenizer cannot tell the targets {TARGETS} apart (token ids {ids})")
    return ids


def load_causal_lm(ref: str, *, seed: int, tokenizer_ref: str | None = None, trust_remote_code: bool = False):
    """(tokenizer, model) where model maps input_ids [B, T] to next-token logits [B, T, V].

    `ref` is a tiny config (random weights from `seed`, a borrowed tokenizer), a local checkpoint
    directory or a hub id; encoder-only models are refused with a ModelError."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from w2sweep.models import default_device, default_tokenizer

    torch.manual_seed(seed)
    try:
        if model_kind(ref) == "tiny":
            params = dict(TINY[ref])
            model_type = params.pop("model_type")
            _check_causal(ref, model_type, is_encoder_decoder=False)
            tokenizer = load_tokenizer(tokenizer_ref or default_tokenizer(ref))
            config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer),
                                          pad_token_id=tokenizer.pad_token_id, **params)
            model = AutoModelForCausalLM.from_config(config)
        else:
            path = resolve_path(ref)
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            _check_causal(ref, config.model_type, is_encoder_decoder=getattr(config, "is_encoder_decoder", False))
            tokenizer = load_tokenizer(tokenizer_ref or ref, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelError(f"cannot load causal LM {ref!r}: {str(e).splitlines()[0]}") from None
    return tokenizer, model.to(default_device())


def is_encoder(ref: str) -> bool | None:
    """Whether model `ref` is encoder-only (cannot be prompted), as far as is known without loading
    it: tiny and packaged models by their type, local checkpoints by config.json; None for hub ids."""
    import json
    from pathlib import Path

    from w2sweep.models import PACKAGED

    kind = model_kind(ref)
    if kind == "tiny":
        return TINY[ref]["model_type"] in ENCODER_TYPES
    if kind == "packaged":
        return PACKAGED[ref].gguf is None  # the packaged encoders ship safetensors; the GGUF ones are LMs
    if kind == "local":
        config = Path(ref).expanduser() / "config.json"
        if config.exists():
            c = json.loads(config.read_text())
            return c.get("model_type") in ENCODER_TYPES or bool(c.get("is_encoder_decoder"))
    return None


def _check_causal(ref: str, model_type: str, *, is_encoder_decoder: bool) -> None:
    if model_type in ENCODER_TYPES or is_encoder_decoder:
        raise ModelError(f"method 'fewshot-prompt' needs a causal LM student; {ref!r} is a {model_type!r} "
                         "model (use e.g. a Qwen, Llama or Pythia checkpoint)")


# A shared prompt start shorter than this is not worth a cache; the cache is replicated per batch row,
# so a batch holds at most this many cached tokens (SmolLM2-135M: ~46 KB per token, ~750 MB).
MIN_SHARED_TOKENS = 32
CACHED_TOKENS_PER_BATCH = 16_384


def prompt_scores(model, tokenizer, prefix: str, texts: list[str], *, max_length: int,
                  batch_size: int = 16) -> np.ndarray:
    """P(label=1) for each text, shape [N]: sigmoid(logit("1") - logit("0")) of the next token after
    ``prompt_text(prefix, text)``. Prompts longer than `max_length` tokens lose their start.

    Every prompt is tokenized whole, as it always was; the tokens all prompts share at their start
    (the shots) run through the model once, and each batch runs only the rest against that key/value
    cache. A 160-shot prompt is ~4,000 tokens and a text ~25: scoring 600 texts costs ~15k tokens of
    compute instead of ~2.4M. Batches are right-padded and each row is read at its last token that is
    neither padding nor a special token a tokenizer appends (such as BERT's [SEP]), so a prompt scores
    the same in any batch."""
    import torch

    ids = target_token_ids(tokenizer)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    sides = tokenizer.truncation_side, tokenizer.padding_side
    tokenizer.truncation_side, tokenizer.padding_side = "left", "right"
    model.eval()
    device = next(model.parameters()).device
    try:
        rows = tokenizer([prompt_text(prefix, t) for t in texts], truncation=True, max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side, tokenizer.padding_side = sides
    if not rows:
        return np.zeros(0)
    shared = _shared_start(rows)
    out = []
    with torch.inference_mode():
        start_cache = None
        if shared >= MIN_SHARED_TOKENS:
            start_cache = _SharedStart(model, rows[0][:shared], device)
            batch_size = max(1, min(batch_size, CACHED_TOKENS_PER_BATCH // shared))
        else:
            shared = 0
        for start in range(0, len(rows), batch_size):
            tails = [torch.tensor(r[shared:], dtype=torch.long) for r in rows[start:start + batch_size]]
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            tail = torch.nn.utils.rnn.pad_sequence(tails, batch_first=True, padding_value=pad)
            tail_mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(t), dtype=torch.long) for t in tails],
                                                        batch_first=True)
            real = tail_mask.bool() & ~torch.isin(tail, special)
            last = tail.shape[1] - 1 - real.flip(-1).int().argmax(-1)  # index of the last real token [B]
            mask = torch.cat([torch.ones(len(tails), shared, dtype=torch.long), tail_mask], dim=1)
            logits = model(input_ids=tail.to(device), attention_mask=mask.to(device),
                           cache=None if start_cache is None else start_cache.for_batch(len(tails))).logits.float().cpu()
            pair = logits[torch.arange(len(tails)), last][:, ids]  # [B, 2]
            out.append(pair[:, 1] - pair[:, 0])
    return torch.sigmoid(torch.cat(out)).numpy()


def _shared_start(rows: list[list[int]]) -> int:
    """How many leading tokens every row shares, leaving each row at least one token of its own."""
    first, shared = rows[0], min(len(r) for r in rows) - 1
    for row in rows[1:]:
        shared = next((i for i in range(shared) if row[i] != first[i]), shared)
    return max(shared, 0)


class _SharedStart:
    """The key/value cache of the tokens every prompt starts with, computed once and handed to each
    batch cut back to those tokens (the previous batch appended its own), one copy per row (made once;
    only the last batch is smaller and takes a subset)."""

    def __init__(self, model, tokens: list[int], device):
        import torch

        self.length, self.rows = len(tokens), 1
        self.cache = model(input_ids=torch.tensor([tokens], device=device), use_cache=True).cache

    def for_batch(self, rows: int):
        import torch

        extra = self.cache.get_seq_length() - self.length
        if extra:
            self.cache.crop(-extra)  # transformers 5: a negative count removes that many last tokens
        if rows != self.rows:
            if self.rows == 1:
                self.cache.batch_repeat_interleave(rows)
            else:
                self.cache.batch_select_indices(torch.arange(rows))
            self.rows = rows
        return self.cache
