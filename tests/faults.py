"""What the fault tests (test_faults.py) need: an audit of a sweep's stored results, a `w2sweep run`
process in a session of its own, and a Ray cluster of a head and worker nodes (`ray start --block`
processes on 127.0.0.1, each in its own process group and temp dir) whose nodes can be killed.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from conftest import REPO
from s3servers import free_port

PLATFORM = REPO / "platform"


# ---- the audit: lost, duplicated, corrupt, overwritten ---------------------------------------------


@dataclass
class Snapshot:
    """The result objects of a sweep at one moment: key -> (bytes, last-modified)."""

    results: dict[str, tuple[bytes, float]]
    running: list[str]  # heartbeats: cells whose trial was running (their work is lost at a fault)

    @property
    def cell_ids(self) -> set[str]:
        return {key.rsplit("/", 1)[1].removesuffix(".json") for key in self.results}


def snapshot(storage, sweep: str) -> Snapshot:
    from w2sweep import layout

    modified = storage.list_modified(layout.folder(sweep, layout.RESULTS), suffix=".json")
    results = {}
    for key, mtime in modified.items():
        try:
            results[key] = (storage.read_bytes(key), mtime)
        except FileNotFoundError:
            pass
    running = storage.list(layout.folder(sweep, layout.RUNNING), suffix=".json")
    return Snapshot(results, [k.rsplit("/", 1)[1].removesuffix(".json") for k in running])


@dataclass
class Audit:
    expected: list[str]  # the grid's cell ids
    lost: list[str] = field(default_factory=list)  # no result object
    duplicated: list[str] = field(default_factory=list)  # extra objects / an id stored under two keys
    corrupt: list[str] = field(default_factory=list)  # unparseable, id != key, predictions missing/bad
    overwritten: list[str] = field(default_factory=list)  # a result from before the fault was written again
    # Not a fault of the stored data by itself: cells whose predictions were written after their result,
    # i.e. trained again once done (the predictions must still agree with the result: else `corrupt`).
    predictions_after_result: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.corrupt or self.overwritten)

    def summary(self, **extra) -> str:
        counts = dict(cells=len(self.expected), lost=len(self.lost), duplicated=len(self.duplicated),
                      corrupt=len(self.corrupt), overwritten=len(self.overwritten),
                      predictions_after_result=len(self.predictions_after_result), **extra)
        details = {k: v for k, v in (("lost", self.lost), ("duplicated", self.duplicated),
                                     ("corrupt", self.corrupt), ("overwritten", self.overwritten)) if v}
        return f"{counts} {details if details else ''}"


def audit(storage, sweep: str, expected: list[str], before: Snapshot | None = None) -> Audit:
    """Every cell of `expected` must have exactly one result object, parsing through
    `results.read_cells`, whose cell_id is its key's, with readable predictions beside it; and each
    result stored in `before` must be byte-for-byte the same object (same bytes, same mtime)."""
    from w2sweep import layout
    from w2sweep.results import PREDICTION_COLUMNS, cell_keys, read_cells

    found = Audit(expected=sorted(expected))
    keys = cell_keys(storage, sweep)
    by_id = {key.rsplit("/", 1)[1].removesuffix(".json"): key for key in keys}
    found.lost = sorted(set(expected) - set(by_id))
    found.duplicated = sorted(set(by_id) - set(expected))  # objects for no cell of the grid

    table, unreadable = read_cells(storage, keys)
    found.corrupt += sorted(f"{key}: {why}" for key, why in unreadable.items())
    readable = [k for k in keys if k not in unreadable]
    assert len(table) == len(readable)
    stored_ids = list(table["cell_id"]) if len(table) else []
    for key, cell_id in zip(readable, stored_ids):
        if key != layout.result(sweep, cell_id):
            found.corrupt.append(f"{key}: holds cell_id {cell_id}")
    seen: dict[str, int] = {}
    for cell_id in stored_ids:
        seen[cell_id] = seen.get(cell_id, 0) + 1
    found.duplicated += sorted(f"{cell_id} x{n}" for cell_id, n in seen.items() if n > 1)

    rows = {cell_id: row for cell_id, row in zip(stored_ids, table.to_dict("records"))} if len(table) else {}
    predictions_modified = storage.list_modified(layout.folder(sweep, layout.PREDICTIONS), suffix=".parquet")
    results_modified = storage.list_modified(layout.folder(sweep, layout.RESULTS), suffix=".json")
    for cell_id in sorted(set(expected) & set(by_id)):
        key = layout.predictions(sweep, cell_id)
        try:
            frame = pd.read_parquet(io.BytesIO(storage.read_bytes(key)))
        except Exception as e:  # missing or unreadable: both corrupt a done cell
            found.corrupt.append(f"predictions of {cell_id}: {type(e).__name__}")
            continue
        if tuple(frame.columns) != PREDICTION_COLUMNS or len(frame) == 0:
            found.corrupt.append(f"predictions of {cell_id}: columns {tuple(frame.columns)}, {len(frame)} rows")
            continue
        row = rows.get(cell_id)
        if row is not None:  # the predictions are the result's: same test pool, same hits (float32 p: +-1)
            hits = int(((frame["p"] > 0.5) == (frame["gold"] == 1)).sum())
            if len(frame) != row["num_test"] or abs(hits - row["accuracy"] * row["num_test"]) > 1.01:
                found.corrupt.append(f"predictions of {cell_id}: {hits}/{len(frame)} hits, the result says "
                                     f"accuracy {row['accuracy']} of {row['num_test']}")
        if predictions_modified.get(key, 0) > results_modified.get(by_id[cell_id], float("inf")):
            found.predictions_after_result.append(cell_id)

    if before is not None:
        now = snapshot(storage, sweep)
        for key, (data, mtime) in sorted(before.results.items()):
            if now.results.get(key) != (data, mtime):
                found.overwritten.append(key)
    return found


def result_ids(storage, sweep: str) -> set[str]:
    from w2sweep.results import cell_keys

    return {key.rsplit("/", 1)[1].removesuffix(".json") for key in cell_keys(storage, sweep)}


def predictions_ids(storage, sweep: str) -> set[str]:
    from w2sweep import layout

    return {key.rsplit("/", 1)[1].removesuffix(".parquet")
            for key in storage.list(layout.folder(sweep, layout.PREDICTIONS), suffix=".parquet")}


def grid_ids(config_path: Path) -> list[str]:
    from w2sweep.config import load_config
    from w2sweep.grid import expand_cells

    return [c.cell_id for c in expand_cells(load_config(config_path))]


# ---- processes --------------------------------------------------------------------------------------


def sweep_env(**extra) -> dict[str, str]:
    """A `w2sweep run` environment: this worktree's package first, no AWS settings of the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLATFORM), os.environ.get("PYTHONPATH", "")) if p)
    env.setdefault("RAY_ADDRESS", "")
    return env | extra


def start_sweep(config: Path, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`w2sweep run CONFIG` in a session (process group) of its own, output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "w2sweep.cli", "run", str(config)], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def run_sweep_to_end(config: Path, cwd: Path, env: dict[str, str], log: Path, timeout: float = 900) -> tuple[int, str]:
    proc = start_sweep(config, cwd, env, log)
    try:
        proc.wait(timeout=timeout)
    finally:
        kill_tree(proc.pid)
    return proc.returncode, log.read_text(errors="replace")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, procs: list[psutil.Process] | None = None) -> None:
    """SIGKILL the process group of `pid` (a session leader we started), then every process of
    `procs` (its descendants, taken before) still alive: those that left the group."""
    procs = descendants(pid) if procs is None else procs
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}")
        time.sleep(poll)
    raise TimeoutError(f"not after {timeout} s: {what}")


class RayNodes:
    """A Ray cluster of `ray start --block` processes on 127.0.0.1: a head (no CPUs: no cell runs
    there, only the driver and the claims actor) and worker nodes, each in a process group and temp
    dir of its own, every port its own. `kill(node)` SIGKILLs a worker node's whole group (its raylet,
    object store and workers)."""

    def __init__(self, workdir: Path, *, workers: int = 2, cpus_per_worker: int = 1):
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[tuple[subprocess.Popen, str, list]] = []  # (proc, temp dir, log)
        # Token authentication, with a token of the test's own (never ~/.ray's): every node and the driver.
        token = workdir / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
            "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(PLATFORM)} | self.auth_env
        try:
            self._start_nodes(workers, cpus_per_worker)
        except BaseException:
            self.stop()
            raise

    def _start_nodes(self, workers: int, cpus_per_worker: int) -> None:
        self._start(["--head", f"--port={self.port}", f"--dashboard-port={free_port()}", "--num-cpus=0",
                     "--include-dashboard=false", "--disable-usage-stats"], "head")
        self._wait_for_gcs()
        self._wait_for_node("head")
        for i in range(workers):  # one at a time, again if it fails: Ray gives a raylet 30 s to register
            for attempt in range(3):
                self._start([f"--address={self.address}", f"--num-cpus={cpus_per_worker}"], f"worker{i}")
                try:
                    self._wait_for_node(f"worker{i}")
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
                    proc, temp, log = self.nodes.pop()
                    kill_tree(proc.pid, descendants(proc.pid))
                    log.close()
                    shutil.rmtree(temp, ignore_errors=True)

    def _start(self, args: list[str], name: str) -> None:
        temp = tempfile.mkdtemp(prefix=f"w2f{name[0]}", dir="/tmp")  # short: socket paths live under it
        ports = [f"--{flag}={free_port()}" for flag in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")]
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
               f"--temp-dir={temp}", f"--object-store-memory={100 * 2**20}", *ports, *args]
        log = open(self.workdir / f"{name}.log", "w")  # a retry starts it afresh
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.nodes.append((proc, temp, log))

    def _wait_for_gcs(self, timeout: float = 90) -> None:
        import socket

        def up():
            assert self.nodes[0][0].poll() is None, "the head exited; see head.log"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up, timeout, f"a GCS at {self.address}")

    def _wait_for_node(self, name: str, timeout: float = 180) -> None:
        """The last node started, `name`, says its runtime started (`ray list nodes` would need the dashboard)."""
        proc = self.nodes[-1][0]

        def ready():
            assert proc.poll() is None, f"node {name} exited; see {name}.log in the test's tmp_path"
            return "Ray runtime started" in (self.workdir / f"{name}.log").read_text(errors="replace")

        wait_for(ready, timeout, f"node {name} started", poll=1)

    def worker_busy(self, i: int) -> bool:
        """Whether worker node `i` runs a Tune trial (a cell) now."""
        return any("ImplicitFunc" in " ".join(self._cmdline(p)) for p in descendants(self.nodes[1 + i][0].pid))

    @staticmethod
    def _cmdline(p: psutil.Process) -> list[str]:
        try:
            return p.cmdline()
        except psutil.Error:
            return []

    def kill(self, i: int) -> None:
        """SIGKILL worker node `i`: its process group, then any of its processes left."""
        proc = self.nodes[1 + i][0]
        kill_tree(proc.pid, descendants(proc.pid))
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc, temp, log in reversed(self.nodes):
            kill_tree(proc.pid, descendants(proc.pid))
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            log.close()
            shutil.rmtree(temp, ignore_errors=True)


def tune_failures(storage, sweep: str) -> dict[str, int]:
    """Cell id -> failed attempts of its trial, from the newest Ray Tune experiment state of the sweep
    (`<sweep>/tune/experiment_state-*.json`, local or in the bucket): trials Tune started again."""
    from w2sweep import layout

    states = [k for k in storage.list(layout.folder(sweep, layout.TUNE), suffix=".json")
              if k.rsplit("/", 1)[1].startswith("experiment_state-")]
    if not states:
        return {}
    failures = {}
    for trial, runtime in json.loads(storage.read_bytes(sorted(states)[-1]))["trial_data"]:
        failures[json.loads(trial)["config"]["cell_id"]] = json.loads(runtime)["num_failures"]
    return failures
