"""Preference datasets as binary tasks: one response of a pair -> is it the preferred one.

Each row becomes one example showing the chosen response (label 1) or the rejected one (label 0),
with probability 1/2 each, as in EleutherAI/scalable-elicitation. Rows are grouped by their prompt
(the dialogue before the final response): pairs that branch from one conversation share it, and a
test example must not continue a conversation the student was trained on.
"""

from __future__ import annotations

from w2sweep.data.loader import Loader


def _anthropic_hh(row, rng):
    if rng.random() < 0.5:
        return str(row["chosen"]), 1
    return str(row["rejected"]), 0


_LAST_TURN = "\n\nAssistant:"


def _prompt(row) -> dict:
    """The dialogue before the final response, shared by the chosen and the rejected one."""
    chosen = str(row["chosen"])
    return {"prompt": chosen[: chosen.rfind(_LAST_TURN)] if _LAST_TURN in chosen else chosen}


LOADERS = [
    Loader("anthropic_hh", "Anthropic/hh-rlhf", None, ("chosen", "rejected"), _anthropic_hh,
           "dialogue ending in one response -> it is the preferred one", group="prompt", derive=_prompt),
]
