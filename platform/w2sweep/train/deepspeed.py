"""The optimizer step on every rank of torch.distributed, through DeepSpeed (ZeRO stage 0, 2 or 3,
optionally with the optimizer offloaded to the CPU). `deepspeed` is imported only when a loop is built."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import torch

from w2sweep.models import TrainSettings
from w2sweep.train.optim import adamw, warmup_cosine
from w2sweep.train.state import copy_weights, load_weights, model_device, trainable, world


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


class DeepSpeedLoop:
    """Every rank of torch.distributed: `deepspeed.initialize` on the model, torch AdamW (or
    DeepSpeedCPUAdam with offload) and the same warmup + cosine schedule, stepped by DeepSpeed at
    each accumulation boundary. `close` hands back a plain module holding full weights on every rank."""

    def __init__(self, model, settings: TrainSettings, total_steps: int):
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        size = world()[1]
        self.stage = settings.zero_stage
        self.config = deepspeed_config(settings, world_size=size, use_gpu=model_device(model).type == "cuda")
        self.accumulation = self.config["gradient_accumulation_steps"]
        # DeepSpeed averages gradients over ranks and divides the loss by the accumulation steps;
        # the loop weights each micro batch by its share of the global batch, so it scales them back.
        self.loss_scale = float(size * self.accumulation)
        params = [p for _, p in trainable(model)]
        if settings.offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                         adamw_mode=True)
        else:
            optimizer = adamw(params, settings)
        self._before = _attributes(model)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.config,
                                               lr_scheduler=lambda opt: warmup_cosine(opt, settings, total_steps))
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
        named = trainable(self.model)
        with self._gathered([p for _, p in named]):
            return copy_weights(named)

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
        load_weights(self.model, best)
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
