"""Bad input: one line per problem naming the field, the value and what is allowed; exit code 2."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, tiny_config
from w2sweep.cli import main


def run_validate(path, capsys):
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("change,field,expected", [
    (dict(budget_limit=3), "budget_limit", "unknown key"),
    (dict(methods=["seq-sft", "magic"]), "methods", "'magic'"),
    (dict(budgets=[16, -4]), "budgets.1", "-4"),
    (dict(budgets=[0]), "budgets.0", "greater than 0"),
    (dict(spending_fractions=[0.5, 1.5]), "spending_fractions.1", "1.5"),
    (dict(costs=dict(c_weak=1.0, c_oracle=1.0)), "costs", "c_weak=1.0 must be below c_oracle=1.0"),
    (dict(students=[dict(model="no-such-model")]), "students.0.model", "'no-such-model'"),
    (dict(datasets=[dict(name="nope", source="synthetic")]), "datasets.0", "unknown synthetic dataset 'nope'"),
    (dict(datasets=[dict(name="x", source="ftp")]), "datasets.0.source", "'ftp'"),
    (dict(datasets=[dict(name="x", source="local", path="/no/such/file.csv")]), "datasets.0", "/no/such/file.csv"),
    (dict(spending_fractions=[], pairs=[]), "<top level>", "both are empty"),
])
def test_bad_config_value_gives_one_line_and_exit_2(write_config, capsys, change, field, expected):
    code, out, err = run_validate(write_config(tiny_config("unused", **change)), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"config error: {field}")
    assert expected in lines[0]
    assert "Traceback" not in err and out == ""


def test_unknown_nested_key_is_named(write_config, capsys):
    config = tiny_config("unused")
    config["students"][0]["learning_rate"] = 1e-3
    code, _, err = run_validate(write_config(config), capsys)
    assert code == 2
    assert err.strip() == "config error: students.0.learning_rate: unknown key (not a field of this section)"


def test_cell_needing_more_examples_than_its_pool_is_refused(write_config, capsys):
    # 1200 examples - 500 for weak_train/val/test leaves 350 per weak-label/oracle pool; budget 40 at
    # f=0 needs 400 weak labels.
    code, _, err = run_validate(write_config(tiny_config("unused", budgets=[4, 40])), capsys)
    assert code == 2
    assert "needs n_weak=400" in err and "has 350 in that pool" in err


def test_invalid_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = run_validate(bad, capsys)
    assert code == 2 and "not valid YAML" in err
    code, _, err = run_validate(tmp_path / "missing.yaml", capsys)
    assert code == 2 and "cannot read" in err


def test_validate_prints_cells_and_label_counts(write_config, capsys):
    code, out, _ = run_validate(write_config(tiny_config("unused")), capsys)
    assert code == 0
    assert out.startswith("tiny: 6 cells")
    # budget 16 at f=0.5: 8 oracle labels and 80 weak labels, cost 16
    assert any(line.split() == ["seq-sft", "16", "0.5", "80", "8", "16", "1"] for line in out.splitlines())


def test_console_script_exits_2_without_traceback(write_config):
    path = write_config(tiny_config("unused", budgets=[-1]))
    done = subprocess.run([sys.executable, "-m", "w2sweep.cli", "validate", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "config error: budgets.0: -1: Input should be greater than 0"


def test_a_cells_resources_follow_its_student_and_the_sweep_default():
    from w2sweep.config import ModelSpec, Resources
    from w2sweep.grid import cell_gpus, uses_ray_train, worker_resources

    default = Resources(cpu=2, gpu=0.5)
    one = ModelSpec(model="tiny-bert")
    four = ModelSpec(model="tiny-bert", num_workers=4, gpus_per_worker=1, cpus_per_worker=3)
    assert worker_resources(one, default) == {"CPU": 2, "GPU": 0.5} and cell_gpus(one, default) == 0.5
    assert worker_resources(four, default) == {"CPU": 3, "GPU": 1} and cell_gpus(four, default) == 4
    assert not uses_ray_train(one) and uses_ray_train(four)


def test_planning_a_sweep_loads_no_torch(write_config, tmp_path):
    # The driver, `validate` and `status` plan without torch; a trial imports it at its first cell.
    code = ("import sys; from w2sweep.cli import _plan; import w2sweep.sweep; _plan(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'deepspeed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(write_config(tiny_config(str(tmp_path / "store"))))], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout


def _a_ray_cluster_runs_here() -> bool:
    """Whether a Ray GCS process runs on this machine (what `ray.init(address="auto")` looks for)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"gcs_server" in cmdline.read_bytes():
                return True
        except OSError:  # the process ended meanwhile
            pass
    return False


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:{port}", "cluster error: RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there (Connection refused); "
                         "start one with `ray start --head`, or unset RAY_ADDRESS to start a local cluster"),
    ("head-without-port", "cluster error: RAY_ADDRESS='head-without-port': expected HOST:PORT of a Ray head "
                          "(e.g. 10.0.0.5:6379), 'auto', or unset to start a local cluster"),
    ("auto", "cluster error: RAY_ADDRESS=auto: Could not find any running Ray instance. Please specify the one "
             "to connect to by setting `--address` flag or `RAY_ADDRESS` environment variable."),
])
def test_run_against_no_cluster_is_one_line_and_exit_2_before_anything_is_written(write_config, tmp_path, address, says):
    # ray.init would retry a HOST:PORT where no head listens for minutes (measured: over 5), and `auto`
    # without a cluster raised a traceback after the config snapshot was written.
    if address == "auto" and _a_ray_cluster_runs_here():
        pytest.skip("`auto` joins any Ray cluster running on this machine, and one is running")
    port = free_port()  # a port nothing listens on: bound, never listened on, then closed
    store = tmp_path / "store"
    path = write_config(tiny_config(str(store)))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", str(path)], capture_output=True, text=True,
                          env=dict(os.environ, RAY_ADDRESS=address.format(port=port)), timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == says.format(port=port) and done.stdout == ""
    assert time.monotonic() - started < 60
    assert not list(store.rglob("*.*"))  # no snapshot, no result: nothing ran
