"""The input contract, row by row: a bad config gives one stderr line per problem, exit code 2, no
traceback and nothing written to storage, before any compute. Each row is a config file made from
the tiny sweep (or raw bytes); `validate` runs in-process for speed, a few rows also run `run` and
the real entry point in a subprocess."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from w2sweep.cli import main

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
HUGE = "x" * 200_000  # echoed whole before


@dataclass
class Row:
    name: str
    content: object  # dict (the tiny sweep with `changes`), str/bytes (the file as is), or a callable(tmp_path)
    says: str  # in the first line
    lines: int = 1  # one per planted problem


def cfg(**changes):
    return ("config", changes)


def student(**changes):
    return ("student", changes)


def dataset(**changes):
    return ("dataset", changes)


def _deep(levels: int) -> str:
    return "name: x\nbudgets: " + "[" * levels + "]" * levels + "\n"


def _aliases() -> str:
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    return "\n".join(lines) + "\n"


def _directory(tmp_path):
    (tmp_path / "a-dir.yaml").mkdir()
    return tmp_path / "a-dir.yaml"


def _file_storage(tmp_path):
    (tmp_path / "store").write_text("not a directory")
    return tiny_config(str(tmp_path / "store"))


def _under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return tiny_config(str(tmp_path / "afile" / "store"))


ROWS = [
    # files that are not a YAML mapping
    Row("not_utf8", b"name: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 9)"),
    Row("deeply_nested_yaml_3000_levels", _deep(3000), "nested more than 32 levels deep"),
    Row("nested_40_levels", _deep(40), "nested more than 32 levels deep"),
    Row("yaml_list_not_mapping", "- 1\n- 2\n", "<top level>: expected a mapping of fields, got list"),
    Row("yaml_scalar_not_mapping", "just text\n", "expected a mapping of fields, got str"),
    Row("empty_file", "", "expected a mapping of fields, got an empty file"),
    Row("directory_not_file", _directory, "is a directory; expected a YAML file"),
    Row("missing_file", lambda tmp_path: tmp_path / "missing.yaml", "cannot read (No such file or directory)"),
    Row("invalid_yaml", "name: [unclosed\n", "not valid YAML at line 2"),
    Row("duplicate_top_level_key", "name: a\nname: b\n", "key 'name' is given twice (lines 1 and 2)"),
    Row("duplicate_nested_key", "students:\n  - model: tiny-bert\n    lr: 0.1\n    lr: 0.2\n", "key 'lr' is given twice"),
    Row("alias_expansion_billion_laughs", _aliases(), "more than 1,000,000 values"),
    Row("integer_of_5000_digits", "seeds: [" + "9" * 5000 + "]\n", "not valid YAML (Exceeds the limit"),
    Row("empty_mapping_missing_fields", "{}\n", "name: required field is missing", lines=5),
    # numbers
    Row("budget_inf", cfg(budgets=[float("inf")]), "budgets.0: inf: Input should be a finite number"),
    Row("budget_nan", cfg(budgets=[float("nan")]), "budgets.0: nan:"),
    Row("c_oracle_inf", cfg(costs=dict(c_oracle=float("inf"))), "costs.c_oracle: inf: Input should be a finite number"),
    Row("c_weak_nan", cfg(costs=dict(c_weak=float("nan"))), "costs.c_weak: nan"),
    Row("negative_seed", cfg(seeds=[-1]), "seeds.0: -1: Input should be greater than or equal to 0"),
    Row("negative_second_seed", cfg(seeds=[0, -1]), "seeds.1: -1"),
    Row("seed_above_2_32", cfg(seeds=[2**32]), "seeds.0: 4294967296: Input should be less than or equal to 4294967295"),
    Row("seed_boolean", cfg(seeds=[True]), "seeds.0: True: expected a number, not a boolean"),
    Row("budgets_true", cfg(budgets=[True]), "budgets.0: True: expected a number, not a boolean"),
    Row("num_examples_1e9", dataset(num_examples=10**9), "datasets.0.num_examples: 1000000000: Input should be less "
                                                         "than or equal to 10000000"),
    Row("pool_size_1e9", dataset(pools=dict(weak_train=10**9)), "datasets.0.pools.weak_train: 1000000000"),
    Row("negative_budget", cfg(budgets=[16, -4]), "budgets.1: -4: Input should be greater than 0"),
    Row("zero_budget", cfg(budgets=[0]), "budgets.0: 0: Input should be greater than 0"),
    Row("fraction_above_1", cfg(spending_fractions=[0.5, 1.5]), "spending_fractions.1: 1.5"),
    Row("fraction_inf", cfg(spending_fractions=[float("inf")]), "spending_fractions.0: inf"),
    Row("c_weak_not_cheaper", cfg(costs=dict(c_weak=1.0, c_oracle=1.0)), "costs: dict: c_weak=1.0 must be below"),
    Row("resources_cpu_inf", cfg(resources=dict(cpu=float("inf"))), "resources.cpu: inf"),
    Row("max_failures_huge", cfg(max_failures=10**6), "max_failures: 1000000"),
    # training settings
    Row("lr_inf", student(lr=float("inf")), "students.0.lr: inf"),
    Row("lr_nan", student(lr=float("nan")), "students.0.lr: nan"),
    Row("lr_above_1", student(lr=3.0), "students.0.lr: 3.0: Input should be less than or equal to 1"),
    Row("epochs_zero", student(epochs=0), "students.0.epochs: 0: Input should be greater than 0"),
    Row("epochs_inf", student(epochs=float("inf")), "students.0.epochs: inf"),
    Row("batch_size_huge", student(batch_size=10**7), "students.0.batch_size: 10000000"),
    Row("micro_batch_size_boolean", student(micro_batch_size=True), "students.0.micro_batch_size: True: expected a number"),
    Row("max_length_huge", student(max_length=10**9), "students.0.max_length: 1000000000"),
    Row("warmup_ratio_1", student(warmup_ratio=1.0), "students.0.warmup_ratio: 1.0: Input should be less than 1"),
    Row("weight_decay_negative", student(weight_decay=-0.1), "students.0.weight_decay: -0.1"),
    Row("weight_decay_nan", student(weight_decay=float("nan")), "students.0.weight_decay: nan"),
    Row("patience_zero", student(patience=0), "students.0.patience: 0"),
    Row("min_steps_negative", student(min_steps=-1), "students.0.min_steps: -1"),
    Row("zero_stage_1", student(zero_stage=1, num_workers=2), "students.0.zero_stage: 1: Input should be 0, 2 or 3"),
    Row("zero_stage_false", student(zero_stage=False, num_workers=2), "students.0.zero_stage: False: expected a number"),
    Row("gpus_per_worker_inf", student(gpus_per_worker=float("inf")), "students.0.gpus_per_worker: inf"),
    Row("lr_as_text", student(lr="fast"), "students.0.lr: 'fast': Input should be a valid number"),
    # lists whose repeats or zero purchases were dropped or trained on nothing
    Row("duplicate_budgets", cfg(budgets=[4, 16, 4]), "budgets: list: 4.0 is listed twice"),
    Row("duplicate_seeds", cfg(seeds=[0, 1, 0]), "seeds: list: 0 is listed twice"),
    Row("duplicate_fractions", cfg(spending_fractions=[0.5, 0.5]), "spending_fractions: list: 0.5 is listed twice"),
    Row("duplicate_methods", cfg(methods=["seq-sft", "seq-sft"]), "method 'seq-sft' is listed twice"),
    Row("pair_buying_no_label", cfg(pairs=[[0, 0]]), "pairs: list: pair (0, 0) buys no label"),
    Row("oracle_only_method_below_c_oracle", cfg(methods=["sft-oracle"], budgets=[0.5, 4]),
        "<top level>: budget 0.5 buys no oracle label for method 'sft-oracle'"),
    Row("budget_1e-300", cfg(budgets=[1e-300]), "budgets: list: budget 1e-300 buys no label; allowed: at least c_weak=0.1"),
    # names, references and sizes
    Row("name_300_chars", cfg(name="a" * 300), "name: 'aaaa"),
    Row("name_with_slash", cfg(name="../escape"), "name: '../escape': must be 1 to 100 letters"),
    Row("name_not_a_string", cfg(name=5), "name: 5: Input should be a valid string"),
    Row("huge_value_is_cut", cfg(name=HUGE), "...(200000 chars)"),
    Row("huge_unknown_key_is_cut", cfg(**{HUGE: 1}), "...(200000 chars): unknown key"),
    Row("huge_model_reference_is_cut", student(model=HUGE), "students.0.model: 'xxx"),
    Row("unknown_field", cfg(budget_limit=3), "budget_limit: unknown key (not a field of this section)"),
    Row("unknown_nested_field", student(learning_rate=1e-3), "students.0.learning_rate: unknown key"),
    Row("unknown_method", cfg(methods=["seq-sft", "magic"]), "methods: list: unknown method 'magic'"),
    Row("unknown_model", student(model="no-such-model"), "students.0.model: 'no-such-model'"),
    Row("unknown_synthetic_dataset", dataset(name="nope"), "unknown synthetic dataset 'nope'"),
    Row("local_path_of_an_unknown_user", dataset(name="d", source="local", path="~0/data.csv"), "path '~0/data.csv' does not exist"),
    Row("unknown_dataset_source", dataset(source="ftp"), "datasets.0.source: 'ftp'"),
    Row("budgets_not_a_list", cfg(budgets="many"), "budgets: 'many': Input should be a valid list"),
    Row("students_empty", cfg(students=[]), "students: list: List should have at least 1 item"),
    Row("weak_supervisor_named_none", cfg(weak_supervisors=[dict(model="tiny-bert", name="none", epochs=2)]),
        "weak supervisor name 'none' is reserved"),
    Row("grid_above_default_cell_limit", cfg(seeds=list(range(1000)), budgets=list(range(1, 1001))),
        "<top level>: the grid has 3,000,000 cells, above max_cells=100,000"),
    Row("grid_above_configured_max_cells", cfg(max_cells=5), "the grid has 6 cells, above max_cells=5"),
    Row("pool_too_small_for_budget", cfg(budgets=[4, 40]), "needs n_weak=400"),
    # storage, checked without contacting a server
    Row("storage_is_a_file", _file_storage, "storage: '"),
    Row("storage_under_a_file", _under_a_file, "exists and is not a directory"),
    Row("storage_ftp", cfg(storage="ftp://host/sweeps"), "storage: 'ftp://host/sweeps': unsupported scheme 'ftp'"),
    Row("storage_s3_credentials", cfg(storage=f"s3://AKIDEXAMPLE:{SECRET}@bucket/w2s"),
        "storage: 's3://***@bucket/w2s': credentials in the URI are refused"),
    Row("storage_s3_options", cfg(storage="s3://bucket/w2s?region=x"), "options in the URI"),
    Row("storage_s3_no_bucket", cfg(storage="s3:///w2s"), "expected s3://bucket/prefix"),
    Row("storage_nul_byte", cfg(storage="out\0puts"), "control characters"),
    Row("storage_folder_name_too_long", cfg(storage="outputs/" + "o" * 300), "a folder name is over 255 bytes"),
    # several problems, one line each
    Row("three_problems", cfg(budgets=[-1], seeds=[-1], costs=dict(c_weak=float("inf"))), "config error: ", lines=3),
    Row("hundred_bad_budgets", cfg(budgets=["x"] * 100), "budgets.0: 'x'", lines=21),
]
RUN_ROWS = ["storage_is_a_file", "storage_s3_credentials", "lr_inf", "duplicate_top_level_key", "budget_1e-300",
            "grid_above_default_cell_limit", "not_utf8"]
SUBPROCESS_ROWS = ["deeply_nested_yaml_3000_levels", "seed_above_2_32", "storage_ftp", "name_300_chars"]
BY_NAME = {row.name: row for row in ROWS}


def make_config(row: Row, tmp_path: Path) -> Path:
    """The row's config file under `tmp_path`, its storage root at tmp_path/store."""
    content, path = row.content, tmp_path / "sweep.yaml"
    if callable(content):
        made = content(tmp_path)
        if isinstance(made, Path):
            return made
        content = made
    if isinstance(content, tuple):
        kind, changes = content
        content = tiny_config(str(tmp_path / "store"))
        target = {"config": content, "student": content["students"][0], "dataset": content["datasets"][0]}[kind]
        target.update(changes)
    if isinstance(content, dict):
        content = yaml.safe_dump(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def assert_refused(row: Row, tmp_path: Path, code: int, out: str, err: str) -> None:
    lines = err.splitlines()
    assert code == 2, (row.name, code, err)
    assert "Traceback" not in err and out == "", err
    assert len(lines) == row.lines, err[:2000]
    assert row.says in lines[0], lines[0]
    assert all(line.startswith("config error: ") and len(line) < 1000 for line in lines), err[:2000]
    assert SECRET not in err and HUGE not in err
    store = tmp_path / "store"
    if store.is_dir():
        assert not any(store.rglob("*")), "something was written under the storage root"
    elif store.exists():
        assert store.read_text() == "not a directory"


def test_the_table_has_forty_rows_or_more():
    assert len(ROWS) >= 40 and len(BY_NAME) == len(ROWS)
    assert set(RUN_ROWS) | set(SUBPROCESS_ROWS) <= set(BY_NAME)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_validate_refuses_bad_input_with_one_line_per_problem(row, tmp_path, capsys):
    path = make_config(row, tmp_path)
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert_refused(row, tmp_path, code, captured.out, captured.err)


@pytest.mark.parametrize("name", RUN_ROWS)
def test_run_refuses_bad_input_before_ray_starts(name, tmp_path, capsys):
    row = BY_NAME[name]
    code = main(["run", str(make_config(row, tmp_path))])
    captured = capsys.readouterr()
    assert_refused(row, tmp_path, code, captured.out, captured.err)
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("name", SUBPROCESS_ROWS)
def test_the_console_entry_point_refuses_bad_input(name, command, tmp_path):
    row = BY_NAME[name]
    done = subprocess.run([sys.executable, "-m", "w2sweep.cli", command, str(make_config(row, tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert_refused(row, tmp_path, done.returncode, done.stdout, done.stderr)


def test_the_installed_console_script_refuses_bad_input(tmp_path):
    """The `w2sweep` script itself (pyproject's entry point), beside this interpreter."""
    script = Path(sys.executable).with_name("w2sweep")
    if not script.exists():
        pytest.skip("no w2sweep console script beside this interpreter")
    row = BY_NAME["storage_s3_credentials"]
    done = subprocess.run([str(script), "validate", str(make_config(row, tmp_path))], capture_output=True, text=True,
                          timeout=120)
    assert_refused(row, tmp_path, done.returncode, done.stdout, done.stderr)
