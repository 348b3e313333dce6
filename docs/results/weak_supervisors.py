"""Weak supervisors' test accuracy and AUROC, read from a sweep's stored weak labels (no retraining).

    PYTHONPATH=platform python docs/results/weak_supervisors.py /tmp/w2s-results/results > docs/results/weak_supervisors.csv

One row per (dataset, weak supervisor, seed): the soft labels of the test pool against its gold labels,
the test pool's majority-class rate, and the spread of the soft labels (a constant predictor has ~0)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from w2sweep.config import load_config
from w2sweep.data import pools_for
from w2sweep.grid import expand_cells
from w2sweep.weak import _from_parquet


def main(sweep_dir: str) -> None:
    """Run from the repository root: the sweep's data paths are relative to it."""
    root = Path(sweep_dir)
    rows, seen = [], set()
    for cell in expand_cells(load_config(root / "sweep.yaml")):  # the weak-label keys the cells read
        if cell.weak_key is None or cell.weak_key in seen:
            continue
        seen.add(cell.weak_key)
        path = root / "weak_labels" / f"{cell.weak_key}.parquet"
        if not path.exists():
            continue
        labels = _from_parquet(path.read_bytes())
        gold = pools_for(cell.dataset, cell.seed).test.labels.astype(int)
        share = gold.mean()
        rows.append(dict(dataset=cell.dataset.name, weak_supervisor=cell.weak_name, seed=cell.seed,
                         accuracy=float(((labels.test > 0.5) == gold).mean()),
                         auroc=float(roc_auc_score(gold, labels.test)),
                         majority_rate=float(max(share, 1 - share)),
                         soft_label_std=float(np.std(labels.test))))
    table = pd.DataFrame(rows).sort_values(["dataset", "weak_supervisor", "seed"])
    table.to_csv(sys.stdout, index=False, float_format="%.4f")
    summary = table.groupby(["dataset", "weak_supervisor"])[["accuracy", "auroc", "majority_rate", "soft_label_std"]]
    print(summary.agg(["mean", "std"]).round(3).to_string(), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
