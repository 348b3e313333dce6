"""The optimizer step of one process: torch AdamW, no DeepSpeed."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from w2sweep.models import TrainSettings
from w2sweep.train.optim import adamw, warmup_cosine
from w2sweep.train.state import copy_weights, load_weights, model_device, trainable


def bf16_weights(device: torch.device) -> bool:
    """Whether the plain loop trains in bf16 with fp32 master weights: on GPUs, as DeepSpeed's bf16
    mode does under torch.distributed; the CPU has no fast bf16 kernels."""
    return device.type == "cuda"


class PlainLoop:
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
        self.trainable = trainable(model)
        self.fp32: dict[torch.nn.Parameter, torch.Tensor] = {}
        if bf16_weights(model_device(model)):
            for p in model.parameters():
                # A trainable weight's fp32 tensor stays on the device as its master; a frozen one (a
                # LoRA student's body) waits on the host, so the body does not take GPU memory twice.
                self.fp32[p] = p.data if p.requires_grad else p.data.to("cpu")
                p.data = p.data.to(torch.bfloat16)
        self.masters = [self.fp32.get(p, p) for _, p in self.trainable]
        self.optimizer = adamw(self.masters, settings)
        self.scheduler = warmup_cosine(self.optimizer, settings, total_steps)
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
        return copy_weights((name, master) for (name, _), master in zip(self.trainable, self.masters))

    def save(self, directory: Path):
        # In bf16 the model's state holds rounded weights; the fp32 masters are what training resumes from.
        # Tensors, dicts, lists and numbers only: `load` unpickles nothing else (weights_only).
        torch.save(dict(model=self.model.state_dict(), masters=self.weights() if self.fp32 else None,
                        optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict()),
                   directory / "plain_loop.pt")

    def load(self, directory: Path):
        # weights_only: a checkpoint is read back from the sweep's storage, and whoever can write there
        # must not get to run code in this process (a full unpickler would call what the file names).
        state = torch.load(directory / "plain_loop.pt", map_location=model_device(self.model), weights_only=True)
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
        load_weights(self.model, best)
