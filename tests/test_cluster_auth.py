"""A head that runs with token authentication and a client without the token: one line that says
so, exit code 2, nothing written (tried before: 21 lines of InvalidAuthToken from Ray's C++ core,
then "Failed to connect to Ray cluster"). With the token the same address joins."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, free_port, ray_head, tiny_config

pytestmark = pytest.mark.ray


@pytest.fixture
def token_head(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(REPO / ".venv" / "bin" / "ray") if (REPO / ".venv" / "bin" / "ray").exists() else "ray"
    subprocess.run([ray, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    port = free_port()
    with ray_head(ray, port, env, "--num-cpus=1", prefix="/tmp/w2a") as address:
        yield address, home


def test_a_client_without_the_token_gets_one_line_that_names_token_authentication(token_head, tmp_path, write_config):
    address, home = token_head
    storage = tmp_path / "store"
    config = write_config(tiny_config(str(storage)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env.update(RAY_ADDRESS=address, HOME=str(tmp_path / "no-token-home"), PYTHONPATH=str(REPO / "platform"))
    run = subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", str(config)], env=env, capture_output=True,
                         text=True, timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and "token authentication" in lines[0] and "RAY_AUTH_MODE=token" in lines[0], lines
    assert "Traceback" not in run.stderr + run.stdout
    assert not storage.exists() or not any(storage.rglob("*.*"))

    env.update(RAY_AUTH_MODE="token", HOME=str(home))
    joined = subprocess.run([sys.executable, "-c", "from w2sweep.sweep.cluster import _init_ray; _init_ray(); "
                             "import ray; print(ray.cluster_resources().get('CPU'))"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert joined.returncode == 0 and joined.stdout.strip().splitlines()[-1] == "1.0", joined.stderr[-2000:]
