"""A cell is resolved once, when the grid is expanded, and travels resolved: its JSON (what a Tune
trial gets) carries the method's stages, the training settings, its keys, prerequisites and GPUs
beside the identity its id hashes, and `run_cell` runs from them and records its GPU-seconds."""

import json

import pytest

from conftest import tiny_config
from w2sweep import layout
from w2sweep.cells import run_cell
from w2sweep.config import parse_config
from w2sweep.grid import Cell, content_hash, expand_cells
from w2sweep.methods import parse_method
from w2sweep.models import resolve_settings
from w2sweep.storage import Storage


def _config(tmp_path, **overrides):
    return parse_config(tiny_config(
        str(tmp_path / "store"),
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=300,
                       pools=dict(weak_train=40, val=30, test=40, weak_label=60, oracle=60))],
        weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=1, max_length=16)],
        students=[dict(model="tiny-bert", name="full", epochs=1, max_length=16),
                  dict(model="tiny-bert", name="probe", mode="head", epochs=1, max_length=16, num_workers=2,
                       gpus_per_worker=1)],
        budgets=[4], spending_fractions=[0.5], resources=dict(cpu=1, gpu=0.25), **overrides))


def test_cells_carry_what_follows_from_their_identity(tmp_path):
    config = _config(tmp_path)
    cells = {c.student.label: c for c in expand_cells(config)}
    for label, gpus in (("full", 0.25), ("probe", 2.0)):
        cell = cells[label]
        assert cell.cell_id == content_hash(cell.canonical())  # the id hashes the identity alone
        assert cell.recipe == parse_method(cell.method) and cell.settings == resolve_settings(cell.student)
        assert cell.result_key == layout.result(config.name, cell.cell_id)
        assert cell.num_gpus == gpus
        assert Cell.from_json(cell.to_json()) == cell
        resolved = json.loads(cell.to_json())["resolved"]
        assert resolved["num_gpus"] == gpus and resolved["settings"]["max_length"] == 16
        assert [s["labels"] for s in resolved["method"]["stages"]] == ["weak", "oracle"]
        assert "resolved" not in cell.canonical()
    full, probe = cells["full"], cells["probe"]
    assert full.features_key is None and probe.features_key is not None
    assert [n.kind for n in full.prerequisites] == ["weak labels"]
    assert [(n.kind, n.key) for n in probe.prerequisites] == [
        ("weak labels", layout.weak_labels(config.name, probe.weak_key)),
        ("features", layout.features(config.name, probe.features_key))]
    assert probe.prerequisites[1].student == probe.student


def test_run_cell_records_the_gpus_its_cell_held(tmp_path):
    config = _config(tmp_path)
    (cell,) = [c for c in expand_cells(config) if c.student.label == "full"]
    storage = Storage.from_uri(config.storage)
    result = run_cell(Cell.from_json(cell.to_json()), storage)  # as a trial runs it
    stored = json.loads(storage.read_bytes(cell.result_key))
    assert stored["cell_id"] == cell.cell_id and stored["num_gpus"] == 0.25 == result.num_gpus
    assert stored["wall_seconds"] > 0
    assert stored["gpu_seconds"] == pytest.approx(0.25 * stored["wall_seconds"])


def test_run_cell_stores_its_test_predictions_before_its_result(tmp_path):
    """The frontier's statistics read per-example predictions: accuracy recomputed from them is the
    result's accuracy, and the test pool's label-1 share is recorded beside it."""
    from w2sweep import layout
    from w2sweep.results import read_predictions

    config = _config(tmp_path)
    (cell,) = [c for c in expand_cells(config) if c.student.label == "full"]
    storage = Storage.from_uri(config.storage)
    result = run_cell(Cell.from_json(cell.to_json()), storage)
    predictions = read_predictions(storage, cell.sweep, [cell.cell_id])[cell.cell_id]
    assert len(predictions) == result.num_test
    assert list(predictions["example_id"]) == list(range(result.num_test))
    assert ((predictions["p"] > 0.5) == (predictions["gold"] == 1)).mean() == pytest.approx(result.accuracy)
    assert result.test_label1_share == pytest.approx(predictions["gold"].mean())
    before = storage.list_modified(layout.folder(cell.sweep, layout.PREDICTIONS))
    after = storage.list_modified(layout.folder(cell.sweep, layout.RESULTS))
    assert max(before.values()) <= min(after.values())
