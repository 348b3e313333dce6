"""A dataset whose scored pools hold one class is refused before any compute: its accuracy would be a
constant predictor's and its AUROC undefined (a file sorted by label, cut by num_examples, does this)."""

import pandas as pd
import yaml

from conftest import tiny_config
from w2sweep.cli import main


def _config(tmp_path, **dataset):
    rows = [(f"sentence number {i} {'is' if i % 3 else 'was'} here", int(i >= 300)) for i in range(600)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "sorted.csv", index=False)
    spec = dict(name="sorted", source="local", path=str(tmp_path / "sorted.csv"), text="text", label="label",
                pools=dict(weak_train=40, val=40, test=60, weak_label=40, oracle=40), **dataset)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tiny_config(str(tmp_path / "store"), datasets=[spec], budgets=[4])))
    return path


def test_a_label_sorted_file_cut_to_one_class_is_refused_in_one_line(tmp_path, capsys):
    assert main(["validate", str(_config(tmp_path, num_examples=250))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "datasets.0" in err[0] and "only label 0" in err[0] and "balance: true" in err[0]


def test_the_whole_file_has_both_classes_and_validates(tmp_path, capsys):
    assert main(["validate", str(_config(tmp_path))]) == 0
    assert "only label" not in capsys.readouterr().err
