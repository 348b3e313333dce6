"""The sweep configuration: one YAML file, validated before anything runs.

Every bad value becomes one line naming the field, the value and what is allowed (`ConfigError`);
the CLI prints those lines and exits 2.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator,
                      model_validator)

from w2sweep.methods import canonical_name, parse_method


class ConfigError(ValueError):
    """Invalid sweep configuration; `lines` holds one message per bad value."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Fields added after cell ids were pinned (tests/test_cell_ids.py). `canonical_dump` leaves them out
    # while they hold their default, so a config that does not use them keeps its cell ids, weak-label
    # and features keys, and a re-run still finds its stored results.
    ADDED_FIELDS: ClassVar[frozenset[str]] = frozenset()
    # Fields that never change a result (a memory budget): `canonical_dump` always leaves them out.
    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset()

    def canonical_dump(self) -> dict:
        """The JSON dump that ids and content keys hash: `model_dump(mode="json")` without the
        `ADDED_FIELDS` that hold their default and without the `NOT_IDENTITY` fields, in this model and
        in the models it holds."""
        dump = self.model_dump(mode="json")
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if name in self.NOT_IDENTITY or (name in self.ADDED_FIELDS and value == info.default):
                del dump[name]
            elif isinstance(value, _Strict):
                dump[name] = value.canonical_dump()
        return dump


PositiveInt = Annotated[int, Field(gt=0)]


def _num_workers(value: object) -> int | str:
    """A positive integer or "auto", checked in one step so a bad value is one error line."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError("expected a positive integer or 'auto'")


NumWorkers = Annotated[int | Literal["auto"], PlainValidator(_num_workers)]
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
    ``"{passage}\\nQuestion: {question}"`` over columns; `label` names the 0/1 (or bool) column.

    `loader` names a hub dataset family (`w2sweep.data.registry`: boolq, hellaswag, sciq, ...) whose
    converter turns rows in that hub dataset's own format into a class-balanced binary task, in place
    of `text`/`label`. With `source: hub`, a `name` that is a loader's name and no `path` means that
    loader on its hub dataset (``{name: boolq, source: hub}``; `w2sweep.data.resolve_dataset`). `weak_label` names a column of weak
    labels (P(label=1), or labels like `label`): no weak supervisor is trained for this dataset."""

    name: str
    source: Literal["synthetic", "local", "hub"]
    path: str | None = None  # local: file or directory; hub: dataset id
    subset: str | None = None  # hub: configuration name
    split: str = "train"  # hub: split to load; local directory: file stem to load
    text: str = "text"
    label: str = "label"
    label_map: dict[str, int] | None = None  # raw label (as string) -> 0/1
    loader: str | None = None  # hub dataset family converting rows in its hub format
    weak_label: str | None = None  # column holding external weak labels
    num_examples: PositiveInt | None = None  # synthetic: how many to make; others: a cap on rows read
    pools: PoolSizes = PoolSizes()

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        """The fields agree with each other. Whether the data exist (a local path, a synthetic task, a
        loader) is checked when the grid is planned (`w2sweep.grid.check_references`)."""
        if self.source == "local" and not self.path:
            raise ValueError(f"source '{self.source}' needs `path` (a file/directory or hub id)")
        if self.loader is not None:
            if self.source == "synthetic":
                raise ValueError(f"loader {self.loader!r} reads local or hub rows, not source 'synthetic'")
            if (self.text, self.label, self.label_map) != ("text", "label", None):
                raise ValueError(f"loader {self.loader!r} makes the text and label itself; "
                                 "drop `text`, `label` and `label_map`")
        if self.weak_label is not None and (self.loader is not None or self.source == "synthetic"):
            raise ValueError(f"weak_label {self.weak_label!r} needs a column mapping (`text`/`label` of a local "
                             "or hub dataset); it cannot be combined with a loader or a synthetic task")
        return self


class ModelSpec(_Strict):
    """A student or weak supervisor. `model` is a packaged name (``minilm-l6``), a tiny random
    config (``tiny-bert``), a local directory or a hub id (checked when the grid is planned:
    `w2sweep.grid.check_references`). Unset training settings take the
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
    tokenizer: str | None = None  # tiny models borrow a real tokenizer (w2sweep.models.registry.TINY_TOKENIZERS)
    trust_remote_code: bool = False
    # What is trained: every weight (full), low-rank adapters plus the head (lora, peft), or the head
    # alone on a frozen body (head: a linear probe).
    mode: Literal["full", "lora", "head"] = "full"
    lora_rank: PositiveInt = 8
    lora_alpha: Annotated[float, Field(gt=0)] = 16.0
    lora_target_modules: Annotated[list[str], Field(min_length=1)] | None = None  # None: peft's per architecture
    # Distributed training (students): more than one worker trains the cell with DeepSpeed under Ray Train.
    # "auto": the fewest workers (up to w2sweep.planner.MAX_WORKERS) whose estimated memory fits
    # `gpu_memory_gb`, resolved when the grid is planned; cells hash the resolved number.
    num_workers: NumWorkers = 1
    cpus_per_worker: Annotated[float, Field(gt=0)] | None = None  # None: the sweep's resources.cpu
    gpus_per_worker: Annotated[float, Field(ge=0)] | None = None  # None: the sweep's resources.gpu
    zero_stage: Literal[0, 2, 3] = 2  # DeepSpeed ZeRO stage (num_workers > 1)
    offload: bool = False  # ZeRO-Offload: optimizer states and step on the CPU (zero_stage 2 or 3)
    micro_batch_size: PositiveInt | None = None  # examples per forward/backward and worker; None: batch_size/num_workers
    # torch.compile the training forward (one worker): on a GPU a 0.5B student's steps ran 1.5x faster,
    # after a compile of about 80 s in every cell process (docs/benchmarks.md, P2).
    compile: bool = False
    # GB (2**30 bytes) of GPU memory one worker may allocate; None: the sweep's resources.gpu_memory_gb.
    # Checked against the planner's estimate (w2sweep.planner); never part of a cell's identity.
    gpu_memory_gb: Annotated[float, Field(gt=0)] | None = None

    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset({"gpu_memory_gb"})

    @model_validator(mode="after")
    def _consistent_training(self) -> ModelSpec:
        if self.offload and self.zero_stage == 0:
            raise ValueError("offload=True needs zero_stage 2 or 3; got zero_stage=0")
        # Set = differs from its default (a cell read back from JSON has every field present).
        changed = {f for f, info in type(self).model_fields.items() if getattr(self, f) != info.default}
        unused = []  # (field, why)
        if self.mode != "lora":
            unused += [(f, f"mode is {self.mode!r}") for f in ("lora_rank", "lora_alpha", "lora_target_modules")]
        if self.num_workers == 1:
            unused += [(f, "num_workers is 1 (no DeepSpeed)") for f in ("zero_stage", "offload")]
        else:
            unused.append(("compile", f"num_workers is {self.num_workers} (DeepSpeed trains uncompiled)"))
        for field, why in unused:
            if field in changed:
                warnings.warn(f"model {self.label!r}: {field} is set but has no effect: {why}", stacklevel=2)
        return self

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
    # GB (2**30 bytes) of GPU memory one training worker may allocate, for students without their own
    # `gpu_memory_gb`; None: no budget is checked (CPU-only sweeps).
    gpu_memory_gb: Annotated[float, Field(gt=0)] | None = None


class MethodOptions(_Strict):
    """Settings of the method suffixes, the same for every cell of the sweep. Only the settings a
    cell's method reads enter its id."""

    fewshot_k: PositiveInt = 4  # +fewshot: shots per stage, paid from that stage's labels
    # loss name -> {option: value}, e.g. {logconf: {aux_coef: 0.5, warmup_frac: 0.1}}; unset options
    # take the defaults in w2sweep.losses
    loss_options: dict[str, dict[str, float]] = {}

    @field_validator("loss_options")
    @classmethod
    def _known_loss_options(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from w2sweep.losses import make_loss

        for loss, options in value.items():
            make_loss(loss, options)  # ValueError naming the loss or option
        return value


class SweepConfig(_Strict):
    name: str
    storage: str = "outputs"
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]
    # Needed unless every dataset brings its own weak-label column.
    weak_supervisors: list[ModelSpec] = []
    students: Annotated[list[ModelSpec], Field(min_length=1)]
    methods: Annotated[list[str], Field(min_length=1)]
    method_options: MethodOptions = MethodOptions()
    # One extra cell per dataset x weak supervisor x student x seed: sft-oracle on the whole oracle
    # pool (method "ceiling"), the strong ceiling of PGR; not part of any budget.
    ceiling: bool = False
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
        """Each name parsed and written canonically (suffixes in a fixed order)."""
        names = [canonical_name(name) for name in value]  # MethodError is a ValueError: one line
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"method {repeated[0]!r} is listed twice (suffix order does not matter)")
        return names

    @model_validator(mode="after")
    def _grid_not_empty(self) -> SweepConfig:
        if not self.spending_fractions and not self.pairs:
            raise ValueError("give `spending_fractions` and/or `pairs`; both are empty")
        for kind, specs in (("datasets", self.datasets), ("students", self.students),
                            ("weak_supervisors", self.weak_supervisors)):
            labels = [s.name if isinstance(s, DatasetSpec) else s.label for s in specs]  # a dataset's `label` is a column
            if len(set(labels)) != len(labels):
                raise ValueError(f"{kind} names must be unique; got {labels}")
        own = [d.name for d in self.datasets if d.weak_label is not None]
        if not self.weak_supervisors and len(own) < len(self.datasets):
            missing = next(d.name for d in self.datasets if d.weak_label is None)
            raise ValueError(f"`weak_supervisors` is empty but dataset {missing!r} has no `weak_label` column; "
                             "give a weak supervisor")
        if self.weak_supervisors and len(own) == len(self.datasets):
            warnings.warn("every dataset has a weak_label column: `weak_supervisors` is not used", stacklevel=2)
        self._warn_unused_method_options()
        return self

    def _warn_unused_method_options(self) -> None:
        methods = [parse_method(m) for m in self.methods]
        fields = self.method_options.model_fields_set
        if "fewshot_k" in fields and not any(m.fewshot and m.train for m in methods):
            warnings.warn("method_options.fewshot_k is set but no method has '+fewshot'", stacklevel=3)
        used = set().union(*(m.losses for m in methods))
        for loss in sorted(set(self.method_options.loss_options) - used):
            warnings.warn(f"method_options.loss_options.{loss} is set but no method trains with loss {loss!r}",
                          stacklevel=3)


def error_line(field: str, value: object, msg: str) -> str:
    """One bad value as the line the CLI prints: the field, the value (a section by its type) and
    what is allowed. The schema's errors and the planning step's reference checks share it."""
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    return f"config error: {field}: {shown}: {msg}"


def _format_error(err: dict) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"config error: {field}: unknown key (not a field of this section)"
    if err["type"] == "missing":
        return f"config error: {field}: required field is missing"
    return error_line(field, err.get("input"), msg)


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
