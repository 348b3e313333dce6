"""Joining or starting the Ray cluster a sweep runs on, and what its workers need: the driver's
w2sweep and a few variables (the runtime env), and the driver's storage settings, which travel
through the object store instead of a runtime env that Ray would log.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import ray

from w2sweep.raycompat import drop_from_tune_trial_env, submitted_job_runtime_env

# Cells resolve relative paths (local datasets) against the directory the sweep was started from;
# Tune would otherwise move each trial into its own log directory first.
_WORKER_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "TOKENIZERS_PARALLELISM": "false",
               "RAY_USAGE_STATS_ENABLED": "0"}
_PACKAGE = Path(__file__).resolve().parents[1]  # platform/w2sweep


class ClusterError(Exception):
    """RAY_ADDRESS names no Ray cluster that answers, or the cluster can never hold some cells
    (`w2sweep.sweep.placement`): one line per problem."""

    @property
    def lines(self) -> list[str]:
        return str(self).splitlines()


def storage_env() -> dict[str, str]:
    """The driver's storage settings (``AWS_*``: endpoint, region, credentials) for the workers.

    They travel as a task argument through Ray's object store, not as runtime-env ``env_vars``: Ray
    writes runtime envs into its own log files, and credentials must never reach a log line.
    """
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def keep_credentials_out_of_runtime_envs() -> None:
    """Ray Tune copies the driver's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and session tokens into
    every trial actor's runtime env, which Ray writes into its log files. The trainable gets them
    from `storage_env` instead, so that copy is switched off (tests/test_raycompat.py, and
    tests/test_dashboards.py::test_drivers_storage_secret_reaches_no_log_and_no_stored_object, fail
    if a Ray upgrade brings it back)."""
    drop_from_tune_trial_env("AWS_")


def _runtime_env() -> dict:
    """What every worker of the sweep needs: the driver's own w2sweep (shipped as a py_module, so a
    job submitted with ``--working-dir .`` runs its checkout's code even though the package lives in
    platform/, off the workers' import path) and `_WORKER_ENV`.

    Inside a submitted job Ray merges this with the job's runtime env and refuses a field or variable
    set on both sides, so whatever the job already sets is left to the job.
    """
    job = submitted_job_runtime_env()
    env: dict = {}
    if "py_modules" not in job:
        env["py_modules"] = [str(_PACKAGE)]
    env_vars = {k: v for k, v in _WORKER_ENV.items() if k not in (job.get("env_vars") or {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def _check_cluster_address(address: str) -> None:
    """Fail at once when `address` is HOST:PORT and nothing listens there: `ray.init` would retry for
    minutes (a typo, a stopped head). Ray client (``ray://``) and ``auto`` addresses are left to
    `ray.init`, whose ConnectionError `_init_ray` turns into a ClusterError."""
    if "://" in address or address in ("auto", "local"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"cluster error: RAY_ADDRESS={address!r}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379), "
                           "'auto', or unset to start a local cluster")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ClusterError(f"cluster error: RAY_ADDRESS={address}: no Ray cluster answers there ({e.strerror or e}); start "
                           "one with `ray start --head`, or unset RAY_ADDRESS to start a local cluster") from None


# The driver's storage secrets: a local cluster's processes would inherit them (and Ray Core, the
# dashboard agent or a task could log them); the trials get them as a task argument (`storage_env`).
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _init_ray(*, keep_credentials: bool = False) -> bool:
    """Join the cluster named by RAY_ADDRESS (ClusterError if none answers there), or start a local one
    for this process; True when it started one (False when it joined one, or Ray was already up).
    Never join some other local cluster by accident: ``address=None`` would attach to any head
    running on this machine.

    A local cluster's processes start without the driver's `CREDENTIALS`, unless `keep_credentials`:
    a Ray Train cell on an s3:// root needs them in the Train controller, a Ray actor that none of
    w2sweep's code runs in, which writes its checkpoint state to the sweep's storage through a pyarrow
    filesystem that finds credentials in its own process environment (README, "What happens when
    things fail")."""
    if ray.is_initialized():
        return False
    options = dict(logging_level=logging.WARNING,
                   log_to_driver=False,  # cell logs stay in Ray's log files; the driver shows the progress bar
                   include_dashboard=False)
    if os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        _check_cluster_address(address)
        with _native_stderr_captured() as captured:
            try:
                ray.init(address=address, runtime_env=_runtime_env(), **options)
            except ConnectionError as e:  # `auto` with no cluster on this machine, a Ray client server that does not answer
                error = str(e).splitlines()[0]
            else:
                error = None
            said = captured()
        if error is None:
            for line in said.splitlines():  # to the run's log file (`w2sweep.sweep.logs`), not the console
                logging.getLogger("ray").warning(line)
            return False
        if "InvalidAuthToken" in said or "Unauthenticated" in said:
            raise ClusterError(f"cluster error: RAY_ADDRESS={address}: the cluster refused this client's "
                               "authentication token: it runs with token authentication; set RAY_AUTH_MODE=token "
                               "and give the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
        raise ClusterError(f"cluster error: RAY_ADDRESS={address}: {error}")
    # A local cluster's processes start from this process's environment and run this interpreter on
    # this machine's files, so what the workers need travels in that environment instead of a runtime
    # env: nothing is packed at `ray.init`, and the claims actor starts in one of the workers Ray
    # prestarts with the cluster instead of a new process. (Trials start in new processes either way:
    # Tune gives every trial actor a runtime env of its own, `env_vars`.)
    with patch.dict(os.environ, _local_worker_env()):  # only while Ray starts its processes
        for name in () if keep_credentials else CREDENTIALS:
            os.environ.pop(name, None)  # patch.dict puts them back afterwards
        ray.init(address="local", **options)
    return True


@contextmanager
def _native_stderr_captured():
    """What Ray's C++ core writes to this process's stderr while joining a cluster (a refused token
    is one line a second for 20 s, then "Failed to connect"), into a temporary file: the console
    gets one line from `_init_ray`, and the text decides what that line says."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+", errors="replace") as file:
        os.dup2(file.fileno(), 2)

        def captured() -> str:
            sys.stderr.flush()
            file.seek(0)
            return file.read()

        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _local_worker_env() -> dict[str, str]:
    """`_WORKER_ENV`, and this w2sweep first on the import path, whatever put it on the driver's."""
    path = [str(_PACKAGE.parent), os.environ.get("PYTHONPATH", "")]
    return {**_WORKER_ENV, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def shut_down() -> None:
    """Disconnect from Ray, stopping the local cluster this process started, before the frontier step.

    Not on a thread beside the frontier: ray.shutdown destroys the core worker before it clears the
    Python worker's handle to it, and a Ray object the main thread's garbage collector frees in that
    window calls into the destroyed core worker, which ends the process at once with exit status 1
    and no message (Ray's QuickExit). A 1,070-cell `w2sweep run` did that after its cells, with its
    frontier unwritten. Unreachable Ray objects are collected first, while the core worker lives."""
    gc.collect()
    ray.shutdown()
