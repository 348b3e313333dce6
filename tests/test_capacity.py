"""Cells no node type can hold: the rule (`w2sweep.capacity.unplaceable_students`) and
`w2sweep validate --cluster`, which refuses them in one line each before anything runs."""

import subprocess
import sys

import pytest
import yaml

from conftest import REPO, tiny_config
from w2sweep.capacity import ClusterFileError, node_types_from_cluster_yaml, unplaceable_students
from w2sweep.config import ModelSpec, Resources, load_config

GPU_1X = {"name": "gpu-1x", "resources": {"CPU": 8, "GPU": 1}, "max_workers": 16}
GPU_8X = {"name": "gpu-8x", "resources": {"CPU": 96, "GPU": 8}, "max_workers": 2}
HEAD = {"name": "head", "resources": {"CPU": 0}, "max_workers": 1, "head": True}
TYPES = [HEAD, GPU_1X, GPU_8X]


def student(**fields) -> ModelSpec:
    return ModelSpec(model="tiny-bert", name="s", **fields)


@pytest.mark.parametrize("fields, default", [
    (dict(), Resources(cpu=4, gpu=1)),
    (dict(gpus_per_worker=8), Resources(cpu=4, gpu=1)),  # a whole 8-GPU node
    (dict(cpus_per_worker=96, gpus_per_worker=0), Resources()),  # CPU-only, on the largest node
    (dict(num_workers=4, gpus_per_worker=4), Resources()),  # 2 bundles per 8-GPU node, 2 nodes
    (dict(num_workers=32, gpus_per_worker=1, cpus_per_worker=8), Resources()),  # 16 + 2 x 8 one-GPU slots
    (dict(gpus_per_worker=0.5), Resources()),
])
def test_cells_that_fit_pass(fields, default):
    assert unplaceable_students([student(**fields)], default, TYPES) == []


def test_one_worker_cell_larger_than_every_node_type_is_named_with_the_largest_type():
    (line,) = unplaceable_students([student(gpus_per_worker=16)], Resources(cpu=1, gpu=1), TYPES)
    assert line == ("student 's' asks 1 worker x {CPU: 1, GPU: 16}: no node type holds one "
                    "(largest: gpu-8x {CPU: 96, GPU: 8})")


def test_cpu_and_gpu_must_fit_the_same_node_type():
    # 9 CPUs: only gpu-8x has them; 2 GPUs: only gpu-8x too. 100 CPUs + 1 GPU: nowhere.
    assert unplaceable_students([student(cpus_per_worker=9, gpus_per_worker=2)], Resources(), TYPES) == []
    assert unplaceable_students([student(cpus_per_worker=100, gpus_per_worker=1)], Resources(), TYPES)
    assert unplaceable_students([student()], Resources(cpu=9, gpu=1), [HEAD, GPU_1X])


def test_ray_train_group_must_fit_at_once_within_the_max_counts():
    s = student(num_workers=5, gpus_per_worker=4)  # 2 per gpu-8x node x 2 nodes = 4 < 5
    (line,) = unplaceable_students([s], Resources(), TYPES)
    assert line.startswith("student 's' asks 5 workers x {CPU: 1, GPU: 4}: the cluster's nodes hold at most 4 at once")
    assert unplaceable_students([student(num_workers=4, gpus_per_worker=4)], Resources(), TYPES) == []
    # Its bundle itself must fit a node type, as a one-worker cell's.
    (line,) = unplaceable_students([student(num_workers=2, gpus_per_worker=16)], Resources(), TYPES)
    assert "no node type holds one" in line


def test_cluster_wide_node_cap_limits_ray_train_groups():
    s = student(num_workers=10, gpus_per_worker=1, cpus_per_worker=8)
    assert unplaceable_students([s], Resources(), TYPES) == []  # 2 x 8 on gpu-8x, 16 x 1 on gpu-1x
    assert unplaceable_students([s], Resources(), TYPES, max_nodes=1)  # one gpu-8x node: 8 slots
    assert unplaceable_students([s], Resources(), TYPES, max_nodes=2) == []  # two: 16 slots
    # A head that holds cells is no worker: the cap leaves it out.
    big_head = {"name": "head", "resources": {"CPU": 16, "GPU": 2}, "max_workers": 1, "head": True}
    assert unplaceable_students([s], Resources(), [big_head, GPU_8X], max_nodes=1) == []  # 8 + 2 = 10
    assert unplaceable_students([student(num_workers=11, gpus_per_worker=1, cpus_per_worker=8)], Resources(),
                                [big_head, GPU_8X], max_nodes=1)


def test_unset_max_count_means_one_node_of_a_running_cluster():
    nodes = [{"resources": {"CPU": 8, "GPU": 1}}, {"resources": {"CPU": 8, "GPU": 1}}]
    assert unplaceable_students([student(num_workers=2, gpus_per_worker=1)], Resources(), nodes) == []
    (line,) = unplaceable_students([student(num_workers=3, gpus_per_worker=1)], Resources(), nodes)
    assert "at most 2 at once" in line and "largest node type: {CPU: 8, GPU: 1}" in line


def test_unbounded_node_types_hold_any_group():
    unbounded = [{"resources": {"CPU": 8, "GPU": 1}, "max_workers": -1}, {"resources": {"CPU": 1}, "max_workers": None}]
    assert unplaceable_students([student(num_workers=1000, gpus_per_worker=1)], Resources(), unbounded) == []
    assert unplaceable_students([student(num_workers=10, gpus_per_worker=1)], Resources(), unbounded, max_nodes=9)
    assert unplaceable_students([student(gpus_per_worker=2)], Resources(), unbounded)


def test_head_of_cluster_yaml_holds_no_cells_and_worker_counts_are_read():
    types, max_nodes = node_types_from_cluster_yaml(REPO / "cluster.yaml")
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert max_nodes == cluster["max_workers"]
    by_name = {t["name"]: t for t in types}
    assert by_name[cluster["head_node_type"]]["max_workers"] == 1 and by_name[cluster["head_node_type"]]["head"]
    for name, spec in cluster["available_node_types"].items():
        assert by_name[name]["resources"] == spec["resources"]
        if name != cluster["head_node_type"]:
            assert by_name[name]["max_workers"] == spec["max_workers"]
    # Every shipped sweep fits the shipped cluster.
    for path in sorted((REPO / "jobs" / "configs").glob("*.yaml")):
        config = load_config(path)
        assert unplaceable_students(config.students, config.resources, types, max_nodes) == [], path.name


def test_not_a_cluster_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: not-a-cluster\n")
    with pytest.raises(ClusterFileError, match="no available_node_types"):
        node_types_from_cluster_yaml(path)


def validate(*args, cwd):
    return subprocess.run([sys.executable, "-m", "w2sweep.cli", "validate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_validate_cluster_refuses_in_one_line_and_exit_2(tmp_path, write_config):
    students = [dict(model="tiny-bert", name="fits"), dict(model="tiny-bert", name="huge", gpus_per_worker=16)]
    path = write_config(tiny_config(str(tmp_path / "store"), students=students, resources=dict(cpu=1, gpu=1)))
    bad = validate(str(path), "--cluster", str(REPO / "cluster.yaml"), cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stdout == ""
    (line,) = bad.stderr.strip().splitlines()
    assert "student 'huge' asks 1 worker x {CPU: 1, GPU: 16}" in line and "gpu-8x {CPU: 96, GPU: 8}" in line

    path = write_config(tiny_config(str(tmp_path / "store"), students=students[:1], resources=dict(cpu=1, gpu=1)))
    ok = validate(str(path), "--cluster", str(REPO / "cluster.yaml"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("tiny: ")
    not_cluster = validate(str(path), "--cluster", str(path), cwd=tmp_path)
    assert not_cluster.returncode == 2 and "no available_node_types" in not_cluster.stderr
