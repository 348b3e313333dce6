"""The memory planner's estimate (`w2sweep.memory`, device "cpu": fp32) beside the measured peak of a
small `fine_tune` run on the CPU, per model and mode.

Each run is a fresh subprocess: a warm-up run of tiny-bert (imports, thread pools), then its resident
set (RSS) as the baseline; then it tokenizes its texts (every one `max_length` tokens, so each micro
batch is full length), loads the classifier (weights read), trains one epoch of 4 steps and predicts
64 validation texts. Measured = peak RSS (VmHWM, reset after the warm-up) - baseline: weights,
gradients, AdamW states, best weights, activations, and whatever the allocator and libraries keep.
"saved MB" is what autograd keeps for backward in one training forward (`saved_bytes`), beside the
estimate's activation column ("activ. MB", the larger of training's and prediction's).

    PYTHONPATH=platform python bench/memory.py [--models tiny-bert,minilm-l6,smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

BATCH, MAX_LENGTH, EXAMPLES = 16, 64, 64
MB = 2**20


def _status_bytes(field: str) -> int:
    """VmRSS or VmHWM (peak RSS since the last reset) of this process, in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def _run(ref: str, mode: str, *, examples: int) -> None:
    import numpy as np
    import torch

    from w2sweep.models import TrainSettings, load_classifier, load_tokenizer
    from w2sweep.models.registry import default_tokenizer
    from w2sweep.train import TokenizedTexts, fine_tune

    tokenizer = load_tokenizer(default_tokenizer(ref))
    texts = [" ".join(f"word{(i * 7 + j) % 50}" for j in range(MAX_LENGTH)) for i in range(2 * examples)]
    train, val = TokenizedTexts(tokenizer, texts[:examples], MAX_LENGTH), TokenizedTexts(tokenizer, texts[examples:], MAX_LENGTH)
    labels = (np.arange(2 * examples) % 2).astype(np.float32)
    _, model = load_classifier(ref, seed=0, mode=mode, device=torch.device("cpu"))
    settings = TrainSettings(lr=1e-4, epochs=1, batch_size=BATCH, max_length=MAX_LENGTH, min_steps=0)
    fine_tune(model, train, labels[:examples], val_examples=val, val_labels=labels[examples:].round(),
              settings=settings, seed=0)


def saved_bytes(ref: str, mode: str) -> int:
    """Bytes autograd keeps for backward in one training forward of a micro batch (saved_tensors_hooks,
    each storage once, parameters left out): the activation term alone, without allocator effects."""
    import torch

    from w2sweep.models import load_classifier

    _, model = load_classifier(ref, seed=0, mode=mode, device=torch.device("cpu"))
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(5, 1000, (BATCH, MAX_LENGTH))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return sum(seen.values())


def measure(ref: str, mode: str) -> dict:
    """Runs in the child: the peak RSS growth (bytes) of loading `ref` and fine-tuning it in `mode`,
    after a warm-up run of tiny-bert in the same mode (lazy imports, thread pools, the tokenizer) whose
    freed memory is handed back (malloc_trim) and whose peak is cleared (/proc/self/clear_refs 5)."""
    import ctypes
    import gc

    import torch

    torch.set_num_threads(1)
    _run("tiny-bert", mode, examples=BATCH)  # the framework's own first-use memory, not counted
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    baseline = _status_bytes("VmRSS")
    _run(ref, mode, examples=EXAMPLES)  # the tokenizer and texts are counted too: a few MB
    measured = _status_bytes("VmHWM") - baseline
    return dict(measured=measured, saved=saved_bytes(ref, mode))


def estimated(ref: str, mode: str) -> dict:
    """The planner's CPU estimate (bytes) of the same run, from the config alone."""
    from w2sweep.memory import Layout, estimate, model_shape

    shape = model_shape(ref)
    found = estimate(shape, Layout(mode, 1, 2, False, BATCH, MAX_LENGTH), device="cpu")
    return dict(params=shape.params[mode], trained=shape.trainable[mode], states=found.model_states,
                activations=found.activations, estimate=found.total)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny-bert,minilm-l6,smollm2-135m")
    parser.add_argument("--modes", default="full,lora,head")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print(f"CPU, fp32, 1 worker, micro batch {BATCH} x {MAX_LENGTH} tokens, {EXAMPLES // BATCH} steps; MB = 2**20 bytes")
    print(f"{'model':<13} {'mode':<5} {'params':>11} {'trained':>11} {'states MB':>9} {'activ. MB':>9} "
          f"{'estimate MB':>11} {'measured MB':>11} {'est/meas':>8} {'saved MB':>8}")
    for ref in args.models.split(","):
        for mode in args.modes.split(","):
            child = subprocess.run([sys.executable, __file__, "--child", ref, mode], capture_output=True, text=True)
            if child.returncode != 0:
                print(f"{ref:<13} {mode:<5} failed: {child.stderr.strip().splitlines()[-1]}")
                continue
            m, e = json.loads(child.stdout.strip().splitlines()[-1]), estimated(ref, mode)
            print(f"{ref:<13} {mode:<5} {e['params']:>11,} {e['trained']:>11,} {e['states'] / MB:>9.1f} "
                  f"{e['activations'] / MB:>9.1f} {e['estimate'] / MB:>11.1f} {m['measured'] / MB:>11.1f} "
                  f"{e['estimate'] / m['measured']:>8.2f} {m['saved'] / MB:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
