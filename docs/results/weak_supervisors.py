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
from w2sweep.data import pools_for, resolve_dataset
from w2sweep.weak import _from_parquet, weak_labels_key


def main(sweep_dir: str) -> None:
    root = Path(sweep_dir)
    config = load_config(root / "sweep.yaml")
    rows = []
    for spec in config.datasets:
        dataset = resolve_dataset(spec)
        for weak in config.weak_supervisors:
            for seed in config.seeds:
                path = root / "weak_labels" / f"{weak_labels_key(dataset, weak, seed)}.parquet"
                if not path.exists():
                    continue
                labels = _from_parquet(path.read_bytes())
                gold = pools_for(dataset, seed).test.labels.astype(int)
                share = gold.mean()
                rows.append(dict(dataset=dataset.name, weak_supervisor=weak.label, seed=seed,
                                 accuracy=float(((labels.test > 0.5) == gold).mean()),
                                 auroc=float(roc_auc_score(gold, labels.test)),
                                 majority_rate=float(max(share, 1 - share)),
                                 soft_label_std=float(np.std(labels.test))))
    table = pd.DataFrame(rows)
    table.to_csv(sys.stdout, index=False, float_format="%.4f")
    summary = table.groupby(["dataset", "weak_supervisor"])[["accuracy", "auroc", "majority_rate", "soft_label_std"]]
    print(summary.agg(["mean", "std"]).round(3).to_string(), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
