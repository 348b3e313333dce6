"""fewshot-prompt never pays for a shot the model does not see.

A fewshot-prompt cell makes every label it bought a shot of one prompt, and the prompt is cut from
the left to the student's `max_length`. A budget of 64 at f=0 bought 640 weak shots, a 70,253-token
prompt of which SmolLM2 read the last 1,024 tokens, while the label cost counted all 640: the
frontier showed a price for labels nobody used. The rule here is to refuse such a config when the
grid is planned (`check_prompts_fit`, called by `w2sweep.grid.plan`, so `validate` and `run` exit 2
before any compute), with one line per offending split giving the largest budget whose prompt fits;
`cells` refuses such a cell again at run time (`prompt_overflow`), for cells made outside `plan`.

A prompt fits when its shots and the longest test text (the few longest, measured whole with the
tokenizer's special tokens) fit in `max_length` tokens: then every test example is scored with
every shot in view.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from w2sweep import costs
from w2sweep.prompting import fewshot_prefix, prompt_text

_LONGEST = 3  # test texts measured inside the full prompt (the longest by their own length)


def prompt_shots(pools, n_weak: int, n_oracle: int, seed: int, weak_labels: np.ndarray | None = None):
    """(texts, P(label=1)) of a fewshot-prompt cell's shots, in prompt order: the first `n_weak` of the
    weak-label pool (labelled `weak_labels`, zeros when not known yet: a label is one token either way)
    and the first `n_oracle` of the oracle pool (gold), shuffled by `seed`."""
    texts = pools.weak_label.texts[:n_weak] + pools.oracle.texts[:n_oracle]
    weak = np.zeros(n_weak, np.float32) if weak_labels is None else np.asarray(weak_labels[:n_weak], np.float32)
    labels = np.concatenate([weak, pools.oracle.labels[:n_oracle].astype(np.float32)])
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order], labels[order]


def prompt_overflow(tokenizer, prefix: str, test_texts: list[str], max_length: int) -> tuple[int, int]:
    """(tokens of the longest test prompt, tokens over `max_length`; 0 when every shot is seen)."""
    if not test_texts:
        return 0, 0
    own = [len(ids) for ids in tokenizer(test_texts, verbose=False)["input_ids"]]
    longest = [test_texts[i] for i in np.argsort(own)[::-1][:_LONGEST]]
    ids = tokenizer([prompt_text(prefix, t) for t in longest], verbose=False)["input_ids"]
    tokens = max(len(i) for i in ids)
    return tokens, max(0, tokens - max_length)


def _fits(cell, pools, tokenizer, budget: float | None = None) -> tuple[bool, int, int]:
    """(fits, number of shots, prompt tokens) of `cell`'s prompt, or of its split at `budget`."""
    n_weak, n_oracle = cell.n_weak, cell.n_oracle
    if budget is not None:
        n_weak, n_oracle = costs.label_counts(budget, cell.spending_fraction, c_weak=cell.costs.c_weak,
                                              c_oracle=cell.costs.c_oracle)
        n_weak, n_oracle = min(n_weak, len(pools.weak_label)), min(n_oracle, len(pools.oracle))
    texts, labels = prompt_shots(pools, n_weak, n_oracle, cell.seed)
    tokens, over = prompt_overflow(tokenizer, fewshot_prefix(texts, labels), pools.test.texts,
                                   cell.settings.max_length)
    return over == 0, len(texts), tokens


def largest_fitting_budget(cell, pools, tokenizer) -> float:
    """The largest budget, in steps of c_weak up to the cell's, whose prompt at the cell's spending
    fraction fits (0 when not even one label's does). Bisection: more budget never buys fewer tokens
    of shots by more than a label's worth, and the answer is checked exactly."""
    step = costs.exact(cell.costs.c_weak)
    lo, hi = 0, int(costs.exact(cell.budget) / step)  # lo fits (no shots), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(cell, pools, tokenizer, float(mid * step))[0]:
            lo = mid
        else:
            hi = mid
    return float(lo * step)


def check_prompts_fit(cells) -> list[str]:
    """One line per (dataset, student, method, spending fraction) whose fewshot-prompt cells would
    pay for shots cut off the prompt, naming the largest budget that fits (over the seeds); [] when
    every prompt fits. Loads only tokenizers."""
    from w2sweep.config import error_line
    from w2sweep.data import pools_for
    from w2sweep.models import ModelError, load_tokenizer
    from w2sweep.truncation import tokenizer_ref

    failing = defaultdict(dict)  # split -> {seed: (cell, shots, tokens)} of the smallest failing budget
    tokenizers = {}
    for cell in sorted((c for c in cells if not c.recipe.train), key=lambda c: c.budget):
        split = (cell.dataset.name, cell.student.label, cell.method, cell.spending_fraction)
        if cell.seed in failing[split]:
            continue  # a smaller budget of this split and seed fails already
        ref = tokenizer_ref(cell.student)
        if ref not in tokenizers:
            try:
                tokenizers[ref] = load_tokenizer(ref, trust_remote_code=cell.student.trust_remote_code)
            except OSError as e:  # not cached offline: planning cannot say whether the shots fit
                raise ModelError(f"cannot load the tokenizer {ref!r} to fit fewshot-prompt's shots: "
                                 f"{str(e).splitlines()[0]}") from None
        fits, shots, tokens = _fits(cell, pools_for(cell.dataset, cell.seed), tokenizers[ref])
        if not fits:
            failing[split][cell.seed] = (cell, shots, tokens)
    lines = []
    for (dataset, student, method, f), by_seed in sorted(failing.items(), key=lambda kv: str(kv[0])):
        if not by_seed:
            continue
        cell, shots, tokens = min(by_seed.values(), key=lambda x: (x[0].budget, x[0].seed))
        allowed = "fewer labels in this (n_weak, n_oracle) pair"
        if f is not None:
            best = min(largest_fitting_budget(c, pools_for(c.dataset, c.seed), tokenizers[tokenizer_ref(c.student)])
                       for c, _, _ in by_seed.values())
            allowed = f"budget at most {best:g} at f={f:g}"
        lines.append(error_line(
            "budgets" if f is not None else "pairs", cell.budget,
            f"{method} on dataset {dataset!r} with student {student!r} buys {shots} shots, a {tokens:,}-token "
            f"prompt, but max_length is {cell.settings.max_length}: it would pay for shots the model never "
            f"sees (seed {cell.seed}); allowed: {allowed}"))
    return lines
