"""Tasks from the Hugging Face `datasets` library: a hub id (``boolq``, ``glue`` + subset ``sst2``), a
local dataset repository directory (``data/train-00000-of-00001.parquet`` ...) or a directory written
by `Dataset.save_to_disk`. The column mapping is `task.table_to_task`, shared with local files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from w2sweep.data.task import DataError, Task, one_line, table_to_task

if TYPE_CHECKING:
    import pandas as pd

    from w2sweep.config import DatasetSpec

_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _is_saved_to_disk(path: str) -> bool:
    directory = Path(os.path.expanduser(path))
    return directory.is_dir() and any((directory / m).is_file() for m in _SAVED_MARKERS)


def load_hub(spec: DatasetSpec) -> Task:
    """The task in a hub dataset, through the column mapping of `spec` (text, label, weak_label)."""
    return table_to_task(read_hub(spec), spec)


def read_hub(spec: DatasetSpec) -> pd.DataFrame:
    """The rows of split `spec.split` of `spec.path` (configuration `spec.subset`): its first
    `spec.num_examples` rows (all when unset)."""
    import datasets  # slow to import; only this loader needs it

    try:
        if _is_saved_to_disk(spec.path):
            ds = datasets.load_from_disk(str(Path(os.path.expanduser(spec.path))))
            if isinstance(ds, datasets.DatasetDict):
                if spec.split not in ds:
                    raise DataError(
                        f"dataset {spec.name!r}: split {spec.split!r} not in {spec.path!r}; allowed: {sorted(ds)}"
                    )
                ds = ds[spec.split]
        else:
            ds = datasets.load_dataset(spec.path, spec.subset, split=spec.split)
    except DataError:
        raise
    except (OSError, ValueError) as e:  # not found / offline are OSErrors; a bad split or config, ValueErrors
        raise DataError(
            f"dataset {spec.name!r}: cannot load {spec.path!r} (subset {spec.subset!r}, split {spec.split!r}): "
            f"{one_line(e)}"
        ) from None
    if spec.num_examples is not None:
        ds = ds.select(range(min(spec.num_examples, len(ds))))
    return ds.to_pandas()
