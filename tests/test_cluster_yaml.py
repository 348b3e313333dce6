"""cluster.yaml: valid for Ray's cluster launcher, and the cluster it describes is the one the README
promises (CPU-only on-demand head, on-demand driver node, spot GPU workers scaling from zero, token
auth, metrics on every node, dashboard only through port-forwarding)."""

import json
import re
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _gpus(node_type: dict) -> int:
    return node_type["resources"].get("GPU", 0)


def _is_spot(node_type: dict) -> bool:
    return node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"


def test_cluster_yaml_validates_against_rays_shipped_schema(cluster):
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))  # as `ray up` does: provider defaults filled in, then checked


def test_head_runs_no_training_and_is_on_demand(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert not _is_spot(head)
    assert "min_workers" not in head or head["min_workers"] == 0


def test_driver_node_type_is_on_demand_and_owns_the_driver_resource(cluster):
    drivers = {name: t for name, t in cluster["available_node_types"].items() if "driver" in t["resources"]}
    assert len(drivers) == 1
    (driver,) = drivers.values()
    assert not _is_spot(driver) and _gpus(driver) == 0
    assert driver["min_workers"] == 0 and driver["max_workers"] >= 1
    # The submit command in the header asks for it.
    assert """--entrypoint-resources '{"driver": 1}'""" in CLUSTER.read_text()


def test_gpu_workers_are_spot_and_scale_from_zero(cluster):
    gpu_types = {name: t for name, t in cluster["available_node_types"].items() if _gpus(t) > 0}
    assert sorted(_gpus(t) for t in gpu_types.values()) == [1, 8]
    for name, t in gpu_types.items():
        assert _is_spot(t), name
        assert t["min_workers"] == 0, name
        assert t["max_workers"] in range(1, cluster["max_workers"] + 1), name
        assert t["resources"]["CPU"] >= 1, name
    non_head = [t for n, t in cluster["available_node_types"].items() if n != cluster["head_node_type"]]
    assert sum(t["max_workers"] for t in non_head) <= cluster["max_workers"]
    assert cluster["idle_timeout_minutes"] in range(1, 61)


def test_image_is_the_ray_gpu_image_of_the_pinned_ray(cluster):
    image = cluster["docker"]["image"]
    assert "ray-ml" not in image
    match = re.fullmatch(r"rayproject/ray:(2\.60\.\d+)-py311-gpu", image)
    assert match, image
    assert match.group(1) == version("ray")  # nodes and clients must run the same Ray
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'ray[default,tune,train]=={version("ray")}' in pyproject


def test_setup_installs_w2sweep_with_pinned_dependencies(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "pip install" in setup and "~/w2sweep" in setup
    assert cluster["file_mounts"]["~/w2sweep"] == "."
    torch_pin = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert f"torch=={torch_pin}" in setup
    assert re.search(r"deepspeed==[\d.]+", setup)
    assert ".venv" in cluster["rsync_exclude"] and ".git" in cluster["rsync_exclude"]


def test_every_node_exports_metrics_and_uses_token_auth(cluster):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cluster[key])
        assert re.search(r"ray start .*--metrics-export-port=\d+", start), key
        assert "RAY_AUTH_MODE=token" in start, key
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_dashboard_is_reachable_only_through_port_forwarding(cluster):
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    text = CLUSTER.read_text()
    assert "0.0.0.0" not in text
    for t in cluster["available_node_types"].values():
        assert "SecurityGroupIds" not in t["node_config"]  # the launcher's group: SSH only from outside
    assert "ray dashboard cluster.yaml" in text


def test_every_top_level_choice_is_commented():
    lines = CLUSTER.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[a-z_]+:", line):
            assert "#" in line or lines[i - 1].startswith("#"), f"cluster.yaml:{i + 1}: {line!r} has no comment"
