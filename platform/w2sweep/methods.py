"""Methods: named recipes of stages. A new method is a new list of stages, not a new code path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Stage:
    """One fine-tuning pass on the labels of one source, continuing from the previous stage's weights."""

    labels: Literal["weak", "oracle"]


@dataclass(frozen=True)
class Method:
    name: str
    stages: tuple[Stage, ...]

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


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sft-oracle", (Stage("oracle"),)),
        Method("sft-weak", (Stage("weak"),)),
        Method("seq-sft", (Stage("weak"), Stage("oracle"))),
    )
}
