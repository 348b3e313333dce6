"""Every private Ray name w2sweep relies on, in one place (orchestration layer; ray is pinned in
pyproject.toml). Each has a test in tests/test_raycompat.py that fails loudly when a Ray upgrade
renames, retypes or changes it; nothing else in w2sweep reaches past Ray's public API.

  ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE   `drop_from_tune_trial_env`
  ray.train.v2._internal.constants.ENV_VARS_TO_PROPAGATE `propagate_to_train_controller`
  ray.util.metrics.Counter._record                       `record_zero`
  ActorHandle.__ray_ready__                              `ready_after_current_call`
  ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR  `submitted_job_runtime_env`
"""

from __future__ import annotations

import json
import os


def drop_from_tune_trial_env(prefix: str) -> None:
    """Stop Ray Tune from copying the driver's variables named `prefix`* into every trial actor's
    runtime env (which Ray writes into its log files). Tune copies a fixed set of names, the AWS
    credentials among them."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = {
        name for name in class_cache.ENV_VARS_TO_PROPAGATE if not name.startswith(prefix)}


def propagate_to_train_controller(name: str) -> None:
    """Make Ray Train V2 pass the driver's variable `name` to its controller and workers (it passes a
    fixed set of names)."""
    from ray.train.v2._internal import constants

    constants.ENV_VARS_TO_PROPAGATE.add(name)


def record_zero(counter, tags: dict[str, str]) -> None:
    """Record 0 on a `ray.util.metrics.Counter`: its public `inc` refuses values <= 0, so this uses the
    record call that `inc` makes."""
    counter._record(0, tags=tags)


def ready_after_current_call(actor):
    """A reference that is ready once `actor` has finished the call it is running now (an actor that
    runs one call at a time takes the next only then), and fails if the actor dies first. The owner
    of the reference is the calling process: if that process dies, whoever waits on the reference gets
    OwnerDiedError."""
    return actor.__ray_ready__.remote()


def submitted_job_runtime_env() -> dict:
    """The runtime env of the Ray job this process is the entrypoint of (`ray job submit`), which Ray
    hands the entrypoint in an environment variable; {} outside a submitted job."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    return json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR) or "{}").get("runtime_env") or {}
