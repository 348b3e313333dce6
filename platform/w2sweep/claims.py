"""Which trial computes a prerequisite: a run's per-key claims, held by trials, let go when the
holder is done or dies. A module of its own so that the actor's process imports Ray and nothing else.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager

import ray
from ray.exceptions import RayError


@ray.remote(num_cpus=0)
class Claims:
    """Per-key claims for one run. A trial that needs a prerequisite which is not stored claims its
    key, computes it in its own process (with the resources it holds for its cell) and lets go; a
    trial that needs a key another holds waits until it is let go, then finds it stored.

    A claim is held by a running trial that is computing it, so waiting can never deadlock; it lasts
    at most as long as the holder's trial, so a holder that fails or dies (killed, out of memory)
    lets go of it too, and the next waiter computes the key instead."""

    def __init__(self):
        self._held: dict[str, asyncio.Event] = {}  # key -> set when its holder lets go
        self._watches: set[asyncio.Task] = set()

    async def claim(self, key: str, holder_done: list[ray.ObjectRef], wait: bool = True) -> bool:
        """Hold `key` for the trial whose `holder_done` (`_holder_done`) this is and return True; while
        another holds it, wait for it to be let go, or return False at once if not `wait`."""
        while key in self._held:
            if not wait:
                return False
            await self._held[key].wait()
        released = self._held[key] = asyncio.Event()
        watch = asyncio.get_running_loop().create_task(self._let_go_when_done(key, released, holder_done[0]))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        return True

    def release(self, key: str) -> None:
        released = self._held.pop(key, None)
        if released is not None:
            released.set()

    async def _let_go_when_done(self, key: str, released: asyncio.Event, done: ray.ObjectRef) -> None:
        # `done` is ready once the holder's trial has ended, and fails if its actor dies first (or
        # cannot be reached). Either way a claim it still holds is stale: a holder that stored the
        # key let go of it already, so this holder failed or died, and the next waiter computes it
        # (at worst twice, if the holder was only unreachable: the first stored copy wins).
        try:
            await done
        except RayError:
            pass
        if self._held.get(key) is released:
            self.release(key)


def _holder_done() -> list[ray.ObjectRef]:
    """[A call queued on the calling trial's own actor]. A Tune trial's actor runs one call at a time,
    and the trial's function runs inside the call that started it, so the queued call runs once the
    trial has ended, and fails if the actor dies first. In a list, so that Ray hands the claims actor
    the reference instead of waiting for it. (The actor's handle would do the same, but deserializing
    it loads the trial's class: the claims actor would import Tune, Ray Train and w2sweep.sweep, ~1 s
    of CPU while the first trials import torch.)"""
    return [ray.get_runtime_context().current_actor.__ray_ready__.remote()]


def ask(claims: ray.actor.ActorHandle, keys: list[str]) -> dict[str, ray.ObjectRef]:
    """Claim each of `keys` for the calling trial, without waiting for others: key -> a reference to
    whether it is now held (then `release` it). Sent at once; the answers are read later."""
    done = _holder_done()
    return {key: claims.claim.remote(key, done, False) for key in keys}


@contextmanager
def claimed(claims: ray.actor.ActorHandle, key: str):
    """Hold `key` for the calling trial while the block runs, once whoever holds it now lets go; let
    go afterwards, also when the block raises."""
    ray.get(claims.claim.remote(key, _holder_done()))
    try:
        yield
    finally:
        ray.get(claims.release.remote(key))
