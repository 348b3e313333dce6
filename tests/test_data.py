"""Loading binary tasks: synthetic, local files (incl. the real SST-2 and BoolQ files) and hub datasets."""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest

from w2sweep.config import DatasetSpec
from w2sweep.data import DataError, Task, load_task, normalize_text
from w2sweep.data.synthetic import SYNTHETIC_TASKS, make_sentiment

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def local(path, **fields) -> DatasetSpec:
    return DatasetSpec(name=fields.pop("name", "tmp"), source="local", path=str(path), **fields)


# --- synthetic -----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    a, b, c = make_sentiment(500, seed=0), make_sentiment(500, seed=0), make_sentiment(500, seed=1)
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert a.texts != c.texts


def test_synthetic_is_balanced_unique_and_sized():
    task = make_sentiment(2000)
    assert len(task) == 2000 and task.labels.dtype == np.int64 and set(task.labels.tolist()) == {0, 1}
    assert abs(task.labels.mean() - 0.5) < 0.02
    assert len({normalize_text(t) for t in task.texts}) == len(task)


def test_synthetic_task_loads_through_spec():
    task = load_task(DatasetSpec(name="synthetic-sentiment", source="synthetic", num_examples=300))
    assert "synthetic-sentiment" in SYNTHETIC_TASKS
    assert len(task) == 300 and task.texts == make_sentiment(300, seed=0).texts


def test_synthetic_words_are_too_many_for_a_small_pool():
    """A few hundred examples leave many rare sentiment words unseen (what a pretrained model adds)."""
    from w2sweep.data.synthetic import NEGATIVE, POSITIVE

    assert len(POSITIVE) >= 120 and len(NEGATIVE) >= 120 and not set(POSITIVE) & set(NEGATIVE)
    seen = " ".join(make_sentiment(300).texts).lower()
    unseen = [w for w in POSITIVE + NEGATIVE if f" {w}." not in seen and f" {w} " not in seen]
    assert len(unseen) > 40


# --- Task ----------------------------------------------------------------------------------------


def test_task_subset_and_validation():
    task = Task("t", ["a", "b", "c"], [0, 1, 1])
    sub = task.subset([2, 0])
    assert sub.texts == ["c", "a"] and sub.labels.tolist() == [1, 0] and len(sub) == 2
    with pytest.raises(DataError, match="0 or 1"):
        Task("t", ["a"], [2])
    with pytest.raises(ValueError):
        task.labels[0] = 1  # read-only


# --- local files ---------------------------------------------------------------------------------

ROWS = [{"sentence": "a fine film", "label": 1}, {"sentence": "a dull film", "label": 0},
        {"sentence": "\"quite\" good, really", "label": 1}]  # a leading quote: tsv must not parse quoting


def write(path: Path, rows=ROWS) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        path.write_text("sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n" for r in rows))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_local_formats(tmp_path, suffix):
    task = load_task(local(write(tmp_path / f"train{suffix}"), text="sentence"))
    assert task.texts == [r["sentence"] for r in ROWS] and task.labels.tolist() == [1, 0, 1]


def test_local_directory_picks_the_split_file_and_caps_rows(tmp_path):
    write(tmp_path / "train.csv")
    write(tmp_path / "dev.jsonl", ROWS[:1])
    assert load_task(local(tmp_path, split="dev", text="sentence")).texts == ["a fine film"]
    assert len(load_task(local(tmp_path, text="sentence", num_examples=2))) == 2
    with pytest.raises(DataError, match="'test'"):
        load_task(local(tmp_path, split="test", text="sentence"))


def test_json_lines_in_a_json_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert load_task(local(path, text="sentence")).labels.tolist() == [1, 0, 1]


def test_template_text_and_label_map(tmp_path):
    rows = [{"q": "is it?", "p": "yes it is", "a": "yes"}, {"q": "was it?", "p": "no", "a": "no"}]
    spec = local(write(tmp_path / "d.jsonl", rows), text="{p}\nQuestion: {q}", label="a",
                 label_map={"yes": 1, "no": 0})
    task = load_task(spec)
    assert task.texts == ["yes it is\nQuestion: is it?", "no\nQuestion: was it?"]
    assert task.labels.tolist() == [1, 0]


def test_bool_and_string_labels(tmp_path):
    rows = [{"t": "x", "l": True}, {"t": "y", "l": False}]
    assert load_task(local(write(tmp_path / "b.jsonl", rows), text="t", label="l")).labels.tolist() == [1, 0]
    path = tmp_path / "s.csv"
    path.write_text("t,l\nx,true\ny,0\n")
    assert load_task(local(path, text="t", label="l")).labels.tolist() == [1, 0]


def test_bad_label_names_the_value(tmp_path):
    rows = [{"sentence": "ok", "label": 1}, {"sentence": "meh", "label": "neutral"}]
    with pytest.raises(DataError, match=r"'tmp'.*'label'.*'neutral'.*row 1.*allowed"):
        load_task(local(write(tmp_path / "d.jsonl", rows), text="sentence"))
    with pytest.raises(DataError, match=r"'neutral'.*label_map \['neg', 'pos'\]"):
        load_task(local(tmp_path / "d.jsonl", text="sentence", label_map={"pos": 1, "neg": 0}))


def test_missing_column_is_named(tmp_path):
    path = write(tmp_path / "d.csv")
    with pytest.raises(DataError, match=r"column 'text' not found; available: \['sentence', 'label'\]"):
        load_task(local(path))
    with pytest.raises(DataError, match="column 'passage' not found"):
        load_task(local(path, text="{passage} {sentence}"))


def test_unreadable_file_is_a_data_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("[{not json")
    with pytest.raises(DataError, match="cannot read .*broken.json"):
        load_task(local(path))
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="allowed extensions"):
        load_task(local(path))


# --- real files under ../shared/data -------------------------------------------------------------


def test_sst2_train_file_loads_whole():
    task = load_task(local(SHARED / "sst2", name="sst2", text="sentence"))
    assert len(task) == 67_349
    assert int(task.labels.sum()) == 37_569 and int((task.labels == 0).sum()) == 29_780
    assert task.texts[0] == "hide new secretions from the parental units"
    assert "'s a lousy one at that" in task.texts


def test_boolq_dev_file_loads_with_a_template():
    spec = local(SHARED / "boolq" / "dev.jsonl", name="boolq", text="{passage}\nQuestion: {question}?",
                 label="answer")
    task = load_task(spec)
    assert len(task) == 3_270 and int(task.labels.sum()) == 2_033
    assert task.texts[0].startswith("All biomass goes through") and task.texts[0].endswith(
        "\nQuestion: does ethanol take more energy make that produces?")


# --- hub (datasets library, offline) -------------------------------------------------------------


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return datasets


def hub(path, **fields) -> DatasetSpec:
    return DatasetSpec(name="hubtask", source="hub", path=str(path), **fields)


def test_hub_loads_a_save_to_disk_directory(tmp_path, hf_cache):
    datasets = hf_cache
    data = {"question": ["q1", "q2", "q3"], "passage": ["p1", "p2", "p3"], "answer": [True, False, True]}
    datasets.Dataset.from_dict(data).save_to_disk(tmp_path / "single")
    other = {"question": ["other"], "passage": ["x"], "answer": [False]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(other), "validation": datasets.Dataset.from_dict(data)}
                         ).save_to_disk(tmp_path / "dict")

    task = load_task(hub(tmp_path / "single", text="{passage} {question}", label="answer", num_examples=2))
    assert task.texts == ["p1 q1", "p2 q2"] and task.labels.tolist() == [1, 0]
    task = load_task(hub(tmp_path / "dict", split="validation", text="question", label="answer"))
    assert task.labels.tolist() == [1, 0, 1]
    with pytest.raises(DataError, match="split 'test'.*allowed: \\['train', 'validation'\\]"):
        load_task(hub(tmp_path / "dict", split="test", text="question", label="answer"))


def test_hub_loads_a_dataset_repository_directory(tmp_path, hf_cache):
    """`load_dataset(<dir>)` on the hub layout: data/<split>-00000-of-00001.parquet."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    pd.DataFrame({"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}).to_parquet(
        repo / "data" / "train-00000-of-00001.parquet")
    pd.DataFrame({"sentence": ["meh"], "label": [0]}).to_parquet(repo / "data" / "test-00000-of-00001.parquet")

    assert load_task(hub(repo, text="sentence")).texts == ["good", "bad", "fine"]
    assert load_task(hub(repo, split="test", text="sentence")).labels.tolist() == [0]
    with pytest.raises(DataError, match="cannot load .*split 'dev'"):
        load_task(hub(repo, split="dev", text="sentence"))
    with pytest.raises(DataError, match="column 'text' not found"):
        load_task(hub(repo))


def test_hub_id_that_cannot_be_reached_is_a_data_error(hf_cache):
    with pytest.raises(DataError, match="cannot load 'no-such-org/no-such-dataset-w2sweep'"):
        load_task(hub("no-such-org/no-such-dataset-w2sweep"))
