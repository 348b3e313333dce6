"""Cells: the grid expanded from a config, and the plain function that runs one cell.

Nothing here imports Ray: `run_cell` is what a Tune trial calls, and what a test or a GPU box calls
directly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from w2sweep import costs
from w2sweep.config import ConfigError, Costs, DatasetSpec, MethodOptions, ModelSpec, SweepConfig
from w2sweep.data import Pools, load_task, make_pools
from w2sweep.losses import loss_defaults, make_loss
from w2sweep.methods import CEILING, Method, parse_method
from w2sweep.metrics import evaluate
from w2sweep.models import default_settings, load_classifier, load_kwargs
from w2sweep.prompting import (fewshot_prefix, is_encoder, load_causal_lm, prompt_scores, prompt_text,
                               warn_if_truncated)
from w2sweep.results import RESULT_SCHEMA_VERSION, CellResult, cell_key
from w2sweep.storage import AlreadyExists, Storage
from w2sweep.train import TokenizedTexts, TrainHooks, TrainSettings, fine_tune, is_main_process, predict
from w2sweep.features import Features, ensure_features, features_key, head_on_features, load_features, uses_features
from w2sweep.features import object_key as features_object_key
from w2sweep.weak import WeakLabels, ensure_weak_labels, load_weak_labels, weak_labels_key, weak_source_name
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

    @property
    def features_key(self) -> str | None:
        """The key of the student's stored frozen-body features, for a head-only student whose method
        trains on the pools' own texts (`w2sweep.features`); None otherwise."""
        method = parse_method(self.method)
        if not uses_features(self.student.mode, train=method.train, fewshot=method.fewshot):
            return None
        return features_key(self.dataset, self.student, self.seed, max_length=self.max_length)

    @property
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
                         patience=spec.patience, micro_batch_size=spec.micro_batch_size,
                         zero_stage=spec.zero_stage, offload=spec.offload)


@dataclass(frozen=True)
class StageData:
    """The labels one stage bought: its first `num_shots` examples are few-shot shots, the rest train."""

    shot_texts: list[str]
    shot_labels: np.ndarray  # [k] P(label=1): the weak supervisor's for a weak stage, gold for an oracle one
    texts: list[str]
    labels: np.ndarray  # [n - k] soft labels to train on
    val_labels: np.ndarray  # [V] hard labels early stopping reads
    pool: str  # "weak_label" or "oracle": where the examples come from
    index: np.ndarray  # [n - k] positions of the training examples in that pool


def _stage_data(source: str, n: int, pools: Pools, weak: WeakLabels, *, num_shots: int = 0,
                order: np.ndarray | None = None) -> StageData:
    """The n examples a stage reading `source` buys, split into shots and training examples.

    The examples are the first n of the source's pool, or the first n of `order` (indices into the
    pool, e.g. most uncertain first). A weak stage's labels, shots included, are the weak
    supervisor's: a weak stage never sees a gold label. It validates against the weak supervisor's
    labels on the validation pool: early stopping on gold labels there would be oracle labels nobody
    paid for.
    """
    name = "weak_label" if source == "weak" else "oracle"
    pool = getattr(pools, name)
    if n > len(pool):
        raise ValueError(f"a {source} stage needs {n} labels but its pool holds {len(pool)}")
    chosen = np.arange(n) if order is None else np.asarray(order[:n], dtype=np.int64)
    texts = [pool.texts[i] for i in chosen]
    if source == "weak":
        labels, val_labels = weak.weak_label[chosen], (weak.val > 0.5).astype(np.int64)
    else:
        labels, val_labels = pool.labels[chosen].astype(np.float32), pools.val.labels
    k = min(num_shots, n)
    return StageData(texts[:k], labels[:k], texts[k:], labels[k:], val_labels, name, chosen[k:])


def _show(prefix: str, texts: list[str], fewshot: bool) -> list[str]:
    """What the student reads: the texts themselves, or each after the stage's few-shot prefix."""
    return [prompt_text(prefix, t) for t in texts] if fewshot else texts


def _train_and_score(cell: Cell, method: Method, pools: Pools, weak: WeakLabels, settings: TrainSettings,
                     features: dict[str, np.ndarray] | None, hooks: TrainHooks | None = None) -> np.ndarray:
    """Fine-tune the student through the method's stages; P(label=1) on the test pool, shape [N].

    With `features` (a head-only student's stored frozen-body features, one array per pool) the
    head trains and scores on them, and the body never runs.

    With +fewshot, each stage's first `fewshot_k` labels become the shots of its prefix, which is
    prefixed to its training and validation texts; the test texts get the prefix of the last stage
    that bought labels. Prompts are truncated from the left, so a long prefix loses its first shots,
    never the example itself."""
    tokenizer, model = load_classifier(cell.student.model, seed=cell.seed, **load_kwargs(cell.student))
    if method.fewshot:
        tokenizer.truncation_side = "left"
    trained = model if features is None else head_on_features(model)

    def examples(pool: str, index: np.ndarray | None = None):
        """The student's inputs for a pool (or the examples at `index` of it)."""
        if features is not None:
            return Features(features[pool] if index is None else features[pool][index])
        texts = getattr(pools, pool).texts
        texts = texts if index is None else [texts[i] for i in index]
        return TokenizedTexts(tokenizer, _show(prefix, texts, method.fewshot), settings.max_length)

    counts = {"weak": cell.n_weak, "oracle": cell.n_oracle}
    prefix = ""
    for i, stage in enumerate(method.stages):
        n = counts[stage.labels]
        if n == 0:
            continue  # no labels bought for this stage: it neither trains nor changes the prefix
        order = None
        if stage.select == "uncertain":
            p = predict(trained, examples("oracle"))
            order = np.argsort(np.abs(p - 0.5), kind="stable")  # most uncertain first; ties in pool order
        data = _stage_data(stage.labels, n, pools, weak, num_shots=cell.options.get("fewshot_k", 0), order=order)
        if method.fewshot:
            prefix = fewshot_prefix(data.shot_texts, data.shot_labels)
            warn_if_truncated(tokenizer, prefix, max_length=settings.max_length,
                              where=f"cell {cell.cell_id} ({cell.method}) stage {i}")
        loss_fn = make_loss(stage.loss, cell.options.get("losses", {}).get(stage.loss))
        fine_tune(trained, examples(data.pool, data.index), data.labels, val_examples=examples("val"),
                  val_labels=data.val_labels, settings=settings, seed=cell.seed * 1000 + i, loss_fn=loss_fn,
                  stage=i, hooks=hooks)
    return predict(trained, examples("test"))


def _prompt_and_score(cell: Cell, method: Method, pools: Pools, weak: WeakLabels,
                      settings: TrainSettings) -> np.ndarray:
    """fewshot-prompt: every label the cell bought is a shot (weak-labelled shots from the weak-label
    pool, gold shots from the oracle pool), shuffled by the seed into one prompt to the causal-LM
    student; P(label=1) on the test pool, shape [N], is sigmoid(logit("1") - logit("0"))."""
    counts = {"weak": cell.n_weak, "oracle": cell.n_oracle}
    texts, labels = [], []
    for stage in method.stages:
        data = _stage_data(stage.labels, counts[stage.labels], pools, weak, num_shots=counts[stage.labels])
        texts += data.shot_texts
        labels += list(data.shot_labels)
    order = np.random.default_rng(cell.seed).permutation(len(texts))
    prefix = fewshot_prefix([texts[i] for i in order], np.asarray(labels, dtype=np.float32)[order])
    tokenizer, model = load_causal_lm(cell.student.model, seed=cell.seed, tokenizer_ref=cell.student.tokenizer,
                                      trust_remote_code=cell.student.trust_remote_code)
    warn_if_truncated(tokenizer, prefix, max_length=settings.max_length, where=f"cell {cell.cell_id} ({cell.method})")
    return prompt_scores(model, tokenizer, prefix, pools.test.texts, max_length=settings.max_length)


def warm_up(cell: Cell) -> None:
    """Do the first-time work of `run_cell` that needs no prerequisite: build the pools and load the
    student once (imports, tokenizer, weights into the page cache), then drop the model. A process
    that would otherwise sit idle waiting for weak labels does this instead, and its first cell starts
    warm (~2 s of a first tiny-bert cell on the CPU)."""
    pools_for(cell.dataset, cell.seed)
    if parse_method(cell.method).train:
        load_classifier(cell.student.model, seed=cell.seed, **load_kwargs(cell.student))


def run_cell(cell: Cell, storage: Storage, *, hooks: TrainHooks | None = None) -> CellResult:
    """Run the cell's method (fine-tune the student through its stages, or prompt it), evaluate on
    the test pool against gold labels, and write the result once. A stage's n examples are the first
    n of its pool (or with +active the n the student is least sure of), so a larger budget's labels
    contain a smaller one's: curves differ by budget, not by sampling luck.

    The same function runs in one process and on every rank of a torch.distributed group (a Ray
    Train worker group, `w2sweep.distributed`): training goes through DeepSpeed there, every rank
    returns the result, and only rank 0 writes it. `hooks` checkpoint and resume the training."""
    start = time.monotonic()
    for need in cell.prerequisites:  # stored already when a sweep runs the cell: one lookup each
        need.ensure(storage)
    pools = pools_for(cell.dataset, cell.seed)
    weak = load_weak_labels(storage, cell.sweep, cell.weak_key)
    settings = resolve_settings(cell.student)
    method = parse_method(cell.method)
    if method.train:
        features = None
        if cell.features_key is not None:
            stored = load_features(storage, cell.sweep, cell.features_key)
            if stored.pools is None:
                warnings.warn(f"student {cell.student.label!r} trains its head through the body in every "
                              f"step: no stored features ({stored.reason})", stacklevel=2)
            features = stored.pools
        scores = _train_and_score(cell, method, pools, weak, settings, features, hooks=hooks)
    else:
        scores = _prompt_and_score(cell, method, pools, weak, settings)
    m = evaluate(scores, pools.test.labels, seed=cell.seed)
    result = CellResult(
        cell_id=cell.cell_id, sweep=cell.sweep, dataset=cell.dataset.name,
        weak_supervisor=cell.weak_name, student=cell.student.label, method=cell.method,
        budget=cell.budget, spending_fraction=cell.spending_fraction, seed=cell.seed,
        n_weak=cell.n_weak, n_oracle=cell.n_oracle, label_cost=cell.label_cost,
        c_weak=cell.costs.c_weak, c_oracle=cell.costs.c_oracle,
        accuracy=m["accuracy"], accuracy_ci=m["accuracy_ci"], auroc=m["auroc"], auroc_ci=m["auroc_ci"],
        weak_accuracy=weak.test_accuracy, num_test=len(pools.test),
        wall_seconds=time.monotonic() - start, config=cell.canonical(),
    )
    if not is_main_process():
        return result
    try:
        storage.write_once(cell_key(cell.sweep, cell.cell_id), result.to_json())
    except AlreadyExists:
        pass  # another attempt of this cell finished first; its result stands
    return result
