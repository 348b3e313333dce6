"""Which process computes a prerequisite: a run's per-key claims (the `Claims` actor), taken on
behalf of a trial by the process that computes the key (the trial itself, or rank 0 of its Ray Train
worker group) and let go when that process is done or dies. `RayClaims` is the client that
`w2sweep.prerequisites` uses. A module of its own so that the actor's process imports Ray and nothing
else.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import ray
from ray.exceptions import RayError

from w2sweep.raycompat import ready_after_current_call


@dataclass(eq=False)
class _Hold:
    holder: str  # the trial it is held for
    released: asyncio.Event  # set when the key is let go (shared by every hold of one holding)


@ray.remote(num_cpus=0)
class Claims:
    """Per-key claims for one run. A process that needs a prerequisite which is not stored claims its
    key, computes it (with the resources it holds for its cell) and lets go; a process that needs a
    key another holds waits until it is let go, then finds it stored.

    A claim is held by a running process that is computing it, so waiting can never deadlock. It
    lasts at most as long as that process and its trial (`done`), so a holder that fails or dies
    (killed, out of memory) lets go of it too, and the next waiter computes the key instead. The same
    trial may claim a key it holds again (re-entrant): the restarted worker group of a Ray Train cell
    retakes the claim of its dead rank 0 before that death has been noticed here."""

    def __init__(self):
        self._held: dict[str, _Hold] = {}
        self._watches: set[asyncio.Task] = set()

    async def claim(self, key: str, holder: str, done: list[ray.ObjectRef], wait: bool = True) -> bool:
        """Hold `key` for trial `holder` until `done[0]` (`RayClaims`) is ready or fails, and return
        True; while another trial holds it, wait for it to be let go, or return False at once if not
        `wait`."""
        while (hold := self._held.get(key)) is not None and hold.holder != holder:
            if not wait:
                return False
            await hold.released.wait()
        hold = self._held[key] = _Hold(holder, asyncio.Event() if hold is None else hold.released)
        watch = asyncio.get_running_loop().create_task(self._let_go_when_done(key, hold, done[0]))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)
        return True

    def release(self, key: str) -> None:
        hold = self._held.pop(key, None)
        if hold is not None:
            hold.released.set()

    async def _let_go_when_done(self, key: str, hold: _Hold, done: ray.ObjectRef) -> None:
        # `done` is ready once the holder's trial has ended, and fails if the process that took the
        # claim (its owner) or the trial's actor dies first. Either way a claim it still holds is
        # stale: a holder that stored the key let go of it already, so this holder failed or died,
        # and the next waiter computes it (at worst twice, if the holder was only unreachable: the
        # first stored copy wins).
        try:
            await done
        except RayError:
            pass
        if self._held.get(key) is hold:
            self.release(key)


class RayClaims:
    """The claims of a run, as seen by one trial (`w2sweep.prerequisites.KeyClaims`). Picklable: the
    trial of a Ray Train cell hands it to its workers, and its rank 0 claims on the trial's behalf.

    Each process that claims through it makes its own liveness reference (`_done`), owned by that
    process and ready when the trial ends (`ready_after_current_call` on the trial's actor): a claim
    lapses when its trial ends or the process that took it dies, whichever comes first. (Tied to the
    trial alone, a claim of a dead rank 0 would outlive its resources while its worker group waits
    for new ones, and the trials waiting for the key could hold exactly those.)"""

    def __init__(self, actor: ray.actor.ActorHandle, trial: ray.ObjectRef):
        self.actor = actor
        self.holder = uuid.uuid4().hex  # this trial
        self._trial = trial  # a reference to the trial's actor handle: only a process that claims loads it
        self._done: list[ray.ObjectRef] | None = None

    @classmethod
    def for_this_trial(cls, actor: ray.actor.ActorHandle) -> "RayClaims":
        """Called inside a Tune trial (an actor that runs one call at a time, the trial's function
        inside the call that started it)."""
        return cls(actor, ray.put(ray.get_runtime_context().current_actor))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_done": None}  # made again in each process that claims

    def _liveness(self) -> list[ray.ObjectRef]:
        # In a list, so that Ray hands the claims actor the reference instead of waiting for it.
        if self._done is None:
            self._done = [ready_after_current_call(ray.get(self._trial))]
        return self._done

    def try_hold(self, keys: list[str]) -> set[str]:
        done = self._liveness()
        asked = {key: self.actor.claim.remote(key, self.holder, done, False) for key in keys}
        return {key for key, ref in asked.items() if ray.get(ref)}

    def release(self, key: str) -> None:
        ray.get(self.actor.release.remote(key))

    @contextmanager
    def holding(self, key: str):
        ray.get(self.actor.claim.remote(key, self.holder, self._liveness()))
        try:
            yield
        finally:
            self.release(key)
