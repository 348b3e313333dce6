"""Model-resident workers: what a cell costs before it trains, with and without residency.

    W2SWEEP_CACHE=~/.cache/w2sweep HF_HUB_OFFLINE=1 PYTHONPATH=platform .venv/bin/python bench/resident.py
    ... bench/resident.py --students minilm-l6 --cells 3      # one student, more cells

For each student, in this one process (as one reused Tune trial actor runs its cells), `--cells` cells
of that student (seeds 0, 1, ...; method seq-sft, tiny budgets, so each trains a few steps) run through
`run_cell` twice: with W2SWEEP_RESIDENT_MODELS=0 (every cell loads the student) and then =1 (the first
loads, the others restore the resident copy). Their prerequisites (weak labels of a tiny-bert
supervisor) are computed first and are not timed. Per cell:
  fixed = run_cell's start to the end of its first optimizer step (loading, tokenizing, the first step),
          read by wrapping PlainLoop.micro_step from here, not by a hook in the library
  load  = the time inside the student's load (resident.load_student, wrapped from here): what
          residency saves, apart from the tokenizing it also saves
  cell  = run_cell's whole time (train, score, write)
Prints a markdown table and one JSON line. Figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch


def _config(root: str, student: str, cells: int):
    from w2sweep.config import parse_config

    return parse_config(dict(
        name=f"resident-{student}", storage=root,
        datasets=[dict(name="synthetic-sentiment", source="synthetic", num_examples=400,
                       pools=dict(weak_train=40, val=16, test=16, weak_label=40, oracle=40))],
        weak_supervisors=[dict(model="tiny-bert", name="weak", epochs=1, max_length=16)],
        students=[dict(model=student, epochs=1, min_steps=2, batch_size=4, max_length=32)],
        methods=["seq-sft"], budgets=[8], spending_fractions=[0.5], seeds=list(range(cells))))


def _clocks():
    """Wrap PlainLoop.micro_step and resident.load_student, so the end of each optimizer step and the
    seconds spent loading the student are recorded (marks, loads)."""
    from w2sweep.models import resident
    from w2sweep.train import plain

    marks: list[float] = []
    loads: list[float] = []
    step, load = plain.PlainLoop.micro_step, resident.load_student

    def micro_step(self, *, last: bool):
        step(self, last=last)
        if last:
            marks.append(time.monotonic())

    def load_student(*args, **kwargs):
        start = time.monotonic()
        try:
            return load(*args, **kwargs)
        finally:
            loads.append(time.monotonic() - start)

    plain.PlainLoop.micro_step, resident.load_student = micro_step, load_student
    return marks, loads


def _run(student: str, cells: int, limit: str, marks: list[float], loads: list[float]) -> list[dict]:
    from w2sweep.cells import run_cell
    from w2sweep.grid import Cell, expand_cells
    from w2sweep.models import resident
    from w2sweep.prerequisites import NoClaims, ensure_prerequisites
    from w2sweep.storage import Storage

    os.environ[resident.ENV] = limit
    resident.clear()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        config = _config(root, student, cells)
        storage = Storage.from_uri(config.storage)
        grid = sorted(expand_cells(config), key=lambda c: c.seed)
        for cell in grid:  # prerequisites first, untimed
            ensure_prerequisites(cell, storage, NoClaims(), lambda _: None)
        for cell in grid:
            cell = Cell.from_json(cell.to_json())
            marks.clear()
            loads.clear()
            start = time.monotonic()
            run_cell(cell, storage)
            end = time.monotonic()
            rows.append(dict(student=student, resident=limit != "0", seed=cell.seed,
                             fixed_s=round(marks[0] - start, 2), load_s=round(sum(loads), 2),
                             cell_s=round(end - start, 2),
                             steps=len(marks)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=["minilm-l6", "smollm2-135m"])
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a 1-CPU trial gets 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    marks, loads = _clocks()
    rows = []
    for student in args.students:
        for limit in ("0", "1"):
            rows += _run(student, args.cells, limit, marks, loads)
    print("| student | resident | cell (seed) | load, s | start to first step, s | whole cell, s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['student']} | {'yes' if r['resident'] else 'no'} | {r['seed']} | {r['load_s']} | "
              f"{r['fixed_s']} | {r['cell_s']} |")
    print(json.dumps(dict(bench="resident", device="cuda" if torch.cuda.is_available() else "cpu",
                          threads=args.threads, rows=rows)))


if __name__ == "__main__":
    main()
