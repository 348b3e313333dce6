"""A sweep as a union of grids: `grids:` in the config, each entry a subset of the sweep's axes.

A paper's sweep is rarely one full product: the cheap student runs every budget and the expensive
one a few, a costly method runs at the small budgets only, a small dataset's pools hold only its
smaller budgets. As with scikit-learn's `ParameterGrid` given a list of dicts, each entry spans its
own product and the sweep is their union; a cell two entries share runs once (cells are keyed by
content, so the same cell has the same id in every entry). An entry picks from each axis by name
(datasets, weak supervisors, students) or by value (methods, budgets, spending fractions, seeds)
and takes whole every axis it leaves out. Without `grids` the sweep is the one product of its axes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from w2sweep.config_checks import Int, Real
from w2sweep.methods import MethodError, canonical_name

AXES = ("datasets", "weak_supervisors", "students", "methods", "budgets", "spending_fractions", "seeds")
_NAMED = ("datasets", "weak_supervisors", "students")  # picked by name; the others by value


def _picks(item):
    return Annotated[list[item], Field(min_length=1)] | None


class Subgrid(BaseModel):
    """One entry of `grids`: the values it keeps of each axis; an axis left out is taken whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: _picks(str) = None
    weak_supervisors: _picks(str) = None
    students: _picks(str) = None
    methods: _picks(str) = None
    budgets: _picks(Real(gt=0)) = None
    spending_fractions: _picks(Real(ge=0, le=1)) = None
    seeds: _picks(Int(ge=0)) = None


def _names(config, axis: str) -> list:
    """What an entry picks from the sweep's `axis` by: names for datasets and models, else values."""
    items = getattr(config, axis)
    if axis == "datasets":
        return [d.name for d in items]
    if axis in _NAMED:
        return [s.label for s in items]
    return list(items)


def _canonical(axis: str, value):
    if axis != "methods":
        return value
    try:
        return canonical_name(value)
    except MethodError:
        return value  # unknown: reported by `subgrid_problems` as not one of the sweep's methods


def subgrid_problems(config) -> list[tuple[str, object, str]]:
    """(field, value, problem) for each value an entry of `config.grids` picks that its axis does not
    hold: the entry would silently run less than it says."""
    problems = []
    for i, grid in enumerate(config.grids):
        for axis in AXES:
            have = _names(config, axis)
            for value in getattr(grid, axis) or []:
                if _canonical(axis, value) not in have:
                    problems.append((f"grids.{i}.{axis}", value, f"not one of the sweep's {axis}; allowed: {have}"))
    return problems


def sub_configs(config) -> list:
    """The config of each entry of `config.grids` (its axes cut to what the entry picks, in the sweep's
    order); [config] when there are none."""
    if not config.grids:
        return [config]
    subs = []
    for grid in config.grids:
        update = {"grids": []}
        for axis in AXES:
            picked = getattr(grid, axis)
            if picked is not None:
                keep = {_canonical(axis, value) for value in picked}
                update[axis] = [item for item, name in zip(getattr(config, axis), _names(config, axis)) if name in keep]
        subs.append(config.model_copy(update=update))
    return subs
