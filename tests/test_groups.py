"""Groups and class balance: examples of one passage, question or sentence never span two pools
(planted tasks, the real BoolQ and SciQ files, every loader's default), `balance: true` makes a
column-mapped task 50/50 the way loaders do, and the new fields leave unchanged configs' ids alone."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from w2sweep.config import DatasetSpec, PoolSizes, parse_config
from w2sweep.data import DataError, Task, load_task, make_pools, resolve_dataset
from w2sweep.data.keys import group_ids
from w2sweep.data.pools import POOL_NAMES
from w2sweep.data.registry import convert_rows, loaders
from w2sweep.data.task import TASK_SEED, balance
from w2sweep.grid import expand_cells

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = PoolSizes(weak_train=30, val=20, test=25)


def pool_of(pools, key) -> dict:
    """key(text) -> the pools its examples landed in."""
    where: dict = {}
    for name in POOL_NAMES:
        for text in getattr(pools, name).texts:
            where.setdefault(key(text), set()).add(name)
    return where


def spanning(pools, key) -> list:
    return [k for k, names in pool_of(pools, key).items() if len(names) > 1]


def grouped_task(num_groups: int = 120) -> Task:
    """Group g holds 1 + g % 5 examples whose texts start with ``g<g>:``; labels differ inside a group."""
    texts, labels, groups = [], [], []
    for g in range(num_groups):
        for j in range(1 + g % 5):
            texts.append(f"g{g}: option {j}")
            labels.append((g + j) % 2)
            groups.append(g)
    return Task("grouped", texts, np.array(labels), groups=np.array(groups))


def group_of(text: str) -> str:
    return text.split(":")[0]


# --- planted groups --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_planted_group_spans_two_pools_and_sizes_are_exact(seed):
    task = grouped_task()  # 360 examples
    pools = make_pools(task, SIZES, seed=seed)
    assert spanning(pools, group_of) == []
    sizes = {name: len(getattr(pools, name)) for name in POOL_NAMES}
    assert sizes == {"weak_train": 30, "val": 20, "test": 25, "weak_label": 143, "oracle": 142}
    assert sum(sizes.values()) == len(task)


def test_grouped_pools_are_reproducible_per_seed():
    a, b, c = (make_pools(grouped_task(), SIZES, seed=s) for s in (5, 5, 6))
    for name in POOL_NAMES:
        assert getattr(a, name).texts == getattr(b, name).texts
    assert a.test.texts != c.test.texts


def test_without_groups_pools_are_the_shuffled_examples_sliced_as_before():
    """Every example its own group: the pools are exactly those of the slicing the code did before groups."""
    texts = [f"review {i} was {'good' if i % 3 else 'bad'}" for i in range(300)]
    task = Task("plain", texts, np.array([int(i % 3 != 0) for i in range(300)]))
    singletons = Task("plain", texts, task.labels, groups=np.arange(300)[::-1])  # ids in any order
    for seed in (0, 9):
        order = np.random.default_rng(seed).permutation(300)
        bounds = np.cumsum([0, 30, 20, 25, 113, 112])
        for pools in (make_pools(task, SIZES, seed=seed), make_pools(singletons, SIZES, seed=seed)):
            for name, a, b in zip(POOL_NAMES, bounds[:-1], bounds[1:]):
                assert getattr(pools, name).texts == [texts[i] for i in order[a:b]]


def test_set_sizes_of_both_rest_pools_leave_the_rest_unused():
    pools = make_pools(grouped_task(), PoolSizes(weak_train=30, val=20, test=25, weak_label=50, oracle=40), seed=0)
    assert [len(getattr(pools, n)) for n in POOL_NAMES] == [30, 20, 25, 50, 40]
    assert spanning(pools, group_of) == []


def test_a_pool_no_group_fits_is_a_data_error():
    task = Task("pairs", [f"g{i // 2}: {i}" for i in range(100)], np.arange(100) % 2, groups=np.arange(100) // 2)
    with pytest.raises(DataError, match="pool val got no example"):
        make_pools(task, PoolSizes(weak_train=10, val=1, test=10), seed=0)


def test_group_ids_join_rows_sharing_any_key_transitively_but_not_empty_keys():
    keys = [("A", "b"), ("c", "d"), ("e", "B!"), ("", "f"), ("", "g"), ("d", "")]
    assert group_ids(keys).tolist() == [0, 1, 0, 2, 3, 1]
    assert group_ids([]).tolist() == []


def test_test_label1_share():
    pools = make_pools(grouped_task(), SIZES, seed=0)
    assert pools.test_label1_share == pytest.approx(pools.test.labels.mean())
    assert 0 < pools.test_label1_share < 1


# --- groups from a local file ------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_sentence_pair_file_grouped_by_both_sentences(tmp_path):
    """Pair i holds sentences s_i and s_(i+1) for i in a chain of 4: each chain is one group."""
    rows = [dict(sentence1=f"sentence {c}-{i}", sentence2=f"Sentence {c}-{i + 1}.", label=(c + i) % 2)
            for c in range(60) for i in range(4)]
    spec = DatasetSpec(name="pairs", source="local", path=str(write_jsonl(tmp_path / "p.jsonl", rows)),
                       text="{sentence1} / {sentence2}", group=["sentence1", "sentence2"])
    task = load_task(spec)
    assert len(set(task.groups.tolist())) == 60
    pools = make_pools(task, PoolSizes(weak_train=40, val=20, test=40), seed=1)
    assert spanning(pools, lambda t: t.split("-")[0]) == []


def test_a_missing_group_column_names_it(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [dict(text="a", label=1)])
    with pytest.raises(DataError, match="group column 'passage' not found"):
        load_task(DatasetSpec(name="x", source="local", path=str(path), group="{passage}: {text}"))


def boolq_spec(**fields) -> DatasetSpec:
    return DatasetSpec(name="boolq", source="local", path=str(SHARED / "boolq" / "dev.jsonl"),
                       text="{passage}\nQuestion: {question}", label="answer", **fields)


def passage(text: str) -> str:
    return text.split("\nQuestion: ")[0]


@pytest.mark.parametrize("seed", [0, 4])
def test_real_boolq_passages_never_span_two_pools(seed):
    """BoolQ's dev file asks several questions about 10% of its passages: ungrouped, a few hundred of
    them straddle pools; grouped by passage, none does, and the pools keep their sizes."""
    sizes = PoolSizes(weak_train=500, val=200, test=500)
    assert len(spanning(make_pools(load_task(boolq_spec()), sizes, seed=seed), passage)) > 100
    pools = make_pools(load_task(boolq_spec(group="passage")), sizes, seed=seed)
    assert spanning(pools, passage) == []
    assert [len(getattr(pools, n)) for n in POOL_NAMES] == [500, 200, 500, 1035, 1035]


@pytest.mark.parametrize("name, path, key", [
    ("sciq", SHARED / "sciq", lambda t: t.split(" A: ")[0]),
    ("boolq", SHARED / "boolq" / "dev.jsonl", passage),
])
def test_real_files_through_a_loader_are_grouped_by_default(name, path, key):
    spec = DatasetSpec(name=name, source="local", path=str(path), loader=name)
    assert load_task(spec).groups is not None
    assert resolve_dataset(spec).group == loaders()[name].group  # in the spec, so in its ids
    pools = make_pools(load_task(spec), PoolSizes(weak_train=500, val=200, test=500), seed=2)
    assert spanning(pools, key) == []


# --- loaders' defaults ---------------------------------------------------------------------------------


def test_loaders_that_share_passages_questions_or_sentences_group_by_default():
    defaults = {name: loader.group for name, loader in loaders().items()}
    assert defaults == {"boolq": "passage", "paws": ("sentence1", "sentence2"), "cola": None, "sst2": None,
                        "amazon_polarity": None, "hellaswag": "ctx", "sciq": "question", "cosmos_qa": "context",
                        "quail": "context", "social_i_qa": "context", "anthropic_hh": "prompt"}
    assert resolve_dataset(DatasetSpec(name="paws", source="hub")).group == ("sentence1", "sentence2")
    assert resolve_dataset(DatasetSpec(name="sst2", source="hub")).group is None
    mine = DatasetSpec(name="boolq", source="hub", group="title")
    assert resolve_dataset(mine).group == "title"  # a group the user names wins


def test_preference_rows_are_grouped_by_their_prompt():
    rows = [dict(chosen=f"\n\nHuman: q{i // 3}\n\nAssistant: good {i}", rejected=f"\n\nHuman: q{i // 3}\n\nAssistant: bad {i}")
            for i in range(30)]
    spec = DatasetSpec(name="hh", source="local", path="unused", loader="anthropic_hh")
    task = convert_rows(loaders()["anthropic_hh"], pd.DataFrame(rows), spec)
    prompts = [t.split("\n\nAssistant:")[0] for t in task.texts]
    for g in set(task.groups.tolist()):
        assert len({p for p, h in zip(prompts, task.groups) if h == g}) == 1
    assert len(set(task.groups.tolist())) == len(set(prompts))


# --- balance ---------------------------------------------------------------------------------------------


def test_balance_makes_a_local_task_50_50_with_the_loaders_function_and_is_reproducible():
    raw = load_task(boolq_spec(group="passage"))
    assert raw.labels.mean() == pytest.approx(2033 / 3270)
    a, b = load_task(boolq_spec(group="passage", balance=True)), load_task(boolq_spec(balance=True))
    assert len(a) == 2 * 1237 and a.labels.sum() == 1237
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    keep = balance(raw.labels, np.random.default_rng(TASK_SEED))  # the hub loaders' undersampling
    assert a.texts == [raw.texts[i] for i in keep] and np.array_equal(a.groups, raw.groups[keep])
    pools = make_pools(a, PoolSizes(weak_train=500, val=200, test=500), seed=0)
    assert abs(pools.test_label1_share - 0.5) < 0.06 and spanning(pools, passage) == []


def test_balance_of_a_one_class_task_is_a_data_error(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [dict(text=f"t{i}", label=1) for i in range(5)])
    with pytest.raises(DataError, match="`balance` needs both classes"):
        load_task(DatasetSpec(name="x", source="local", path=str(path), balance=True))


@pytest.mark.parametrize("fields, message", [
    (dict(source="synthetic", group="text"), "drop `group` and `balance`"),
    (dict(source="synthetic", balance=True), "drop `group` and `balance`"),
    (dict(source="local", path="x", loader="sciq", balance=True), "balances its task itself"),
    (dict(source="local", path="x", group=""), "at least 1 character"),
    (dict(source="local", path="x", group=[]), "at least 1 item"),
])
def test_inconsistent_group_and_balance_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec(name="d", **fields)


# --- ids ---------------------------------------------------------------------------------------------------


def test_new_fields_at_their_default_leave_the_canonical_dump_alone():
    spec = DatasetSpec(name="d", source="local", path="x")
    assert spec.canonical_dump() == {k: v for k, v in spec.model_dump(mode="json").items()
                                     if k not in ("group", "balance")}
    assert spec.model_copy(update=dict(group="q")).canonical_dump()["group"] == "q"
    assert DatasetSpec.model_validate(spec.canonical_dump()) == spec  # a stored cell reads back whole


def test_setting_group_or_balance_changes_the_datasets_ids():
    def ids(**fields):
        dataset = dict(name="d", source="local", path=str(SHARED / "boolq" / "dev.jsonl"),
                       text="{passage}\nQuestion: {question}", label="answer", pools=dict(weak_train=200, val=100, test=200))
        config = tiny_config("/tmp/unused", datasets=[dict(dataset, **fields)], ceiling=False,
                             students=[dict(model="tiny-bert", name="h", mode="head")])
        return {(c.cell_id, c.weak_key, c.features_key) for c in expand_cells(parse_config(config))}

    plain, grouped, balanced = ids(), ids(group="passage"), ids(balance=True)
    cell_ids = [{i for i, _, _ in s} for s in (plain, grouped, balanced)]
    weak_keys = [{w for _, w, _ in s} for s in (plain, grouped, balanced)]
    feature_keys = [{f for _, _, f in s} for s in (plain, grouped, balanced)]
    for kind in (cell_ids, weak_keys, feature_keys):
        assert not kind[0] & kind[1] and not kind[0] & kind[2] and not kind[1] & kind[2]
    assert ids() == plain
