"""P4: weak labels are computed once per key across a sweep's cells and its re-runs.

The weak supervisor's training is counted by wrapping `w2sweep.weak.train_weak_supervisor`; the cells
and the re-run go through the same plain functions a Tune trial and a weak-label Ray task call
(`ensure_weak_labels`, then `run_cell`), so no Ray is needed.
"""

import pytest

import w2sweep.weak
from conftest import tiny_config
from w2sweep.cells import expand_cells, run_cell
from w2sweep.config import parse_config
from w2sweep.storage import Storage
from w2sweep.sweep import weak_labels_to_compute
from w2sweep.weak import ensure_weak_labels


@pytest.fixture
def count_weak_trainings(monkeypatch):
    """Every call of train_weak_supervisor, as (dataset name, supervisor label, seed)."""
    calls = []
    train = w2sweep.weak.train_weak_supervisor

    def counted(dataset, weak_supervisor, seed):
        calls.append((dataset.name, weak_supervisor.label, seed))
        return train(dataset, weak_supervisor, seed)

    monkeypatch.setattr(w2sweep.weak, "train_weak_supervisor", counted)
    return calls


def _small(storage, **overrides):
    config = tiny_config(
        storage,
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=400,
                       pools=dict(weak_train=32, val=32, test=32, weak_label=64, oracle=64))],
        weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=16)],
        students=[dict(model="tiny-bert", name="tiny-student", epochs=1, max_length=16)],
        budgets=[2], spending_fractions=[0, 0.5],
    )
    config.update(overrides)
    return parse_config(config)


def _run(config):
    """What one `w2sweep run` does with the plain functions: weak labels for every cell's key, then
    every cell without a result. A fresh Storage object each time, as a new process would have."""
    storage = Storage.from_uri(config.storage)
    cells = expand_cells(config)
    for cell in cells:
        ensure_weak_labels(storage, config.name, cell.dataset, cell.weak_supervisor, cell.seed)
    for cell in cells:
        if not storage.exists(f"{config.name}/cells/{cell.cell_id}.json"):
            run_cell(cell, storage)
    return cells


def test_weak_labels_are_computed_once_per_key_across_cells_and_reruns(tmp_path, count_weak_trainings):
    config = _small(str(tmp_path / "store"))
    storage = Storage.from_uri(config.storage)
    assert len(weak_labels_to_compute(storage, config.name, expand_cells(config))) == 1  # the sweep's task list
    cells = _run(config)
    assert len(cells) == 2 and len({c.weak_key for c in cells}) == 1
    assert count_weak_trainings == [("synthetic-sentiment", "tiny-weak", 0)]

    # The re-run: every cell is done, the weak labels are stored, and `w2sweep run` would start no
    # weak-label task at all.
    assert weak_labels_to_compute(storage, config.name, cells) == []
    _run(config)
    assert len(count_weak_trainings) == 1


def test_each_new_weak_label_key_is_computed_exactly_once(tmp_path, count_weak_trainings):
    # A second seed is a second key; so is a changed supervisor setting. Nothing else recomputes.
    config = _small(str(tmp_path / "store"), seeds=[0, 1], spending_fractions=[0])
    for cell in expand_cells(config):
        for _ in range(2):
            ensure_weak_labels(Storage.from_uri(config.storage), config.name, cell.dataset,
                               cell.weak_supervisor, cell.seed)
    assert sorted(count_weak_trainings) == [("synthetic-sentiment", "tiny-weak", 0),
                                            ("synthetic-sentiment", "tiny-weak", 1)]

    changed = _small(str(tmp_path / "store"), spending_fractions=[0],
                     weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=2, max_length=16)])
    for _ in range(2):
        for cell in expand_cells(changed):
            ensure_weak_labels(Storage.from_uri(changed.storage), changed.name, cell.dataset,
                               cell.weak_supervisor, cell.seed)
    assert len(count_weak_trainings) == 3
