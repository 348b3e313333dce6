"""Cells that no node of a cluster can ever hold.

Ray never fails a request that no node can satisfy: on a fixed cluster the trial waits forever, on an
autoscaling one the autoscaler logs "no available node types can fulfill" and the trial still waits.
A sweep with a 16-GPU one-worker cell on cluster.yaml's 8-GPU nodes would sit pending, silently,
until someone looks. These checks say so before anything runs: `w2sweep validate --cluster` reads
the node types from a cluster.yaml, and `w2sweep run` those of the cluster it joined, where the
cluster tells them (`w2sweep.sweep.placement`).

No Ray import: this is about arithmetic on resource dicts, and validate runs without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import floor, inf
from pathlib import Path

import yaml

from w2sweep.config import ModelSpec, Resources, SweepConfig
from w2sweep.grid import uses_ray_train, worker_resources

# Only these are compared: a cell asks for nothing else (memory and custom resources stay the node's).
_ASKED = ("CPU", "GPU")


class ClusterFileError(Exception):
    """A --cluster file that is not a Ray cluster launcher config with node types."""


def node_types_from_cluster_yaml(path: str | Path) -> tuple[list[dict], int | None]:
    """`node_types_from_config` of the Ray cluster launcher config at `path` (validate --cluster)."""
    try:
        cluster = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClusterFileError(f"--cluster {path}: {e}") from None
    try:
        return node_types_from_config(cluster)
    except ClusterFileError as e:
        raise ClusterFileError(f"--cluster {path}: {e}") from None


def node_types_from_config(cluster: object) -> tuple[list[dict], int | None]:
    """The node types of a Ray cluster launcher (or autoscaler) config dict, as `unplaceable_students`
    takes them, and its `max_workers` (worker nodes of all types together; None if unset). The head
    is one node of its type, marked `head` (no worker cap applies to it): it holds cells unless its
    resources say otherwise (cluster.yaml's `CPU: 0` head holds none)."""
    types = cluster.get("available_node_types") if isinstance(cluster, dict) else None
    if not isinstance(types, dict) or not types:
        raise ClusterFileError("no available_node_types (expected a Ray cluster launcher config)")
    head = cluster.get("head_node_type")
    node_types = []
    for name, spec in types.items():
        resources = (spec or {}).get("resources")
        if not isinstance(resources, dict):
            raise ClusterFileError(f"node type {name!r} sets no resources")
        count = 1 if name == head else spec.get("max_workers", cluster.get("max_workers", 2))
        node_types.append({"name": name, "resources": resources, "max_workers": count, "head": name == head})
    return node_types, cluster.get("max_workers")


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> int:
    """How many `bundle`s one node with `node`'s resources holds at once."""
    counts = [floor(node.get(name, 0) / amount + 1e-9) for name, amount in bundle.items() if amount > 0]
    return min(counts) if counts else 1


def _describe(resources: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {resources.get(k, 0):g}" for k in _ASKED) + "}"


def _largest(node_types: Sequence[Mapping]) -> str:
    """The node type with the most GPUs (then CPUs), as the message names it."""
    if not node_types:
        return "none: the cluster has no node types"
    top = max(node_types, key=lambda t: tuple(t["resources"].get(k, 0) for k in ("GPU", "CPU")))
    name = f"{top['name']} " if top.get("name") else ""
    return f"{name}{_describe(top['resources'])}"


def _count(node_type: Mapping) -> float:
    """How many nodes of a type there can be: 1 if unset (a node of a running cluster), unbounded for
    None or -1 (the autoscaler's ClusterConfig says -1)."""
    count = node_type.get("max_workers", 1)
    return inf if count is None or count < 0 else count


def _slots(bundle: Mapping[str, float], node_types: Sequence[Mapping], max_nodes: int | None) -> int:
    """How many `bundle`s the cluster holds at once at its largest: the node types that fit it, each
    at its max count (1 where unset: a node of a running cluster), the roomiest first, at most
    `max_nodes` worker nodes in all (the head is not one)."""
    per_node = sorted(((_fits(bundle, t["resources"]), _count(t), bool(t.get("head"))) for t in node_types),
                      reverse=True)
    total, left = 0, max_nodes
    for fit, count, head in per_node:
        if fit == 0:
            break
        take = count if left is None or head else min(count, left)
        total += fit * take
        if left is not None and not head:
            left -= take
    return total


def unplaceable_students(students: Sequence[ModelSpec], default: Resources, node_types: Sequence[Mapping],
                         max_nodes: int | None = None) -> list[str]:
    """One line per student whose cells no cluster of `node_types` can ever hold; empty if all fit.

    `node_types`: dicts with `resources` ({"CPU": 8, "GPU": 1, ...}), optionally `max_workers` (how
    many such nodes there can be; 1 if unset, unbounded if None or -1), `name`, and `head` (true for
    the head's type, which `max_nodes` does not count). `max_nodes` caps the worker nodes of all
    types together (cluster.yaml's top-level max_workers), None for no cap.

    From a joined cluster, `w2sweep.sweep.placement` finds them: the node types an autoscaler published
    to the GCS or was started with (`w2sweep.raycompat`), or, for the local cluster a run starts, one
    dict per alive node, `{"resources": node["Resources"]}` of `ray.nodes()`.

    The rule: a one-worker cell's {CPU, GPU} must fit one node type. A Ray Train cell's per-worker
    bundle must fit one node type, and its num_workers bundles must fit at once on the nodes of the
    types that hold a bundle, each type at its max count: Ray Train starts all workers together.
    """
    problems = []
    for student in students:
        bundle = {k: v for k, v in worker_resources(student, default).items() if k in _ASKED}
        workers = student.num_workers
        asks = f"{workers} worker{'s' if workers > 1 else ''} x {_describe(bundle)}"
        fitting = [t for t in node_types if _fits(bundle, t["resources"])]
        if not fitting:
            problems.append(f"student {student.label!r} asks {asks}: no node type holds one "
                            f"(largest: {_largest(node_types)})")
        elif uses_ray_train(student) and (slots := _slots(bundle, fitting, max_nodes)) < workers:
            problems.append(f"student {student.label!r} asks {asks}: the cluster's nodes hold at most {slots} "
                            f"at once (largest node type: {_largest(node_types)})")
    return problems


def cluster_errors(where: str, students: Sequence[ModelSpec], default: Resources, node_types: Sequence[Mapping],
                   max_nodes: int | None = None) -> list[str]:
    """`unplaceable_students` as the error lines that `validate --cluster` and `run` print:
    `cluster error: WHERE: student ...`, WHERE naming the cluster (a file, an address)."""
    lines = unplaceable_students(students, default, node_types, max_nodes)
    return [f"cluster error: {where}: {line}" for line in lines]


def cluster_file_problems(config: SweepConfig, path: str | Path) -> list[str]:
    """`w2sweep validate --cluster`: one line per student of `config` that no cluster started from the
    cluster launcher config at `path` can hold, or the line saying why `path` is no such config."""
    try:
        node_types, max_nodes = node_types_from_cluster_yaml(path)
    except ClusterFileError as e:
        return [f"cluster error: {e}"]
    return cluster_errors(str(path), config.students, config.resources, node_types, max_nodes)
