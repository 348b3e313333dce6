"""Hub dataset families as balanced binary tasks (rows written here in each hub dataset's own format,
plus the real SciQ and BoolQ files), and datasets that bring their own weak-label column."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from w2sweep.grid import check_references, expand_cells
from w2sweep.config import ConfigError, DatasetSpec, parse_config
from w2sweep.data import DataError, load_task, pools_for, resolve_dataset
from w2sweep.data.registry import loaders
from w2sweep.storage import Storage
from w2sweep.weak import ensure_weak_labels, load_weak_labels, weak_labels_key

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
N = 16  # rows per loader


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows as the hub stores them: parquet keeps lists and types; jsonl is what a download gives."""
    if path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def local(path, loader, **fields) -> DatasetSpec:
    return DatasetSpec(name=fields.pop("name", loader), source="local", path=str(path), loader=loader, **fields)


# Each family: hub-format rows, and for each row the text shown with label 1 (the correct option or
# the row's own positive case) -- so a test can check every example's label against its text.
def boolq_rows():
    return [dict(question=f"is claim {i} true", title=f"t{i}", answer=bool(i % 3), passage=f"Passage number {i}.")
            for i in range(N)]


def hellaswag_rows():
    return [dict(ind=i, activity_label="x", ctx_a=f"ctx {i}", ctx_b="", ctx=f"A man does thing {i}.",
                 endings=[f"ending {i} {j}" for j in range(4)], source_id="s", split="train",
                 split_type="indomain", label=str(i % 4)) for i in range(N)]


def paws_rows():
    return [dict(id=i, sentence1=f"first {i}", sentence2=f"second {i}", label=int(i % 4 == 0)) for i in range(N)]


def sciq_rows():
    return [dict(question=f"What is thing {i}?", distractor3=f"wrong {i} c", distractor1=f"wrong {i} a",
                 distractor2=f"wrong {i} b", correct_answer=f"right {i}", support="") for i in range(N)]


def cola_rows():
    return [dict(sentence=f"Sentence {i} here.", label=int(i % 2 == 0), idx=i) for i in range(N)]


def cosmos_rows():
    return [dict(id=str(i), context=f"Story {i}.", question=f"Why {i}?",
                 **{f"answer{j}": (f"right {i}" if j == i % 4 else f"wrong {i} {j}") for j in range(4)},
                 label=i % 4) for i in range(N)]


def quail_rows():
    return [dict(id=f"q{i}", context_id="c", question_id="x", domain="news", metadata={"author": "a"},
                 context=f"Long passage {i}.", question=f"What about {i}?", question_type="Causality",
                 answers=[f"right {i}" if j == i % 4 else f"wrong {i} {j}" for j in range(4)],
                 correct_answer_id=i % 4) for i in range(N)]


def social_rows():
    return [dict(context=f"Sam did {i}.", question=f"How would Sam feel {i}?",
                 **{f"answer{c}": (f"right {i}" if k == i % 3 else f"wrong {i} {c}") for k, c in enumerate("ABC")},
                 label=str(i % 3 + 1)) for i in range(N)]


def sst2_rows():
    return [dict(idx=i, sentence=f"a film number {i} ", label=int(i % 3 == 0)) for i in range(N)]


def amazon_rows():
    return [dict(label=int(i % 2), title=f"Title {i}", content=f"Body {i}.") for i in range(N)]


def hh_rows():
    return [dict(chosen=f"\n\nHuman: q{i}\n\nAssistant: good answer {i}",
                 rejected=f"\n\nHuman: q{i}\n\nAssistant: bad answer {i}") for i in range(N)]


FAMILIES = {  # loader: (rows, file suffix, label of a converted example from its text)
    "boolq": (boolq_rows, ".jsonl", lambda t: int(int(t.split("claim ")[1].split()[0]) % 3 != 0)),
    "hellaswag": (hellaswag_rows, ".parquet",
                  lambda t: int(t.split('Is "ending ')[1].split('"')[0].split()[1]) == int(t.split("thing ")[1].split(".")[0]) % 4),
    "paws": (paws_rows, ".parquet", lambda t: int(int(t.split("first ")[1].split()[0]) % 4 == 0)),
    "sciq": (sciq_rows, ".jsonl", lambda t: " A: right " in t),
    "cola": (cola_rows, ".parquet", lambda t: int(int(t.split()[1]) % 2 == 0)),
    "cosmos_qa": (cosmos_rows, ".jsonl", lambda t: "Answer: right " in t),
    "quail": (quail_rows, ".parquet", lambda t: 'Is the answer "right ' in t),
    "social_i_qa": (social_rows, ".jsonl", lambda t: 'Is the answer "right ' in t),
    "sst2": (sst2_rows, ".parquet", lambda t: int(int(t.split()[-1]) % 3 == 0)),
    "amazon_polarity": (amazon_rows, ".jsonl", lambda t: int(t.split()[1]) % 2),
    "anthropic_hh": (hh_rows, ".jsonl", lambda t: "good answer" in t),
}


def test_every_registered_loader_is_tested_here():
    assert set(FAMILIES) == set(loaders()) == {"boolq", "hellaswag", "paws", "sciq", "cola", "cosmos_qa", "quail",
                                               "social_i_qa", "sst2", "amazon_polarity", "anthropic_hh"}


@pytest.mark.parametrize("loader", sorted(FAMILIES))
def test_loader_makes_a_balanced_binary_task_from_hub_format_rows(tmp_path, loader):
    make_rows, suffix, expected_label = FAMILIES[loader]
    path = write_rows(tmp_path / f"train{suffix}", make_rows())
    task = load_task(local(path, loader))
    assert len(task) >= 4 and task.labels.sum() * 2 == len(task)  # 50/50
    for text, label in zip(task.texts, task.labels):
        assert int(expected_label(text)) == label, (loader, text, label)
    # The same rows give the same task (the option drawn per row is fixed, not per sweep seed).
    again = load_task(local(tmp_path, loader, split="train"))
    assert again.texts == task.texts and np.array_equal(again.labels, task.labels)


def test_multiple_choice_shows_the_correct_option_or_a_random_wrong_one():
    """Over many rows: about half the examples show the correct answer, and the wrong ones shown
    are spread over all the distractors."""
    from w2sweep.data.registry import convert_rows

    rows = [dict(question=f"q{i}", correct_answer="right", distractor1="wrong a", distractor2="wrong b",
                 distractor3="wrong c", support="") for i in range(600)]
    spec = DatasetSpec(name="sciq", source="hub", path="unused/for-this-test", loader="sciq")
    raw = [loaders()["sciq"].convert(r, np.random.default_rng(i)) for i, r in enumerate(rows)]
    assert 0.4 < np.mean([label for _, label in raw]) < 0.6
    shown = [t.split(" A: ")[1] for t, label in raw if label == 0]
    assert {s: shown.count(s) for s in set(shown)}.keys() == {"wrong a", "wrong b", "wrong c"}
    assert min(shown.count(s) for s in set(shown)) > 50
    task = convert_rows(loaders()["sciq"], pd.DataFrame(rows), spec)
    assert task.labels.mean() == 0.5


def test_hub_source_reads_a_saved_dataset_through_its_loader(tmp_path):
    import datasets

    datasets.Dataset.from_list(quail_rows()).save_to_disk(str(tmp_path / "quail"))
    task = load_task(DatasetSpec(name="quail", source="hub", path=str(tmp_path / "quail"), loader="quail"))
    assert task.labels.sum() * 2 == len(task) and all(t.startswith("Passage:\n\nLong passage") for t in task.texts)


def test_hub_dataset_named_like_a_loader_defaults_to_its_hub_id():
    # The schema knows no loader: the defaults are filled in when the grid is planned.
    boolq = resolve_dataset(DatasetSpec(name="boolq", source="hub"))
    assert (boolq.loader, boolq.path, boolq.subset) == ("boolq", "google/boolq", None)
    paws = resolve_dataset(DatasetSpec(name="paws", source="hub"))
    assert (paws.loader, paws.path, paws.subset) == ("paws", "google-research-datasets/paws", "labeled_final")
    mine = resolve_dataset(DatasetSpec(name="my-sciq", source="hub", loader="sciq"))
    assert mine.path == "allenai/sciq"
    mirror = DatasetSpec(name="boolq", source="hub", path="me/boolq-mirror")
    assert resolve_dataset(mirror).loader is None  # a path: plain columns
    assert DatasetSpec.model_validate_json(boolq.model_dump_json()) == boolq  # a cell's JSON round trip
    assert resolve_dataset(boolq) == boolq


def test_a_hub_loader_filled_in_by_name_is_checked_like_a_named_one():
    config = dict(name="x", datasets=[dict(name="boolq", source="hub", text="question")],
                  weak_supervisors=[dict(model="tiny-bert")], students=[dict(model="tiny-bert")],
                  methods=["seq-sft"], budgets=[1], spending_fractions=[0])
    with pytest.raises(ConfigError) as err:
        check_references(parse_config(config))
    assert err.value.lines == ["config error: datasets.0: dict: loader 'boolq' makes the text and label itself; "
                               "drop `text`, `label` and `label_map`"]


@pytest.mark.parametrize("fields,expected", [
    (dict(loader="imdb"), "unknown loader 'imdb'; allowed: amazon_polarity, anthropic_hh, boolq"),
    (dict(loader="sciq", text="question"), "makes the text and label itself"),
    (dict(loader="sciq", weak_label="weak"), "cannot be combined with a loader"),
])
def test_bad_loader_settings_are_one_line_config_errors(tmp_path, fields, expected):
    path = write_rows(tmp_path / "train.jsonl", sciq_rows())
    config = dict(name="x", datasets=[dict(name="d", source="local", path=str(path), **fields)],
                  weak_supervisors=[dict(model="tiny-bert")], students=[dict(model="tiny-bert")],
                  methods=["seq-sft"], budgets=[1], spending_fractions=[0])
    with pytest.raises(ConfigError) as err:  # the schema, or (an unknown loader) the planning step
        check_references(parse_config(config))
    assert len(err.value.lines) == 1 and expected in err.value.lines[0]
    assert err.value.lines[0].startswith("config error: datasets.0")


def test_rows_not_in_the_loaders_format_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="loader 'hellaswag' needs column 'ctx'"):
        load_task(local(write_rows(tmp_path / "a.jsonl", sciq_rows()), "hellaswag"))
    unlabeled = [dict(r, label=-1) for r in cola_rows()]  # GLUE's test split
    with pytest.raises(DataError, match=r"row 0 does not fit loader 'cola' .*label=-1"):
        load_task(local(write_rows(tmp_path / "b.jsonl", unlabeled), "cola"))
    blank = [dict(r, label="") for r in hellaswag_rows()]  # hellaswag's test split
    with pytest.raises(DataError, match="row 0 does not fit loader 'hellaswag'"):
        load_task(local(write_rows(tmp_path / "c.parquet", blank), "hellaswag"))


# ---- the real files ------------------------------------------------------------------------------


def test_real_sciq_files_become_balanced_question_answer_pairs():
    raw = json.loads((SHARED / "sciq" / "valid.json").read_text())
    task = load_task(DatasetSpec(name="sciq", source="local", path=str(SHARED / "sciq"), split="valid", loader="sciq"))
    assert len(raw) == 1000 and task.labels.sum() * 2 == len(task) and len(task) >= 900
    by_question = {f"Q: {r['question']} A: ": r for r in raw}
    for text, label in zip(task.texts, task.labels):
        question, answer = text.split(" A: ", 1)
        row = by_question[question + " A: "]
        assert (answer == row["correct_answer"].strip()) == bool(label) or row["correct_answer"] in (
            row["distractor1"], row["distractor2"], row["distractor3"])
        assert answer in {row["correct_answer"].strip(), row["distractor1"].strip(), row["distractor2"].strip(),
                          row["distractor3"].strip()}
    train = load_task(DatasetSpec(name="sciq", source="local", path=str(SHARED / "sciq"), loader="sciq",
                                  num_examples=2000))
    assert train.labels.sum() * 2 == len(train) and 1800 <= len(train) <= 2000


def test_real_boolq_dev_file_becomes_a_balanced_passage_question_task():
    raw = [json.loads(line) for line in (SHARED / "boolq" / "dev.jsonl").read_text().splitlines()]
    task = load_task(DatasetSpec(name="boolq", source="local", path=str(SHARED / "boolq" / "dev.jsonl"), loader="boolq"))
    num_false = sum(not r["answer"] for r in raw)
    assert (len(raw), num_false) == (3270, 1237)
    assert len(task) == 2 * num_false and task.labels.sum() == num_false  # the True majority undersampled
    answers = {f"Passage: {r['passage']}\nQuestion: {r['question']}".strip(): r["answer"] for r in raw}
    assert all(answers[t] == bool(y) for t, y in zip(task.texts, task.labels))


# ---- external weak labels ------------------------------------------------------------------------


@pytest.fixture
def column_dataset(tmp_path):
    """A local task whose `weak` column is right on 3 of every 4 rows, with soft values."""
    from w2sweep.data.synthetic import make_sentiment

    task = make_sentiment(300, seed=7)
    rows = []
    for i, (text, label) in enumerate(zip(task.texts, task.labels)):
        right = i % 4 != 0
        p = 0.8 if (label == 1) == right else 0.3  # P(label=1) the weak source reports
        rows.append(dict(text=text, label=int(label), weak=p))
    path = write_rows(tmp_path / "weak.jsonl", rows)
    spec = DatasetSpec(name="own-weak", source="local", path=str(path), weak_label="weak",
                       pools=dict(weak_train=10, val=40, test=80))
    return spec, {r["text"]: r["weak"] for r in rows}


def test_weak_label_column_is_loaded_and_follows_every_pool(column_dataset):
    spec, weak_of = column_dataset
    pools = pools_for(spec, 3)
    for pool in (pools.weak_label, pools.oracle, pools.val, pools.test):
        assert pool.weak_labels.tolist() == pytest.approx([weak_of[t] for t in pool.texts])


def test_weak_label_column_replaces_the_weak_supervisor(column_dataset, tmp_path, monkeypatch):
    import w2sweep.weak as weak_module

    spec, weak_of = column_dataset
    monkeypatch.setattr(weak_module, "train_weak_supervisor",
                        lambda *a, **k: pytest.fail("no weak supervisor may be trained for a weak-label column"))
    storage = Storage.from_uri(str(tmp_path / "store"))
    key = ensure_weak_labels(storage, "s", spec, None, 3)
    assert key == weak_labels_key(spec, None, 3)
    labels = load_weak_labels(storage, "s", key)
    pools = pools_for(spec, 3)
    assert labels.weak_label.tolist() == pytest.approx([weak_of[t] for t in pools.weak_label.texts])
    assert labels.val.tolist() == pytest.approx([weak_of[t] for t in pools.val.texts])
    expected = np.mean([(weak_of[t] > 0.5) == (y == 1) for t, y in zip(pools.test.texts, pools.test.labels)])
    assert labels.test_accuracy == pytest.approx(expected) and 0.6 < expected < 0.9


def test_weak_label_column_datasets_have_no_weak_supervisor_axis(column_dataset, tmp_path):
    spec, _ = column_dataset
    base = dict(name="w", students=[dict(model="tiny-bert")], methods=["seq-sft"], budgets=[2],
                spending_fractions=[0, 0.5])
    synthetic = dict(name="synthetic-sentiment", source="synthetic", num_examples=1400)
    config = parse_config(dict(base, datasets=[spec.model_dump(mode="json"), synthetic],
                               weak_supervisors=[dict(model="tiny-bert", name="w1"), dict(model="tiny-bert", name="w2")]))
    grid = expand_cells(config)
    own = [c for c in grid if c.dataset.name == "own-weak"]
    assert len(own) == 2 and all(c.weak_supervisor is None and c.weak_name == "column:weak" for c in own)
    assert len(grid) == 2 + 2 * 2  # the synthetic dataset crosses both supervisors
    # Only weak-label columns: no supervisor is needed, and one given is reported as unused.
    assert parse_config(dict(base, datasets=[spec.model_dump(mode="json")])).weak_supervisors == []
    with pytest.warns(UserWarning, match="`weak_supervisors` is not used"):
        parse_config(dict(base, datasets=[spec.model_dump(mode="json")], weak_supervisors=[dict(model="tiny-bert")]))
    with pytest.raises(ConfigError, match="dataset 'synthetic-sentiment' has no `weak_label` column"):
        parse_config(dict(base, datasets=[spec.model_dump(mode="json"), synthetic]))


def test_bad_weak_label_values_name_the_row(tmp_path):
    rows = [dict(text="a", label=1, weak=0.9), dict(text="b", label=0, weak=1.7)]
    with pytest.raises(DataError, match=r"weak-label column 'weak' has value 1.7 at row 1; allowed: a probability in \[0, 1\]"):
        load_task(DatasetSpec(name="x", source="local", path=str(write_rows(tmp_path / "x.jsonl", rows)),
                              weak_label="weak"))
    with pytest.raises(DataError, match="weak-label column 'nope' not found"):
        load_task(DatasetSpec(name="x", source="local", path=str(tmp_path / "x.jsonl"), weak_label="nope"))
    mixed = [dict(text="a", label=1, weak=True), dict(text="b", label=0, weak="0"), dict(text="c", label=0, weak=0.25)]
    task = load_task(DatasetSpec(name="x", source="local", path=str(write_rows(tmp_path / "m.jsonl", mixed)),
                                 weak_label="weak"))
    assert task.weak_labels.tolist() == [1.0, 0.0, 0.25]
