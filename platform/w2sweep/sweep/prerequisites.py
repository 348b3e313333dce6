"""A run's prerequisites (what cells read that is computed once per key: weak labels, head-only
students' features; `Cell.prerequisites`). Each is computed inside `run_cell` by the process that runs
a cell reading it, on the resources it holds for that cell: a one-worker cell's trial, or rank 0 of a
Ray Train cell's worker group (`w2sweep.prerequisites`). Which one, the run's claims actor decides
(`w2sweep.claims`): the driver starts it when some key is not stored yet. No trial starts only to
compute a key (rank 0 computes one in a child process: `w2sweep.prerequisites._compute`).
"""

from __future__ import annotations

import ray

from w2sweep.claims import Claims, RayClaims
from w2sweep.grid import Cell, Prerequisite
from w2sweep.prerequisites import KeyClaims, NoClaims
from w2sweep.storage import Storage


def prerequisites_to_compute(storage: Storage, cells: list[Cell]) -> list[Prerequisite]:
    """Every distinct prerequisite of `cells` not in storage yet."""
    by_key = {need.key: need for cell in cells for need in cell.prerequisites}
    return [need for key, need in by_key.items() if not storage.exists(key)]


def start_claims(missing: set[str]) -> ray.actor.ActorHandle | None:
    """The claims actor of a run whose cells read `missing` keys, not stored yet; None if there are none
    (a re-run: each cell then only looks its keys up)."""
    return Claims.remote() if missing else None


def start_order(cells: list[Cell], missing: set[str]) -> list[Cell]:
    """`cells` in the order their trials should start. A trial whose prerequisite another trial is
    computing waits for it on its slot, so two cells of one feature pass started side by side leave a
    core idle for the whole pass (a 21-minute SmolLM2 pass over BoolQ did). First, then, the cells
    that compute missing keys no earlier one computes (their missing keys pairwise disjoint: every
    one computes, none waits); then the cells that need nothing missing (they run at once); then the
    rest. Grid order within each; nothing changes when nothing is missing."""
    first, ready, rest, covered = [], [], [], set()
    for cell in cells:
        keys = {need.key for need in cell.prerequisites} & missing
        if not keys:
            ready.append(cell)
        elif keys.isdisjoint(covered):
            first.append(cell)
            covered |= keys
        else:
            rest.append(cell)
    return first + ready + rest


def trial_claims(actor: ray.actor.ActorHandle | None) -> KeyClaims:
    """The claims a trial hands its cell: the run's, taken on this trial's behalf; or, with every key
    stored when the run began, none to take."""
    return NoClaims() if actor is None else RayClaims.for_this_trial(actor)


def stop_claims(actor: ray.actor.ActorHandle | None) -> None:
    if actor is not None:
        ray.kill(actor)
