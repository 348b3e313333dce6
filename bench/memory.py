"""The memory planner's estimate (`w2sweep.memory`, device "cpu": fp32) beside the measured peak of a
small `fine_tune` run on the CPU, per model and mode.

Each run is a fresh subprocess: the model's tokenizer loaded and a warm-up run of tiny-bert (imports,
thread pools), then its resident set (RSS) as the baseline: the process's fixed host memory
(interpreter, libraries, tokenizer), which the planner's estimate leaves out. Then it tokenizes its
texts (every one `max_length` tokens, so each micro batch is full length), loads the classifier
(weights read), trains two epochs of 4 steps (validating 64 texts after each; the first validation
copies the best weights) and predicts. Measured = peak RSS (VmHWM, reset after the warm-up) - baseline:
weights, gradients, AdamW states, best weights, activations, and whatever the allocator keeps.

Every case runs twice: with glibc's default malloc, and with a fixed mmap threshold
(MALLOC_MMAP_THRESHOLD_=131072), under which every block of 128 KiB or more is its own mapping,
returned to the kernel when freed, so the RSS follows the bytes alive. glibc's default raises the
threshold to the largest block freed so far (up to 32 MiB): after the first backward frees the
activations, later ones come from the heap, where freed blocks stay resident; that retention depends
on the order of allocations, not on the model's shapes. "met" is the target (within 25% of the peak,
never more than 10% below it) against the fixed-threshold column: the bytes alive, what the estimate
models and what `torch.cuda.max_memory_allocated` measures on a GPU.
"saved MB" is what autograd keeps for backward in one training forward (`saved_bytes`), beside the
estimate's activation column ("activ. MB", the larger of training's and prediction's).

    PYTHONPATH=platform python bench/memory.py [--models tiny-bert,minilm-l6,smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

BATCH, MAX_LENGTH, EXAMPLES, EPOCHS = 16, 64, 64, 2
MB = 2**20
# glibc's malloc with a fixed mmap threshold: every block of 128 KiB or more is its own mapping, handed
# back to the kernel when freed, so the RSS follows the bytes alive. glibc's default raises the threshold
# to the largest block freed so far (up to 32 MiB), after which freed activations stay in the heap.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def _status_bytes(field: str) -> int:
    """VmRSS or VmHWM (peak RSS since the last reset) of this process, in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def _run(ref: str, mode: str, *, examples: int, tokenizer) -> None:
    """Tokenize, load the classifier, fine-tune (EPOCHS epochs) and predict with `tokenizer` (already loaded)."""
    import numpy as np
    import torch

    from w2sweep.models import TrainSettings, load_classifier
    from w2sweep.train import TokenizedTexts, fine_tune

    texts = [" ".join(f"word{(i * 7 + j) % 50}" for j in range(MAX_LENGTH)) for i in range(2 * examples)]
    train, val = TokenizedTexts(tokenizer, texts[:examples], MAX_LENGTH), TokenizedTexts(tokenizer, texts[examples:], MAX_LENGTH)
    labels = (np.arange(2 * examples) % 2).astype(np.float32)
    _, model = load_classifier(ref, seed=0, mode=mode, device=torch.device("cpu"))
    # Two epochs: the first validation's best weights are copied (training goes on), as in real cells.
    settings = TrainSettings(lr=1e-4, epochs=EPOCHS, batch_size=BATCH, max_length=MAX_LENGTH, min_steps=0)
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

    import w2sweep.models.load as load
    from w2sweep.models import load_tokenizer
    from w2sweep.models.registry import default_tokenizer

    torch.set_num_threads(1)
    # The run's tokenizer is part of the baseline: host memory of a fixed size per process (≈ 10 MB for
    # minilm-l6's, ≈ 51 MB for smollm2's), the same for every layout and never on a GPU. It is loaded
    # once here and handed to load_classifier too (which would load a second one).
    tokenizers = {name: load_tokenizer(name) for name in {default_tokenizer("tiny-bert"), default_tokenizer(ref)}}
    load.load_tokenizer = lambda name, **kwargs: tokenizers[name]
    # The framework's own first-use memory (lazy imports, thread pools), not counted.
    _run("tiny-bert", mode, examples=BATCH, tokenizer=tokenizers[default_tokenizer("tiny-bert")])
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    baseline = _status_bytes("VmRSS")
    _run(ref, mode, examples=EXAMPLES, tokenizer=tokenizers[default_tokenizer(ref)])  # texts counted: < 1 MB
    measured = _status_bytes("VmHWM") - baseline
    return dict(measured=measured, saved=saved_bytes(ref, mode))


def estimated(ref: str, mode: str) -> dict:
    """The planner's CPU estimate (bytes) of the same run, from the config alone."""
    from w2sweep.memory import Layout, estimate, model_shape

    shape = model_shape(ref)
    found = estimate(shape, Layout(mode, 1, 2, False, BATCH, MAX_LENGTH), device="cpu")
    return dict(params=shape.params[mode], trained=shape.trainable[mode], states=found.model_states,
                activations=found.activations, estimate=found.total)


def _child(ref: str, mode: str, env: dict) -> dict | str:
    """`measure` in a fresh subprocess with `env` added: its result, or its last error line."""
    child = subprocess.run([sys.executable, __file__, "--child", ref, mode], capture_output=True, text=True,
                           env={**os.environ, **env})
    if child.returncode != 0:
        return child.stderr.strip().splitlines()[-1]
    return json.loads(child.stdout.strip().splitlines()[-1])


def _verdict(ratio: float) -> str:
    """The target: within 25% of the measured peak and never more than 10% below it."""
    return "yes" if 0.9 <= ratio <= 1.25 else "no"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="tiny-bert,minilm-l6,smollm2-135m")
    parser.add_argument("--modes", default="full,lora,head")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print(f"CPU, fp32, 1 worker, micro batch {BATCH} x {MAX_LENGTH} tokens, {EPOCHS} x {EXAMPLES // BATCH} steps; "
          "MB = 2**20 bytes; measured with glibc's default malloc / with a fixed mmap threshold (128 KiB)")
    print(f"{'model':<13} {'mode':<5} {'params':>11} {'trained':>11} {'states MB':>9} {'activ. MB':>9} "
          f"{'estimate MB':>11} {'default MB':>10} {'est/meas':>8} {'fixed MB':>8} {'est/meas':>8} {'met':>3} "
          f"{'saved MB':>8}")
    for ref in args.models.split(","):
        for mode in args.modes.split(","):
            default, fixed = _child(ref, mode, {}), _child(ref, mode, FIXED_MMAP_THRESHOLD)
            if isinstance(default, str) or isinstance(fixed, str):
                print(f"{ref:<13} {mode:<5} failed: {default if isinstance(default, str) else fixed}")
                continue
            e = estimated(ref, mode)
            r_default, r_fixed = e["estimate"] / default["measured"], e["estimate"] / fixed["measured"]
            print(f"{ref:<13} {mode:<5} {e['params']:>11,} {e['trained']:>11,} {e['states'] / MB:>9.1f} "
                  f"{e['activations'] / MB:>9.1f} {e['estimate'] / MB:>11.1f} {default['measured'] / MB:>10.1f} "
                  f"{r_default:>8.2f} {fixed['measured'] / MB:>8.1f} {r_fixed:>8.2f} {_verdict(r_fixed):>3} "
                  f"{fixed['saved'] / MB:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
