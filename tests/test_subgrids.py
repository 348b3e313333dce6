"""`grids:`: a sweep as the union of sub-grids of its axes (w2sweep.subgrids)."""

import pytest
import yaml

from conftest import tiny_config
from w2sweep.cli import main
from w2sweep.config import ConfigError, parse_config
from w2sweep.grid import check_references, expand_cells

STUDENTS = [dict(model="tiny-bert", name="cheap", epochs=1, max_length=16),
            dict(model="tiny-bert", name="dear", epochs=1, max_length=24)]


def _config(tmp_path, **overrides):
    return tiny_config(str(tmp_path / "store"), students=STUDENTS, budgets=[4, 16, 64], seeds=[0, 1],
                       ceiling=True, **overrides)


def _axes(cell):
    return (cell.student.label, cell.method, cell.budget, cell.spending_fraction, cell.seed)


def test_the_sweep_is_the_union_of_its_grids_with_the_ids_of_the_full_grid(tmp_path):
    grids = [dict(students=["cheap"]),  # every budget
             dict(students=["dear"], budgets=[4], spending_fractions=[0, 1], seeds=[0]),
             dict(students=["cheap"], budgets=[4])]  # inside the first: shared cells run once
    full = {c.cell_id: c for c in expand_cells(parse_config(_config(tmp_path)))}
    union = expand_cells(parse_config(_config(tmp_path, grids=grids)))
    assert len({c.cell_id for c in union}) == len(union)
    assert all(full[c.cell_id].to_json() == c.to_json() for c in union)  # the same cells, the same ids
    picked = {_axes(c) for c in union}
    assert {a for a in picked if a[0] == "cheap"} == {_axes(c) for c in full.values() if c.student.label == "cheap"}
    dear = {a for a in picked if a[0] == "dear"}
    assert dear == {("dear", "seq-sft", 4.0, 0.0, 0), ("dear", "seq-sft", 4.0, 1.0, 0), ("dear", "ceiling",
                                                                                         dear_ceiling(full), 1.0, 0)}


def dear_ceiling(full):
    return next(c.budget for c in full.values() if c.method == "ceiling")


def test_a_grid_that_picks_what_the_sweep_lacks_is_refused_naming_it(tmp_path):
    config = parse_config(_config(tmp_path, grids=[dict(students=["cheap", "missing"]), dict(budgets=[5])]))
    with pytest.raises(ConfigError) as e:
        check_references(config)
    assert any("grids.0.students" in line and "'missing'" in line and "allowed: ['cheap', 'dear']" in line
               for line in e.value.lines)
    assert any("grids.1.budgets" in line and "5" in line for line in e.value.lines)


def test_validate_refuses_an_unknown_pick_in_one_line_with_exit_2(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, grids=[dict(methods=["seq-sft", "no-such-method"])])))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grids.0.methods" in err[0] and "no-such-method" in err[0]


def test_max_cells_counts_the_union_not_the_full_product(tmp_path):
    small = dict(students=["cheap"], budgets=[4], spending_fractions=[0], seeds=[0])
    parse_config(_config(tmp_path, grids=[small], max_cells=3))  # 1 cell + 1 ceiling
    with pytest.raises(ConfigError, match="max_cells"):
        parse_config(_config(tmp_path, max_cells=3))


def test_a_grid_entry_with_an_unknown_field_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"grids\.0\.studnets"):
        parse_config(_config(tmp_path, grids=[dict(studnets=["cheap"])]))


def test_an_adaptive_search_chooses_only_cells_of_the_union(tmp_path):
    """`search: adaptive` with `grids:` searches the union: a unit's fractions are what its sub-grids pick,
    and nothing outside the union is ever chosen."""
    from w2sweep.search import Observation, Options, choose

    grids = [dict(students=["cheap"], budgets=[16, 64]), dict(students=["dear"], budgets=[4], seeds=[0])]
    config = parse_config(_config(tmp_path, grids=grids, search="adaptive"))
    check_references(config)  # not refused
    cells = expand_cells(config)
    union = {c.cell_id for c in cells}
    outside = {c.cell_id for c in expand_cells(parse_config(_config(tmp_path)))} - union
    observed: dict[str, Observation] = {}
    while chosen := choose(cells, observed, Options.of(config.search_options),
                           num_fractions=len(config.spending_fractions)):
        assert {c.cell_id for c in chosen} <= union
        observed.update({c.cell_id: Observation(0.7 + (c.spending_fraction or 0) / 10) for c in chosen})
    assert not set(observed) & outside
    assert {c.student.label for c in cells if c.cell_id in observed} == {"cheap", "dear"}
    assert {c.seed for c in cells if c.cell_id in observed and c.student.label == "dear"} == {0}
