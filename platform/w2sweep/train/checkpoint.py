"""What a checkpoint of a stage's run holds, and resuming from one.

A checkpoint directory holds ``loop.json`` (the stage, whether it was done, its stats, the stats of
the stages before it, the numpy generator's state and the `Progress` counters), the loop's own state
(``plain_loop.pt``, or the DeepSpeed checkpoint tagged ``deepspeed``), each rank's torch generator
state, and where kept the best weights (``best.pt``) and the weights the stage started from
(``stage_start.pt``).

Nothing is unpickled: ``loop.json`` is JSON (the numpy generator's state is plain ints), and every
``.pt`` file holds tensors, dicts, lists, numbers and strings only and is read with
``torch.load(weights_only=True)``, so a file planted in the checkpoint location raises instead of
running code. DeepSpeed's own loader (multi-worker cells) does unpickle: see the README's "What
happens when things fail".
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch

from w2sweep.train.state import Progress, StageRun, TrainHooks, load_weights, world


def read_checkpoint(hooks: TrainHooks) -> tuple[Path, dict] | None:
    """(directory, its loop.json) of the checkpoint `hooks` resumes from, or None."""
    directory = hooks.resume_dir()
    if directory is None or not (Path(directory) / "loop.json").exists():
        return None
    return Path(directory), json.loads((Path(directory) / "loop.json").read_text())


def finished_before(model, directory: Path, ckpt: dict, stage: int, hooks: TrainHooks) -> dict:
    """Stage `stage` had finished before the restart: put its final weights in place, return its stats."""
    if ckpt["stage"] == stage:
        stats = ckpt["stats"]
        weights = directory / "best.pt"
    else:
        stats = (ckpt["stages"][stage:stage + 1] or [None])[0] or {}
        # The weights the checkpointed stage started from: what the stages before it ended with.
        weights = directory / "stage_start.pt"
    if weights.exists():
        load_weights(model, torch.load(weights, weights_only=True))
    hooks.stages[:stage] = ckpt["stages"][:stage]
    return hooks.record(stage, dict(stats, num_steps_run=0))


def save_checkpoint(run: StageRun, directory: str) -> None:
    """Write `run` into `directory`: on every rank (DeepSpeed saves collectively); rank 0 writes the rest."""
    rank = world()[0]
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    run.loop.save(path)
    torch.save(torch.get_rng_state(), path / f"torch_rng_rank{rank}.pt")
    if rank == 0:
        if run.best is not None:
            torch.save(run.best, path / "best.pt")
        if run.stage_start is not None:
            torch.save(run.stage_start, path / "stage_start.pt")
        blob = dict(stage=run.stage, done=run.done, stats=run.stats, stages=run.hooks.stages[:run.stage],
                    rng=run.rng.bit_generator.state, **asdict(run.progress))
        (path / "loop.json").write_text(json.dumps(blob))


def restore_checkpoint(run: StageRun, directory: Path, ckpt: dict) -> None:
    """Put `run` back where the checkpoint in `directory` (its loop.json: `ckpt`) left it."""
    run.loop.load(directory)
    run.best = torch.load(directory / "best.pt", weights_only=True) if (directory / "best.pt").exists() else None
    run.progress = Progress(**{f.name: ckpt[f.name] for f in fields(Progress)})
    run.rng.bit_generator.state = ckpt["rng"]
    torch.set_rng_state(torch.load(directory / f"torch_rng_rank{world()[0]}.pt", weights_only=True))
    run.hooks.stages[:run.stage] = ckpt["stages"]
    run.resumed_from = run.progress.epoch
