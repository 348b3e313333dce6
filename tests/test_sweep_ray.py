"""A real sweep through real Ray Tune on a local cluster, end to end, then re-run."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO, tiny_config

pytestmark = pytest.mark.ray


def w2sweep(*args, cwd):
    env = dict(os.environ, RAY_ADDRESS="")  # start a private local cluster, never join another
    return subprocess.run([sys.executable, "-m", "w2sweep.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_sweep_runs_every_cell_then_rerun_skips_finished_cells(tmp_path, write_config):
    storage = tmp_path / "store"
    path = write_config(tiny_config(str(storage)))

    first = w2sweep("run", str(path), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 cells finished, 0 already done, 0 failed (of 6)" in first.stdout

    cells = sorted((storage / "tiny" / "cells").glob("*.json"))
    assert len(cells) == 6
    results = [json.loads(p.read_text()) for p in cells]
    assert {(r["budget"], r["spending_fraction"]) for r in results} == {
        (b, f) for b in (4, 16) for f in (0, 0.5, 1)}
    for r in results:
        assert r["status"] == "ok" and r["num_test"] == 200
        assert 0 <= r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1] <= 1
        assert r["n_weak"] * 0.1 + r["n_oracle"] <= r["budget"] + 1e-9
    # One weak-label object serves every cell: same dataset, supervisor and seed.
    assert len(list((storage / "tiny" / "weak_labels").glob("*.parquet"))) == 1
    assert len({r["weak_accuracy"] for r in results}) == 1

    curves = pd.read_csv(storage / "tiny" / "frontier" / "curves.csv")
    assert len(curves) == 6
    assert (storage / "tiny" / "frontier" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert (storage / "tiny" / "sweep.yaml").exists()

    mtimes = {p.name: p.stat().st_mtime_ns for p in cells}
    second = w2sweep("run", str(path), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 cells finished, 6 already done, 0 failed (of 6)" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (storage / "tiny" / "cells").glob("*.json")} == mtimes


def test_stdlib_platform_module_is_not_shadowed(tmp_path):
    probe = (
        "import platform, ray\n"
        "ray.init(address='local', num_cpus=1, include_dashboard=False, logging_level='ERROR')\n"
        "@ray.remote\n"
        "def where():\n"
        "    import platform\n"
        "    return platform.system(), platform.__file__\n"
        "print(platform.system(), platform.__file__)\n"
        "print(*ray.get(where.remote()))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, RAY_ADDRESS=""))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()[-2:]
    for line in lines:
        system, path = line.split()
        assert system == "Linux"
        assert not path.startswith(str(REPO)), path  # the standard library's, not platform/
