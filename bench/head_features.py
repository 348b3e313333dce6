"""P4: what stored frozen-body features save a head-only student, per cell.

    .venv/bin/python bench/head_features.py                 # minilm-l6 head-only, 4 cells per side
    .venv/bin/python bench/head_features.py --model tiny-bert --cells 2

Both sides run the same head-only cells (seq-sft on the synthetic sentiment task, a spending fraction
each) through `w2sweep.cells._train_and_score`, the function `run_cell` trains with, in this process,
interleaved cell by cell:
  (stored) with the student's stored features (`w2sweep.features`): the head trains and scores on them;
  (body)   without: the frozen body runs forward on every training, validation and test batch, as
           before features were stored.
The features' one-time computation (`ensure_features`, every pool of the dataset) is timed too: a sweep
pays it once per (dataset, student, seed) key, however many cells read it. Reported: mean seconds per
cell on each side, their ratio, and after how many cells the one-time computation has paid for itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm-l6", help="student model reference (default minilm-l6)")
    p.add_argument("--cells", type=int, default=4, help="cells per side (one spending fraction each)")
    p.add_argument("--budget", type=float, default=64, help="labeling budget of every cell")
    p.add_argument("--epochs", type=int, default=4, help="epochs per stage")
    args = p.parse_args()

    import torch

    from w2sweep.cells import _train_and_score
    from w2sweep.config import parse_config
    from w2sweep.features import ensure_features, load_features
    from w2sweep.data import pools_for
    from w2sweep.grid import expand_cells
    from w2sweep.storage import Storage
    from w2sweep.weak import ensure_weak_labels, load_weak_labels

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    fractions = [round(i / max(1, args.cells - 1), 3) for i in range(args.cells)]
    with tempfile.TemporaryDirectory(prefix="w2sweep-head-") as tmp:
        config = parse_config(dict(
            name="head", storage=tmp,
            datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=3000,
                           pools=dict(weak_train=300, val=200, test=500, weak_label=800, oracle=200))],
            weak_supervisors=[dict(model="tiny-bert", name="tiny-weak", epochs=2, max_length=32)],
            students=[dict(model=args.model, name="probe", mode="head", epochs=args.epochs, patience=args.epochs,
                           max_length=64)],
            methods=["seq-sft"], budgets=[args.budget], spending_fractions=fractions,
        ))
        storage = Storage.from_uri(config.storage)
        cells = expand_cells(config)
        first = cells[0]
        ensure_weak_labels(storage, config.name, first.dataset, first.weak_supervisor, first.seed)
        t = time.monotonic()
        ensure_features(storage, config.name, first.dataset, first.student, first.seed, first.settings.max_length)
        compute_s = time.monotonic() - t
        pools, weak = pools_for(first.dataset, first.seed), load_weak_labels(storage, config.name, first.weak_key)
        stored = load_features(storage, config.name, first.features_key).for_pools(pools)
        seconds = {"stored": [], "body": []}
        for cell in cells:
            for side, features in (("body", None), ("stored", stored)):
                t = time.monotonic()
                _train_and_score(cell, pools, weak, features)
                seconds[side].append(time.monotonic() - t)
    body, with_features = statistics.mean(seconds["body"]), statistics.mean(seconds["stored"])
    report = dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python", "bench/head_features.py", *sys.argv[1:]]),
        machine=dict(nproc=len(os.sched_getaffinity(0)), python=platform.python_version(),
                     loadavg_1m=os.getloadavg()[0]),
        model=args.model, cells=len(cells), pool_sizes={k: len(v) for k, v in stored.items()},
        features_once_s=round(compute_s, 2), body_cell_s=round(body, 2), stored_cell_s=round(with_features, 2),
        speedup=round(body / with_features, 1),
        cells_to_pay_back=round(compute_s / max(1e-9, body - with_features), 1),
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
