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

`loop.fine_tune` composes the parts: `state` (examples, hooks, what a stage's run holds, prediction),
`optim` (AdamW and its schedule), `plain` and `deepspeed` (the two ways an optimizer step is taken),
`checkpoint` (what a checkpoint holds, and resuming from one).
"""

from w2sweep.models import TrainSettings
from w2sweep.train.deepspeed import deepspeed_config
from w2sweep.train.loop import fine_tune
from w2sweep.train.optim import get_cosine_schedule_with_warmup
from w2sweep.train.state import TokenizedTexts, TrainHooks, is_main_process, model_device, predict

__all__ = [
    "TokenizedTexts", "TrainHooks", "TrainSettings", "deepspeed_config", "fine_tune",
    "get_cosine_schedule_with_warmup", "is_main_process", "model_device", "predict",
]
