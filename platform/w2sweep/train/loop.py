"""`fine_tune`: the training loop of one stage, composed of the other parts of `w2sweep.train`."""

from __future__ import annotations

import math

import numpy as np
import torch

from w2sweep.losses import xent
from w2sweep.metrics import accuracy, auroc
from w2sweep.models import TrainSettings
from w2sweep.train.checkpoint import finished_before, read_checkpoint, restore_checkpoint, save_checkpoint
from w2sweep.train.deepspeed import DeepSpeedLoop
from w2sweep.train.plain import PlainLoop
from w2sweep.train.state import (Schedule, StageRun, TrainHooks, all_sum, autocast, copy_weights, model_device,
                                 predict, trainable, world)


def fine_tune(model, examples, soft_labels: np.ndarray, *,
              val_examples, val_labels: np.ndarray, settings: TrainSettings,
              seed: int, loss_fn=xent, stage: int = 0, hooks: TrainHooks | None = None) -> dict:
    """Train `model` in place on (examples, soft_labels) with AdamW, linear warmup and cosine decay.

    `loss_fn(logits [B,2], soft_labels [B], *, progress)` -> scalar, progress = step / total_steps in [0, 1].

    About `settings.epochs` times per stage the model is scored on the validation set (hard labels [V]);
    training stops after `settings.patience` scorings without a better validation AUROC and the best
    weights are restored. Stages with few labels repeat epochs until `settings.min_steps` steps.
    `stage` numbers this call among the cell's stages for `hooks`, which checkpoints at every
    validation and resumes an interrupted cell (see TrainHooks).

    Returns {"num_steps", "num_epochs", "best_val_auroc", "train_loss" (last epoch), "train_losses"
    (per epoch, mean over steps), "num_steps_run" (steps taken by this call: fewer after a resume),
    "resumed_from_epoch" (0 unless resumed)}.
    """
    hooks = hooks or TrainHooks()
    resume = read_checkpoint(hooks)
    if resume is not None:
        directory, ckpt = resume
        if ckpt["stage"] > stage or (ckpt["stage"] == stage and ckpt["done"]):
            return finished_before(model, directory, ckpt, stage, hooks)
        if ckpt["stage"] < stage:
            resume = None  # a checkpoint of an earlier stage that had not finished: cannot happen in order
    if len(examples) == 0:
        stats = dict(num_steps=0, num_epochs=0, best_val_auroc=float("nan"), train_loss=float("nan"),
                     train_losses=[], num_steps_run=0, resumed_from_epoch=0)
        return hooks.record(stage, stats)
    schedule = Schedule.of(len(examples), settings)
    run = _start(model, settings, schedule, seed=seed, stage=stage, hooks=hooks)
    labels = torch.as_tensor(soft_labels, dtype=torch.float32)
    if resume is not None:
        restore_checkpoint(run, *resume)
    for epoch in range(run.progress.epoch + 1, schedule.num_epochs + 1):
        _train_epoch(run, examples, labels, schedule, batch_size=settings.batch_size, loss_fn=loss_fn)
        run.progress.epoch = epoch
        if not schedule.validates_after(epoch):
            continue
        score = _validate(run, model, val_examples, val_labels, patience=settings.patience,
                          last=epoch == schedule.num_epochs)
        hooks.on_epoch_end(lambda directory: save_checkpoint(run, directory),
                           dict(stage=stage, epoch=epoch, num_steps=run.progress.num_steps,
                                train_loss=run.progress.train_losses[-1], val_score=score, done=run.done))
        if run.done:
            break
    run.loop.close(run.best)
    return hooks.record(stage, run.finish_stats())


def _start(model, settings: TrainSettings, schedule: Schedule, *, seed: int, stage: int,
           hooks: TrainHooks) -> StageRun:
    """A stage's run before its first epoch: seeded, with its loop (DeepSpeed under torch.distributed
    with more than one rank, else the plain one) built on `model`."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = model_device(model)
    # The weights this stage starts from, kept in checkpoints: a restarted cell that resumes in a later
    # stage hands them to whatever runs between the stages (e.g. active selection of oracle labels).
    stage_start = copy_weights(trainable(model)) if stage > 0 and hooks.checkpoints else None
    loop = (DeepSpeedLoop if world()[1] > 1 else PlainLoop)(model, settings, schedule.total_steps)
    return StageRun(stage=stage, hooks=hooks, loop=loop, rng=rng, device=device, stage_start=stage_start)


def _train_epoch(run: StageRun, examples, labels: torch.Tensor, schedule: Schedule, *, batch_size: int,
                 loss_fn) -> None:
    """One pass over `examples` in an order drawn from `run.rng` (the same on every rank), `batch_size`
    examples per optimizer step; appends the epoch's mean loss over all ranks to the train losses."""
    loop, progress, device = run.loop, run.progress, run.device
    rank, size = world()
    loop.train()
    order = run.rng.permutation(len(examples))
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(examples), batch_size):
        idx = order[start:start + batch_size]
        fraction = progress.num_steps / schedule.total_steps
        for a, (chunk, weight) in enumerate(_micro_batches(idx, rank, size, loop.accumulation)):
            with autocast(device):
                logits = loop.forward(**examples.batch(chunk, device)).logits
            loss = loss_fn(logits.float(), labels[chunk].to(device, non_blocking=True), progress=fraction) * weight
            loop.backward(loss * loop.loss_scale)
            loop.micro_step(last=a == loop.accumulation - 1)
            loss_sum += loss.detach().float()
        progress.num_steps += 1
        run.steps_run += 1
    progress.train_losses.append(all_sum(float(loss_sum)) / schedule.steps_per_epoch)


def _validate(run: StageRun, model, val_examples, val_labels: np.ndarray, *, patience: int, last: bool) -> float:
    """Score `model` on the validation set, keep the best weights, and decide whether the stage is done
    (`patience` scorings without a better one, or the `last` epoch). Returns the score."""
    progress = run.progress
    score = _val_score(predict(model, val_examples), val_labels)
    progress.val_scores.append(score)
    improved = score > progress.best_score
    if improved:
        progress.best_score, progress.stale = score, 0
    else:
        progress.stale += 1
    run.done = progress.stale >= patience or last
    if improved:
        # A best that is the model's last state needs no copy (a full copy of a 0.5B student's
        # weights to the host takes a second), unless a checkpoint must hold it.
        run.best = run.loop.weights() if run.hooks.checkpoints or not run.done else None
    run.stats = run.finish_stats() if run.done else None
    return score


def _micro_batches(idx: np.ndarray, rank: int, world_size: int, accumulation: int):
    """This rank's micro batches of the global batch `idx`, each with its share of the batch.

    The batch is cut into world_size x accumulation near-equal slots and slot a*world_size + rank is
    this rank's a-th. A rank whose slot is empty (a short last batch) gets one example weighted 0, so
    every rank runs the same number of forward/backward passes (ZeRO-3's are collective)."""
    slots = np.array_split(idx, world_size * accumulation)
    for a in range(accumulation):
        chunk = slots[a * world_size + rank]
        yield (chunk, len(chunk) / len(idx)) if len(chunk) else (idx[:1], 0.0)


def _val_score(scores: np.ndarray, labels: np.ndarray) -> float:
    """Validation AUROC, falling back to accuracy where AUROC is undefined (one class present)."""
    value = auroc(scores, labels)
    return accuracy(scores, labels) if math.isnan(value) else value
