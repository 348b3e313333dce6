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
    assert len(grid) == 1005 and set(grid) <= set(more)
    assert {c.budget for c in grid.values() if c.dataset.name == "sst2-52k" and c.method != "ceiling"} == {4096}
    added = [more[i] for i in set(more) - set(grid)]
    assert sorted({(c.student.label, c.method) for c in added}) == [
        ("minilm-l6-full", "seq-sft"), ("smollm2-135m", "fewshot-prompt"),
        ("smollm2-135m-lora", "seq-sft"), ("smollm2-135m-lora", "seq-sft+fewshot")]
    assert all(len({c.seed for c in added if c.student.label == s}) == 5 for s in ("minilm-l6-full", "smollm2-135m-lora"))
    # A +fewshot cell reads 4 shots before each text: its max_length is its prompts', not the bare texts'.
    lora = {c.method: c.student.max_length for c in added if c.student.label == "smollm2-135m-lora"}
    assert lora["seq-sft+fewshot"] > 2 * lora["seq-sft"]
    assert len([c for c in added if c.method == "seq-sft+fewshot"]) == 5  # f = 1 only (f = 0: ~20-25 min a cell)
    assert all(c.features_key is not None for c in grid.values() if c.method != "fewshot-prompt")  # head-only


def test_the_fractions_config_refines_the_published_probe_grid(monkeypatch):
    """results-fractions.yaml (the adaptive search's recorded real-data grid) runs the published probe cells
    on 21 fractions: its cells at the published 8 fractions are the published cells, by id."""
    monkeypatch.chdir(CONFIGS.parents[1])
    fine = expand_cells(load_config(CONFIGS / "results-fractions.yaml"))
    assert len(fine) == 3 * 3 * 21 * 5 + 21 * 5 + 4 * 5  # 3 sets x 3 budgets, sst2-13k at 1024, ceilings
    assert len({c.spending_fraction for c in fine if c.spending_fraction is not None}) == 21
    points = {(c.dataset.name, c.budget) for c in fine}
    published = {c.cell_id for c in expand_cells(load_config(CONFIGS / "results.yaml"))
                 if c.student.label == "minilm-l6-probe" and (c.dataset.name, c.budget) in points}
    assert len(published) == (3 * 3 + 1) * 8 * 5 + 4 * 5  # 8 fractions x 5 seeds at 10 (set, budget), ceilings
    assert published <= {c.cell_id for c in fine}
    assert all(c.features_key is not None for c in fine)  # head-only
