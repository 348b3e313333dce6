"""Cell ids, weak-label keys and feature keys of unchanged configs never change: a re-run of an older
sweep must find and skip its finished cells (and reuse its stored weak labels and features). These
values were computed by the code before the grid resolved cells once; a change that moves one of them
breaks every stored sweep."""

import pytest

from conftest import tiny_config
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells

PINNED = {
    # (student, method, budget, spending fraction, seed): (cell id, weak-label key, features key)
    ("tiny-student", "seq-sft", 4.0, 0.5, 0): ("292e4f3068ea4889", "bbc657b67052faa7", None),
    ("tiny-student", "seq-sft+fewshot", 16.0, 1.0, 3): ("e22ae71014be0b39", "c374809b055c05bc", None),
    ("tiny-student", "seq-sft+logconf", 16.0, 0.0, 0): ("1c38595d70e2b5da", "bbc657b67052faa7", None),
    # Features key changed on purpose: stored features became rows keyed by text (FEATURES_VERSION 2;
    # was "644e6d6aac73a113"). The cell id and weak-label key did not move.
    ("tiny-head", "seq-sft", 16.0, 0.5, 3): ("21d0145bbdf34f60", "c374809b055c05bc", "68b4e21cbfd7c4b6"),
    # Changed on purpose: the ceiling reads no weak labels and runs once per (dataset, student, seed),
    # with no weak supervisor in its identity and no weak-label key (was "0dfe14cc9489690e", "bbc657b67052faa7").
    ("tiny-student", "ceiling", 350.0, 1.0, 0): ("a4655e8353fe6cd7", None, None),
}


@pytest.fixture(scope="module")
def cells():
    config = tiny_config(
        "/tmp/unused", methods=["seq-sft", "seq-sft+fewshot", "seq-sft+logconf"], ceiling=True, seeds=[0, 3],
        students=[dict(model="tiny-bert", name="tiny-student", epochs=2, max_length=32),
                  dict(model="tiny-bert", name="tiny-head", mode="head", epochs=2)])
    return {(c.student.label, c.method, c.budget, c.spending_fraction, c.seed): c
            for c in expand_cells(parse_config(config))}


@pytest.mark.parametrize("axes", sorted(PINNED, key=str))
def test_ids_of_unchanged_configs_stay_the_same(cells, axes):
    cell = cells[axes]
    assert (cell.cell_id, cell.weak_key, cell.features_key) == PINNED[axes]
