"""Property-based fuzzing of the config loader: whatever the file or the data, `load_config` and
`parse_config` return a config or raise ConfigError whose lines are short single lines; never any
other exception (which the CLI would print as a traceback)."""

import warnings

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from w2sweep.config import ConfigError, SweepConfig, load_config, parse_config

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["seq-sft", "tiny-bert", "synthetic", "local", "hub", "s3://b/p", "ftp://x", ""]))
keys = st.text(max_size=12) | st.sampled_from(["name", "storage", "datasets", "students", "weak_supervisors",
                                                "methods", "budgets", "seeds", "pairs", "costs", "model", "lr",
                                                "spending_fractions", "source", "pools", "max_cells"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
                      max_leaves=25)
FIELDS = ["name", "storage", "datasets", "weak_supervisors", "students", "methods", "method_options", "ceiling",
          "budgets", "costs", "spending_fractions", "pairs", "seeds", "resources", "max_failures", "max_cells"]
NESTED = [("students", "lr"), ("students", "epochs"), ("students", "zero_stage"), ("students", "mode"),
          ("datasets", "num_examples"), ("datasets", "pools"), ("datasets", "source"), ("costs", "c_weak")]


def parses_or_refuses(raw) -> None:
    """`parse_config(raw)` is a SweepConfig or a ConfigError of short lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            assert isinstance(parse_config(raw), SweepConfig)
        except ConfigError as e:
            assert e.lines and all(line.startswith("config error: ") and "\n" not in line and len(line) < 1000
                                   for line in e.lines), e.lines


@FUZZ
@given(values)
def test_any_data_parses_or_gives_config_errors(raw):
    parses_or_refuses(raw)


@FUZZ
@given(st.sampled_from(FIELDS), values)
def test_a_valid_config_with_one_field_replaced_parses_or_gives_config_errors(field, value):
    parses_or_refuses({**tiny_config("/tmp/unused"), field: value})


@FUZZ
@given(st.sampled_from(NESTED), values)
def test_a_valid_config_with_one_nested_field_replaced_parses_or_gives_config_errors(where, value):
    config = tiny_config("/tmp/unused")
    section, field = where
    target = config.setdefault(section, {})
    (target[0] if isinstance(target, list) else target)[field] = value
    parses_or_refuses(config)


def loads_or_refuses(path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_config(path)
        except ConfigError as e:
            assert e.lines and all("\n" not in line and len(line) < 1000 for line in e.lines), e.lines


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_load_or_give_config_errors(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    loads_or_refuses(path)


yaml_ish = st.lists(st.sampled_from(["name: a\n", "budgets: [", "]", "- ", "&a ", "*a", "<<: ", "{", "}", ": ",
                                     "\n", "  ", "!!binary ", "!!python/object ", "? ", "1e9", ".inf", "'", '"',
                                     "\t", "\x00", "\ufeff", "2001-13-45", "0x1F", "~", ",", "#", "|\n", ">\n"]),
                    max_size=40).map("".join)


@FUZZ
@given(yaml_ish)
def test_yaml_like_text_loads_or_gives_config_errors(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(path)


@FUZZ
@given(st.sampled_from(FIELDS), values)
def test_a_valid_config_file_with_one_field_replaced_loads_or_gives_config_errors(tmp_path, field, value):
    path = tmp_path / "fuzz.yaml"
    try:
        text = yaml.safe_dump({**tiny_config("/tmp/unused"), field: value})
    except yaml.YAMLError:  # a value YAML cannot write (never one read from a file)
        return
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(FIELDS + ["datasets", "students"]), values)
def test_validate_of_a_config_with_one_field_replaced_exits_0_or_2(tmp_path, capsys, field, value):
    """Through the planning step too (references, pools, cells): `validate` returns, never raises."""
    from w2sweep.cli import main

    path = tmp_path / "fuzz.yaml"
    try:
        path.write_text(yaml.safe_dump({**tiny_config(str(tmp_path / "store")), field: value}), encoding="utf-8")
    except yaml.YAMLError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert not (tmp_path / "store").exists()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["synthetic", "local"]), st.text(max_size=300) | st.sampled_from(["/", "/etc", "/dev/null"]),
       st.sampled_from(["student", "weak"]), st.text(max_size=300) | st.sampled_from(["/", "/etc", "a/b"]))
def test_validate_of_any_dataset_or_model_reference_exits_0_or_2(tmp_path, capsys, source, path, kind, model):
    """Data and model references reach the filesystem (paths with NULs, over-long names): one line each."""
    from w2sweep.cli import main

    config = tiny_config(str(tmp_path / "store"))
    config["datasets"] = [dict(name="d", source=source, path=path)]
    config["students" if kind == "student" else "weak_supervisors"][0]["model"] = model
    file = tmp_path / "fuzz.yaml"
    file.write_text(yaml.safe_dump(config), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["validate", str(file)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    assert all(len(line) < 1000 for line in err.splitlines())
