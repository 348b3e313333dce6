import os
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
