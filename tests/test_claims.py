"""Per-key claims (`w2sweep.claims`) on a real local Ray cluster: one holder at a time, and a claim
never outlives its holder's call, whether the holder lets go, raises or is killed; and in a real
sweep whose trials all start at once, every prerequisite is still computed exactly once."""

import time
from pathlib import Path

import pytest

from conftest import tiny_config

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")


@ray.remote(num_cpus=0)
class Trial:
    """Stands in for a Tune trial's actor: one call at a time, claims made inside a call through the
    client a trial hands its cell (`RayClaims`)."""

    def client(self, claims):
        from w2sweep.claims import RayClaims

        return RayClaims.for_this_trial(claims)

    def claim(self, claims, key):
        return key in self.client(claims).try_hold([key])

    def claim_then(self, claims, key, what, flag, client=None):
        """Claim `key` (through `client` if given), say so in the file `flag`, then let go
        ("release": after 1 s, returning when, and staying in this call 3 s more), raise, or hang."""
        client = client or self.client(claims)
        assert client.try_hold([key]) == {key}
        Path(flag).touch()
        if what == "release":
            time.sleep(1.0)
            released = time.monotonic()
            client.release(key)
            time.sleep(3.0)
            return released
        if what == "raise":
            raise RuntimeError("the computation failed")
        time.sleep(600)

    def wait_for(self, claims, key):
        with self.client(claims).holding(key):
            return time.monotonic()

    def claim_with(self, client, key):
        return key in client.try_hold([key])

    def hold_for_a_while(self, seconds):
        """A trial busy in its call (a Ray Train cell's trial driving its workers)."""
        time.sleep(seconds)


def _start_holding(holder, claims, key, what, flag: Path, client=None):
    call = holder.claim_then.remote(claims, key, what, str(flag), client)
    deadline = time.monotonic() + 30
    while not flag.exists():
        assert time.monotonic() < deadline, "the holder never claimed"
        time.sleep(0.05)
    return call


def test_one_holder_at_a_time_and_release_lets_the_next_in(local_ray, tmp_path):
    from w2sweep.claims import Claims

    claims = Claims.remote()
    holder, other, waiter = Trial.remote(), Trial.remote(), Trial.remote()
    call = _start_holding(holder, claims, "weak/1", "release", tmp_path / "claimed")
    assert not ray.get(other.claim.remote(claims, "weak/1"))  # held
    assert ray.get(other.claim.remote(claims, "features/1"))  # another key is free
    got = ray.get(waiter.wait_for.remote(claims, "weak/1"), timeout=30)
    released = ray.get(call)
    # In as soon as the holder let go, not only when its call ended 3 s later.
    assert released <= got < released + 2.5


@pytest.mark.parametrize("what", ["raise", "hang"])
def test_a_claim_ends_with_its_holders_call_when_it_raises_or_is_killed(local_ray, tmp_path, what):
    """Neither holder lets go itself: without the claim ending with its call, the waiter would wait
    until the timeout."""
    from w2sweep.claims import Claims

    claims = Claims.remote()
    holder, waiter = Trial.remote(), Trial.remote()
    call = _start_holding(holder, claims, "weak/1", what, tmp_path / "claimed")
    if what == "raise":
        with pytest.raises(ray.exceptions.RayTaskError, match="the computation failed"):
            ray.get(call)
    else:
        assert not ray.get(waiter.claim.remote(claims, "weak/1"))  # held while its holder runs
        ray.kill(holder)
    assert ray.get(waiter.wait_for.remote(claims, "weak/1"), timeout=30)


def test_a_worker_claims_for_its_trial_again_after_a_restart_and_its_claim_ends_with_it(local_ray, tmp_path):
    """A Ray Train cell: its trial drives the worker group and claims nothing itself; rank 0 claims
    on the trial's behalf. A restarted rank 0 (same trial) takes the claim again at once; another
    trial waits. The claim ends when the rank 0 holding it dies, while the trial still runs: held for
    the trial alone, it would outlive the resources that can compute the key."""
    from w2sweep.claims import Claims, RayClaims

    claims = Claims.remote()
    trial, rank0, restarted, other = Trial.remote(), Trial.remote(), Trial.remote(), Trial.remote()
    driving = trial.hold_for_a_while.remote(120)
    client = RayClaims(claims, ray.put(trial))  # what the trial hands its workers
    _start_holding(rank0, claims, "weak/1", "hang", tmp_path / "claimed", client)
    assert not ray.get(other.claim.remote(claims, "weak/1"))
    assert ray.get(restarted.claim_with.remote(client, "weak/1"))  # re-entrant for the same trial
    ray.kill(rank0)
    time.sleep(2.0)
    assert not ray.get(other.claim.remote(claims, "weak/1"))  # the restarted rank 0 holds it now
    ray.kill(restarted)
    assert ray.get(other.wait_for.remote(claims, "weak/1"), timeout=30)
    assert not ray.wait([driving], timeout=0)[0]  # ended with its worker, not with the trial


def test_trials_starting_together_compute_each_prerequisite_once(tmp_path, local_ray, capsys):
    """Six cells on two slots, all reading one weak-label key, and three of them a head-only
    student's features: both trials start at once and both need the weak labels first."""
    from w2sweep.config import parse_config
    from w2sweep.sweep import _runtime_env, run_sweep

    calls = tmp_path / "calls.txt"

    def count_computations():  # runs in every worker process Ray starts
        import w2sweep.features
        import w2sweep.weak

        def counted(module, name):
            compute = getattr(module, name)

            def wrapper(*args, **kwargs):
                with open(calls, "a") as f:
                    f.write(f"{name}\n")
                return compute(*args, **kwargs)

            setattr(module, name, wrapper)

        counted(w2sweep.weak, "train_weak_supervisor")
        counted(w2sweep.features, "compute_features")

    # a cluster whose workers count, with the runtime env a joined cluster gets
    local_ray.restart(runtime_env={**_runtime_env(), "worker_process_setup_hook": count_computations})
    config = parse_config(tiny_config(
        str(tmp_path / "store"), budgets=[16], spending_fractions=[0, 0.5, 1],
        students=[dict(model="tiny-bert", name="full", epochs=1, max_length=32),
                  dict(model="tiny-bert", name="probe", mode="head", epochs=1, max_length=32)]))
    with capsys.disabled():  # Tune pickles the progress bar with the stream it writes to
        report = run_sweep(config)
        rerun = run_sweep(config)  # nothing left: no trial, no computation
    assert (report.num_done, report.failed) == (6, {})
    assert sorted(Path(calls).read_text().split()) == ["compute_features", "train_weak_supervisor"]

    assert rerun.num_skipped == 6
    assert sorted(Path(calls).read_text().split()) == ["compute_features", "train_weak_supervisor"]


def test_a_sweep_hands_tune_its_cells_in_start_order(tmp_path, local_ray, monkeypatch, capsys):
    """The cells reach Tune in `start_order`: the first two compute all four missing keys side by side,
    where the grid's first two would share one feature pass (tests/test_no_repeated_work.py)."""
    import w2sweep.sweep.run as run
    from w2sweep.config import parse_config
    from w2sweep.grid import expand_cells
    from w2sweep.storage import Storage
    from w2sweep.sweep import prerequisites_to_compute, run_sweep
    from w2sweep.sweep.prerequisites import start_order

    class Handed(Exception):
        pass

    handed = []

    def tuner(config, storage, todo, trainable, progress):
        handed.extend(c.cell_id for c in run._largest_first(todo, config.resources))
        raise Handed

    monkeypatch.setattr(run, "_tuner", tuner)
    config = parse_config(tiny_config(str(tmp_path / "store"), budgets=[16], spending_fractions=[0, 1], seeds=[0, 1],
                                      students=[dict(model="minilm-l6", name="a", mode="head", max_length=16),
                                                dict(model="minilm-l6", name="b", mode="head", max_length=24)]))
    cells = expand_cells(config)
    missing = {need.key for need in prerequisites_to_compute(Storage.from_uri(config.storage), cells)}
    with capsys.disabled(), pytest.raises(Handed):
        run_sweep(config)
    assert handed == [c.cell_id for c in start_order(cells, missing)] != [c.cell_id for c in cells]
