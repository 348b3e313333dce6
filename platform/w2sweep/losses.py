"""Losses over binary logits and soft labels.

Every loss takes logits [B, 2] and soft labels [B] = P(label=1), and returns a scalar mean over B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def xent(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0) -> torch.Tensor:
    """Cross-entropy against soft targets: hard 0/1 labels are the special case of one-hot targets,
    and a weak supervisor's probabilities keep its confidence instead of rounding it away."""
    targets = torch.stack([1.0 - soft_labels, soft_labels], dim=-1).to(logits.dtype)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


LOSSES = {"xent": xent}
