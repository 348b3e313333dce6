"""The five pools: disjoint after near-duplicate removal, sized as asked, reproducible per seed."""

from pathlib import Path

import numpy as np
import pytest

from w2sweep.config import DatasetSpec, PoolSizes
from w2sweep.data import DataError, Pools, Task, load_task, make_pools, pool_capacity
from w2sweep.data.pools import POOL_NAMES, dedupe, normalize_text, text_key

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = PoolSizes(weak_train=30, val=20, test=25)


def near_duplicate_task(num_base: int = 200) -> Task:
    """Each base sentence also appears as case, punctuation and whitespace variants."""
    texts, labels = [], []
    for i in range(num_base):
        base = f"review number {i} says the film was {'good' if i % 2 else 'bad'}"
        variants = [base, base.upper(), base.replace(" ", "  ") + " !", base.replace("film", "film,")]
        for v in variants[: 1 + i % 4]:
            texts.append(v)
            labels.append(i % 2)
    return Task("near-dups", texts, np.array(labels))


def pool_keys(pools: Pools) -> dict[str, set[str]]:
    return {name: {text_key(t) for t in getattr(pools, name).texts} for name in POOL_NAMES}


def assert_disjoint(pools: Pools) -> None:
    keys = pool_keys(pools)
    for name in POOL_NAMES:
        assert len(keys[name]) == len(getattr(pools, name)), f"duplicate inside {name}"
        for other in POOL_NAMES:
            if other != name:
                assert not keys[name] & keys[other], f"{name} and {other} share a text"


def test_normalize_text():
    assert normalize_text("  The FILM, was -- GOOD!\n") == "the film was good"
    assert text_key("Not  good.") == text_key("not good")


def test_pools_are_disjoint():
    task = near_duplicate_task()
    pools = make_pools(task, SIZES, seed=0)
    assert_disjoint(pools)
    sizes = {name: len(getattr(pools, name)) for name in POOL_NAMES}
    assert sizes == {"weak_train": 30, "val": 20, "test": 25, "weak_label": 63, "oracle": 62}  # 200 unique
    for name in POOL_NAMES:  # labels travel with their texts
        pool = getattr(pools, name)
        assert all(("good" in t.lower()) == bool(y) for t, y in zip(pool.texts, pool.labels))


def test_pools_are_disjoint_on_sst2():
    spec = DatasetSpec(name="sst2", source="local", path=str(SHARED / "sst2"), text="sentence")
    task = load_task(spec)
    unique = dedupe(task)
    assert len(unique) < len(task)  # SST-2 repeats phrases
    pools = make_pools(task, PoolSizes(weak_train=2000, val=1000, test=2000, oracle=5000), seed=3)
    assert_disjoint(pools)
    assert len(pools.oracle) == 5000 and len(pools.weak_label) == len(unique) - 10_000


def test_duplicates_that_disagree_are_dropped():
    task = Task("t", ["Good film", "good film!", "bad film", "BAD film", "ok film"], [1, 0, 0, 0, 1])
    unique = dedupe(task)
    assert unique.texts == ["bad film", "ok film"] and unique.labels.tolist() == [0, 1]


def test_same_seed_same_pools_other_seed_other_pools():
    task = near_duplicate_task()
    a, b, c = (make_pools(task, SIZES, seed=s) for s in (7, 7, 8))
    for name in POOL_NAMES:
        assert getattr(a, name).texts == getattr(b, name).texts
        assert np.array_equal(getattr(a, name).labels, getattr(b, name).labels)
    assert a.weak_train.texts != c.weak_train.texts


def test_set_pool_sizes_are_taken_and_the_rest_fills_the_other():
    assert pool_capacity(200, PoolSizes(weak_train=30, val=20, test=25, weak_label=50, oracle=10)) == {
        "weak_train": 30, "val": 20, "test": 25, "weak_label": 50, "oracle": 10}
    assert pool_capacity(200, PoolSizes(weak_train=30, val=20, test=25, oracle=10))["weak_label"] == 115
    assert pool_capacity(200, PoolSizes(weak_train=30, val=20, test=25, weak_label=100))["oracle"] == 25
    pools = make_pools(near_duplicate_task(), PoolSizes(weak_train=30, val=20, test=25, weak_label=50, oracle=10),
                       seed=0)
    assert (len(pools.weak_label), len(pools.oracle)) == (50, 10)


def test_too_small_task_is_a_data_error():
    with pytest.raises(DataError, match=r"dataset 'near-dups'.*weak_train=500.*need at least 1202.*only 200 remain"):
        make_pools(near_duplicate_task(), PoolSizes(), seed=0)
    with pytest.raises(DataError, match="oracle=100"):
        make_pools(near_duplicate_task(), PoolSizes(weak_train=30, val=20, test=25, oracle=100, weak_label=100),
                   seed=0)
    with pytest.raises(DataError):  # nothing left for weak_label / oracle
        pool_capacity(75, SIZES)
