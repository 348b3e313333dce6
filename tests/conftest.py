import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pytest
import yaml

# Nothing in the tests may reach a hub or report usage: everything runs offline on 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_config(storage: str, **overrides) -> dict:
    """A small, fast sweep: tiny models on the synthetic task."""
    config = dict(
        name="tiny",
        storage=storage,
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=1200,
                       pools=dict(weak_train=200, val=100, test=200))],
        weak_supervisors=[dict(model="tiny-bert", epochs=2)],
        students=[dict(model="tiny-bert", name="tiny-student", epochs=2, max_length=32)],
        methods=["seq-sft"],
        budgets=[4, 16],
        spending_fractions=[0, 0.5, 1],
        seeds=[0],
    )
    config.update(overrides)
    return config


# ray.init's arguments for a test's own local Ray cluster: private to this process (`address="local"` never
# joins another cluster running on the machine), 2 CPUs, no dashboard, quiet.
LOCAL_RAY = dict(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


class LocalRay:
    """A local Ray cluster started in this process with `LOCAL_RAY` plus `overrides`."""

    def __init__(self, **overrides):
        self._start(overrides)

    def _start(self, overrides: dict) -> None:
        import ray

        ray.init(**{**LOCAL_RAY, **overrides})

    def restart(self, **overrides) -> None:
        """A fresh cluster in place of this one, e.g. one whose workers get a runtime_env."""
        self.stop()
        self._start(overrides)

    def stop(self) -> None:
        import ray

        ray.shutdown()


@pytest.fixture(scope="module")
def local_ray(request):
    """One local Ray cluster (`LocalRay`) for the tests of a module that ask for it, shut down after the
    module's last test. Other ray.init arguments for a module: indirect parametrization,
    `@pytest.mark.parametrize("local_ray", [dict(num_cpus=4)], indirect=True)`.

    Not for tests that run `w2sweep run` or `run_sweep` without it: those start their own cluster."""
    cluster = LocalRay(**getattr(request, "param", {}))
    yield cluster
    cluster.stop()


@pytest.fixture
def write_config(tmp_path):
    def write(config: dict, name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write


# Real S3 servers on 127.0.0.1 (SeaweedFS, moto), started and stopped by the tests: see s3servers.py.
# `free_port()` (a free TCP port on 127.0.0.1) lives there too; every test takes it from here.
from s3servers import free_port, moto_s3, s3_env, s3_server, seaweedfs  # noqa: E402, F401


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    """`run_sweep` called in-process joins Ray and leaves it joined (the CLI shuts it down, a test need
    not): the next module's own `ray.init` would then fail. Each module ends with Ray shut down."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def broken_model_dir(path: Path) -> Path:
    """A model directory that looks complete to `validate` (config, tokenizer, weights file) but whose
    weights file is not a safetensors file: its cells fail at run time, not at planning."""
    from w2sweep.models import load_classifier

    tokenizer, model = load_classifier("tiny-bert", seed=0, device="cpu")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    return path


@contextlib.contextmanager
def ray_head(ray: str, port: int, env: dict, *options: str, prefix: str, wait_s: float = 90):
    """A Ray head started with `ray start --head --block` on 127.0.0.1:`port` (its own process group,
    its temp dir short, since Ray's socket paths live under it), yielded once `ray status` answers;
    killed and its temp dir removed afterwards."""
    temp = tempfile.mkdtemp(prefix=prefix)
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", f"--temp-dir={temp}", *options],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + wait_s
        while subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and head.poll() is None, "the head did not come up"
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)
