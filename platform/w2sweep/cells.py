"""Cells: the grid expanded from a config, and the plain function that runs one cell.

Nothing here imports Ray: `run_cell` is what a Tune trial calls, and what a test or a GPU box calls
directly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from w2sweep import costs
from w2sweep.config import ConfigError, Costs, DatasetSpec, ModelSpec, SweepConfig
from w2sweep.data import Pools, load_task, make_pools
from w2sweep.methods import METHODS
from w2sweep.metrics import evaluate
from w2sweep.models import default_settings, load_classifier
from w2sweep.results import RESULT_SCHEMA_VERSION, CellResult, cell_key
from w2sweep.storage import AlreadyExists, Storage
from w2sweep.train import TrainSettings, fine_tune, predict
from w2sweep.weak import WeakLabels, load_weak_labels, weak_labels_key


def content_hash(obj: object) -> str:
    """Stable 16-hex-digit id of a JSON-able object (keys sorted, so field order never matters)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One point of the grid; `n_weak`/`n_oracle` are already costed."""

    sweep: str
    dataset: DatasetSpec
    weak_supervisor: ModelSpec
    student: ModelSpec
    method: str
    budget: float
    spending_fraction: float | None
    n_weak: int
    n_oracle: int
    seed: int
    costs: Costs

    def canonical(self) -> dict:
        """Everything that determines the result, and nothing else (not the sweep's name)."""
        return dict(
            dataset=self.dataset.model_dump(mode="json"),
            weak_supervisor=self.weak_supervisor.model_dump(mode="json"),
            student=self.student.model_dump(mode="json"),
            method=self.method, budget=self.budget, spending_fraction=self.spending_fraction,
            n_weak=self.n_weak, n_oracle=self.n_oracle, seed=self.seed,
            costs=self.costs.model_dump(mode="json"), schema_version=RESULT_SCHEMA_VERSION,
        )

    @property
    def cell_id(self) -> str:
        return content_hash(self.canonical())

    @property
    def weak_key(self) -> str:
        return weak_labels_key(self.dataset, self.weak_supervisor, self.seed)

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
            weak_supervisor=ModelSpec(**d["weak_supervisor"]), student=ModelSpec(**d["student"]),
            method=d["method"], budget=d["budget"], spending_fraction=d["spending_fraction"],
            n_weak=d["n_weak"], n_oracle=d["n_oracle"], seed=d["seed"], costs=Costs(**d["costs"]),
        )


def _splits(config: SweepConfig, method: str):
    """(spending_fraction or None, n_weak, n_oracle) for each budget split a method is run on."""
    fixed = METHODS[method].fixed_fraction
    c = dict(c_weak=config.costs.c_weak, c_oracle=config.costs.c_oracle)
    fractions = [] if not config.spending_fractions else [fixed] if fixed is not None else config.spending_fractions
    for budget in config.budgets:
        for f in fractions:
            yield budget, f, *costs.label_counts(budget, f, **c)
    sources = METHODS[method].label_sources
    for n_weak, n_oracle in config.pairs:
        # A pair buys labels of both kinds; a one-source method would leave some unread.
        if (n_weak and "weak" not in sources) or (n_oracle and "oracle" not in sources):
            continue
        yield costs.label_cost(n_weak, n_oracle, **c), None, n_weak, n_oracle


def expand_cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, deduplicated (a one-source method runs once per budget, not per f)."""
    cells: dict[str, Cell] = {}
    for dataset in config.datasets:
        for weak in config.weak_supervisors:
            for student in config.students:
                for method in config.methods:
                    for budget, f, n_weak, n_oracle in _splits(config, method):
                        for seed in config.seeds:
                            cell = Cell(config.name, dataset, weak, student, method, budget, f,
                                        n_weak, n_oracle, seed, config.costs)
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
    base = default_settings(spec.model)
    for name in ("lr", "epochs", "batch_size", "max_length", "min_steps"):
        if getattr(spec, name) is not None:
            base[name] = getattr(spec, name)
    return TrainSettings(**base, warmup_ratio=spec.warmup_ratio, weight_decay=spec.weight_decay,
                         patience=spec.patience)


def _stage_data(source: str, n: int, pools: Pools, weak: WeakLabels):
    """Training texts, soft labels [n] and validation hard labels [V] for a stage reading `source`.

    A weak stage validates against the weak supervisor's labels on the validation pool: early stopping
    on gold labels there would be oracle labels nobody paid for.
    """
    if source == "weak":
        return (pools.weak_label.texts[:n], weak.weak_label[:n],
                (weak.val > 0.5).astype(np.int64))
    return (pools.oracle.texts[:n], pools.oracle.labels[:n].astype(np.float32), pools.val.labels)


def run_cell(cell: Cell, storage: Storage) -> CellResult:
    """Train the cell's student through its method's stages, evaluate on the test pool, and write the
    result once. The first `n` examples of a pool are used, so a larger budget's labels contain a
    smaller one's: curves differ by budget, not by sampling luck."""
    start = time.monotonic()
    pools = pools_for(cell.dataset, cell.seed)
    weak = load_weak_labels(storage, cell.sweep, cell.weak_key)
    settings = resolve_settings(cell.student)
    tokenizer, model = load_classifier(
        cell.student.model, seed=cell.seed, tokenizer_ref=cell.student.tokenizer,
        trust_remote_code=cell.student.trust_remote_code,
    )
    counts = {"weak": cell.n_weak, "oracle": cell.n_oracle}
    for i, stage in enumerate(METHODS[cell.method].stages):
        texts, labels, val_labels = _stage_data(stage.labels, counts[stage.labels], pools, weak)
        fine_tune(model, tokenizer, texts, labels, val_texts=pools.val.texts, val_labels=val_labels,
                  settings=settings, seed=cell.seed * 1000 + i)
    scores = predict(model, tokenizer, pools.test.texts, max_length=settings.max_length)
    m = evaluate(scores, pools.test.labels, seed=cell.seed)
    result = CellResult(
        cell_id=cell.cell_id, sweep=cell.sweep, dataset=cell.dataset.name,
        weak_supervisor=cell.weak_supervisor.label, student=cell.student.label, method=cell.method,
        budget=cell.budget, spending_fraction=cell.spending_fraction, seed=cell.seed,
        n_weak=cell.n_weak, n_oracle=cell.n_oracle, label_cost=cell.label_cost,
        c_weak=cell.costs.c_weak, c_oracle=cell.costs.c_oracle,
        accuracy=m["accuracy"], accuracy_ci=m["accuracy_ci"], auroc=m["auroc"], auroc_ci=m["auroc_ci"],
        weak_accuracy=weak.test_accuracy, num_test=len(pools.test),
        wall_seconds=time.monotonic() - start, config=cell.canonical(),
    )
    try:
        storage.write_once(cell_key(cell.sweep, cell.cell_id), result.to_json())
    except AlreadyExists:
        pass  # another attempt of this cell finished first; its result stands
    return result
