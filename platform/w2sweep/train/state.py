"""What both training loops share: where this process stands in torch.distributed, examples as
tokenized texts, the hooks a checkpointer implements, what one stage's run holds (its schedule, its
progress, its best weights), moving trained weights around, and batched prediction."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.utils.rnn import pad_sequence

from w2sweep.models import TrainSettings


def world() -> tuple[int, int]:
    """(rank, world size) of this process in torch.distributed; (0, 1) outside it."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True outside torch.distributed and on rank 0: the one process that writes results."""
    return world()[0] == 0


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(value: float) -> float:
    """`value` summed over the ranks of torch.distributed (itself in one process)."""
    if world()[1] == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item())


def model_device(model) -> torch.device:
    """The device `model`'s weights are on (that of its first parameter)."""
    return next(model.parameters()).device


def autocast(device: torch.device):
    """bf16 autocast on GPUs (a no-op where the weights are bf16 already), nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TokenizedTexts:
    """Texts tokenized once, truncated to `max_length` on the tokenizer's truncation side. Each batch is
    padded to its own longest text on the tokenizer's padding side: the same tensors as calling the
    tokenizer on the batch with padding=True, without tokenizing every text again in every epoch and
    validation (~12% of a small cell on the CPU).

    `cache` (text -> its rows, e.g. `w2sweep.models.resident.token_cache`: one per tokenizer and
    `max_length`) carries tokenized texts across cells of a process: only texts not in it are
    tokenized, and they are added. A text's rows do not depend on the others tokenized with it (no
    padding here), so the tensors are the same either way."""

    _COLUMNS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, tokenizer, texts: list[str], max_length: int, *, cache: dict | None = None):
        self.texts = list(texts)
        self.pad_id = tokenizer.pad_token_id
        self.side = tokenizer.padding_side
        cache = {} if cache is None else cache
        todo = [t for t in dict.fromkeys(self.texts) if t not in cache]
        if todo:
            enc = tokenizer(todo, truncation=True, max_length=max_length)
            names = [name for name in self._COLUMNS if name in enc]
            for i, text in enumerate(todo):
                cache[text] = {name: torch.tensor(enc[name][i]) for name in names}
        rows = [cache[t] for t in self.texts]
        self.columns = {name: [row[name] for row in rows] for name in rows[0]} if rows else {}

    def __len__(self) -> int:
        return len(self.texts)

    def lengths(self) -> np.ndarray:
        """Tokens of each text [N], after truncation."""
        return np.array([len(row) for row in self.columns.get("input_ids", [])], dtype=np.int64)

    def batch(self, idx, device) -> dict[str, torch.Tensor]:
        # non_blocking: a blocking host-to-GPU copy waits for the GPU to finish the previous step, so
        # the GPU would idle while the next step's kernels are launched.
        return {name: pad_sequence([rows[i] for i in idx], batch_first=True, padding_side=self.side,
                                   padding_value=self.pad_id if name == "input_ids" else 0).to(device, non_blocking=True)
                for name, rows in self.columns.items()}


class TrainHooks:
    """What the loop asks of whoever checkpoints it. The default keeps nothing.

    `stages[i]` holds the stats of stage i of this cell once it has finished (None for a stage that
    was skipped); the loop fills it and stores it in every checkpoint, so a restarted cell skips the
    stages it had finished."""

    checkpoints = False  # True where on_epoch_end saves: the loop then keeps each stage's start weights

    def __init__(self):
        self.stages: list[dict] = []

    def resume_dir(self) -> str | None:
        """A local directory written by a `save` of an earlier attempt of this cell, or None."""
        return None

    def on_epoch_end(self, save: Callable[[str], None], metrics: dict) -> None:
        """Called on every rank after each validation. `save(directory)` writes the training state
        (every rank must call it under DeepSpeed: saving is collective); `metrics` has stage, epoch,
        num_steps, train_loss, val_score and done."""

    def record(self, stage: int, stats: dict) -> dict:
        self.stages.extend([None] * (stage + 1 - len(self.stages)))
        self.stages[stage:] = [stats]
        return stats


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps and epochs a stage trains, and how often it validates."""

    steps_per_epoch: int
    num_epochs: int
    eval_every: int  # epochs between validations

    @classmethod
    def of(cls, num_examples: int, settings: TrainSettings) -> Schedule:
        steps_per_epoch = math.ceil(num_examples / settings.batch_size)
        # A handful of labels gives a handful of steps per epoch: too few to move a pretrained model off a
        # constant prediction. Like the anchors, train tiny stages for a minimum number of steps instead.
        num_epochs = max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))
        return cls(steps_per_epoch, num_epochs, eval_every=math.ceil(num_epochs / settings.epochs))

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.num_epochs

    def validates_after(self, epoch: int) -> bool:
        # Stretched stages (min_steps) still validate about `settings.epochs` times, so patience means
        # the same thing whether an epoch is 1 step or 100.
        return epoch % self.eval_every == 0 or epoch == self.num_epochs


@dataclass
class Progress:
    """How far a stage has trained: the counters a checkpoint's loop.json holds (its keys are these names)."""

    epoch: int = 0
    num_steps: int = 0
    best_score: float = -math.inf  # the best validation score so far
    stale: int = 0  # validations since the best one
    train_losses: list[float] = field(default_factory=list)  # per epoch, mean over its steps
    val_scores: list[float] = field(default_factory=list)


@dataclass
class StageRun:
    """One `fine_tune` call under way: what its checkpoints save and restore and its stats report."""

    stage: int
    hooks: TrainHooks
    loop: object  # a w2sweep.train.plain.PlainLoop or w2sweep.train.deepspeed.DeepSpeedLoop
    rng: np.random.Generator  # draws each epoch's order; the same on every rank
    device: torch.device
    # The trained weights this stage started from (checkpointing hooks, stages after the first).
    stage_start: dict[str, torch.Tensor] | None
    progress: Progress = field(default_factory=Progress)
    best: dict[str, torch.Tensor] | None = None  # the best validation's trained weights, where kept
    done: bool = False
    stats: dict | None = None  # what fine_tune returns, once done
    steps_run: int = 0  # by this call: fewer than progress.num_steps after a resume
    resumed_from: int = 0  # the epoch a resumed run continued after

    def finish_stats(self) -> dict:
        p = self.progress
        return dict(num_steps=p.num_steps, num_epochs=p.epoch, best_val_auroc=float(p.best_score),
                    train_loss=p.train_losses[-1], train_losses=list(p.train_losses),
                    num_steps_run=self.steps_run, resumed_from_epoch=self.resumed_from)


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the weights the student's mode trains."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def copy_weights(named) -> dict[str, torch.Tensor]:
    """A host copy of (name, tensor) pairs: what survives later steps (best weights, a stage's start)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in named}


def load_weights(model, weights: dict[str, torch.Tensor] | None) -> None:
    """Copy `weights` (name -> tensor, a `copy_weights`) into `model`'s parameters; None leaves it as it is."""
    if weights is None:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].data.copy_(value.to(params[name].device, params[name].dtype))


def _predict_local(model, examples, idx: np.ndarray, *, batch_size: int) -> np.ndarray:
    model.eval()
    device = model_device(model)
    out = []
    for start in range(0, len(idx), batch_size):
        with autocast(device):
            logits = model(**examples.batch(idx[start:start + batch_size], device)).logits
        out.append(torch.softmax(logits.float(), dim=-1)[:, 1])
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)  # one host sync, not one per batch


@torch.no_grad()  # not inference_mode: ZeRO-3 gathers parameters during forward and keeps some
def predict(model, examples, *, batch_size: int = 64) -> np.ndarray:
    """P(label=1) for each example, shape [N]. Under torch.distributed every rank scores an equal
    share (the last padded with copies of the first example, so ZeRO-3's collective forwards line up)
    and every rank returns all N scores."""
    rank, size = world()
    n = len(examples)
    if size == 1 or not n:
        return _predict_local(model, examples, np.arange(n), batch_size=batch_size)
    per = math.ceil(n / size)
    mine = np.arange(rank * per, rank * per + per)
    mine[mine >= n] = 0
    local = _predict_local(model, examples, mine, batch_size=batch_size)
    local = torch.as_tensor(local, dtype=torch.float32, device=_comm_device())
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local)
    return torch.cat(parts).cpu().numpy()[:n]
