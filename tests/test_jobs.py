"""The jobs a user submits: `ray job submit --working-dir . -- python jobs/sweep.py CONFIG` against a real
local Ray head with Ray 2.60's default token authentication, and the example sweep recipes."""

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, free_port, tiny_config
from w2sweep.cli import main

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


class RayHead:
    """A private Ray head on 127.0.0.1 for one test module: every port free-picked (other Ray clusters
    may run on this machine), its own temp dir, stopped by signalling its own `ray start --block`
    process; never `ray stop`, which would stop every Ray cluster of this user.

    Its processes see no AWS_* variable: whatever storage settings a worker gets, it got from the
    driver. `--num-gpus=1` declares a GPU the machine does not have, so cells asking for a fraction
    of one schedule (torch is the CPU build and never looks) and GPU-seconds are counted."""

    def __init__(self, *, num_cpus: int = 2, num_gpus: int = 1):
        self.temp_dir = tempfile.mkdtemp(prefix="w2ray", dir="/tmp")  # short: Ray puts sockets here
        self.ports = {name: free_port() for name in (
            "port", "dashboard-port", "metrics-export-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "runtime-env-agent-port", "ray-client-server-port",
            "node-manager-port", "object-manager-port")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
        # Job entrypoints run `python` from the head's PATH: this venv's.
        self.env["PATH"] = f"{VENV_BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Ray 2.60's default: `ray start --head` turns token auth on when ~/.ray/auth_token exists (any
        # earlier local ray.init writes one). Make sure it does on a fresh machine too.
        subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, capture_output=True, check=True)
        self.env["RAY_AUTH_MODE"] = "token"
        self.env["RAY_metrics_report_interval_ms"] = "1000"  # default 10 s; tests wait less
        cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               f"--temp-dir={self.temp_dir}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
               *(f"--{name}={port}" for name, port in self.ports.items())]
        self.log = open(Path(self.temp_dir) / "ray-start.log", "w")
        self.process = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self._wait_ready(timeout=120)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard-port']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['port']}"

    def client_env(self, **extra) -> dict:
        """The environment of a client of this head: token auth on, as Ray 2.60 requires."""
        return dict(self.env, RAY_AUTH_MODE="token", **extra)

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited {self.process.returncode}: {self.start_log()[-3000:]}")
            done = subprocess.run([RAY, "job", "list", "--address", self.dashboard_url],
                                  env=self.client_env(), capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                return
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"Ray head not ready after {timeout} s: {self.start_log()[-3000:]}")

    def start_log(self) -> str:
        self.log.flush()
        return (Path(self.temp_dir) / "ray-start.log").read_text()

    def ray_logs(self) -> str:
        """Every log file Ray wrote for this head, concatenated."""
        texts = []
        for path in Path(self.temp_dir).rglob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ".json"):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def submit(self, *entrypoint: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`ray job submit --working-dir <repo>`, waiting for the job to end."""
        cmd = [RAY, "job", "submit", "--address", self.dashboard_url, "--working-dir", str(REPO),
               "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--", *entrypoint]
        return subprocess.run(cmd, env=self.client_env(), capture_output=True, text=True, timeout=timeout)

    def job_status(self, submission_id: str) -> str:
        """SUCCEEDED, FAILED, ... as the job API reports it."""
        probe = ("import sys; from ray.job_submission import JobSubmissionClient; "
                 "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)")
        done = subprocess.run([sys.executable, "-c", probe, self.dashboard_url, submission_id],
                              env=self.client_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in this head's own process group (never another cluster's)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head():
    head = RayHead()
    yield head
    head.stop()


def _submission_id(output: str) -> str:
    for word in output.replace("'", " ").split():
        if word.startswith("raysubmit_"):
            return word
    raise AssertionError(f"no submission id in: {output[-2000:]}")


@pytest.mark.ray
def test_head_refuses_a_client_with_the_wrong_token(ray_head):
    wrong = ray_head.client_env(RAY_AUTH_TOKEN="not-the-token")
    done = subprocess.run([RAY, "job", "list", "--address", ray_head.dashboard_url], env=wrong,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "auth" in (done.stdout + done.stderr).lower()


@pytest.mark.ray
def test_submitted_sweep_job_succeeds_and_writes_every_cell(ray_head, tmp_path, capsys, monkeypatch):
    storage = tmp_path / "store"
    config = tiny_config(str(storage), resources={"cpu": 1, "gpu": 0.5})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))

    done = ray_head.submit("python", "jobs/sweep.py", str(path))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert ray_head.job_status(_submission_id(output)) == "SUCCEEDED"
    # The job's log shows progress and the run's summary.
    assert "cells:" in output and "6 cells finished, 0 already done, 0 failed (of 6)" in output

    results = [json.loads(p.read_text()) for p in (storage / "tiny" / "cells").glob("*.json")]
    assert len(results) == 6
    assert {(r["budget"], r["spending_fraction"]) for r in results} == {
        (b, f) for b in (4, 16) for f in (0, 0.5, 1)}
    assert all(r["status"] == "ok" and 0 <= r["accuracy"] <= 1 for r in results)
    # Each trial wrote its heartbeat under running/ and removed it when its cell ended.
    assert (storage / "tiny" / "running").is_dir()
    assert not list((storage / "tiny" / "running").glob("*.json"))

    # `w2sweep status` reads the same storage; jobs/frontier.py re-aggregates it.
    assert main(["status", str(storage / "tiny")]) == 0
    assert "tiny: 6/6 cells done, 0 running, 0 failed, 0 pending" in capsys.readouterr().out
    (storage / "tiny" / "frontier" / "curves.csv").unlink()
    monkeypatch.setattr(sys, "argv", ["jobs/frontier.py", str(storage / "tiny")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "jobs" / "frontier.py"), run_name="__main__")
    assert exit_.value.code == 0
    assert (storage / "tiny" / "frontier" / "curves.csv").exists()


@pytest.mark.ray
def test_workers_get_the_drivers_storage_settings(ray_head, tmp_path):
    """The head runs without AWS_* variables; a driver that has them hands them to its workers (as a
    task argument, not in the runtime env Ray logs). tests/test_dashboards.py checks that a whole
    sweep run this way leaves the secret in no log and no stored object."""
    secret = "w2sweep-test-secret-" + os.urandom(6).hex()
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, ray\n"
        "from w2sweep.storage import in_storage_env\n"
        "from w2sweep.sweep import _init_ray, storage_env\n"
        "_init_ray()\n"
        "def getenv(name):\n"
        "    return os.environ.get(name)\n"
        "plain = ray.remote(getenv)\n"
        "forwarded = ray.remote(in_storage_env)\n"
        "print('plain', ray.get(plain.remote('AWS_SECRET_ACCESS_KEY')))\n"
        "print('forwarded', ray.get(forwarded.remote(storage_env(), getenv, 'AWS_SECRET_ACCESS_KEY')) "
        "== os.environ['AWS_SECRET_ACCESS_KEY'])\n"
        "print('region', ray.get(forwarded.remote(storage_env(), getenv, 'AWS_REGION')))\n"
    )
    env = ray_head.client_env(RAY_ADDRESS=ray_head.gcs_address, AWS_SECRET_ACCESS_KEY=secret,
                              AWS_ACCESS_KEY_ID="w2sweep-test-key", AWS_REGION="eu-test-1",
                              PYTHONPATH=str(REPO / "platform"))
    done = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "plain None" in done.stdout  # the head's workers do not have it by themselves
    assert "forwarded True" in done.stdout
    assert "region eu-test-1" in done.stdout
    assert secret not in done.stdout + done.stderr
    assert secret not in ray_head.ray_logs()


def test_example_configs_parse():
    from w2sweep.config import load_config

    for name in ("demo", "paper", "w2s"):
        config = load_config(REPO / "jobs" / "configs" / f"{name}.yaml")
        assert config.name == name


def test_paper_config_is_the_scalable_elicitation_grid():
    from w2sweep.config import load_config
    from w2sweep.grid import check_references, expand_cells

    config = check_references(load_config(REPO / "jobs" / "configs" / "paper.yaml"))
    assert config.spending_fractions == [0, 0.05, 0.2, 0.4, 0.6, 0.8, 1]
    assert min(config.budgets) == 16 and max(config.budgets) == 4096
    assert [d.name for d in config.datasets] == [
        "boolq", "hellaswag", "paws", "sciq", "cola", "cosmos_qa", "quail", "social_i_qa"]
    assert all(d.source == "hub" and d.path for d in config.datasets)  # a hub id, from the loader
    assert len(config.seeds) == 3
    assert "seq-sft" in config.methods
    assert any("Qwen" in s.model for s in config.students) and any("llama" in s.model.lower() for s in config.students)
    assert config.storage.startswith("s3://")
    # The ceiling cells' size depends on the data (the whole oracle pool): count the grid without them.
    cells = expand_cells(config.model_copy(update={"ceiling": False}))
    assert len(cells) == 8 * 2 * 4 * 5 * 7 * 3  # datasets x students x methods x budgets x fractions x seeds


def _billions(model: str) -> float:
    import re

    return float(re.search(r"(\d+(?:\.\d+)?)B", model).group(1))


def test_w2s_config_pairs_every_weak_model_with_every_stronger_student():
    from w2sweep.config import load_config

    config = load_config(REPO / "jobs" / "configs" / "w2s.yaml")
    assert {"sft-weak", "sft-weak+logconf"} <= set(config.methods)
    assert config.ceiling and config.spending_fractions == [0]
    assert len(config.weak_supervisors) >= 2 and len(config.students) >= 2
    # The grid crosses every weak supervisor with every student: each pair must be weak < strong.
    assert max(_billions(w.model) for w in config.weak_supervisors) < min(_billions(s.model) for s in config.students)
