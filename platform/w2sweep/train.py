"""The training loop of one stage, and batched prediction. Plain PyTorch: no Ray, no Trainer.

Texts are strings; soft labels are P(label=1), shape [N]; scores returned are P(label=1), shape [N].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from w2sweep.losses import xent
from w2sweep.metrics import accuracy, auroc


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int
    max_length: int  # tokens; longer texts are truncated
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2  # epochs without a better validation AUROC before stopping
    min_steps: int = 0  # small label sets repeat epochs until this many optimizer steps


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _encode(tokenizer, texts: list[str], max_length: int):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


@torch.inference_mode()
def predict(model, tokenizer, texts: list[str], *, max_length: int, batch_size: int = 64) -> np.ndarray:
    """P(label=1) for each text, shape [N]."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for idx in _batches(len(texts), batch_size, None):
        enc = _encode(tokenizer, [texts[i] for i in idx], max_length).to(device)
        out.append(torch.softmax(model(**enc).logits.float(), dim=-1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _val_score(scores: np.ndarray, labels: np.ndarray) -> float:
    """Validation AUROC, falling back to accuracy where AUROC is undefined (one class present)."""
    value = auroc(scores, labels)
    return accuracy(scores, labels) if math.isnan(value) else value


def fine_tune(model, tokenizer, texts: list[str], soft_labels: np.ndarray, *,
              val_texts: list[str], val_labels: np.ndarray, settings: TrainSettings,
              seed: int, loss_fn=xent) -> dict:
    """Train `model` in place on (texts, soft_labels) with AdamW, linear warmup and cosine decay.

    `loss_fn(logits [B,2], soft_labels [B], *, progress)` -> scalar, progress = step / total_steps in [0, 1].

    About `settings.epochs` times per stage the model is scored on the validation set (hard labels [V]);
    training stops after `settings.patience` scorings without a better validation AUROC and the best
    weights are restored. Stages with few labels repeat epochs until `settings.min_steps` steps.
    Returns {"num_steps", "num_epochs", "best_val_auroc", "train_loss"}.
    """
    if len(texts) == 0:
        return dict(num_steps=0, num_epochs=0, best_val_auroc=float("nan"), train_loss=float("nan"))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(texts) / settings.batch_size)
    # A handful of labels gives a handful of steps per epoch: too few to move a pretrained model off a
    # constant prediction. Like the anchors, train tiny stages for a minimum number of steps instead.
    num_epochs = max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * num_epochs
    eval_every = math.ceil(num_epochs / settings.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=int(settings.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    labels = torch.as_tensor(soft_labels, dtype=torch.float32)
    best_score, best_state, stale, steps, epoch, loss_sum = -math.inf, None, 0, 0, 0, 0.0
    for epoch in range(1, num_epochs + 1):
        model.train()
        loss_sum = 0.0
        for idx in _batches(len(texts), settings.batch_size, rng):
            enc = _encode(tokenizer, [texts[i] for i in idx], settings.max_length).to(device)
            loss = loss_fn(model(**enc).logits, labels[idx].to(device), progress=steps / total_steps)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            steps += 1
        # Stretched stages (min_steps) still validate about `settings.epochs` times, so patience means
        # the same thing whether an epoch is 1 step or 100.
        if epoch % eval_every and epoch != num_epochs:
            continue
        score = _val_score(predict(model, tokenizer, val_texts, max_length=settings.max_length), val_labels)
        if score > best_score:
            best_score, stale = score, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return dict(num_steps=steps, num_epochs=epoch, best_val_auroc=float(best_score),
                train_loss=float(loss_sum) / steps_per_epoch)
