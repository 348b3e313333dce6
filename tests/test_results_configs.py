"""The published sweep's two configs (docs/results/): results-subsets.yaml is results.yaml plus cells, so
running it after `make reproduce-results` reuses every head-only cell by id and adds only its own."""

from pathlib import Path

import pytest

from w2sweep.config import load_config
from w2sweep.grid import expand_cells

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data beside the repository")


def test_the_subsets_config_holds_every_cell_of_the_results_config(monkeypatch):
    monkeypatch.chdir(CONFIGS.parents[1])  # the data paths are relative to the repository root
    grid = {c.cell_id: c for c in expand_cells(load_config(CONFIGS / "results.yaml"))}
    more = {c.cell_id: c for c in expand_cells(load_config(CONFIGS / "results-subsets.yaml"))}
    assert len(grid) == 875 and set(grid) <= set(more)
    added = [more[i] for i in set(more) - set(grid)]
    assert sorted({(c.student.label, c.method) for c in added}) == [("minilm-l6-full", "seq-sft"),
                                                                    ("smollm2-135m", "fewshot-prompt")]
    assert all(c.features_key is not None for c in grid.values() if c.method != "fewshot-prompt")  # head-only
