"""Methods: named recipes of stages. A new method is a new list of stages, not a new code path.

A method name is a base recipe followed by suffixes, each of which rewrites the recipe:

    base        stages                                  notes
    sft-oracle  oracle                                  f is fixed at 1
    sft-weak    weak                                    f is fixed at 0
    seq-sft     weak, then oracle (same weights)        f is a real axis
    fewshot-prompt  no training: every label bought is a shot of one k-shot prompt to a causal LM;
                the score is logit("1") - logit("0") after it (`w2sweep.prompting`)
    ceiling     oracle, on the whole oracle pool        the strong ceiling of PGR; not a grid method:
                                                        `ceiling: true` in the config adds it

    suffix      rewrite
    +fewshot    k-shot prompt prefix during training and evaluation; each stage's shots are its
                first k labels (weak-labelled shots for a weak stage, gold for an oracle stage), paid
                for like every other label: the stage trains on the rest
    +active     the oracle stage after a weak stage takes the oracle examples the student is least
                sure of (smallest |p - 0.5|) instead of the first n
    +<loss>     the weak stages train with that loss instead of xent (`w2sweep.losses`: logconf,
                product, entropy, window, kl), e.g. seq-sft+logconf

Suffixes combine in any order (``seq-sft+logconf+fewshot``); `canonical_name` writes them in the
order of `SUFFIXES`, which is the name results carry.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

from w2sweep import costs
from w2sweep.losses import LOSSES, loss_defaults

Source = Literal["weak", "oracle"]


class MethodError(ValueError):
    """A method name that does not parse; the message is one line naming what is allowed."""


@dataclass(frozen=True)
class Stage:
    """One fine-tuning pass on the labels of one source, continuing from the previous stage's weights."""

    labels: Source
    loss: str = "xent"  # a key of w2sweep.losses.LOSSES
    select: Literal["first", "uncertain"] = "first"  # which n examples of the pool: pool order, or
    # the student's most uncertain (smallest |p - 0.5|) at the start of the stage


@dataclass(frozen=True)
class Method:
    name: str
    stages: tuple[Stage, ...]
    fewshot: bool = False  # shots prefixed to every training, validation and test text
    train: bool = True  # False: the labels only make a prompt (fewshot-prompt)

    @property
    def label_sources(self) -> frozenset[str]:
        return frozenset(stage.labels for stage in self.stages)

    @property
    def fixed_fraction(self) -> float | None:
        """A one-source method spends the whole budget on that source: sweeping f would only buy
        labels it never reads. None when the method mixes sources and f is a real axis."""
        if self.label_sources == {"weak"}:
            return 0.0
        if self.label_sources == {"oracle"}:
            return 1.0
        return None

    @property
    def losses(self) -> frozenset[str]:
        return frozenset(stage.loss for stage in self.stages)


def _set_fewshot(method: Method) -> Method:
    if method.fewshot:
        raise MethodError(f"{method.name!r} already prompts with shots; drop '+fewshot'")
    return replace(method, fewshot=True)


def _set_active(method: Method) -> Method:
    stages, seen_weak, changed = [], False, False
    for stage in method.stages:
        if stage.labels == "oracle" and seen_weak:
            stage, changed = replace(stage, select="uncertain"), True
        seen_weak |= stage.labels == "weak"
        stages.append(stage)
    if not changed or not method.train:
        raise MethodError(f"'+active' picks the oracle examples of a stage that follows a weak stage, "
                          f"and {method.name!r} has none; use it with seq-sft")
    return replace(method, stages=tuple(stages))


def _set_weak_loss(loss: str):
    def rewrite(method: Method) -> Method:
        if not method.train or "weak" not in method.label_sources:
            raise MethodError(f"'+{loss}' sets the loss of weak stages, and {method.name!r} trains none; "
                              "use it with sft-weak or seq-sft")
        if method.losses != {"xent"}:
            raise MethodError(f"{method.name!r} already sets the weak stages' loss; give one loss suffix")
        stages = tuple(replace(s, loss=loss) if s.labels == "weak" else s for s in method.stages)
        return replace(method, stages=stages)

    return rewrite


BASES: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sft-oracle", (Stage("oracle"),)),
        Method("sft-weak", (Stage("weak"),)),
        Method("seq-sft", (Stage("weak"), Stage("oracle"))),
        Method("fewshot-prompt", (Stage("weak"), Stage("oracle")), fewshot=True, train=False),
        Method("ceiling", (Stage("oracle"),)),
    )
}
CEILING = "ceiling"
# Suffix -> rewrite, in canonical order.
SUFFIXES = {"fewshot": _set_fewshot, "active": _set_active,
            **{loss: _set_weak_loss(loss) for loss in LOSSES if loss != "xent"}}


def _allowed() -> str:
    bases = ", ".join(b for b in BASES if b != CEILING)
    return f"a base ({bases}) with optional suffixes ({', '.join('+' + s for s in SUFFIXES)})"


@functools.lru_cache(maxsize=None)
def parse_method(name: str) -> Method:
    """The recipe `name` denotes, named canonically (suffixes in `SUFFIXES` order). Raises MethodError."""
    base, *suffixes = name.split("+")
    if base not in BASES:
        raise MethodError(f"unknown method {name!r}: {base!r} is not a base; allowed: {_allowed()}")
    for suffix in suffixes:
        if suffix not in SUFFIXES:
            raise MethodError(f"unknown method {name!r}: {'+' + suffix!r} is not a suffix; allowed: {_allowed()}")
    if len(set(suffixes)) != len(suffixes):
        raise MethodError(f"method {name!r} repeats a suffix")
    if base == CEILING and suffixes:
        raise MethodError(f"method {name!r}: the ceiling is plain sft-oracle on the whole oracle pool; "
                          "it takes no suffixes")
    method = BASES[base]
    ordered = [s for s in SUFFIXES if s in suffixes]
    for suffix in ordered:
        method = SUFFIXES[suffix](method)
    return replace(method, name="+".join([base, *ordered]))


def canonical_name(name: str) -> str:
    return parse_method(name).name


# ---- what a method runs on in a grid (`w2sweep.grid.expand_cells`) ---------------------------------

def method_options_for(method: Method, options) -> dict:
    """The method options `method` reads from `options` (the config's MethodOptions), resolved against
    their defaults (JSON-able): ``fewshot_k`` for a trained +fewshot method, and ``losses: {loss:
    {option: value}}`` for the losses of its stages that have options. Options the method does not
    read stay out, so they do not change its cell ids."""
    resolved = {}
    if method.fewshot and method.train:
        resolved["fewshot_k"] = options.fewshot_k
    losses = {loss: {**loss_defaults(loss), **options.loss_options.get(loss, {})}
              for loss in sorted(method.losses) if loss_defaults(loss)}
    if losses:
        resolved["losses"] = losses
    return resolved


def budget_splits(config, method: str):
    """(budget, spending_fraction or None, n_weak, n_oracle) for each budget split of `config` (a
    SweepConfig) that `method` is run on: a one-source method spends each budget at its fixed
    fraction only, and runs only the pairs that buy labels of its sources."""
    fixed = parse_method(method).fixed_fraction
    c = dict(c_weak=config.costs.c_weak, c_oracle=config.costs.c_oracle)
    fractions = [] if not config.spending_fractions else [fixed] if fixed is not None else config.spending_fractions
    for budget in config.budgets:
        for f in fractions:
            yield budget, f, *costs.label_counts(budget, f, **c)
    sources = parse_method(method).label_sources
    for n_weak, n_oracle in config.pairs:
        # A pair buys labels of both kinds; a one-source method would leave some unread.
        if (n_weak and "weak" not in sources) or (n_oracle and "oracle" not in sources):
            continue
        yield costs.label_cost(n_weak, n_oracle, **c), None, n_weak, n_oracle
