"""Every private Ray name in `w2sweep.raycompat` still exists and still does what w2sweep relies on.
A Ray upgrade that renames, retypes or changes one fails here, by name, instead of somewhere in a
sweep (a credential in a log, a placement group removed under a running cell, a metric missing)."""

import json
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from w2sweep import raycompat  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_tune_copies_the_names_in_its_set_into_trial_runtime_envs_and_drops_the_ones_removed(monkeypatch):
    from ray.tune.execution import class_cache

    assert isinstance(class_cache.ENV_VARS_TO_PROPAGATE, set)
    # Tune's own default, read in a fresh interpreter: a sweep run earlier in this process dropped them.
    default = subprocess.run([sys.executable, "-c", "from ray.tune.execution import class_cache; "
                              "print(' '.join(sorted(class_cache.ENV_VARS_TO_PROPAGATE)))"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(default)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(default))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    monkeypatch.setenv("RAY_CHDIR_TO_TRIAL_DIR", "0")

    def env_vars():
        class Trainable:
            pass

        return class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]

    assert env_vars()["AWS_SECRET_ACCESS_KEY"] == "not-a-secret"  # what w2sweep switches off
    raycompat.drop_from_tune_trial_env("AWS_")
    assert "AWS_SECRET_ACCESS_KEY" not in env_vars() and env_vars()["RAY_CHDIR_TO_TRIAL_DIR"] == "0"


def test_train_v2_propagates_the_names_in_its_set_to_its_controller(monkeypatch):
    from ray.train.v2._internal import constants

    assert isinstance(constants.ENV_VARS_TO_PROPAGATE, set)
    # Without RAY_ADDRESS, as Ray ships it (a sweep run earlier in this process added it).
    monkeypatch.setattr(constants, "ENV_VARS_TO_PROPAGATE", set(constants.ENV_VARS_TO_PROPAGATE) - {"RAY_ADDRESS"})
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert "RAY_ADDRESS" not in constants.get_env_vars_to_propagate()
    raycompat.propagate_to_train_controller("RAY_ADDRESS")
    assert constants.get_env_vars_to_propagate()["RAY_ADDRESS"] == "10.0.0.5:6379"


def test_the_job_config_variable_is_the_one_ray_reads(monkeypatch):
    import inspect

    import ray._private.worker
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    assert RAY_JOB_CONFIG_JSON_ENV_VAR == "RAY_JOB_CONFIG_JSON_ENV_VAR"
    assert "RAY_JOB_CONFIG_JSON_ENV_VAR" in inspect.getsource(ray._private.worker)
    monkeypatch.delenv(RAY_JOB_CONFIG_JSON_ENV_VAR, raising=False)
    assert raycompat.submitted_job_runtime_env() == {}
    job = {"runtime_env": {"py_modules": ["x"], "env_vars": {"A": "1"}}}
    monkeypatch.setenv(RAY_JOB_CONFIG_JSON_ENV_VAR, json.dumps(job))
    assert raycompat.submitted_job_runtime_env() == job["runtime_env"]


@pytest.mark.ray
def test_a_counter_records_zero(local_ray):
    from ray.util import metrics

    counter = metrics.Counter("w2sweep_raycompat_zero", description="test", tag_keys=("sweep",))
    with pytest.raises(ValueError):
        counter.inc(0, tags={"sweep": "s"})  # why w2sweep needs the private call
    assert callable(counter._record)
    raycompat.record_zero(counter, {"sweep": "s"})  # no error


@ray.remote(num_cpus=0)
class _Busy:
    def work(self, seconds):
        time.sleep(seconds)


@pytest.mark.ray
def test_ray_ready_is_ready_only_after_the_actors_current_call(local_ray):
    actor = _Busy.remote()
    call = actor.work.remote(3.0)
    ready = raycompat.ready_after_current_call(actor)
    assert isinstance(ready, ray.ObjectRef)
    assert not ray.wait([ready], timeout=1.0)[0]  # queued behind the call
    ray.get(call)
    assert ray.wait([ready], timeout=10)[0]
