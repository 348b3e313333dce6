"""A cell's prerequisites (what it reads that is computed once per key: weak labels, a head-only
student's features; `Cell.prerequisites`), made sure of before its training, in the process that
trains it and on the resources it holds for that.

Who computes a key is decided by per-key claims (`KeyClaims`): a process computes the keys it could
claim and lets go of them; for keys others hold it warms up first (`warm_up`), then waits for each
claim and finds the key stored, or computes it itself if the holder failed or died. A claim is only
ever taken by a process that holds the resources to compute it, and a holder waits for nothing while
it holds one, so the waiting cannot deadlock.

Without Ray the claims are `NoClaims` (every key is the caller's); a sweep hands each cell the Ray
claims of its run (`w2sweep.claims.RayClaims`). Under torch.distributed only rank 0 makes sure of the
prerequisites, computing each in a child process outside the group; the other ranks wait until they
are stored. Nothing here imports Ray.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterable, Protocol

from w2sweep.storage import Storage


class KeyClaims(Protocol):
    """Per-key claims of one run. A held key is computed by its holder, who then lets go."""

    def try_hold(self, keys: list[str]) -> set[str]:
        """Claim each of `keys` that no one else holds now, without waiting; the ones now held."""

    def release(self, key: str) -> None:
        """Let go of a held key."""

    def holding(self, key: str) -> ContextManager[None]:
        """Wait until no one else holds `key`, hold it while the block runs, then let go."""


class NoClaims:
    """The claims of a process that is alone: every key is its own (a plain `run_cell` call)."""

    def try_hold(self, keys: list[str]) -> set[str]:
        return set(keys)

    def release(self, key: str) -> None:
        pass

    @contextmanager
    def holding(self, key: str):
        yield


def ensure_prerequisites(cell, storage: Storage, claims: KeyClaims, warm_up: Callable) -> None:
    """Make sure every prerequisite of `cell` is stored before its training: compute those not stored
    that `claims` lets this process hold; if others hold some, `warm_up(cell)` instead of idling,
    then wait for each and compute it if its holder did not store it. In a torch.distributed group
    rank 0 does this without warming up (its ranks would wait for it: a Ray Train cell), and the
    other ranks only wait until rank 0 has them stored."""
    from w2sweep.train.state import world  # torch; the caller has it imported already

    rank, size = world()
    if rank != 0:
        _wait_until_stored(storage, [need.key for need in cell.prerequisites])
        return
    missing = [need for need in cell.prerequisites if not storage.exists(need.key)]
    if not missing:
        return  # a sweep's re-run, a later cell: one lookup per key
    held = claims.try_hold([need.key for need in missing])
    try:
        for need in missing:
            if need.key in held:
                _compute(need, storage, alone=size == 1)
    finally:
        for key in held:
            claims.release(key)
    held_by_others = [need for need in missing if need.key not in held]
    if held_by_others and size == 1:
        warm_up(cell)
    for need in held_by_others:
        with claims.holding(need.key):  # let go by a holder that stored it, failed or died
            _compute(need, storage, alone=size == 1)  # nothing to do unless the holder failed or died


# Computes one prerequisite in a fresh process: (Prerequisite, storage URI) pickled on stdin.
_ALONE = ("import pickle, sys\n"
          "need, uri = pickle.load(sys.stdin.buffer)\n"
          "from w2sweep.storage import Storage\n"
          "need.ensure(Storage.from_uri(uri))\n")


def _compute(need, storage: Storage, *, alone: bool) -> None:
    """`need.ensure(storage)` in this process, or, on rank 0 of a torch.distributed group (`alone`
    False), in a child process on the same resources: the science core trains as one rank of the
    group wherever a group is initialized, and a weak supervisor trained on rank 0 alone would wait
    for the other ranks in its first collective, forever. (A Ray Train cell's prerequisite costs that
    process, as the Ray task that computed it before did.)"""
    if alone:
        need.ensure(storage)  # one lookup if it is stored
        return
    if storage.exists(need.key):
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([sys.executable, "-c", _ALONE], input=pickle.dumps((need, storage.uri)), env=env, check=True)


def _wait_until_stored(storage: Storage, keys: Iterable[str], *, longest_s: float = 2.0) -> None:
    """Poll until each key exists. Not a torch.distributed barrier: rank 0 may wait for another cell's
    claim longer than a collective's timeout (30 min under Ray Train), and if rank 0 fails, the group
    fails with it."""
    for key in keys:
        pause = 0.05
        while not storage.exists(key):
            time.sleep(pause)
            pause = min(2 * pause, longest_s)
