"""`w2sweep run` refuses, before any cell runs, the cells that the cluster it joined can never hold:
one line per student naming what it asks and the largest node type, exit code 2, nothing written
(tried before: the trial waited forever). The cluster tells its node types through its autoscaler,
here a plain head to which the test reports a `ClusterConfig`, as an autoscaler that publishes one
does (cluster.yaml's autoscaler, which is started with its config instead: tests/test_autoscaling.py);
the local cluster a run starts tells them by its nodes. A cluster that tells nothing runs as before."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, free_port, ray_head, tiny_config

pytestmark = pytest.mark.ray

HUGE = dict(model="tiny-bert", name="huge", epochs=1, max_length=32, gpus_per_worker=16)
NODE_TYPES = [dict(name="cpu-2x", resources={"CPU": 2}, max_count=-1),
              dict(name="gpu-8x", resources={"CPU": 96, "GPU": 8}, max_count=2)]


def ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A plain head on 127.0.0.1 (2 CPUs, no autoscaler), with token authentication and a token of
    its own (never ~/.ray's): its address, and the environment a client of it runs with."""
    port = free_port()
    token = tmp_path_factory.mktemp("head") / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(REPO / "platform"))
    with ray_head(ray_bin(), port, env, "--num-cpus=2", "--num-gpus=0", prefix="/tmp/w2p", wait_s=180) as address:
        yield address, env


def python(code: str, env: dict) -> str:
    """`code` run by a Python of its own (this process never joins the head): its stdout."""
    said = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert said.returncode == 0, said.stderr[-3000:]
    return said.stdout


def report_node_types(head, node_types: list[dict]) -> None:
    """What an autoscaler that publishes its node types does: a ClusterConfig in the GCS."""
    address, env = head
    python("from ray._raylet import GcsClient; from ray.core.generated import autoscaler_pb2 as pb; "
           f"config = pb.ClusterConfig(node_group_configs=[pb.NodeGroupConfig(**t) for t in {node_types!r}]); "
           f"GcsClient(address={address!r}).report_cluster_config(config.SerializeToString())", env)


def run(config: Path, *, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", str(config)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def nothing_written(storage: Path) -> bool:
    """No sweep.yaml, result, failure or heartbeat: at most the run's log of Ray's start-up lines."""
    return not storage.exists() or all(p.suffix == ".log" for p in storage.rglob("*.*"))


def test_a_cluster_started_by_hand_tells_nothing_until_its_autoscaler_reports_node_types(head):
    address, env = head
    probe = ("import ray; from w2sweep.sweep.placement import cluster_node_types; "
             f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
             "print(cluster_node_types(started_here=False))")
    assert python(probe, env).strip().splitlines()[-1] == "None"  # more nodes may still join: nothing to check
    report_node_types(head, NODE_TYPES)
    said = python(probe, env)
    assert "'gpu-8x'" in said and "node types its autoscaler reports" in said, said


def test_run_refuses_a_cell_no_reported_node_type_holds_in_one_line_before_any_cell_runs(head, tmp_path,
                                                                                          write_config):
    address, env = head
    report_node_types(head, NODE_TYPES)
    storage = tmp_path / "store"
    small = dict(model="tiny-bert", name="small", epochs=1, max_length=32)
    path = write_config(tiny_config(str(storage), students=[small, HUGE], budgets=[16], spending_fractions=[1]))
    refused = run(path, cwd=tmp_path, env={**env, "RAY_ADDRESS": address})
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert lines == [f"cluster error: RAY_ADDRESS={address} (node types its autoscaler reports): student 'huge' "
                     "asks 1 worker x {CPU: 1, GPU: 16}: no node type holds one (largest: gpu-8x {CPU: 96, GPU: 8})"]
    assert nothing_written(storage)


def test_run_goes_on_when_the_reported_node_types_hold_every_cell(head, tmp_path, write_config):
    address, env = head
    report_node_types(head, NODE_TYPES)
    storage = tmp_path / "store"
    student = dict(model="tiny-bert", name="small", epochs=1, max_length=32)
    path = write_config(tiny_config(str(storage), students=[student], budgets=[16], spending_fractions=[1],
                                    weak_supervisors=[dict(model="tiny-bert", epochs=1)]))
    ran = run(path, cwd=tmp_path, env={**env, "RAY_ADDRESS": address})
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert "1 cells finished, 0 already done, 0 failed (of 1)" in ran.stdout


def test_a_local_run_refuses_a_cell_this_machine_cannot_hold(tmp_path, write_config):
    storage = tmp_path / "store"
    path = write_config(tiny_config(str(storage), students=[{**HUGE, "gpus_per_worker": 1024}], budgets=[16],
                                    spending_fractions=[1]))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    refused = run(path, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO / "platform")})
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(
        "cluster error: the local Ray cluster (no RAY_ADDRESS): student 'huge' asks 1 worker x {CPU: 1, GPU: 1024}: "
        "no node type holds one (largest: {CPU: "), lines
    assert nothing_written(storage)


def test_each_trials_request_is_its_students_and_pickles_small(tmp_path):
    """Tune pickles the per-trial resource function into the trainable's actor class, which every trial
    process loads: it must not carry the cells (a closure over their JSON was 32 MiB at 10,000 cells)."""
    from ray import cloudpickle

    from w2sweep.config import parse_config
    from w2sweep.grid import expand_cells
    from w2sweep.sweep.run import _trial_resources

    students = [dict(model="tiny-bert", name="one-cpu", epochs=1), dict(model="tiny-bert", name="three-cpus",
                                                                      epochs=1, cpus_per_worker=3)]
    config = parse_config(tiny_config(str(tmp_path / "store"), students=students, seeds=list(range(20))))
    cells = expand_cells(config)
    request = _trial_resources(cells, config.resources)
    for cell in cells:
        want = {"CPU": 3} if cell.student.label == "three-cpus" else {"CPU": 1}
        assert request({"cell_id": cell.cell_id}).bundles == [want]
    per_cell = len(cloudpickle.dumps(request)) / len(cells)
    assert per_cell < 100, per_cell  # a cell id and a shared bundle; the cell's JSON is ~2 KB


@pytest.mark.ray
def test_the_cell_table_pickles_as_a_reference_and_reads_in_a_trial_process(local_ray):
    """tune.with_parameters unpickles every parameter at every trial: the run's cells travel as one
    ObjectRef, whatever their number, and a task reads them through it."""
    import ray
    from ray import cloudpickle

    from w2sweep.sweep.run import SharedCells

    cells = {f"{i:016x}": "x" * 2000 for i in range(5000)}  # ~10 MB of JSON
    shared = SharedCells(cells)
    assert len(cloudpickle.dumps(shared)) < 2000
    assert ray.get(ray.remote(lambda table, key: table[key]).remote(shared, f"{4321:016x}")) == "x" * 2000
    assert len(shared) == 5000 and shared[f"{7:016x}"] == cells[f"{7:016x}"]
