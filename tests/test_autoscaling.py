"""cluster.yaml's autoscaling, proven on this machine: a Ray head with the node types of cluster.yaml
(their logical CPUs and GPUs, fewer of each), run by Ray's fake multi-node provider, which starts and
stops real raylets here where the AWS provider would start and stop instances. A tiny sweep of
one-GPU and two-GPU cells joins it through RAY_ADDRESS, exactly as a sweep joins a real cluster.

GPUs are logical: Ray hands them out, the tiny models train on the CPU. What this proves is what the
cluster launcher does with cluster.yaml: nothing runs on the head, the autoscaler starts workers of a
type that holds the pending cells, every cell finishes once, and idle workers go back to zero.

The cluster is private to the test (its own port and temp dir) and is torn down by the ids of the
processes it started: `ray stop` would also stop the other Ray clusters running on this machine."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import REPO, free_port, tiny_config

pytestmark = pytest.mark.ray  # ~90 s on 2 cores: part of `make test`

# This machine has 2 cores: at most this many workers of each cluster.yaml type, and in all.
LOCAL_MAX_PER_TYPE = 2
LOCAL_MAX_WORKERS = 3
IDLE_TIMEOUT_MINUTES = 0.1  # cluster.yaml's 10 minutes, shortened to 6 s
OBJECT_STORE_BYTES = 100 * 2**20  # per node; Ray's default (30% of memory) for every fake node would not fit


def fake_cluster_config(cluster: dict) -> dict:
    """cluster.yaml's node types and scaling settings for the fake multi-node provider: the same
    logical resources and min_workers, max_workers capped to this machine, the idle timeout shortened."""
    head_type = cluster["head_node_type"]
    workers = {
        name: {"resources": {**t["resources"], "object_store_memory": OBJECT_STORE_BYTES},
               "node_config": {}, "min_workers": t["min_workers"],
               "max_workers": min(t["max_workers"], LOCAL_MAX_PER_TYPE)}
        for name, t in cluster["available_node_types"].items() if name != head_type}
    head = {"resources": cluster["available_node_types"][head_type]["resources"], "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": "w2sweep-fake",
        "max_workers": min(cluster["max_workers"], LOCAL_MAX_WORKERS),
        "upscaling_speed": cluster["upscaling_speed"],
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "available_node_types": {"ray.head.default": head, **workers},
        "head_node_type": "ray.head.default",
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class FakeCluster:
    """`ray start --head --block` with the fake provider, in a session of its own. (Ray's
    `AutoscalingCluster` does the same, but runs `ray stop --force` before and after, and its base
    config is missing from the Ray wheel.)"""

    def __init__(self, config: dict, workdir: Path):
        import ray._private.services

        self.ip = ray._private.services.get_node_ip_address()
        self.address = f"{self.ip}:{free_port()}"
        config["provider"]["gcs_address"] = self.address  # the fake workers' raylets join this head
        path = workdir / "autoscaling.json"
        path.write_text(json.dumps(config))
        head = config["available_node_types"]["ray.head.default"]["resources"]
        self._temp_dir = tempfile.mkdtemp(prefix="w2a", dir="/tmp")  # short: Ray's socket paths live under it
        # Token authentication, as cluster.yaml's nodes run, with a token of the test's own (never ~/.ray's).
        token = workdir / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        env = dict(os.environ, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_USAGE_STATS_ENABLED="0",
                   **self.auth_env)
        env.pop("RAY_ADDRESS", None)
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               f"--port={self.address.rsplit(':', 1)[1]}", f"--autoscaling-config={path}",
               f"--num-cpus={head.get('CPU', 0)}", f"--num-gpus={head.get('GPU', 0)}",
               f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={self._temp_dir}",
               "--include-dashboard=false", "--disable-usage-stats"]
        self._log = open(workdir / "head.log", "w")
        self._head = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_gcs()

    def _wait_for_gcs(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        host, port = self.address.rsplit(":", 1)
        while time.monotonic() < deadline:
            assert self._head.poll() is None, "the fake cluster's head exited; see head.log"
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"no GCS at {self.address} after {timeout} s")

    def stop(self) -> None:
        """Every process this cluster started (the head's, the fake workers' raylets, their workers),
        by pid: SIGTERM, then SIGKILL for what is left after 15 s."""
        procs = [self._head, *psutil.Process(self._head.pid).children(recursive=True)]
        procs = [p if isinstance(p, psutil.Process) else psutil.Process(p.pid) for p in procs]
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self._head.wait(timeout=15)
        self._log.close()
        shutil.rmtree(self._temp_dir, ignore_errors=True)


class NodeSampler(threading.Thread):
    """The cluster's alive worker nodes (resources of each) once a second, from a driver of its own."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, list[dict]]] = []
        self._done = threading.Event()

    def workers(self) -> list[dict]:
        import ray

        return [n["Resources"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" not in n["Resources"]]

    def run(self) -> None:
        while not self._done.wait(1.0):
            self.samples.append((time.monotonic(), self.workers()))

    def stop(self) -> None:
        self._done.set()
        self.join()


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state

    cluster = FakeCluster(fake_cluster_config(yaml.safe_load((REPO / "cluster.yaml").read_text())), tmp_path)
    try:
        for name, value in cluster.auth_env.items():
            monkeypatch.setenv(name, value)  # this test's driver (the sampler) and the sweep's
        reset_auth_token_state()  # Ray caches the auth mode and token per process
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()
        monkeypatch.undo()
        reset_auth_token_state()


def test_config_keeps_cluster_yaml_node_types():
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    fake = fake_cluster_config(cluster)
    head = fake["available_node_types"].pop("ray.head.default")
    assert head["resources"] == cluster["available_node_types"][cluster["head_node_type"]]["resources"]
    assert "CPU" in head["resources"] and head["resources"]["CPU"] == 0 and not head["resources"].get("GPU")
    originals = {n: t for n, t in cluster["available_node_types"].items() if n != cluster["head_node_type"]}
    assert fake["available_node_types"].keys() == originals.keys()
    for name, t in fake["available_node_types"].items():
        assert {k: v for k, v in t["resources"].items() if k != "object_store_memory"} == originals[name]["resources"]
        assert t["min_workers"] == 0 and 1 <= t["max_workers"] <= originals[name]["max_workers"]


def test_autoscaler_starts_workers_for_pending_cells_and_stops_them_when_idle(fake_cluster, tmp_path, write_config):
    storage = tmp_path / "store"
    students = [dict(model="tiny-bert", name="one-gpu", epochs=1, max_length=32),
                dict(model="tiny-bert", name="two-gpu", epochs=1, max_length=32, gpus_per_worker=2)]
    config = tiny_config(str(storage), students=students, budgets=[16], spending_fractions=[0, 1],
                         resources=dict(cpu=1, gpu=1), weak_supervisors=[dict(model="tiny-bert", epochs=1)])
    path = write_config(config)
    sampler = NodeSampler()
    assert sampler.workers() == []  # min_workers 0: nothing runs (or bills) before cells are pending
    sampler.start()
    env = dict(os.environ, RAY_ADDRESS=fake_cluster.address, PYTHONPATH=str(REPO / "platform"))
    try:
        run = subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", str(path)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        ran_until = time.monotonic()
        sampler.stop()
    # Idle workers go back to min_workers (0) after the idle timeout (6 s) and an autoscaler round or two.
    deadline = ran_until + 90
    while (left := sampler.workers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "4 cells finished, 0 already done, 0 failed (of 4)" in run.stdout

    during = [nodes for t, nodes in sampler.samples if t <= ran_until]
    assert max(len(nodes) for nodes in during) > 0
    gpu_types = {n.get("GPU", 0) for nodes in during for n in nodes}
    assert 8 in gpu_types  # the two-GPU cells need cluster.yaml's 8-GPU type: the autoscaler chose it
    assert left == [], f"{len(left)} workers still up {time.monotonic() - ran_until:.0f} s after the sweep"

    results = [json.loads(p.read_text()) for p in sorted((storage / "tiny" / "cells").glob("*.json"))]
    assert len(results) == 4
    assert sorted((r["student"], r["spending_fraction"]) for r in results) == [
        ("one-gpu", 0), ("one-gpu", 1), ("two-gpu", 0), ("two-gpu", 1)]
    assert all(r["status"] == "ok" for r in results)


def test_run_refuses_a_cell_no_node_type_of_the_autoscaling_config_holds(fake_cluster, tmp_path, write_config):
    """The autoscaler was started with cluster.yaml's node types (as `ray up` starts it): `run` reads
    them on the head and refuses a 16-GPU cell in one line, before any cell runs or a node starts."""
    storage = tmp_path / "store"
    students = [dict(model="tiny-bert", name="one-gpu", epochs=1, max_length=32),
                dict(model="tiny-bert", name="huge", epochs=1, max_length=32, gpus_per_worker=16)]
    path = write_config(tiny_config(str(storage), students=students, budgets=[16], spending_fractions=[1],
                                    resources=dict(cpu=1, gpu=1)))
    env = dict(os.environ, RAY_ADDRESS=fake_cluster.address, PYTHONPATH=str(REPO / "platform"))
    refused = subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", str(path)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    gpu_8x = yaml.safe_load((REPO / "cluster.yaml").read_text())["available_node_types"]["gpu-8x"]["resources"]
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines() == [
        f"cluster error: RAY_ADDRESS={fake_cluster.address} (node types of its autoscaling config): student 'huge' "
        f"asks 1 worker x {{CPU: 1, GPU: 16}}: no node type holds one (largest: gpu-8x {{CPU: {gpu_8x['CPU']}, "
        f"GPU: {gpu_8x['GPU']}}})"]
    assert not storage.exists() or all(p.suffix == ".log" for p in storage.rglob("*.*"))
    assert NodeSampler().workers() == []  # no node was started for it
