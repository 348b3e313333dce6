"""What a fixed mmap threshold would cost a CPU training worker: the same small `fine_tune` run as
bench/memory.py (micro batch 16 x 64 tokens, two epochs of 4 steps, 64 validation texts after each),
timed in fresh subprocesses with glibc's default malloc and with MALLOC_MMAP_THRESHOLD_=131072 (under
which the peak RSS follows the bytes alive, as the memory planner estimates: bench/memory.py), in turn,
A B A B, so that a drift of the shared machine's speed falls on both. Per case: the median seconds of
the timed run (after a warm-up run in the same process), each allocator's, and the median of the
pairwise ratios fixed / default. Why w2sweep's workers keep glibc's default: docs/benchmarks.md,
"Memory planner".

    W2SWEEP_CACHE=~/.cache/w2sweep HF_HUB_OFFLINE=1 PYTHONPATH=platform python bench/malloc_speed.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from memory import EXAMPLES, FIXED_MMAP_THRESHOLD, _run  # bench/memory.py: the run whose peak it measures


def timed(ref: str, mode: str) -> float:
    """Runs in the child: seconds of one `_run` of `ref` in `mode`, after an untimed one (imports, pools)."""
    import torch

    from w2sweep.models import load_tokenizer
    from w2sweep.models.registry import default_tokenizer

    torch.set_num_threads(1)  # what a 1-CPU cell gets
    tokenizer = load_tokenizer(default_tokenizer(ref))
    _run(ref, mode, examples=EXAMPLES, tokenizer=tokenizer)
    start = time.perf_counter()
    _run(ref, mode, examples=EXAMPLES, tokenizer=tokenizer)
    return time.perf_counter() - start


def _child(ref: str, mode: str, env: dict) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", ref, mode], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="minilm-l6:full,minilm-l6:lora,smollm2-135m:lora,smollm2-135m:head")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(timed(*args.child)))
        return
    print(f"{'case':<20} {'default s':>9} {'fixed s':>8} {'fixed/default':>13}  (medians of {args.pairs} pairs)")
    for case in args.cases.split(","):
        ref, mode = case.split(":")
        default, fixed = [], []
        for _ in range(args.pairs):
            default.append(_child(ref, mode, {}))
            fixed.append(_child(ref, mode, FIXED_MMAP_THRESHOLD))
        ratio = statistics.median(f / d for f, d in zip(fixed, default))
        print(f"{case:<20} {statistics.median(default):>9.2f} {statistics.median(fixed):>8.2f} {ratio:>13.3f}"
              f"  (ratios {min(f / d for f, d in zip(fixed, default)):.3f}-{max(f / d for f, d in zip(fixed, default)):.3f})",
              flush=True)


if __name__ == "__main__":
    main()
