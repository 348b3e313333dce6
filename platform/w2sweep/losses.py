"""Losses over binary logits and soft labels.

Every loss has one signature: ``loss(logits [B, 2], soft_labels [B], *, progress, **options) -> scalar``,
where soft labels are P(label=1) and ``progress`` = step / total steps of the stage, in [0, 1] (losses
that warm up an auxiliary term read it; the others ignore it). The keyword options after ``progress``
are the loss's settings, set per sweep under ``method_options.loss_options.<loss>`` in the config;
their defaults here are the defaults of the sweep.

Notation below: y = soft label, t = [1 - y, y] the target over the two classes, p = softmax(logits),
CE(t, p) = -sum_c t_c log p_c, H(p) = CE(p, p), all averaged over the batch unless said otherwise.
The definitions follow the anchors: openai/weak-to-strong (`weak_to_strong/loss.py`: xent, product,
logconf) and EleutherAI/w2s (`w2s/loss.py`: logconf, entropy, window, kl).

torch is imported inside each loss: config validation reads this registry (names and options) in the
sweep's driver and in `w2sweep validate`, which never load torch.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _targets(soft_labels: torch.Tensor) -> torch.Tensor:
    """t = [1 - y, y], float32, shape [B, 2]."""
    import torch

    y = soft_labels.float()
    return torch.stack([1.0 - y, y], dim=-1)


def _warmup(progress: float, aux_coef: float, warmup_frac: float) -> float:
    """alpha(progress) = aux_coef * min(1, progress / warmup_frac): rises linearly from 0 over the
    first `warmup_frac` of the stage, then stays at `aux_coef`."""
    if warmup_frac <= 0:
        return aux_coef
    return aux_coef * min(1.0, progress / warmup_frac)


def xent(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0) -> torch.Tensor:
    """CE(t, p): cross-entropy against soft targets. Hard 0/1 labels are the special case of one-hot
    targets, and a weak supervisor's probabilities keep its confidence instead of rounding it away."""
    import torch.nn.functional as F

    targets = _targets(soft_labels).to(logits.dtype)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def logconf(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0,
            aux_coef: float = 0.5, warmup_frac: float = 0.1) -> torch.Tensor:
    """Auxiliary confidence loss (Burns et al. 2023):
    ``(1 - alpha) * CE(t, p) + alpha * CE(h, p)``, alpha = `_warmup(progress, aux_coef, warmup_frac)``,
    where h is the student's own prediction hardened to one-hot (no gradient through it).

    The hardening threshold is batch-adaptive so the hardened predictions are as balanced as the
    labels: the share of the batch hardened to class 1 equals mean(y) (0.5 for a batch of one). This
    lets the student contradict the weak labels where it is confident, without collapsing onto one class.
    """
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    y = soft_labels.float()
    alpha = _warmup(progress, aux_coef, warmup_frac)
    p0 = torch.softmax(logits, dim=-1)[:, 0].detach()
    prior = y.mean() if len(y) > 1 else torch.full((), 0.5, device=p0.device)
    threshold = torch.quantile(p0, prior)
    hard = torch.stack([(p0 >= threshold), (p0 < threshold)], dim=-1).float()
    target = (1 - alpha) * _targets(y) + alpha * hard
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def product(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0,
            alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """Product-of-experts target (openai/weak-to-strong): ``CE(q, p)`` with
    ``q proportional to t^alpha * p^beta`` per class, normalised over the two classes and held fixed
    (no gradient through q). `alpha` weighs the weak labels, `beta` the student's own predictions."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    p = torch.softmax(logits, dim=-1).detach()
    q = _targets(soft_labels).pow(alpha) * p.pow(beta)
    q = q / q.sum(-1, keepdim=True).clamp_min(1e-12)
    return -(q * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def entropy(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0,
            aux_coef: float = 0.5, warmup_frac: float = 0.1) -> torch.Tensor:
    """Like logconf with the hardened term replaced by the student's entropy (EleutherAI/w2s):
    ``(1 - alpha) * CE(t, p) + alpha * H(p)``, alpha warmed up as in `logconf`. Minimising H(p)
    pushes the student toward confident predictions without a batch threshold."""
    import torch.nn.functional as F

    logits = logits.float()
    alpha = _warmup(progress, aux_coef, warmup_frac)
    log_p = F.log_softmax(logits, dim=-1)
    ce = -(_targets(soft_labels) * log_p).sum(-1)
    h = -(log_p.exp() * log_p).sum(-1)
    return ((1 - alpha) * ce + alpha * h).mean()


def window(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0,
           radius: float = 0.15) -> torch.Tensor:
    """Confidence-window loss (EleutherAI/w2s): cross-entropy only on the examples the student is
    unsure of, ``sum_{i: max_c p_ic < 0.5 + radius} CE(t_i, p_i) / B`` (divided by the whole batch
    size B, so confident examples count as zero loss)."""
    import torch.nn.functional as F

    logits = logits.float()
    log_p = F.log_softmax(logits, dim=-1)
    unsure = (log_p.exp().max(dim=-1).values < 0.5 + radius).float()
    ce = -(_targets(soft_labels) * log_p).sum(-1)
    return (ce * unsure).sum() / logits.shape[0]


def kl(logits: torch.Tensor, soft_labels: torch.Tensor, *, progress: float = 0.0) -> torch.Tensor:
    """KL(t || p) = CE(t, p) - H(t), batch mean (EleutherAI/w2s). The same gradients as `xent`; its
    value is 0 when the student matches the soft labels exactly, which makes losses comparable
    across label sets of different entropy."""
    import torch.nn.functional as F

    logits = logits.float()
    return F.kl_div(F.log_softmax(logits, dim=-1), _targets(soft_labels), reduction="batchmean")


# Allowed values of every loss option, inclusive.
OPTION_RANGES = {"aux_coef": (0.0, 1.0), "warmup_frac": (0.0, 1.0), "radius": (0.0, 0.5),
                 "alpha": (0.0, math.inf), "beta": (0.0, math.inf)}
LOSSES = {f.__name__: f for f in (xent, logconf, product, entropy, window, kl)}


def loss_defaults(name: str) -> dict[str, float]:
    """The options of loss `name` (its keyword arguments after `progress`) with their defaults."""
    params = inspect.signature(LOSSES[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name != "progress"}


def make_loss(name: str, options: dict[str, float] | None = None):
    """`loss_fn(logits, soft_labels, *, progress)` for loss `name` with `options` bound (unset ones
    take their defaults). Raises ValueError naming the loss or option that does not exist."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    unknown = set(options or {}) - set(loss_defaults(name))
    if unknown:
        raise ValueError(f"loss {name!r} has no option {sorted(unknown)[0]!r}; "
                         f"allowed: {sorted(loss_defaults(name)) or 'none'}")
    for option, value in (options or {}).items():
        low, high = OPTION_RANGES[option]
        if not low <= value <= high:
            raise ValueError(f"loss {name!r}: {option}={value!r} is outside [{low}, {high}]")
    return functools.partial(LOSSES[name], **(options or {})) if options else LOSSES[name]
