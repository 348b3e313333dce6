"""Run a sweep on Ray: every unfinished cell as a Ray Tune trial of the plain `run_cell` function,
which first makes sure of its own prerequisites under the run's claims (`w2sweep.prerequisites`).

  cluster        joining or starting Ray, address checks, the workers' runtime env and storage env
  prerequisites  the run's claims actor: which process computes each prerequisite key
  progress       the Tune callback: progress bar and the sweep's Prometheus metrics
  run            run_sweep, the trainable, the report
  checkpoints    a one-worker cell's training state in the sweep's storage, to resume from
  heartbeat      running/<cell_id>.json, refreshed while the cell runs
  logs           Ray's log lines to a file, not the console
  placement      refusing, before any cell runs, cells the joined cluster can never hold

With `w2sweep.claims`, `w2sweep.distributed`, `w2sweep.telemetry` and `w2sweep.raycompat`, the only
modules of the run path that import Ray.
"""

from w2sweep.sweep.cluster import (ClusterError, _init_ray, _runtime_env, keep_credentials_out_of_runtime_envs,
                                   shut_down, storage_env)
from w2sweep.sweep.prerequisites import prerequisites_to_compute
from w2sweep.sweep.run import SweepReport, config_snapshot, run_cell, run_cell_on_workers, run_sweep, running_key

__all__ = ["ClusterError", "SweepReport", "_init_ray", "_runtime_env", "config_snapshot",
           "keep_credentials_out_of_runtime_envs", "prerequisites_to_compute", "run_cell", "run_cell_on_workers",
           "run_sweep", "running_key", "shut_down", "storage_env"]
