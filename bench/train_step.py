"""P2 diagnosis: the steady-state step time of `w2sweep.train.fine_tune` and where its GPU time goes.

    python bench/train_step.py full full-compile full-fp32 full-nomaster    # on a GPU (0.5B Qwen2 shape)
    python bench/train_step.py --tiny full full-compile                      # anywhere (tiny shape)

`train_throughput.py` times whole `fine_tune` calls on fresh models, tokenising included, as a cell
pays them. This script separates the step from what a call pays once: on one model it runs
`fine_tune` on 256 and on 768 pre-tokenised examples (8 and 24 steps of 32 examples); the step time is
the difference over 16 steps and "fixed" is the rest of the 256-example call. It then profiles a
3-step call and writes the table of GPU time per kernel to `--out`/profile_<variant>.txt.

Variants (names, combinable): `full` / `lora` trains every weight / LoRA adapters; `compile` sets the
student's `compile`; `fp32` trains fp32 weights under bf16 autocast (the loop before bf16 master
weights); `nomaster` casts the whole model to bf16 and lets AdamW step the bf16 weights (no fp32
masters: faster to write, but updates under bf16's resolution are lost).
MFU = 6 x non-embedding parameters x tokens/s / 989e12 (H100 dense bf16).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_throughput as tt  # noqa: E402

import w2sweep.train.plain as plain  # noqa: E402
from w2sweep.models import load_tokenizer  # noqa: E402
from w2sweep.train import TokenizedTexts, TrainSettings, fine_tune  # noqa: E402

BATCH = 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", help="e.g. full, full-compile, full-fp32, full-nomaster, lora")
    p.add_argument("--tiny", action="store_true", help="the tiny shape at sequence length 64")
    p.add_argument("--out", default=".", help="folder for the profile tables")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seq_len = 64 if args.tiny else 512
    tokenizer = load_tokenizer("minilm-l6")
    texts = tt.synthetic_texts(tokenizer, 768 + BATCH, seq_len, seed=0)
    labels = np.random.default_rng(1).integers(0, 2, size=len(texts)).astype(np.float32)
    val = TokenizedTexts(tokenizer, texts[768:], seq_len)
    subsets = {n: TokenizedTexts(tokenizer, texts[:n], seq_len) for n in (64, 96, 256, 768)}
    base = tt.build_student(tt.QWEN2_TINY if args.tiny else tt.QWEN2_0_5B, pad_token_id=tokenizer.pad_token_id,
                            seed=0)
    n_params = tt.non_embedding_params(base)
    masters = plain.bf16_weights

    for name in args.variants:
        plain.bf16_weights = masters if "fp32" not in name and "nomaster" not in name else (lambda device: False)
        model = copy.deepcopy(base)
        if "lora" in name:
            model = tt.with_lora(model)
        model = model.to(device)
        if "nomaster" in name:
            model = model.to(torch.bfloat16)
        settings = TrainSettings(lr=5e-5, epochs=1, batch_size=BATCH, max_length=seq_len, warmup_ratio=0.1,
                                 patience=1, micro_batch_size=BATCH, compile="compile" in name)

        def call(n: int) -> float:
            t = time.monotonic()
            fine_tune(model, subsets[n], labels[:n], val_examples=val, val_labels=labels[768:], settings=settings,
                      seed=0)
            sync()
            return time.monotonic() - t

        warm = call(64)  # compiles, where compile is on
        t256, t768 = call(256), call(768)
        step = (t768 - t256) / 16
        mfu = 6 * n_params * BATCH * seq_len / step / 989e12 if device.type == "cuda" else float("nan")
        print(f"{name}: step {1000 * step:.1f} ms -> {BATCH / step:.1f} ex/s, MFU {mfu:.3f}; "
              f"fixed {t256 - 8 * step:.2f} s; warm-up {warm:.1f} s", flush=True)
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            call(96)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=22, max_name_column_width=60)
        Path(args.out, f"profile_{name}.txt").write_text(table)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    plain.bf16_weights = masters


if __name__ == "__main__":
    main()
