"""Every private Ray name w2sweep relies on, in one place (orchestration layer; ray is pinned in
pyproject.toml). Each has a test in tests/test_raycompat.py that fails loudly when a Ray upgrade
renames, retypes or changes it; nothing else in w2sweep reaches past Ray's public API.

  ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE   `drop_from_tune_trial_env`
  ray.train.v2._internal.constants.ENV_VARS_TO_PROPAGATE `propagate_to_train_controller`
  ray.util.metrics.Counter._record                       `record_zero`
  ActorHandle.__ray_ready__                              `ready_after_current_call`
  ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR  `submitted_job_runtime_env`
  ray._private.state.state.get_cluster_config            `reported_node_types`
  the head's "node:__internal_head__" resource, and the autoscaler monitor's command line
  (`ray._private.services.start_monitor`: monitor.py --gcs-address=... --autoscaling-config=PATH)
                                                         `autoscaling_config_on_head`
"""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def reported_node_types() -> list[dict] | None:
    """The node types that the cluster's autoscaler published to the GCS (`ClusterConfig`: autoscaler
    v2 setups that report one), as `w2sweep.capacity.unplaceable_students` takes them: `name`,
    `resources` and `max_workers` (the type's max count, -1 for unbounded). None where none was
    published: Ray's own autoscalers (v1, the default of `ray up`, and v2 in Ray 2.60) publish none."""
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [{"name": group.name, "resources": dict(group.resources), "max_workers": group.max_count}
            for group in config.node_group_configs]


HEAD_RESOURCE = "node:__internal_head__"  # every head node has 1 of it


def autoscaling_config_on_head(timeout_s: float = 60) -> dict | None:
    """The autoscaling config (a cluster launcher config dict: `available_node_types`, `max_workers`)
    that the autoscaler of the cluster this driver joined was started with, read on the head node by
    a zero-CPU task. `ray start --head --autoscaling-config=PATH` (what `ray up` runs, PATH being
    ~/ray_bootstrap_config.yaml) starts the autoscaler's monitor process with that flag and with the
    cluster's `--gcs-address`, whose port tells this cluster's monitor from another's. None where no
    monitor of this cluster on the head has the flag (a cluster started by hand, KubeRay's autoscaler
    in a container of its own), on a head without /proc, or when the task does not answer within
    `timeout_s` seconds."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    heads = [n["NodeID"] for n in ray.nodes() if n["Alive"] and HEAD_RESOURCE in n["Resources"]]
    if not heads:
        return None
    read = ray.remote(num_cpus=0, max_retries=0,
                      scheduling_strategy=NodeAffinitySchedulingStrategy(heads[0], soft=False))(_monitor_config)
    ref = read.remote(ray.get_runtime_context().gcs_address)
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.RayError:  # no answer in time, or the task or its worker failed: nothing known
        ray.cancel(ref, force=True)
        return None


def _monitor_config(gcs_address: str) -> dict | None:
    """On the head: the config file that this cluster's monitor process was started with, read as
    the monitor reads it (`~` expanded, a relative path against the monitor's working directory)."""
    import yaml

    if (found := _monitor_process(gcs_address)) is None:
        return None
    args, cwd = found
    path = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
    if path is None:
        return None
    try:
        return yaml.safe_load((cwd / os.path.expanduser(path)).read_text())
    except (OSError, yaml.YAMLError):
        return None


def _monitor_process(gcs_address: str) -> tuple[list[str], Path] | None:
    """The command line and working directory of the autoscaler monitor of the cluster at
    `gcs_address`, if it runs on this machine (several clusters may). Matched by the GCS port: the
    monitor may name the head by another of its addresses than the driver does."""
    port = gcs_address.rpartition(":")[2]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            if (any(a.startswith("--gcs-address=") and a.endswith(f":{port}") for a in args)
                    and any(a.endswith("monitor.py") for a in args)):
                return args, Path(os.readlink(proc / "cwd"))
        except OSError:  # the process ended, or is not ours to read
            continue
    return None
