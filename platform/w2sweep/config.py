"""The sweep configuration: one YAML file, validated before anything runs.

Every bad value becomes one line naming the field, the value and what is allowed (`ConfigError`);
the CLI prints those lines and exits 2.
"""

from __future__ import annotations

import re
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from w2sweep.config_checks import (DEFAULT_MAX_CELLS, MAX_EXAMPLES, MAX_FIELD, MAX_LINES, MAX_MESSAGE, MAX_NAME,
                                   MAX_SEED, Int, Real, budget_problem, clip, count_cells, error_line, format_error,
                                   int_or_auto, no_bool_first, one_line, repeated, shown, storage_problem)
from w2sweep.config_loading import LoadError, read_yaml
from w2sweep.methods import CEILING, canonical_name, parse_method
from w2sweep.subgrids import Subgrid, sub_configs


class ConfigError(ValueError):
    """Invalid sweep configuration; `lines` holds one message per bad value."""

    def __init__(self, lines: list[str]):
        self.lines = [clip(one_line(line), 2 * MAX_MESSAGE) for line in lines]  # each stays one line
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


# Numbers refuse booleans (`true` read as 1) and, for floats, .inf/.nan; every training setting has
# a range (README: "Limits"). The types are int and float as before: valid configs dump (and hash into
# cell ids) unchanged.
PositiveInt = Int(gt=0)
Fraction01 = Real(ge=0.0, le=1.0)
Examples = Int(gt=0, le=MAX_EXAMPLES)
Positive = Real(gt=0)
Steps = Int(gt=0, le=1000)  # epochs, patience
BatchSize = Int(gt=0, le=65_536)
Workers = Real(gt=0, le=1024)  # CPUs or GPUs of one worker
NonEmptyStr = Annotated[str, Field(min_length=1)]


class PoolSizes(_Strict):
    """Examples per pool. The weak-label and oracle pools share what is left when unset."""

    weak_train: Examples = 500
    val: Examples = 200
    test: Examples = 500
    weak_label: Examples | None = None
    oracle: Examples | None = None


class DatasetSpec(_Strict):
    """Where a binary task comes from. `text` is a column name, or a template such as
    ``"{passage}\\nQuestion: {question}"`` over columns; `label` names the 0/1 (or bool) column.

    `loader` names a hub dataset family (`w2sweep.data.registry`: boolq, hellaswag, sciq, ...) whose
    converter turns rows in that hub dataset's own format into a class-balanced binary task, in place
    of `text`/`label`. With `source: hub`, a `name` that is a loader's name and no `path` means that
    loader on its hub dataset (``{name: boolq, source: hub}``; `w2sweep.data.resolve_dataset`). `weak_label` names a column of weak
    labels (P(label=1), or labels like `label`): no weak supervisor is trained for this dataset.
    `group` (a column or template like `text`, or several: rows sharing any value are one group) keeps one
    passage's, question's or sentence's examples in one pool; loaders group by default (`resolve_dataset`).
    `balance` undersamples the majority class of a column-mapped task to 50/50, as loaders do."""

    ADDED_FIELDS = frozenset({"group", "balance"})

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
    num_examples: Examples | None = None  # synthetic: how many to make; others: a cap on rows read
    pools: PoolSizes = PoolSizes()
    group: NonEmptyStr | Annotated[tuple[NonEmptyStr, ...], Field(min_length=1)] | None = None
    balance: bool = False  # undersample the majority class to 50/50 before the pools are cut

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
        if self.source == "synthetic" and (self.group is not None or self.balance):
            raise ValueError("a synthetic task is balanced, one example per text: drop `group` and `balance`")
        if self.loader is not None and self.balance:
            raise ValueError(f"loader {self.loader!r} balances its task itself; drop `balance`")
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
    lr: Real(gt=0, le=1) | None = None
    epochs: Steps | None = None
    batch_size: BatchSize | None = None
    # tokens a text is cut to; "auto": per dataset, the smallest length keeping 99% of texts whole (w2sweep.truncation)
    max_length: int_or_auto(le=131_072) | None = None
    min_steps: Int(ge=0, le=10_000_000) | None = None  # optimizer steps at least, however few labels
    warmup_ratio: Real(ge=0, lt=1) = 0.1
    weight_decay: Real(ge=0, le=1) = 0.01
    patience: Steps = 2  # evaluations without a better validation AUROC before stopping
    tokenizer: str | None = None  # tiny models borrow a real tokenizer (w2sweep.models.registry.TINY_TOKENIZERS)
    trust_remote_code: bool = False
    # What is trained: every weight (full), low-rank adapters plus the head (lora, peft), or the head
    # alone on a frozen body (head: a linear probe).
    mode: Literal["full", "lora", "head"] = "full"
    lora_rank: Int(gt=0, le=4096) = 8
    lora_alpha: Real(gt=0, le=1e6) = 16.0
    lora_target_modules: Annotated[list[str], Field(min_length=1)] | None = None  # None: peft's per architecture
    # Distributed training (students): more than one worker trains the cell with DeepSpeed under Ray Train.
    # "auto": the fewest workers (up to w2sweep.planner.MAX_WORKERS) whose estimated memory fits
    # `gpu_memory_gb`, resolved when the grid is planned; cells hash the resolved number.
    num_workers: int_or_auto(le=1024) = 1
    cpus_per_worker: Workers | None = None  # None: the sweep's resources.cpu
    gpus_per_worker: Real(ge=0, le=1024) | None = None  # None: the sweep's resources.gpu
    zero_stage: no_bool_first(Literal[0, 2, 3]) = 2  # DeepSpeed ZeRO stage (num_workers > 1)
    offload: bool = False  # ZeRO-Offload: optimizer states and step on the CPU (zero_stage 2 or 3)
    micro_batch_size: BatchSize | None = None  # examples per forward/backward and worker; None: batch_size/num_workers
    # torch.compile the training forward (one worker): on a GPU a 0.5B student's steps ran 1.5x faster,
    # after a compile of about 80 s in every cell process (docs/benchmarks.md, P2).
    compile: bool = False
    # GB (2**30 bytes) of GPU memory one worker may allocate; None: the sweep's resources.gpu_memory_gb.
    # Checked against the planner's estimate (w2sweep.planner); never part of a cell's identity.
    gpu_memory_gb: Real(gt=0, le=1_000_000) | None = None

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

    c_oracle: Positive = 1.0
    c_weak: Positive = 0.1

    @model_validator(mode="after")
    def _weak_is_cheaper(self) -> Costs:
        if self.c_weak >= self.c_oracle:
            raise ValueError(
                f"c_weak={self.c_weak} must be below c_oracle={self.c_oracle}: weak labels are the cheap ones"
            )
        return self


class Resources(_Strict):
    """What one cell asks of the cluster."""

    cpu: Workers = 1
    gpu: Real(ge=0, le=1024) = 0
    # GB (2**30 bytes) of GPU memory one training worker may allocate, for students without their own
    # `gpu_memory_gb`; None: no budget is checked (CPU-only sweeps).
    gpu_memory_gb: Real(gt=0, le=1_000_000) | None = None


class MethodOptions(_Strict):
    """Settings of the method suffixes, the same for every cell of the sweep. Only the settings a
    cell's method reads enter its id."""

    fewshot_k: Int(gt=0, le=1024) = 4  # +fewshot: shots per stage, paid from that stage's labels
    # loss name -> {option: value}, e.g. {logconf: {aux_coef: 0.5, warmup_frac: 0.1}}; unset options
    # take the defaults in w2sweep.losses
    loss_options: dict[str, dict[str, Real()]] = {}

    @field_validator("loss_options")
    @classmethod
    def _known_loss_options(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from w2sweep.losses import make_loss

        for loss, options in value.items():
            make_loss(loss, options)  # ValueError naming the loss or option
        return value


class SearchOptions(_Strict):
    """How `search: adaptive` chooses spending fractions (`w2sweep.search`): the coarse start, when a
    best fraction counts as identified, and what it may spend. Never part of a cell id."""

    tolerance: Real(ge=0, le=1) = 0.01  # accuracy gap below which two fractions count as equal
    confidence: Real(gt=0, lt=1) = 0.95  # of the paired interval that separates two fractions
    coarse_fractions: Annotated[list[Fraction01], Field(min_length=1)] = [0.0, 0.5, 1.0]  # nearest configured ones
    coarse_seeds: Int(gt=0, le=100_000) | None = None  # seeds of the coarse round (the first ones); None: all
    max_cells_per_budget: Int(gt=0, le=MAX_EXAMPLES) | None = None  # per dataset x weak x student x method x budget


class SweepConfig(_Strict):
    # Search fields and grids choose which cells run, never what a cell is: left out of ids at their default.
    ADDED_FIELDS = frozenset({"search", "search_options", "grids"})

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
    costs: Costs = Costs()  # before `budgets`, which are checked against c_weak
    budgets: Annotated[list[Positive], Field(min_length=1)]
    spending_fractions: list[Fraction01] = []
    pairs: list[tuple[Int(ge=0, le=MAX_EXAMPLES), Int(ge=0, le=MAX_EXAMPLES)]] = []  # (n_weak, n_oracle)
    seeds: Annotated[list[Int(ge=0, le=MAX_SEED)], Field(min_length=1)] = [0]
    resources: Resources = Resources()
    max_failures: Int(ge=0, le=100) = 1  # retries of a failed cell before it counts as failed
    # How long a trained cell keeps retrying to store its predictions and result (a storage outage)
    # before it fails. Not part of any cell's identity.
    result_write_timeout_s: Real(ge=0, le=86400) = 300.0
    max_cells: PositiveInt = DEFAULT_MAX_CELLS  # a bigger grid is refused before its cells are made
    # Experiment trackers that get one run per finished cell (w2sweep.trackers); their servers come from
    # the environment, checked when the grid is planned. Not part of any cell id: logging changes no result.
    trackers: list[Literal["mlflow", "wandb"]] = []
    # grid: run every cell; adaptive: rounds that run only the fractions the best may lie at (w2sweep.search)
    search: Literal["grid", "adaptive"] = "grid"
    search_options: SearchOptions = SearchOptions()
    grids: list[Subgrid] = []  # the sweep as a union of sub-grids of the axes above (w2sweep.subgrids)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if len(value) > MAX_NAME or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"must be 1 to {MAX_NAME} letters, digits, '_', '.', '-' (it names a storage folder)")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_syntax(cls, value: str) -> str:
        """What `run` would refuse about the root's text, refused at validate (no server contacted)."""
        problem = storage_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("budgets", "seeds", "spending_fractions", "pairs", "trackers")
    @classmethod
    def _listed_once(cls, value: list, info) -> list:
        """A repeated budget, seed, fraction or pair would be dropped silently when cells are
        deduplicated (a repeated tracker would log every cell twice); a budget or pair that buys no label would make cells that train on nothing."""
        twice = repeated(value)
        if twice:
            raise ValueError(f"{shown(twice[0])} is listed twice; allowed: each value once")
        if info.field_name == "pairs" and (0, 0) in value:
            raise ValueError("pair (0, 0) buys no label; allowed: pairs with n_weak + n_oracle >= 1")
        if info.field_name == "budgets" and "costs" in info.data:
            for budget in value:
                problem = budget_problem(budget, info.data["costs"].c_weak)
                if problem:
                    raise ValueError(problem)
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
        if "none" in [w.label for w in self.weak_supervisors]:  # results.NO_WEAK_SUPERVISOR: the ceiling's
            raise ValueError("weak supervisor name 'none' is reserved for cells without one (the ceiling); "
                             "allowed: any other name")
        own = [d.name for d in self.datasets if d.weak_label is not None]
        if not self.weak_supervisors and len(own) < len(self.datasets):
            missing = next(d.name for d in self.datasets if d.weak_label is None)
            raise ValueError(f"`weak_supervisors` is empty but dataset {missing!r} has no `weak_label` column; "
                             "give a weak supervisor")
        if self.weak_supervisors and len(own) == len(self.datasets):
            warnings.warn("every dataset has a weak_label column: `weak_supervisors` is not used", stacklevel=2)
        self._warn_unused_method_options()
        return self

    @model_validator(mode="after")
    def _grid_fits(self) -> SweepConfig:
        """The grid is at most `max_cells` cells, counted before any is made; then every cell of an
        oracle-only method buys an oracle label (a budget below c_oracle would train it on nothing)."""
        if (cells := sum(count_cells(sub) for sub in sub_configs(self))) > self.max_cells:
            raise ValueError(f"the grid has {cells:,} cells, above max_cells={self.max_cells:,}; allowed: fewer "
                             "datasets, students, methods, budgets, fractions or seeds, or a higher max_cells")
        oracle_only = [m for m in self.methods if m != CEILING and parse_method(m).fixed_fraction == 1.0]
        if oracle_only and self.spending_fractions:
            cheapest = min(self.budgets)
            if Fraction(str(cheapest)) < Fraction(str(self.costs.c_oracle)):
                raise ValueError(f"budget {cheapest:g} buys no oracle label for method {oracle_only[0]!r}, which "
                                 f"reads only oracle labels; allowed: budgets of at least c_oracle={self.costs.c_oracle:g}")
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


def parse_config(raw: object) -> SweepConfig:
    """The config of plain data `raw`; ConfigError with one line per problem, at most `MAX_LINES`
    of them and one line counting the rest (a list of 10^5 bad values stays readable)."""
    if not isinstance(raw, dict):
        kind = "an empty file" if raw is None else type(raw).__name__
        raise ConfigError([f"config error: <top level>: expected a mapping of fields, got {kind}"])
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as e:
        lines = [format_error(err) for err in e.errors(include_url=False)]
    except RecursionError:  # data built in Python, nested beyond what YAML loading allows
        lines = ["config error: <top level>: nested too deeply"]
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"config error: {len(lines) - MAX_LINES} more problems not shown"]
    raise ConfigError(lines)


def load_config(path: str | Path) -> SweepConfig:
    """The config in the YAML file at `path`; ConfigError (one line per problem) for anything else."""
    try:
        raw = read_yaml(path)
    except LoadError as e:
        raise ConfigError([f"config error: {clip(str(path), MAX_FIELD)}: {e}"]) from None
    return parse_config(raw)
