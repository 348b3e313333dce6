"""Memory one training worker of a student needs, from the model's config alone (no weights read).

A student's cell fails late and expensively when it does not fit its GPU: the planner estimates the
bytes one worker allocates before anything runs, refuses cells over `gpu_memory_gb` with the cheapest
change that fits, and resolves ``num_workers: auto`` (`w2sweep.memory.plan`, called by `w2sweep.grid.plan`).

Bytes per worker = model states + activations:

- model states: the parameter counts (total P, trained T, largest layer) come from the model built on
  the ``meta`` device (`shape.model_shape`). On the plain loop (one worker, GPU) a trained weight costs
  20 bytes (bf16 copy and gradient, fp32 master and gradient, AdamW's two fp32 moments) and a frozen
  one 2 (`w2sweep.train.plain`); on the CPU (fp32) 16 + 4 for the best weights kept, and 4 per frozen
  weight. Under DeepSpeed (num_workers > 1) DeepSpeed's own estimators give the trained weights' GPU
  bytes (`estimate_zero2_model_states_mem_needs` for stages 0 (one shard) and 2,
  `estimate_zero3_model_states_mem_needs` for stage 3; offload moves the optimizer to the CPU); frozen
  weights add 2 bytes each, split over the workers under ZeRO-3. DeepSpeed's estimators assume every
  parameter trains, so they are given the trained count (LoRA's adapters and head, or the head);
  their `additional_buffer_factor` only scales host memory and is left at 1.
- activations: what a transformer layer keeps for backward per token (Korthikanti et al. 2022,
  generalised to any MLP width and dtype; under LoRA less: a frozen Linear keeps no input) x (layers
  + 1: the gradients of the layer in backward) x micro batch x max_length; a frozen body (head mode)
  keeps none, only one layer's forward working set, as does prediction (batches of 64, no grad);
  plus, for a decoder built with use_cache, the key/value cache every forward returns (all layers).

Not counted: the process's fixed host memory (interpreter, libraries, the tokenizer: ~10 MB for a
WordPiece vocabulary of 30k, ~51 MB for smollm2's), the CUDA context on GPUs, and what an allocator
keeps after freeing. GB here is 2**30 bytes (what torch and nvidia-smi report). No Ray.

Checked on the CPU only (bench/memory.py, docs/benchmarks.md), against the peak RSS above the process
baseline with glibc's mmap threshold fixed (so that the RSS follows the bytes alive, as
`torch.cuda.max_memory_allocated` does): within the target (-10%, +25%) for tiny-bert, minilm-l6 and
smollm2-135m in full, LoRA and head mode. With glibc's default malloc the peak RSS is higher (freed
activations stay in the heap) and the estimate is below it; see docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from w2sweep.memory.shape import ModelShape

GB = 2**30  # bytes
MAX_WORKERS = 64  # the most workers `num_workers: auto` and the suggested fixes consider
PREDICT_BATCH = 64  # w2sweep.train.state.predict's batch: no grad, one layer's working set at a time


@dataclass(frozen=True)
class Layout:
    """How one student trains, as far as memory goes."""

    mode: str  # full | lora | head
    num_workers: int
    zero_stage: int  # DeepSpeed's; unused with one worker
    offload: bool
    micro_batch: int  # examples per forward/backward on one worker
    max_length: int  # tokens per example


@dataclass(frozen=True)
class Estimate:
    """Bytes one worker allocates on its device; `offloaded`: optimizer bytes on the host instead."""

    model_states: int
    activations: int
    offloaded: int = 0

    @property
    def total(self) -> int:
        return self.model_states + self.activations

    @property
    def gb(self) -> float:
        return self.total / GB


def _deepspeed_states(trained: int, largest: int, layout: Layout) -> tuple[int, int]:
    """(GPU bytes, CPU bytes) of the trained weights' states under DeepSpeed's estimators."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    if layout.zero_stage == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            trained, largest, num_gpus_per_node=layout.num_workers, num_nodes=1, cpu_offload=layout.offload,
            cpu_offload_params=False, zero_init=True, additional_buffer_factor=1.0)
    else:  # stage 0 shards nothing: stage 2's formula on one GPU
        gpus = layout.num_workers if layout.zero_stage == 2 else 1
        cpu, gpu = estimate_zero2_model_states_mem_needs(
            trained, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=layout.offload, additional_buffer_factor=1.0)
    return int(gpu), int(cpu) if layout.offload else 0


def model_states(shape: ModelShape, layout: Layout, *, device: str = "cuda") -> tuple[int, int]:
    """(device bytes, offloaded host bytes) of weights, gradients and optimizer states on one worker."""
    trained = shape.trainable[layout.mode]
    frozen = shape.params[layout.mode] - trained
    if layout.num_workers == 1:
        if device == "cpu":  # fp32 weights, gradients, two moments, and the best weights kept
            return 20 * trained + 4 * frozen, 0
        return 20 * trained + 2 * frozen, 0
    gpu, cpu = _deepspeed_states(trained, shape.largest_layer, layout)
    shards = layout.num_workers if layout.zero_stage == 3 else 1
    return gpu + math.ceil(2 * frozen / shards), cpu


def _layer_bytes_per_token(shape: ModelShape, max_length: int, device: str, mode: str = "full") -> int:
    """Bytes one layer keeps for backward per token: 8h + 2i (3i gated) values, two dropout masks of h
    bytes, and on the CPU (SDPA's math path) per head the softmax output, its dropout mask and output
    over max_length keys. On GPUs bf16 SDPA runs flash / memory-efficient kernels that keep no scores.

    Under LoRA a frozen Linear keeps no input (its backward needs only its weight for the input's
    gradient), so three of those values are not kept: the input of the attention's output projection
    (h), the MLP's input (h) and its down projection's input (i). The adapted projections (peft's
    defaults: query and value) share the attention's input, which stays."""
    dtype_bytes = 4 if device == "cpu" else 2
    mlp = (3 if shape.gated else 2) * shape.intermediate
    frozen_inputs = 2 * shape.hidden + shape.intermediate if mode == "lora" else 0
    values = dtype_bytes * (8 * shape.hidden + mlp - frozen_inputs) + 2 * shape.hidden
    scores = shape.heads * max_length * (2 * dtype_bytes + 1) if device == "cpu" else 0
    return values + scores


def _forward_bytes_per_token(shape: ModelShape, max_length: int, device: str) -> int:
    """Bytes per token of one layer's forward where nothing is kept for backward (prediction under
    no_grad, or a frozen body): the layer's input (h values) and the larger of its two phases' working
    sets, each freed before the next phase: attention (q, k, v and their output: 4h; on the CPU per
    head the scores and their softmax over max_length keys) and the MLP (its input h and 2i values, 3i
    gated: gate, up and the activation alive at the product)."""
    dtype_bytes = 4 if device == "cpu" else 2
    attention = 4 * shape.hidden + (2 * shape.heads * max_length if device == "cpu" else 0)
    mlp = shape.hidden + (3 if shape.gated else 2) * shape.intermediate
    return dtype_bytes * (shape.hidden + max(attention, mlp))


def activations(shape: ModelShape, layout: Layout, *, device: str = "cuda") -> int:
    """Bytes of activations at the peak of a micro batch's backward (or prediction's forward)."""
    dtype_bytes = 4 if device == "cpu" else 2
    tokens = layout.micro_batch * layout.max_length
    forward = _forward_bytes_per_token(shape, layout.max_length, device)
    if layout.mode == "head":  # a frozen body keeps nothing for backward: one layer's forward at a time
        training = forward * tokens
    else:  # every layer's kept values, one more layer for the gradients being back-propagated, embeddings
        per_token = _layer_bytes_per_token(shape, layout.max_length, device, layout.mode)
        training = (shape.layers + 1) * per_token * tokens + 2 * dtype_bytes * shape.hidden * tokens
    # A decoder's key/value cache: every layer's keys and values of the batch, alive at the forward's end.
    cache = shape.layers * shape.kv_cache_width * dtype_bytes
    training += cache * tokens
    predicting = (forward + cache) * PREDICT_BATCH * layout.max_length
    return max(training, predicting)


def estimate(shape: ModelShape, layout: Layout, *, device: str = "cuda") -> Estimate:
    """Bytes one worker of `layout` needs on `device` ("cuda": bf16 as the loops train on GPUs; "cpu": fp32)."""
    on_device, offloaded = model_states(shape, layout, device=device)
    return Estimate(on_device, activations(shape, layout, device=device), offloaded)


def layout_of(spec, settings, num_workers: int | None = None) -> Layout:
    """The Layout of a `ModelSpec` and its resolved `TrainSettings` (micro batch as the loops pick it)."""
    workers = num_workers if num_workers is not None else spec.num_workers
    micro = settings.micro_batch_size or math.ceil(settings.batch_size / workers)
    return Layout(spec.mode, workers, spec.zero_stage, spec.offload, micro, settings.max_length)


__all__ = ["GB", "MAX_WORKERS", "Estimate", "Layout", "activations", "estimate", "layout_of", "model_states"]
