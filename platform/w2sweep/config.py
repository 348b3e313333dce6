"""The sweep configuration: one YAML file, validated before anything runs.

Every bad value becomes one line naming the field, the value and what is allowed (`ConfigError`);
the CLI prints those lines and exits 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from w2sweep.methods import METHODS
from w2sweep.models import check_model_reference


class ConfigError(ValueError):
    """Invalid sweep configuration; `lines` holds one message per bad value."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction01 = Annotated[float, Field(ge=0.0, le=1.0)]


class PoolSizes(_Strict):
    """Examples per pool. The weak-label and oracle pools share what is left when unset."""

    weak_train: PositiveInt = 500
    val: PositiveInt = 200
    test: PositiveInt = 500
    weak_label: PositiveInt | None = None
    oracle: PositiveInt | None = None


class DatasetSpec(_Strict):
    """Where a binary task comes from. `text` is a column name, or a template such as
    ``"{passage}\\nQuestion: {question}"`` over columns; `label` names the 0/1 (or bool) column."""

    name: str
    source: Literal["synthetic", "local", "hub"]
    path: str | None = None  # local: file or directory; hub: dataset id
    subset: str | None = None  # hub: configuration name
    split: str = "train"  # hub: split to load; local directory: file stem to load
    text: str = "text"
    label: str = "label"
    label_map: dict[str, int] | None = None  # raw label (as string) -> 0/1
    num_examples: PositiveInt | None = None  # synthetic: how many to make; others: a cap
    pools: PoolSizes = PoolSizes()

    @model_validator(mode="after")
    def _path_required(self) -> DatasetSpec:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"source '{self.source}' needs `path` (a file/directory or hub id)")
        if self.source == "local" and not Path(self.path).expanduser().exists():
            raise ValueError(f"path {self.path!r} does not exist")
        if self.source == "synthetic":
            from w2sweep.data.synthetic import SYNTHETIC_TASKS

            if self.name not in SYNTHETIC_TASKS:
                raise ValueError(
                    f"unknown synthetic dataset {self.name!r}; allowed: {sorted(SYNTHETIC_TASKS)}"
                )
        return self


class ModelSpec(_Strict):
    """A student or weak supervisor. `model` is a packaged name (``minilm-l6``), a tiny random
    config (``tiny-bert``), a local directory or a hub id. Unset training settings take the
    model's defaults (`w2sweep.models.default_settings`)."""

    model: str
    name: str | None = None  # how results call it; defaults to `model`
    lr: Annotated[float, Field(gt=0)] | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    max_length: PositiveInt | None = None
    min_steps: Annotated[int, Field(ge=0)] | None = None  # optimizer steps at least, however few labels
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    patience: PositiveInt = 2  # evaluations without a better validation AUROC before stopping
    tokenizer: str | None = None  # tiny models borrow a real tokenizer; defaults to minilm-l6's
    trust_remote_code: bool = False

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        check_model_reference(value)
        return value

    @property
    def label(self) -> str:
        return self.name or self.model


class Costs(_Strict):
    """Label prices in label units."""

    c_oracle: Annotated[float, Field(gt=0)] = 1.0
    c_weak: Annotated[float, Field(gt=0)] = 0.1

    @model_validator(mode="after")
    def _weak_is_cheaper(self) -> Costs:
        if self.c_weak >= self.c_oracle:
            raise ValueError(
                f"c_weak={self.c_weak} must be below c_oracle={self.c_oracle}: weak labels are the cheap ones"
            )
        return self


class Resources(_Strict):
    """What one cell asks of the cluster."""

    cpu: Annotated[float, Field(gt=0)] = 1
    gpu: Annotated[float, Field(ge=0)] = 0


class SweepConfig(_Strict):
    name: str
    storage: str = "outputs"
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]
    weak_supervisors: Annotated[list[ModelSpec], Field(min_length=1)]
    students: Annotated[list[ModelSpec], Field(min_length=1)]
    methods: Annotated[list[str], Field(min_length=1)]
    budgets: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
    costs: Costs = Costs()
    spending_fractions: list[Fraction01] = []
    pairs: list[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]] = []  # (n_weak, n_oracle)
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    resources: Resources = Resources()
    max_failures: Annotated[int, Field(ge=0)] = 1  # retries of a failed cell before it counts as failed

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"{value!r} must be letters, digits, '_', '.', '-' (it names a storage folder)")
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in METHODS:
                raise ValueError(f"unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")
        return value

    @model_validator(mode="after")
    def _grid_not_empty(self) -> SweepConfig:
        if not self.spending_fractions and not self.pairs:
            raise ValueError("give `spending_fractions` and/or `pairs`; both are empty")
        for kind, specs in (("datasets", self.datasets), ("students", self.students),
                            ("weak_supervisors", self.weak_supervisors)):
            labels = [getattr(s, "label", getattr(s, "name", None)) for s in specs]
            if len(set(labels)) != len(labels):
                raise ValueError(f"{kind} names must be unique; got {labels}")
        return self


def _format_error(err: dict) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"config error: {field}: unknown key (not a field of this section)"
    if err["type"] == "missing":
        return f"config error: {field}: required field is missing"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"config error: {field}: {shown}: {msg}"


def parse_config(raw: object) -> SweepConfig:
    if not isinstance(raw, dict):
        raise ConfigError([f"config error: <top level>: expected a mapping, got {type(raw).__name__}"])
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError([_format_error(err) for err in e.errors()]) from None


def load_config(path: str | Path) -> SweepConfig:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError([f"config error: {path}: cannot read ({e.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError([f"config error: {path}: not valid YAML{line}"]) from None
    return parse_config(raw)
