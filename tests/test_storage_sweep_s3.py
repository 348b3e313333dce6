"""`w2sweep run` with an s3:// root on a real SeaweedFS (authentication on) on 127.0.0.1."""

import io
import json
import os
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest
from conftest import tiny_config


def w2sweep(*args, cwd, env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    env["RAY_ADDRESS"] = ""  # a private local cluster, never another one
    return subprocess.run([sys.executable, "-m", "w2sweep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.ray
def test_sweep_writes_every_cell_result_and_the_frontier_to_the_bucket(seaweedfs, tmp_path, write_config):
    prefix = f"runs-{uuid.uuid4().hex[:8]}"
    path = write_config(tiny_config(f"s3://{seaweedfs.bucket}/{prefix}"))

    first = w2sweep("run", str(path), cwd=tmp_path, env=seaweedfs.env())
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 cells finished, 0 already done, 0 failed (of 6)" in first.stdout

    keys = seaweedfs.keys(f"{prefix}/tiny/")
    cells = [k for k in keys if k.startswith(f"{prefix}/tiny/cells/") and k.endswith(".json")]
    assert len(cells) == 6
    results = [json.loads(seaweedfs.get(k)) for k in cells]
    assert {(r["budget"], r["spending_fraction"]) for r in results} == {
        (b, f) for b in (4, 16) for f in (0, 0.5, 1)}
    assert all(r["status"] == "ok" and f"{prefix}/tiny/cells/{r['cell_id']}.json" in cells for r in results)
    assert len([k for k in keys if k.startswith(f"{prefix}/tiny/weak_labels/")]) == 1

    for name in ("curves.csv", "frontier.csv", "regimes.csv"):
        assert f"{prefix}/tiny/frontier/{name}" in keys, name
    curves = pd.read_csv(io.BytesIO(seaweedfs.get(f"{prefix}/tiny/frontier/curves.csv")))
    assert len(curves) == 6
    assert any(k.startswith(f"{prefix}/tiny/tune/") for k in keys)  # Ray Tune's state is in the bucket too
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "s3:").exists()  # nothing local

    # Pull to a laptop: the CSVs on disk are the ones computed in the bucket.
    pulled = w2sweep("pull", f"s3://{seaweedfs.bucket}/{prefix}/tiny", "--out", str(tmp_path / "pulled"),
                     cwd=tmp_path, env=seaweedfs.env())
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    for name in ("curves.csv", "frontier.csv", "regimes.csv"):
        assert (tmp_path / "pulled" / name).read_bytes() == seaweedfs.get(f"{prefix}/tiny/frontier/{name}")

    snapshot = seaweedfs.get(f"{prefix}/tiny/sweep.yaml").decode()
    for secret in (seaweedfs.secret_key, seaweedfs.access_key):
        assert secret not in snapshot
        assert secret not in first.stdout + first.stderr
        assert not any(secret.encode() in seaweedfs.get(k) for k in cells)


def test_run_with_a_wrong_secret_is_one_line_and_exit_2_before_any_compute(seaweedfs, tmp_path, write_config):
    prefix = f"runs-{uuid.uuid4().hex[:8]}"
    path = write_config(tiny_config(f"s3://{seaweedfs.bucket}/{prefix}"))
    started = time.monotonic()
    done = w2sweep("run", str(path), cwd=tmp_path, env=seaweedfs.env(secret_key="wrong-secret-Lk3"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"storage error: s3://{seaweedfs.bucket}/{prefix}/{_probe_name(done.stderr)}: access denied "
        f"(SignatureDoesNotMatch) at {seaweedfs.endpoint} — check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    assert "wrong-secret-Lk3" not in done.stdout + done.stderr
    assert done.stdout == "" and time.monotonic() - started < 60
    assert seaweedfs.keys(f"{prefix}/") == []  # nothing was written, nothing was trained


def _probe_name(stderr: str) -> str:
    return stderr.split(": ")[1].rsplit("/", 1)[1]
