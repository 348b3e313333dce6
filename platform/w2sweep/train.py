"""The training loop of one stage, and batched prediction. Plain PyTorch and DeepSpeed: no Ray.

Examples are `TokenizedTexts` (texts tokenized once, each batch padded to its own longest text) or
`w2sweep.features.Features` (a frozen body's outputs, for head-only students): anything with `len()`
and `batch(indices, device) -> model inputs`. Soft labels are P(label=1), shape [N]; scores returned
are P(label=1), shape [N].

One process trains with a plain AdamW loop. Under torch.distributed with more than one rank (a Ray
Train worker group, or torchrun) the same loop runs on every rank through DeepSpeed (ZeRO stage 0, 2
or 3, optional CPU offload of the optimizer): every rank draws the same shuffled order from the seed
and takes its share of each batch, and predictions are gathered, so every rank sees the same
validation score and makes the same early-stopping decision. Either way an optimizer step sees
`batch_size` examples, split into micro batches (gradient accumulation) as memory requires.

Checkpoints are the business of a `TrainHooks` object: the loop hands it a `save(directory)` function
at every validation and asks it for the directory to resume from; `w2sweep.distributed` implements it
with Ray Train's checkpoints, and the default does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.utils.rnn import pad_sequence

from w2sweep.losses import xent
from w2sweep.metrics import accuracy, auroc
from w2sweep.models import TrainSettings


def get_cosine_schedule_with_warmup(optimizer, *, num_warmup_steps: int, num_training_steps: int):
    """Linear warmup to the learning rate, then half a cosine down to 0, from torch's own schedulers.
    (transformers has a function of this name, but importing it pulls in transformers.trainer_utils and
    peft: ~2 s at the start of every cell process.)"""
    sched = torch.optim.lr_scheduler
    decay = sched.CosineAnnealingLR(optimizer, T_max=max(1, num_training_steps - num_warmup_steps), eta_min=0.0)
    if num_warmup_steps == 0:
        return decay
    # LinearLR cannot start at exactly 0; one warmup step's worth is the transformers schedule's 2nd value.
    warmup = sched.LinearLR(optimizer, start_factor=1.0 / (num_warmup_steps + 1), end_factor=1.0,
                            total_iters=num_warmup_steps)
    return sched.SequentialLR(optimizer, [warmup, decay], milestones=[num_warmup_steps])


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


def _all_sum(value: float) -> float:
    if world()[1] == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item())


class TokenizedTexts:
    """Texts tokenized once, truncated to `max_length` on the tokenizer's truncation side. Each batch is
    padded to its own longest text on the tokenizer's padding side: the same tensors as calling the
    tokenizer on the batch with padding=True, without tokenizing every text again in every epoch and
    validation (~12% of a small cell on the CPU)."""

    def __init__(self, tokenizer, texts: list[str], max_length: int):
        self.texts = list(texts)
        self.pad_id = tokenizer.pad_token_id
        self.side = tokenizer.padding_side
        enc = tokenizer(self.texts, truncation=True, max_length=max_length) if self.texts else {}
        self.columns = {name: [torch.tensor(row) for row in enc[name]] for name in
                        ("input_ids", "attention_mask", "token_type_ids") if name in enc}

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, idx, device) -> dict[str, torch.Tensor]:
        # non_blocking: a blocking host-to-GPU copy waits for the GPU to finish the previous step, so
        # the GPU would idle while the next step's kernels are launched.
        return {name: pad_sequence([rows[i] for i in idx], batch_first=True, padding_side=self.side,
                                   padding_value=self.pad_id if name == "input_ids" else 0).to(device, non_blocking=True)
                for name, rows in self.columns.items()}


def _autocast(device: torch.device):
    """bf16 autocast on GPUs (a no-op where the weights are bf16 already), nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _predict_local(model, examples, idx: np.ndarray, *, batch_size: int) -> np.ndarray:
    model.eval()
    device = _device(model)
    out = []
    for start in range(0, len(idx), batch_size):
        with _autocast(device):
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


def _val_score(scores: np.ndarray, labels: np.ndarray) -> float:
    """Validation AUROC, falling back to accuracy where AUROC is undefined (one class present)."""
    value = auroc(scores, labels)
    return accuracy(scores, labels) if math.isnan(value) else value


def deepspeed_config(settings: TrainSettings, *, world_size: int, use_gpu: bool) -> dict:
    """The DeepSpeed config of `settings` on `world_size` ranks.

    micro batch = `micro_batch_size` (default: batch_size / world_size, rounded up); gradient
    accumulation = batch_size / (micro batch x world_size), rounded up. Where that does not divide
    evenly, DeepSpeed's train_batch_size is the rounded-up product while the loop still puts exactly
    `batch_size` examples into each step (a short micro batch, weighted by its size). bf16 on GPUs,
    fp32 on the CPU; ZeRO-Offload moves the optimizer to the CPU (DeepSpeedCPUAdam).
    """
    micro = settings.micro_batch_size or math.ceil(settings.batch_size / world_size)
    accumulation = math.ceil(settings.batch_size / (micro * world_size))
    zero: dict = {"stage": settings.zero_stage}
    if settings.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": use_gpu}
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": use_gpu},
        "fp16": {"enabled": False},
        "gradient_clipping": 0.0,
        "zero_allow_untested_optimizer": True,  # torch's AdamW
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def _micro_batches(idx: np.ndarray, rank: int, world_size: int, accumulation: int):
    """This rank's micro batches of the global batch `idx`, each with its share of the batch.

    The batch is cut into world_size x accumulation near-equal slots and slot a*world_size + rank is
    this rank's a-th. A rank whose slot is empty (a short last batch) gets one example weighted 0, so
    every rank runs the same number of forward/backward passes (ZeRO-3's are collective)."""
    slots = np.array_split(idx, world_size * accumulation)
    for a in range(accumulation):
        chunk = slots[a * world_size + rank]
        yield (chunk, len(chunk) / len(idx)) if len(chunk) else (idx[:1], 0.0)


def adamw(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.AdamW:
    """torch's fused AdamW: one kernel for all parameters instead of a Python loop over them, which
    torch still defaults to on the CPU (tiny-bert step 9.3 -> 1.4 ms, minilm-l6 102 -> 26 ms here)."""
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)


def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _copy_weights(named) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in named}


def bf16_weights(device: torch.device) -> bool:
    """Whether the plain loop trains in bf16 with fp32 master weights: on GPUs, as DeepSpeed's bf16
    mode does under torch.distributed; the CPU has no fast bf16 kernels."""
    return device.type == "cuda"


class _PlainLoop:
    """One process: torch AdamW with warmup + cosine decay, gradient accumulation over micro batches.

    With `bf16_weights`, every parameter is held in bf16 while training (a 0.5B student on an H100:
    bf16 activations halve the bytes of the elementwise kernels that outweigh its matmuls, and no
    weight is cast again in every forward) and the optimizer steps fp32 master weights, the original
    fp32 tensors: updates smaller than bf16's resolution (lr x step ~ 1e-6 against weights ~ 1e-2)
    accumulate there instead of rounding away. `close` puts the fp32 tensors back in the model.
    GPU memory per trained weight: 20 bytes instead of 16 (bf16 copy and gradient, fp32 master and
    gradient, AdamW's two moments); per frozen weight 2 instead of 4."""

    loss_scale = 1.0

    def __init__(self, model, settings: TrainSettings, total_steps: int):
        self.model = model
        self.accumulation = math.ceil(settings.batch_size / (settings.micro_batch_size or settings.batch_size))
        self.trainable = _trainable(model)
        self.fp32: dict[torch.nn.Parameter, torch.Tensor] = {}
        if bf16_weights(_device(model)):
            for p in model.parameters():
                # A trainable weight's fp32 tensor stays on the device as its master; a frozen one (a
                # LoRA student's body) waits on the host, so the body does not take GPU memory twice.
                self.fp32[p] = p.data if p.requires_grad else p.data.to("cpu")
                p.data = p.data.to(torch.bfloat16)
        self.masters = [self.fp32.get(p, p) for _, p in self.trainable]
        self.optimizer = adamw(self.masters, settings)
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, num_warmup_steps=int(settings.warmup_ratio * total_steps),
            num_training_steps=total_steps)
        self.forward = torch.compile(model) if settings.compile else model

    def train(self):
        self.model.train()

    def backward(self, loss):
        loss.backward()

    def micro_step(self, *, last: bool):
        if self.fp32:  # each micro batch's bf16 gradients are summed in fp32, as DeepSpeed's bf16 mode does
            for (_, p), master in zip(self.trainable, self.masters):
                if p.grad is not None:
                    grad = p.grad.float()
                    master.grad = grad if master.grad is None else master.grad.add_(grad)
            self.model.zero_grad(set_to_none=True)
        if not last:
            return
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.fp32:
            with torch.no_grad():
                for (_, p), master in zip(self.trainable, self.masters):
                    p.copy_(master)

    def weights(self) -> dict[str, torch.Tensor]:
        return _copy_weights((name, master) for (name, _), master in zip(self.trainable, self.masters))

    def save(self, directory: Path):
        # In bf16 the model's state holds rounded weights; the fp32 masters are what training resumes from.
        torch.save(dict(model=self.model.state_dict(), masters=self.weights() if self.fp32 else None,
                        optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict()),
                   directory / "plain_loop.pt")

    def load(self, directory: Path):
        state = torch.load(directory / "plain_loop.pt", map_location=_device(self.model), weights_only=False)
        self.model.load_state_dict(state["model"])
        if state["masters"] is not None:
            with torch.no_grad():
                for (name, _), master in zip(self.trainable, self.masters):
                    master.copy_(state["masters"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def close(self, best: dict[str, torch.Tensor] | None):
        for p, full in self.fp32.items():
            p.data = full.to(p.device)
        _load_weights(self.model, best)


class _DeepSpeedLoop:
    """Every rank of torch.distributed: `deepspeed.initialize` on the model, torch AdamW (or
    DeepSpeedCPUAdam with offload) and the same warmup + cosine schedule, stepped by DeepSpeed at
    each accumulation boundary. `close` hands back a plain module holding full weights on every rank."""

    def __init__(self, model, settings: TrainSettings, total_steps: int):
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        self.rank, size = world()
        self.stage = settings.zero_stage
        self.config = deepspeed_config(settings, world_size=size, use_gpu=_device(model).type == "cuda")
        self.accumulation = self.config["gradient_accumulation_steps"]
        # DeepSpeed averages gradients over ranks and divides the loss by the accumulation steps;
        # the loop weights each micro batch by its share of the global batch, so it scales them back.
        self.loss_scale = float(size * self.accumulation)
        params = [p for _, p in _trainable(model)]
        if settings.offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                         adamw_mode=True)
        else:
            optimizer = adamw(params, settings)
        self._before = _attributes(model)

        def schedule(opt):
            return get_cosine_schedule_with_warmup(
                opt, num_warmup_steps=int(settings.warmup_ratio * total_steps), num_training_steps=total_steps)

        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                               config=self.config)
        self.model = model

    def train(self):
        self.engine.train()

    def forward(self, **enc):
        return self.engine(**enc)

    def backward(self, loss):
        self.engine.backward(loss)

    def micro_step(self, *, last: bool):
        self.engine.step()  # DeepSpeed steps optimizer and schedule at the accumulation boundary

    def _gathered(self, params):
        if self.stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)

    def weights(self) -> dict[str, torch.Tensor]:
        named = _trainable(self.model)
        with self._gathered([p for _, p in named]):
            return _copy_weights(named)

    def save(self, directory: Path):
        self.engine.save_checkpoint(str(directory), tag="deepspeed")

    def load(self, directory: Path):
        self.engine.load_checkpoint(str(directory), tag="deepspeed", load_optimizer_states=True,
                                    load_lr_scheduler_states=True)

    def close(self, best: dict[str, torch.Tensor] | None):
        named = list(self.model.named_parameters())
        with self._gathered([p for _, p in named]):
            full = {name: p.detach().clone() for name, p in named}
        self.engine.destroy()
        _restore_attributes(self.model, self._before)
        for name, p in named:  # off DeepSpeed's flat buffers (ZeRO-2) or partitions (ZeRO-3)
            p.data = full[name]
        _load_weights(self.model, best)
        self.engine = None


def _attributes(model) -> dict:
    return dict(modules={id(m): (set(vars(m)), type(m._parameters)) for m in model.modules()},
                params={id(p): set(vars(p)) for p in model.parameters()})


def _restore_attributes(model, before: dict) -> None:
    """Undo what DeepSpeed attached to the modules and parameters (ZeRO-3's parameter dicts and
    hooks state, ZeRO-2's fp32 mappings), so the next stage starts from a plain module."""
    for m in model.modules():
        keys, params_type = before["modules"].get(id(m), (set(vars(m)), type(m._parameters)))
        if type(m._parameters) is not params_type:
            raw = m._parameters
            m._parameters = params_type((k, dict.__getitem__(raw, k)) for k in dict.keys(raw))
        for key in set(vars(m)) - keys:
            delattr(m, key)
    for p in model.parameters():
        for key in set(vars(p)) - before["params"].get(id(p), set(vars(p))):
            delattr(p, key)


def _load_weights(model, weights: dict[str, torch.Tensor] | None) -> None:
    if weights is None:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].data.copy_(value.to(params[name].device, params[name].dtype))


def _read_checkpoint(hooks: TrainHooks) -> tuple[Path, dict] | None:
    directory = hooks.resume_dir()
    if directory is None or not (Path(directory) / "loop.json").exists():
        return None
    return Path(directory), json.loads((Path(directory) / "loop.json").read_text())


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
    resume = _read_checkpoint(hooks)
    if resume is not None:
        directory, ckpt = resume
        if ckpt["stage"] > stage or (ckpt["stage"] == stage and ckpt["done"]):
            return _finished_before(model, directory, ckpt, stage, hooks)
        if ckpt["stage"] < stage:
            resume = None  # a checkpoint of an earlier stage that had not finished: cannot happen in order
    if len(examples) == 0:
        stats = dict(num_steps=0, num_epochs=0, best_val_auroc=float("nan"), train_loss=float("nan"),
                     train_losses=[], num_steps_run=0, resumed_from_epoch=0)
        return hooks.record(stage, stats)
    rank, size = world()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = _device(model)
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    # A handful of labels gives a handful of steps per epoch: too few to move a pretrained model off a
    # constant prediction. Like the anchors, train tiny stages for a minimum number of steps instead.
    num_epochs = max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * num_epochs
    eval_every = math.ceil(num_epochs / settings.epochs)
    # The weights this stage starts from, kept in checkpoints: a restarted cell that resumes in a later
    # stage hands them to whatever runs between the stages (e.g. active selection of oracle labels).
    stage_start = _copy_weights(_trainable(model)) if stage > 0 and hooks.checkpoints else None
    loop = _DeepSpeedLoop(model, settings, total_steps) if size > 1 else _PlainLoop(model, settings, total_steps)
    labels = torch.as_tensor(soft_labels, dtype=torch.float32)
    state = dict(epoch=0, num_steps=0, best_score=-math.inf, stale=0, train_losses=[], val_scores=[])
    best = None
    if resume is not None:
        directory, ckpt = resume
        loop.load(directory)
        best = torch.load(directory / "best.pt", weights_only=True) if (directory / "best.pt").exists() else None
        state.update({k: ckpt[k] for k in state})
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(torch.load(directory / f"torch_rng_rank{rank}.pt", weights_only=True))
        hooks.stages[:stage] = ckpt["stages"]
    resumed_from, steps_run, done, stats = state["epoch"], 0, False, None

    def finish_stats() -> dict:
        return dict(num_steps=state["num_steps"], num_epochs=state["epoch"],
                    best_val_auroc=float(state["best_score"]), train_loss=state["train_losses"][-1],
                    train_losses=list(state["train_losses"]), num_steps_run=steps_run,
                    resumed_from_epoch=resumed_from)

    def save(directory: str) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        loop.save(path)
        torch.save(torch.get_rng_state(), path / f"torch_rng_rank{rank}.pt")
        if rank == 0:
            if best is not None:
                torch.save(best, path / "best.pt")
            if stage_start is not None:
                torch.save(stage_start, path / "stage_start.pt")
            blob = dict(stage=stage, done=done, stats=stats, stages=hooks.stages[:stage],
                        rng=rng.bit_generator.state, **state)
            (path / "loop.json").write_text(json.dumps(blob))

    for epoch in range(state["epoch"] + 1, num_epochs + 1):
        loop.train()
        order = rng.permutation(len(examples))
        loss_sum = torch.zeros((), device=device)
        for start in range(0, len(examples), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            progress = state["num_steps"] / total_steps
            for a, (chunk, weight) in enumerate(_micro_batches(idx, rank, size, loop.accumulation)):
                with _autocast(device):
                    logits = loop.forward(**examples.batch(chunk, device)).logits
                loss = loss_fn(logits.float(), labels[chunk].to(device, non_blocking=True), progress=progress) * weight
                loop.backward(loss * loop.loss_scale)
                loop.micro_step(last=a == loop.accumulation - 1)
                loss_sum += loss.detach().float()
            state["num_steps"] += 1
            steps_run += 1
        state["epoch"] = epoch
        state["train_losses"].append(_all_sum(float(loss_sum)) / steps_per_epoch)
        # Stretched stages (min_steps) still validate about `settings.epochs` times, so patience means
        # the same thing whether an epoch is 1 step or 100.
        if epoch % eval_every and epoch != num_epochs:
            continue
        score = _val_score(predict(model, val_examples), val_labels)
        state["val_scores"].append(score)
        improved = score > state["best_score"]
        if improved:
            state["best_score"], state["stale"] = score, 0
        else:
            state["stale"] += 1
        done = state["stale"] >= settings.patience or epoch == num_epochs
        if improved:
            # A best that is the model's last state needs no copy (a full copy of a 0.5B student's
            # weights to the host takes a second), unless a checkpoint must hold it.
            best = loop.weights() if hooks.checkpoints or not done else None
        stats = finish_stats() if done else None
        hooks.on_epoch_end(save, dict(stage=stage, epoch=epoch, num_steps=state["num_steps"],
                                      train_loss=state["train_losses"][-1], val_score=score, done=done))
        if done:
            break
    loop.close(best)
    return hooks.record(stage, finish_stats())


def _finished_before(model, directory: Path, ckpt: dict, stage: int, hooks: TrainHooks) -> dict:
    """Stage `stage` had finished before the restart: put its final weights in place, return its stats."""
    if ckpt["stage"] == stage:
        stats = ckpt["stats"]
        weights = directory / "best.pt"
    else:
        stats = (ckpt["stages"][stage:stage + 1] or [None])[0] or {}
        # The weights the checkpointed stage started from: what the stages before it ended with.
        weights = directory / "stage_start.pt"
    if weights.exists():
        _load_weights(model, torch.load(weights, weights_only=True))
    hooks.stages[:stage] = ckpt["stages"][:stage]
    return hooks.record(stage, dict(stats, num_steps_run=0))
