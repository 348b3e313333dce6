"""Preference datasets as binary tasks: one response of a pair -> is it the preferred one.

Each row becomes one example showing the chosen response (label 1) or the rejected one (label 0),
with probability 1/2 each, as in EleutherAI/scalable-elicitation.
"""

from __future__ import annotations

from w2sweep.data.loader import Loader


def _anthropic_hh(row, rng):
    if rng.random() < 0.5:
        return str(row["chosen"]), 1
    return str(row["rejected"]), 0


LOADERS = [
    Loader("anthropic_hh", "Anthropic/hh-rlhf", None, ("chosen", "rejected"), _anthropic_hh,
           "dialogue ending in one response -> it is the preferred one"),
]
