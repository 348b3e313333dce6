"""The grid: cells expanded from a config, their ids, what each needs computed first, and the settings
and pools they train with. No torch and no Ray: the driver plans a sweep, and `w2sweep validate` and
`status` answer, without loading either; `w2sweep.cells` runs a cell.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from w2sweep import costs
from w2sweep.config import ConfigError, Costs, DatasetSpec, MethodOptions, ModelSpec, Resources, SweepConfig
from w2sweep.data import Pools, load_task, make_pools
from w2sweep.features import ensure_features, features_key, uses_features
from w2sweep.features import object_key as features_object_key
from w2sweep.losses import loss_defaults
from w2sweep.methods import CEILING, Method, parse_method
from w2sweep.models import TrainSettings, default_settings
from w2sweep.prompting import is_encoder
from w2sweep.results import RESULT_SCHEMA_VERSION
from w2sweep.storage import Storage
from w2sweep.weak import ensure_weak_labels, weak_labels_key, weak_source_name
from w2sweep.weak import object_key as weak_object_key


def content_hash(obj: object) -> str:
    """Stable 16-hex-digit id of a JSON-able object (keys sorted, so field order never matters)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Prerequisite:
    """A stored object computed once per key before the cells that read it: weak labels, or a head-only
    student's frozen-body features. `ensure(storage)` computes and stores it unless it is stored; a
    sweep runs it as a task of its own, on the student's resources where `student` is set."""

    kind: str  # "weak labels" or "features": what progress bars and errors call it
    key: str  # the stored object's key
    compute: Callable  # compute(storage, *args): computes and stores unless stored
    args: tuple
    student: ModelSpec | None = None

    def ensure(self, storage: Storage) -> None:
        self.compute(storage, *self.args)


@dataclass(frozen=True)
class Cell:
    """One point of the grid; `n_weak`/`n_oracle` are already costed. `weak_supervisor` is None when
    the dataset brings its own weak-label column; `options` holds the method options the method reads
    (`method_options_for`)."""

    sweep: str
    dataset: DatasetSpec
    weak_supervisor: ModelSpec | None
    student: ModelSpec
    method: str
    budget: float
    spending_fraction: float | None
    n_weak: int
    n_oracle: int
    seed: int
    costs: Costs
    options: dict = field(default_factory=dict, hash=False)

    def canonical(self) -> dict:
        """Everything that determines the result, and nothing else (not the sweep's name)."""
        options = dict(options=self.options) if self.options else {}  # plain methods keep their ids
        return dict(
            dataset=self.dataset.model_dump(mode="json"),
            weak_supervisor=None if self.weak_supervisor is None else self.weak_supervisor.model_dump(mode="json"),
            student=self.student.model_dump(mode="json"),
            method=self.method, budget=self.budget, spending_fraction=self.spending_fraction,
            n_weak=self.n_weak, n_oracle=self.n_oracle, seed=self.seed,
            costs=self.costs.model_dump(mode="json"), schema_version=RESULT_SCHEMA_VERSION, **options,
        )

    @property
    def cell_id(self) -> str:
        return content_hash(self.canonical())

    @property
    def weak_key(self) -> str:
        return weak_labels_key(self.dataset, self.weak_supervisor, self.seed)

    @functools.cached_property  # derived from fields; read on every look-up of `prerequisites`
    def features_key(self) -> str | None:
        """The key of the student's stored frozen-body features, for a head-only student whose method
        trains on the pools' own texts (`w2sweep.features`); None otherwise."""
        method = parse_method(self.method)
        if not uses_features(self.student.mode, train=method.train, fewshot=method.fewshot):
            return None
        return features_key(self.dataset, self.student, self.seed, max_length=self.max_length)

    @functools.cached_property
    def max_length(self) -> int:
        return resolve_settings(self.student).max_length

    @property
    def prerequisites(self) -> list[Prerequisite]:
        """What this cell reads that is computed once per key, for every cell and re-run that needs it."""
        needs = [Prerequisite("weak labels", weak_object_key(self.sweep, self.weak_key), ensure_weak_labels,
                              (self.sweep, self.dataset, self.weak_supervisor, self.seed))]
        if self.features_key is not None:
            needs.append(Prerequisite("features", features_object_key(self.sweep, self.features_key),
                                      ensure_features, (self.sweep, self.dataset, self.student, self.seed,
                                                        self.max_length), student=self.student))
        return needs

    @property
    def weak_name(self) -> str:
        """How results call the source of the weak labels: the supervisor, or ``column:<name>``."""
        return weak_source_name(self.dataset, self.weak_supervisor)

    @property
    def label_cost(self) -> float:
        return costs.label_cost(self.n_weak, self.n_oracle, c_weak=self.costs.c_weak, c_oracle=self.costs.c_oracle)

    def to_json(self) -> str:
        return json.dumps(dict(sweep=self.sweep, **self.canonical()))

    @classmethod
    def from_json(cls, text: str) -> Cell:
        d = json.loads(text)
        d.pop("schema_version")
        return cls(
            sweep=d["sweep"], dataset=DatasetSpec(**d["dataset"]),
            weak_supervisor=None if d["weak_supervisor"] is None else ModelSpec(**d["weak_supervisor"]),
            student=ModelSpec(**d["student"]),
            method=d["method"], budget=d["budget"], spending_fraction=d["spending_fraction"],
            n_weak=d["n_weak"], n_oracle=d["n_oracle"], seed=d["seed"], costs=Costs(**d["costs"]),
            options=d.get("options", {}),
        )


def method_options_for(method: Method, options: MethodOptions) -> dict:
    """The method options `method` reads, resolved against their defaults (JSON-able): ``fewshot_k``
    for a trained +fewshot method, and ``losses: {loss: {option: value}}`` for the losses of its
    stages that have options. Options the method does not read stay out, so they do not change its
    cell ids."""
    resolved = {}
    if method.fewshot and method.train:
        resolved["fewshot_k"] = options.fewshot_k
    losses = {loss: {**loss_defaults(loss), **options.loss_options.get(loss, {})}
              for loss in sorted(method.losses) if loss_defaults(loss)}
    if losses:
        resolved["losses"] = losses
    return resolved


def _splits(config: SweepConfig, method: str):
    """(spending_fraction or None, n_weak, n_oracle) for each budget split a method is run on."""
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


def expand_cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, deduplicated (a one-source method runs once per budget, not per f).

    A dataset with its own weak-label column gets no weak supervisor axis (weak_supervisor None).
    fewshot-prompt cells are made only for students that can be prompted (not known encoders).
    With `config.ceiling` (or method "ceiling"), each dataset x weak x student x seed also gets one
    ceiling cell: sft-oracle on its whole oracle pool, whatever the budgets."""
    cells: dict[str, Cell] = {}
    methods = [m for m in config.methods if m != CEILING]
    for student in config.students:
        if any(not parse_method(m).train for m in methods) and is_encoder(student.model):
            warnings.warn(f"student {student.label!r} is an encoder: it gets no fewshot-prompt cells "
                          "(prompting needs a causal LM)", stacklevel=2)
    for dataset in config.datasets:
        weaks = [None] if dataset.weak_label is not None else config.weak_supervisors
        for weak in weaks:
            for student in config.students:
                for method in methods:
                    if not parse_method(method).train and is_encoder(student.model):
                        continue
                    options = method_options_for(parse_method(method), config.method_options)
                    for budget, f, n_weak, n_oracle in _splits(config, method):
                        for seed in config.seeds:
                            cell = Cell(config.name, dataset, weak, student, method, budget, f,
                                        n_weak, n_oracle, seed, config.costs, options)
                            cells.setdefault(cell.cell_id, cell)
                if config.ceiling or CEILING in config.methods:
                    n_oracle = len(pools_for(dataset, config.seeds[0]).oracle)  # pool sizes do not depend on the seed
                    for seed in config.seeds:
                        cost = costs.label_cost(0, n_oracle, c_weak=config.costs.c_weak,
                                                c_oracle=config.costs.c_oracle)
                        cell = Cell(config.name, dataset, weak, student, CEILING, cost, 1.0, 0, n_oracle,
                                    seed, config.costs)
                        cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


@functools.lru_cache(maxsize=8)
def _pools_cached(dataset_json: str, seed: int) -> Pools:
    spec = DatasetSpec.model_validate_json(dataset_json)
    return make_pools(load_task(spec), spec.pools, seed=seed)


def pools_for(dataset: DatasetSpec, seed: int) -> Pools:
    """The five disjoint pools of `dataset` for `seed`, built once per process."""
    return _pools_cached(dataset.model_dump_json(), seed)


def check_capacity(config: SweepConfig, cells: list[Cell]) -> None:
    """Raise ConfigError for every cell that needs more labels than its pool holds."""
    errors = []
    for i, dataset in enumerate(config.datasets):
        pools = pools_for(dataset, config.seeds[0])  # pool sizes do not depend on the seed
        for cell in cells:
            if cell.dataset != dataset:
                continue
            for kind, need, have in (("n_weak", cell.n_weak, len(pools.weak_label)),
                                     ("n_oracle", cell.n_oracle, len(pools.oracle))):
                if need > have:
                    errors.append(
                        f"config error: datasets.{i}.pools: budget {cell.budget:g} "
                        f"(spending fraction {cell.spending_fraction}) needs {kind}={need} but dataset "
                        f"{dataset.name!r} has {have} in that pool; allowed: at most {have}"
                    )
    if errors:
        raise ConfigError(sorted(set(errors)))


def resolve_settings(spec: ModelSpec) -> TrainSettings:
    """The model's defaults overlaid with what the config sets."""
    base = default_settings(spec.model, mode=spec.mode)
    for name in ("lr", "epochs", "batch_size", "max_length", "min_steps"):
        if getattr(spec, name) is not None:
            base[name] = getattr(spec, name)
    return TrainSettings(**base, warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay,
                         patience=spec.patience, micro_batch_size=spec.micro_batch_size, compile=spec.compile,
                         zero_stage=spec.zero_stage, offload=spec.offload)


def uses_ray_train(student: ModelSpec) -> bool:
    """Whether a student's cells train on a Ray Train worker group (`w2sweep.distributed`)."""
    return student.num_workers > 1


def worker_resources(student: ModelSpec, default: Resources) -> dict[str, float]:
    """What each training worker of `student` reserves: its own settings, else the sweep's."""
    cpu = student.cpus_per_worker if student.cpus_per_worker is not None else default.cpu
    gpu = student.gpus_per_worker if student.gpus_per_worker is not None else default.gpu
    return {"CPU": cpu, "GPU": gpu}


def cell_gpus(student: ModelSpec, default: Resources) -> float:
    """GPUs a cell of `student` holds while it trains: every worker's (GPU-seconds are counted with it)."""
    return worker_resources(student, default)["GPU"] * student.num_workers
