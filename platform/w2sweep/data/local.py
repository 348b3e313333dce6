"""Tasks from local files: jsonl, json (a list of records, columns, or JSON lines), csv, tsv, parquet.

A directory path means the file in it whose stem is `spec.split` (``sst2/`` + ``train`` -> ``sst2/train.tsv``).
Every value is read as written (csv/tsv cells as strings, no NA guessing); the column mapping is
`task.table_to_task`, shared with the hub loader.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from w2sweep.data.task import DataError, Task, one_line, table_to_task

if TYPE_CHECKING:
    from w2sweep.config import DatasetSpec

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def resolve_file(spec: DatasetSpec) -> Path:
    """The file `spec.path` names: itself, or for a directory its file with stem `spec.split`."""
    path = Path(os.path.expanduser(spec.path))
    if path.is_dir():
        matches = sorted(p for p in path.iterdir() if p.stem == spec.split and p.suffix in SUFFIXES)
        if len(matches) != 1:
            found = sorted(p.name for p in path.iterdir() if p.suffix in SUFFIXES)
            what = "no file" if not matches else f"{len(matches)} files"
            raise DataError(
                f"dataset {spec.name!r}: {what} named {spec.split!r}{list(SUFFIXES)} in {str(path)!r}; "
                f"it holds {found} (set `split` to one of their stems)"
            )
        path = matches[0]
    if path.suffix not in SUFFIXES:
        raise DataError(f"dataset {spec.name!r}: cannot read {path.name!r}; allowed extensions: {list(SUFFIXES)}")
    return path


def _read_json(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if not e.msg.startswith("Extra data"):  # several top-level values: JSON lines
                raise
        else:
            if not isinstance(data, (list, dict)):
                raise ValueError(f"top-level JSON is a {type(data).__name__}, not a list of records or a dict of columns")
            return pd.DataFrame.from_records(data) if isinstance(data, list) else pd.DataFrame(data)
    return pd.DataFrame.from_records([json.loads(line) for line in text.splitlines() if line.strip()])


def read_table(path: Path) -> pd.DataFrame:
    """All rows of one file; csv/tsv cells stay strings (tsv unquoted, as GLUE writes it)."""
    if path.suffix in (".json", ".jsonl"):
        return _read_json(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    tsv = path.suffix == ".tsv"
    return pd.read_csv(
        path,
        sep="\t" if tsv else ",",
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
        dtype=str,
        keep_default_na=False,
        encoding="utf-8",
    )


def read_local(spec: DatasetSpec) -> pd.DataFrame:
    """The rows of the local file `spec` names: its first `spec.num_examples` rows (all when unset)."""
    path = resolve_file(spec)
    try:
        frame = read_table(path)
    except (OSError, ValueError) as e:  # pandas/pyarrow parse errors, bad JSON and bad UTF-8 are ValueErrors
        raise DataError(f"dataset {spec.name!r}: cannot read {str(path)!r} ({one_line(e)})") from None
    if spec.num_examples is not None:
        frame = frame.head(spec.num_examples)
    return frame


def load_local(spec: DatasetSpec) -> Task:
    """The task in a local file, through the column mapping of `spec` (text, label, weak_label)."""
    return table_to_task(read_local(spec), spec)
