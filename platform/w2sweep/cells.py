"""Run one cell: the plain function a Tune trial calls, and what a test or a GPU box calls directly.
Nothing here imports Ray. The grid itself (cells, ids, prerequisites) is `w2sweep.grid`; a cell comes
resolved from there (method stages, settings, keys, GPUs), and nothing here derives them again.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import tenacity

from w2sweep import layout

from w2sweep.data import Pools, pools_for
from w2sweep.features import Features, head_on_features, load_features
from w2sweep.grid import Cell
from w2sweep.losses import make_loss
from w2sweep.metrics import evaluate
from w2sweep.models import load_kwargs, resident
from w2sweep.prerequisites import KeyClaims, NoClaims, ensure_prerequisites
from w2sweep.prompting import fewshot_prefix, load_causal_lm, prompt_scores, prompt_text, warn_if_truncated
from w2sweep.results import CellResult, write_predictions
from w2sweep.shots import prompt_overflow, prompt_shots
from w2sweep.storage import AlreadyExists, Storage, StorageError
from w2sweep.train import TokenizedTexts, TrainHooks, fine_tune, is_main_process, predict
from w2sweep.weak import WeakLabels, load_weak_labels

# How long a finished cell keeps trying to store its predictions and result (`SweepConfig.result_write_timeout_s`).
RESULT_WRITE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class StageData:
    """The labels one stage bought: its first `num_shots` examples are few-shot shots, the rest train."""

    shot_texts: list[str]
    shot_labels: np.ndarray  # [k] P(label=1): the weak supervisor's for a weak stage, gold for an oracle one
    texts: list[str]
    labels: np.ndarray  # [n - k] soft labels to train on
    val_labels: np.ndarray  # [V] hard labels early stopping reads
    pool: str  # "weak_label" or "oracle": where the examples come from
    index: np.ndarray  # [n - k] positions of the training examples in that pool


def _stage_data(source: str, n: int, pools: Pools, weak: WeakLabels | None, *, num_shots: int = 0,
                order: np.ndarray | None = None) -> StageData:
    """The n examples a stage reading `source` buys, split into shots and training examples.

    The examples are the first n of the source's pool, or the first n of `order` (indices into the
    pool, e.g. most uncertain first). A weak stage's labels, shots included, are the weak
    supervisor's: a weak stage never sees a gold label. It validates against the weak supervisor's
    labels on the validation pool: early stopping on gold labels there would be oracle labels nobody
    paid for.
    """
    name = "weak_label" if source == "weak" else "oracle"
    pool = getattr(pools, name)
    if n > len(pool):
        raise ValueError(f"a {source} stage needs {n} labels but its pool holds {len(pool)}")
    chosen = np.arange(n) if order is None else np.asarray(order[:n], dtype=np.int64)
    texts = [pool.texts[i] for i in chosen]
    if source == "weak":
        labels, val_labels = weak.weak_label[chosen], (weak.val > 0.5).astype(np.int64)
    else:
        labels, val_labels = pool.labels[chosen].astype(np.float32), pools.val.labels
    k = min(num_shots, n)
    return StageData(texts[:k], labels[:k], texts[k:], labels[k:], val_labels, name, chosen[k:])


def _show(prefix: str, texts: list[str], fewshot: bool) -> list[str]:
    """What the student reads: the texts themselves, or each after the stage's few-shot prefix."""
    return [prompt_text(prefix, t) for t in texts] if fewshot else texts


def _train_and_score(cell: Cell, pools: Pools, weak: WeakLabels | None, features: dict[str, np.ndarray] | None,
                     hooks: TrainHooks | None = None) -> np.ndarray:
    """Fine-tune the student through the method's stages; P(label=1) on the test pool, shape [N].

    With `features` (a head-only student's stored frozen-body features, one array per pool) the
    head trains and scores on them, and the body never runs.

    With +fewshot, each stage's first `fewshot_k` labels become the shots of its prefix, which is
    prefixed to its training and validation texts; the test texts get the prefix of the last stage
    that bought labels. Prompts are truncated from the left, so a long prefix loses its first shots,
    never the example itself."""
    method, settings = cell.recipe, cell.settings
    tokenizer, model = resident.load_student(cell.student.model, seed=cell.seed, **load_kwargs(cell.student))
    if method.fewshot:
        tokenizer.truncation_side = "left"
    trained = model if features is None else head_on_features(model)

    def examples(pool: str, index: np.ndarray | None = None):
        """The student's inputs for a pool (or the examples at `index` of it)."""
        if features is not None:
            return Features(features[pool] if index is None else features[pool][index])
        texts = getattr(pools, pool).texts
        texts = texts if index is None else [texts[i] for i in index]
        cache = None if method.fewshot else resident.token_cache(tokenizer, settings.max_length)
        return TokenizedTexts(tokenizer, _show(prefix, texts, method.fewshot), settings.max_length, cache=cache)

    counts = {"weak": cell.n_weak, "oracle": cell.n_oracle}
    prefix = ""
    for i, stage in enumerate(method.stages):
        n = counts[stage.labels]
        if n == 0:
            continue  # no labels bought for this stage: it neither trains nor changes the prefix
        order = None
        if stage.select == "uncertain":
            p = predict(trained, examples("oracle"))
            order = np.argsort(np.abs(p - 0.5), kind="stable")  # most uncertain first; ties in pool order
        data = _stage_data(stage.labels, n, pools, weak, num_shots=cell.options.get("fewshot_k", 0), order=order)
        if method.fewshot:
            prefix = fewshot_prefix(data.shot_texts, data.shot_labels)
            warn_if_truncated(tokenizer, prefix, max_length=settings.max_length,
                              where=f"cell {cell.cell_id} ({cell.method}) stage {i}")
        loss_fn = make_loss(stage.loss, cell.options.get("losses", {}).get(stage.loss))
        fine_tune(trained, examples(data.pool, data.index), data.labels, val_examples=examples("val"),
                  val_labels=data.val_labels, settings=settings, seed=cell.seed * 1000 + i, loss_fn=loss_fn,
                  stage=i, hooks=hooks)
    return predict(trained, examples("test"))


def _prompt_and_score(cell: Cell, pools: Pools, weak: WeakLabels) -> np.ndarray:
    """fewshot-prompt: every label the cell bought is a shot (weak-labelled shots from the weak-label
    pool, gold shots from the oracle pool), shuffled by the seed into one prompt to the causal-LM
    student; P(label=1) on the test pool, shape [N], is sigmoid(logit("1") - logit("0")).

    The cell pays for every shot, so every shot must be in view: a prompt that `max_length` would cut
    is refused (`w2sweep.shots`; `plan` refuses such configs before anything runs)."""
    for source, n, pool in (("weak", cell.n_weak, pools.weak_label), ("oracle", cell.n_oracle, pools.oracle)):
        if n > len(pool):
            raise ValueError(f"a {source} stage needs {n} labels but its pool holds {len(pool)}")
    texts, labels = prompt_shots(pools, cell.n_weak, cell.n_oracle, cell.seed, weak.weak_label)
    prefix = fewshot_prefix(texts, labels)
    tokenizer, model = load_causal_lm(cell.student.model, seed=cell.seed, tokenizer_ref=cell.student.tokenizer,
                                      trust_remote_code=cell.student.trust_remote_code)
    max_length = cell.settings.max_length
    tokens, over = prompt_overflow(tokenizer, prefix, pools.test.texts, max_length)
    if over:
        raise ValueError(f"cell {cell.cell_id} ({cell.method}): {len(texts)} shots make a {tokens}-token prompt but "
                         f"max_length is {max_length}: it would pay for shots the model never sees")
    return prompt_scores(model, tokenizer, prefix, pools.test.texts, max_length=max_length)


def warm_up(cell: Cell) -> None:
    """Do the first-time work of `run_cell` that needs no prerequisite: build the pools and load the
    student once (imports, tokenizer, weights: kept resident, `w2sweep.models.resident`, or at least in
    the page cache). A process that would otherwise sit idle waiting for weak labels does this instead,
    and its first cell starts warm (~2 s of a first tiny-bert cell on the CPU)."""
    pools_for(cell.dataset, cell.seed)
    if cell.recipe.train:
        resident.warm(cell.student.model, seed=cell.seed, **load_kwargs(cell.student))


def run_cell(cell: Cell, storage: Storage, *, claims: KeyClaims = NoClaims(),
             hooks: TrainHooks | None = None, write_timeout_s: float = RESULT_WRITE_TIMEOUT_S) -> CellResult:
    """Run the cell's method (fine-tune the student through its stages, or prompt it), evaluate on
    the test pool against gold labels, and write the result once. A stage's n examples are the first
    n of its pool (or with +active the n the student is least sure of), so a larger budget's labels
    contain a smaller one's: curves differ by budget, not by sampling luck.

    The same function runs in one process and on every rank of a torch.distributed group (a Ray
    Train worker group, `w2sweep.distributed`): training goes through DeepSpeed there, every rank
    returns the result, and only rank 0 writes it. `hooks` checkpoint and resume the training.
    Writing the predictions and the result is retried for up to `write_timeout_s` seconds.
    The result records the GPUs the cell held (`cell.num_gpus`) and their GPU-seconds.

    First the cell's prerequisites, under `claims` (`w2sweep.prerequisites`)."""
    ensure_prerequisites(cell, storage, claims, warm_up)  # before `start`: wall_seconds is the cell's own
    start = time.monotonic()
    pools = pools_for(cell.dataset, cell.seed)
    # The ceiling reads no weak labels (no weak_key): none are trained or read for it.
    weak = None if cell.weak_key is None else load_weak_labels(storage, cell.sweep, cell.weak_key)
    if cell.recipe.train:
        features = None
        if cell.features_key is not None:
            stored = load_features(storage, cell.sweep, cell.features_key)
            if stored.values is None:
                warnings.warn(f"student {cell.student.label!r} trains its head through the body in every "
                              f"step: no stored features ({stored.reason})", stacklevel=2)
            features = stored.for_pools(pools)
        scores = _train_and_score(cell, pools, weak, features, hooks=hooks)
    else:
        scores = _prompt_and_score(cell, pools, weak)
    m = evaluate(scores, pools.test.labels, seed=cell.seed)
    wall_seconds = time.monotonic() - start
    result = CellResult(
        cell_id=cell.cell_id, sweep=cell.sweep, dataset=cell.dataset.name,
        weak_supervisor=cell.weak_name, student=cell.student.label, method=cell.method,
        budget=cell.budget, spending_fraction=cell.spending_fraction, seed=cell.seed,
        n_weak=cell.n_weak, n_oracle=cell.n_oracle, label_cost=cell.label_cost,
        c_weak=cell.costs.c_weak, c_oracle=cell.costs.c_oracle,
        accuracy=m["accuracy"], accuracy_ci=m["accuracy_ci"], auroc=m["auroc"], auroc_ci=m["auroc_ci"],
        weak_accuracy=math.nan if weak is None else weak.test_accuracy, num_test=len(pools.test), wall_seconds=wall_seconds,
        num_gpus=cell.num_gpus, gpu_seconds=cell.num_gpus * wall_seconds,
        test_label1_share=pools.test_label1_share, config=cell.canonical(),
    )
    if not is_main_process():
        return result
    # Predictions first: the result object marks the cell done, so whoever sees it finds them too.
    _patiently(storage.url(layout.predictions(cell.sweep, cell.cell_id)), write_timeout_s, write_predictions,
               storage, cell.sweep, cell.cell_id, np.arange(len(pools.test)), pools.test.labels, scores)
    try:
        _patiently(storage.url(cell.result_key), write_timeout_s, storage.write_once, cell.result_key,
                   result.to_json())
    except AlreadyExists:
        pass  # another attempt of this cell finished first; its result stands
    return result


def _transient(e: BaseException) -> bool:
    """A storage failure worth waiting out (an outage, a timeout); not `AlreadyExists`, an answer."""
    return isinstance(e, (StorageError, OSError)) and not isinstance(e, AlreadyExists)


def _patiently(what: str, timeout_s: float, write, *args):
    """`write(*args)`, retried with exponential backoff for up to `timeout_s` seconds: a trained cell is
    not thrown away for a short storage outage (each try already has the backend's own retries). Then
    a `StorageError` naming `what`, the object whose write failed, from the last error."""
    retrying = tenacity.Retrying(stop=tenacity.stop_after_delay(timeout_s),
                                 wait=tenacity.wait_exponential_jitter(initial=1, max=30),
                                 retry=tenacity.retry_if_exception(_transient), reraise=False)
    try:
        return retrying(write, *args)
    except tenacity.RetryError as e:
        last = e.last_attempt.exception()
        raise StorageError(f"storage error: writing {what} failed for {timeout_s:g} s "
                           f"({e.last_attempt.attempt_number} attempts): {last}") from last
