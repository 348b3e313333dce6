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


@pytest.mark.ray
def test_a_cluster_config_reported_to_the_gcs_is_read_back_as_node_types(local_ray):
    from ray.core.generated import autoscaler_pb2

    assert raycompat.reported_node_types() is None  # Ray's own autoscalers report none
    config = autoscaler_pb2.ClusterConfig(node_group_configs=[
        autoscaler_pb2.NodeGroupConfig(name="gpu-8x", resources={"CPU": 96, "GPU": 8}, max_count=2),
        autoscaler_pb2.NodeGroupConfig(name="cpu", resources={"CPU": 4}, max_count=-1)])
    ray._private.worker.global_worker.gcs_client.report_cluster_config(config.SerializeToString())
    assert raycompat.reported_node_types() == [
        {"name": "gpu-8x", "resources": {"CPU": 96, "GPU": 8}, "max_workers": 2},
        {"name": "cpu", "resources": {"CPU": 4}, "max_workers": -1}]


@pytest.mark.ray
def test_the_heads_monitor_runs_with_the_clusters_gcs_address_and_its_autoscaling_config_flag(local_ray):
    import inspect

    import ray._private.services
    from ray.autoscaler._private import monitor

    assert any(raycompat.HEAD_RESOURCE in n["Resources"] for n in ray.nodes() if n["Alive"])
    args, cwd = raycompat._monitor_process(ray.get_runtime_context().gcs_address)  # a local cluster has a monitor
    assert cwd.is_dir() and not any(a.startswith("--autoscaling-config=") for a in args)
    assert raycompat.autoscaling_config_on_head() is None  # started without an autoscaling config
    # `ray start --head --autoscaling-config=PATH` reaches the monitor's command line, and the monitor
    # reads PATH with `~` expanded (relative to its working directory).
    assert '"--autoscaling-config=" + str(autoscaling_config)' in inspect.getsource(ray._private.services.start_monitor)
    assert "os.path.expanduser(args.autoscaling_config)" in inspect.getsource(monitor)


def test_the_monitor_config_is_read_from_its_command_line_and_working_directory(tmp_path):
    (tmp_path / "monitor.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "autoscaling.yaml").write_text("max_workers: 3\navailable_node_types: {}\n")
    fake = subprocess.Popen([sys.executable, str(tmp_path / "monitor.py"), "--gcs-address=203.0.113.9:6379",
                             "--autoscaling-config=autoscaling.yaml"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while raycompat._monitor_process("203.0.113.9:6379") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert raycompat._monitor_config("203.0.113.9:6379") == {"max_workers": 3, "available_node_types": {}}
        assert raycompat._monitor_config("192.0.2.7:6379") == {"max_workers": 3, "available_node_types": {}}
        assert raycompat._monitor_config("203.0.113.9:6380") is None  # another cluster's monitor
    finally:
        fake.kill()
        fake.wait()
