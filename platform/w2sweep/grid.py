"""The grid: cells expanded from a config, each resolved once (its method's stages, training settings,
stored-object keys, prerequisites and GPUs), and the planning step that checks a config's references
first (`plan`). No torch and no Ray: the driver plans a sweep, and `w2sweep validate` and `status`
answer, without loading either; `w2sweep.cells` runs a cell from what it carries.
"""

from __future__ import annotations

import hashlib
import os
import json
import warnings
from collections.abc import Callable
from dataclasses import KW_ONLY, asdict, dataclass, field

from pydantic import ValidationError

from w2sweep import costs, layout
from w2sweep.config import ConfigError, Costs, DatasetSpec, ModelSpec, Resources, SweepConfig, error_line
from w2sweep.config_checks import local_storage_problem, tracker_problems
from w2sweep.data import dataset_problem, pools_for, resolve_dataset
from w2sweep.features import ensure_features, features_key, uses_features
from w2sweep.features import object_key as features_object_key
from w2sweep.methods import CEILING, Method, Stage, budget_splits, method_options_for, parse_method
from w2sweep.models import ModelError, TrainSettings, check_model_reference, resolve_settings
from w2sweep.prompting import is_encoder
from w2sweep.results import NO_WEAK_SUPERVISOR, RESULT_SCHEMA_VERSION
from w2sweep.storage import Storage
from w2sweep.subgrids import sub_configs, subgrid_problems
from w2sweep.shots import check_prompts_fit
from w2sweep.truncation import resolve_auto, shots_shown
from w2sweep.weak import ensure_weak_labels, weak_labels_key, weak_source_name
from w2sweep.weak import object_key as weak_object_key

WEAK_LABELS, FEATURES = "weak labels", "features"  # the kinds of prerequisite


def content_hash(obj: object) -> str:
    """Stable 16-hex-digit id of a JSON-able object (keys sorted, so field order never matters)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Prerequisite:
    """A stored object computed once per key before the cells that read it: weak labels, or a head-only
    student's frozen-body features. `ensure(storage)` computes and stores it unless it is stored; a
    sweep runs it as a task of its own, on the student's resources where `student` is set."""

    kind: str  # WEAK_LABELS or FEATURES: what progress bars and errors call it
    key: str  # the stored object's key
    compute: Callable  # compute(storage, *args): computes and stores unless stored
    args: tuple
    student: ModelSpec | None = None

    def ensure(self, storage: Storage) -> None:
        self.compute(storage, *self.args)


@dataclass(frozen=True)
class Cell:
    """One point of the grid, resolved once when the grid is expanded (`resolve_cell`).

    The fields before `_` are the cell's identity: `canonical()` hashes them into `cell_id`.
    `n_weak`/`n_oracle` are already costed; `weak_supervisor` is None when the dataset brings its own
    weak-label column, and for a ceiling (it reads no weak labels); `options` holds the method options
    the method reads (`method_options_for`).
    The fields after `_` follow from the identity and the sweep's resources; they travel in the
    cell's JSON beside it, so a trial reads them instead of deriving them again."""

    sweep: str
    dataset: DatasetSpec
    weak_supervisor: ModelSpec | None
    student: ModelSpec
    method: str  # the method's canonical name, as results carry it
    budget: float
    spending_fraction: float | None
    n_weak: int
    n_oracle: int
    seed: int
    costs: Costs
    options: dict = field(default_factory=dict, hash=False)
    _: KW_ONLY
    cell_id: str
    recipe: Method  # `method` parsed into its stages
    settings: TrainSettings  # the student's, defaults overlaid with the config's
    weak_key: str | None  # content key of the weak labels the cell reads; None: it reads none (the ceiling)
    features_key: str | None  # content key of a head-only student's stored features; None: it runs its body
    result_key: str  # where its result is stored (`layout.result`)
    num_gpus: float  # GPUs the cell holds while it trains: num_workers x gpus_per_worker
    prerequisites: list[Prerequisite] = field(hash=False)  # what it reads that is computed once per key

    def canonical(self) -> dict:
        """Everything that determines the result, and nothing else (not the sweep's name)."""
        return _canonical(**{name: getattr(self, name) for name in _IDENTITY})

    @property
    def weak_name(self) -> str:
        """How results call the source of the weak labels: the supervisor, ``column:<name>``, or for the
        ceiling, which reads none, NO_WEAK_SUPERVISOR (the frontier joins it to every weak supervisor)."""
        if self.method == CEILING:
            return NO_WEAK_SUPERVISOR
        return weak_source_name(self.dataset, self.weak_supervisor)

    @property
    def label_cost(self) -> float:
        return costs.label_cost(self.n_weak, self.n_oracle, c_weak=self.costs.c_weak, c_oracle=self.costs.c_oracle)

    def to_json(self) -> str:
        """The identity (`canonical()`, what the id hashes) and, under ``resolved``, what follows from it."""
        resolved = dict(
            cell_id=self.cell_id, method=asdict(self.recipe), settings=asdict(self.settings),
            weak_key=self.weak_key, features_key=self.features_key, result_key=self.result_key,
            num_gpus=self.num_gpus, prerequisites=[dict(kind=n.kind, key=n.key) for n in self.prerequisites],
        )
        return json.dumps(dict(sweep=self.sweep, **self.canonical(), resolved=resolved))

    @classmethod
    def from_json(cls, text: str) -> Cell:
        d = json.loads(text)
        d.pop("schema_version")
        r = d.pop("resolved")
        weak = None if d["weak_supervisor"] is None else ModelSpec(**d["weak_supervisor"])
        dataset, student = DatasetSpec(**d["dataset"]), ModelSpec(**d["student"])
        recipe = Method(**{**r["method"], "stages": tuple(Stage(**s) for s in r["method"]["stages"])})
        settings = TrainSettings(**r["settings"])
        needs = [_prerequisite(n["kind"], n["key"], d["sweep"], dataset, weak, student, d["seed"], settings)
                 for n in r["prerequisites"]]
        return cls(
            sweep=d["sweep"], dataset=dataset, weak_supervisor=weak, student=student,
            method=d["method"], budget=d["budget"], spending_fraction=d["spending_fraction"],
            n_weak=d["n_weak"], n_oracle=d["n_oracle"], seed=d["seed"], costs=Costs(**d["costs"]),
            options=d.get("options", {}), cell_id=r["cell_id"], recipe=recipe, settings=settings,
            weak_key=r["weak_key"], features_key=r["features_key"], result_key=r["result_key"],
            num_gpus=r["num_gpus"], prerequisites=needs,
        )


_IDENTITY = ("dataset", "weak_supervisor", "student", "method", "budget", "spending_fraction", "n_weak", "n_oracle",
             "seed", "costs", "options")


def _canonical(*, dataset, weak_supervisor, student, method, budget, spending_fraction, n_weak, n_oracle, seed,
               costs, options) -> dict:
    """The identity a cell id hashes: unchanged configs keep their ids (tests/test_cell_ids.py)."""
    options = dict(options=options) if options else {}  # plain methods keep their ids
    return dict(
        dataset=dataset.canonical_dump(),
        weak_supervisor=None if weak_supervisor is None else weak_supervisor.canonical_dump(),
        student=student.canonical_dump(),
        method=method, budget=budget, spending_fraction=spending_fraction,
        n_weak=n_weak, n_oracle=n_oracle, seed=seed,
        costs=costs.canonical_dump(), schema_version=RESULT_SCHEMA_VERSION, **options,
    )


def _prerequisite(kind: str, key: str, sweep: str, dataset: DatasetSpec, weak: ModelSpec | None,
                  student: ModelSpec, seed: int, settings: TrainSettings) -> Prerequisite:
    """The prerequisite of `kind` stored at `key`, with what computes it."""
    if kind == WEAK_LABELS:
        return Prerequisite(kind, key, ensure_weak_labels, (sweep, dataset, weak, seed))
    return Prerequisite(kind, key, ensure_features, (sweep, dataset, student, seed, settings.max_length),
                        student=student)


def resolve_cell(sweep: str, dataset: DatasetSpec, weak_supervisor: ModelSpec | None, student: ModelSpec,
                 method: str, budget: float, spending_fraction: float | None, n_weak: int, n_oracle: int,
                 seed: int, costs: Costs, options: dict | None = None, *,
                 resources: Resources = Resources()) -> Cell:
    """The cell of these identity fields, with everything that follows from them computed once; the
    sweep's `resources` are what a student without its own per-worker GPUs holds. The ceiling reads
    no weak labels: it gets no weak-label key, so it waits for no weak supervisor to train."""
    identity = dict(dataset=dataset, weak_supervisor=weak_supervisor, student=student,
                    method=method, budget=budget, spending_fraction=spending_fraction, n_weak=n_weak,
                    n_oracle=n_oracle, seed=seed, costs=costs, options=options or {})
    cell_id = content_hash(_canonical(**identity))
    recipe, settings = parse_method(method), resolve_settings(student)
    weak_key = None if method == CEILING else weak_labels_key(dataset, weak_supervisor, seed)
    feats = None
    if uses_features(student.mode, train=recipe.train, fewshot=recipe.fewshot):
        feats = features_key(dataset, student, seed, max_length=settings.max_length)
    needs = [] if weak_key is None else [(WEAK_LABELS, weak_object_key(sweep, weak_key))]
    if feats is not None:
        needs.append((FEATURES, features_object_key(sweep, feats)))
    return Cell(sweep, **identity, cell_id=cell_id, recipe=recipe, settings=settings, weak_key=weak_key,
                features_key=feats, result_key=layout.result(sweep, cell_id),
                num_gpus=cell_gpus(student, resources),
                prerequisites=[_prerequisite(kind, key, sweep, dataset, weak_supervisor, student, seed, settings)
                               for kind, key in needs])


def expand_cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the sweep: of each entry of its `grids` (`w2sweep.subgrids`), else of its one
    grid; a cell several entries share is made once."""
    cells: dict[str, Cell] = {}
    for sub in sub_configs(config):
        for cell in _product_cells(sub):
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


def _product_cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, resolved and deduplicated (a one-source method runs once per budget,
    not per f). Datasets are resolved first (`w2sweep.data.resolve_dataset`): ids hash resolved specs.

    A dataset with its own weak-label column gets no weak supervisor axis (weak_supervisor None).
    fewshot-prompt cells are made only for students that can be prompted (not known encoders).
    With `config.ceiling` (or method "ceiling"), each dataset x student x seed also gets one ceiling
    cell (`_ceiling_cells`)."""
    config = _resolved(config)
    cells: dict[str, Cell] = {}
    methods = [m for m in config.methods if m != CEILING]
    common = dict(costs=config.costs, resources=config.resources)
    for student in config.students:
        if any(not parse_method(m).train for m in methods) and is_encoder(student.model):
            warnings.warn(f"student {student.label!r} is an encoder: it gets no fewshot-prompt cells "
                          "(prompting needs a causal LM)", stacklevel=2)
    for dataset in config.datasets:
        # max_length: auto becomes this dataset's length here, before any id is hashed (w2sweep.truncation)
        weaks = [None] if dataset.weak_label is not None else [resolve_auto(w, dataset) for w in config.weak_supervisors]
        for weak in weaks:
            for configured in config.students:
                for method in methods:
                    if not parse_method(method).train and is_encoder(configured.model):
                        continue
                    options = method_options_for(parse_method(method), config.method_options)
                    student = resolve_auto(configured, dataset, shots_shown(method, config.method_options))
                    for budget, f, n_weak, n_oracle in budget_splits(config, method):
                        for seed in config.seeds:
                            cell = resolve_cell(config.name, dataset, weak, student, method, budget, f,
                                                n_weak, n_oracle, seed, options=options, **common)
                            cells.setdefault(cell.cell_id, cell)
        if config.ceiling or CEILING in config.methods:
            cells.update((cell.cell_id, cell) for cell in _ceiling_cells(config, dataset))
    return list(cells.values())


def _ceiling_cells(config: SweepConfig, dataset: DatasetSpec) -> list[Cell]:
    """The ceiling cells of `dataset`: sft-oracle on its whole oracle pool, whatever the budgets, one
    per student x seed. The ceiling reads no weak labels, so one per weak supervisor would compute the
    same result again: it has none (weak_supervisor None), and the frontier joins it to every one."""
    n_oracle = len(pools_for(dataset, config.seeds[0]).oracle)  # pool sizes do not depend on the seed
    cost = costs.label_cost(0, n_oracle, c_weak=config.costs.c_weak, c_oracle=config.costs.c_oracle)
    return [resolve_cell(config.name, dataset, None, student, CEILING, cost, 1.0, 0, n_oracle, seed,
                         costs=config.costs, resources=config.resources)
            for student in (resolve_auto(s, dataset) for s in config.students) for seed in config.seeds]


def _resolved(config: SweepConfig) -> SweepConfig:
    """`config` with its datasets resolved (hub loaders' defaults filled in); the same config when
    nothing changes."""
    datasets = [resolve_dataset(d) for d in config.datasets]
    return config if datasets == config.datasets else config.model_copy(update=dict(datasets=datasets))


def check_references(config: SweepConfig) -> SweepConfig:
    """`config` with its datasets resolved, after checking what the schema cannot: that every
    dataset's data (synthetic task, loader, local path) and every model reference exist here.
    Raises ConfigError with one line per problem, in the schema's format."""
    lines = []
    problem = local_storage_problem(config.storage)  # a file where the root should be: refused at validate
    if problem is not None:
        lines.append(error_line("storage", config.storage, problem))
    lines += [error_line("trackers", config.trackers, p) for p in tracker_problems(config.trackers, os.environ)]
    resolved = _resolved(config)
    for i, (given, dataset) in enumerate(zip(config.datasets, resolved.datasets)):
        problem = dataset_problem(dataset)
        if problem is None and dataset != given:
            try:  # a loader filled in by name must agree with the rest of the spec, as a named one does
                DatasetSpec.model_validate(dataset.model_dump())
            except ValidationError as e:
                problem = e.errors()[0]["msg"].removeprefix("Value error, ")
        if problem is not None:
            lines.append(error_line(f"datasets.{i}", {}, problem))
    lines += [error_line(field, value, problem) for field, value, problem in subgrid_problems(config)]
    for kind in ("weak_supervisors", "students"):
        for i, spec in enumerate(getattr(config, kind)):
            try:
                check_model_reference(spec.model)
            except ModelError as e:
                lines.append(error_line(f"{kind}.{i}.model", spec.model, str(e)))
            except OSError as e:  # a local path the OS refuses to look at (a name over 255 bytes)
                lines.append(error_line(f"{kind}.{i}.model", spec.model, f"not a usable local path ({e.strerror}); "
                                        "allowed: a packaged or tiny model, a local directory or a hub id"))
    if lines:
        raise ConfigError(lines)
    _warn_remote_code(config)
    return resolved


def _warn_remote_code(config: SweepConfig) -> None:
    """One warning per model that loads with trust_remote_code: its files' Python code runs on the workers."""
    for kind in ("weak_supervisors", "students"):
        for i, spec in enumerate(getattr(config, kind)):
            if spec.trust_remote_code:
                warnings.warn(f"{kind}.{i}.model {spec.model!r}: trust_remote_code is true: loading it runs the "
                              "Python code its files bring, on every worker; use it only for a model whose "
                              "source you trust", stacklevel=3)


def plan(config: SweepConfig) -> tuple[SweepConfig, list[Cell]]:
    """Check `config`'s references, expand its grid and check every cell fits its pools: what `w2sweep
    validate` and `w2sweep run` do before anything trains, with every student's memory checked against
    its `gpu_memory_gb` (`w2sweep.memory.plan`). Returns the resolved config (what the sweep snapshots
    and runs) and its cells; raises ConfigError (or DataError/ModelError from the data)."""
    from w2sweep.memory.plan import plan_memory

    config = plan_memory(check_references(config))  # num_workers: auto resolved before any cell is hashed
    cells = expand_cells(config)
    check_capacity(config, cells)
    problems = check_prompts_fit(cells)  # fewshot-prompt pays only for shots its student sees
    if problems:
        raise ConfigError(problems)
    return config, cells


def check_capacity(config: SweepConfig, cells: list[Cell]) -> None:
    """Raise ConfigError for every cell that needs more labels than its pool holds, and for every dataset
    whose scored pools (test, val) hold one class."""
    errors = []
    for i, dataset in enumerate(_resolved(config).datasets):
        pools = pools_for(dataset, config.seeds[0])  # pool sizes do not depend on the seed
        # scored pools: with one class, accuracy is a constant predictor's and AUROC is undefined
        one_class = {name: int(getattr(pools, name).labels[0]) for name in ("test", "val")
                     if len(set(getattr(pools, name).labels.tolist())) == 1}
        if one_class:
            held = ", ".join(f"{name}: only label {label}" for name, label in one_class.items())
            errors.append(error_line(f"datasets.{i}", dataset.name, (
                f"a scored pool holds one class ({held}): its accuracy and AUROC would mean nothing; "
                "allowed: both classes in every pool (rows sorted by label? take all rows, or balance: true)")))
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
