"""Refusing, before any cell runs, the cells that the cluster a run joined can never hold
(`w2sweep.capacity`, the rule `validate --cluster` applies to a cluster.yaml): Ray leaves such a trial
pending forever, without an error.

What a cluster can grow to is known in three cases, tried in this order:
  - the local cluster the run started itself (no RAY_ADDRESS): this machine, which no other node
    joins, so its alive nodes are all it will ever have;
  - the cluster's autoscaler published its node types to the GCS (`raycompat.reported_node_types`);
  - the autoscaler was started with a cluster launcher config, as `ray up` starts it: that config,
    read on the head (`raycompat.autoscaling_config_on_head`).
Anything else runs unchecked, as before: a cluster started by hand may still be joined by more nodes,
and KubeRay's autoscaler reads its node types from Kubernetes, where the driver does not look.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import ray

from w2sweep.capacity import ClusterFileError, cluster_errors, node_types_from_config
from w2sweep.config import SweepConfig
from w2sweep.grid import Cell
from w2sweep.raycompat import autoscaling_config_on_head, reported_node_types
from w2sweep.sweep.cluster import ClusterError

log = logging.getLogger(__name__)


def cluster_node_types(*, started_here: bool) -> tuple[str, list[dict], int | None] | None:
    """(how the error lines name the cluster, its node types, its cap on worker nodes) as
    `w2sweep.capacity.unplaceable_students` takes them, or None where the cluster does not tell."""
    if started_here:
        return ("the local Ray cluster (no RAY_ADDRESS)",
                [{"resources": node["Resources"]} for node in ray.nodes() if node["Alive"]], None)
    address = os.environ.get("RAY_ADDRESS")
    where = f"RAY_ADDRESS={address}" if address else f"the cluster at {ray.get_runtime_context().gcs_address}"
    if (types := reported_node_types()) is not None:
        return f"{where} (node types its autoscaler reports)", types, None
    if (config := autoscaling_config_on_head()) is not None:
        try:
            types, max_nodes = node_types_from_config(config)
        except ClusterFileError as e:
            log.warning("not checking which cells the cluster can hold: its autoscaling config has %s", e)
            return None
        return f"{where} (node types of its autoscaling config)", types, max_nodes
    return None


def refuse_unplaceable(config: SweepConfig, todo: Sequence[Cell], *, started_here: bool) -> None:
    """Raise ClusterError, one line per student of `todo` that no node of the joined cluster can
    ever hold (naming what it asks and the largest node type), where the cluster tells its node
    types; `started_here`: the run started this (local) cluster itself."""
    try:
        found = cluster_node_types(started_here=started_here)
    except Exception as e:  # noqa: BLE001 -- a check that cannot tell must not stop a run that may fit
        log.warning("not checking which cells the cluster can hold: %s: %s", type(e).__name__, e)
        return
    if found is None:
        log.info("the cluster does not tell its node types: cells it can never hold would wait")
        return
    where, node_types, max_nodes = found
    students = list({cell.student.label: cell.student for cell in todo}.values())
    if lines := cluster_errors(where, students, config.resources, node_types, max_nodes):
        raise ClusterError("\n".join(lines))
