"""Distributed student training: DeepSpeed ranks train like one process with the same effective
batch; Ray Train runs a cell's workers, checkpoints them, and resumes a cell whose worker died."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import free_port, tiny_config
from w2sweep.config import ConfigError, parse_config
from w2sweep.train import TrainSettings, deepspeed_config
from w2sweep.train.loop import _micro_batches

# --- the DeepSpeed config and the split of a batch -------------------------------------------------


def test_deepspeed_config_reaches_the_effective_batch():
    s = TrainSettings(lr=1e-3, epochs=1, batch_size=32, max_length=16)
    c = deepspeed_config(s, world_size=2, use_gpu=False)
    assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"], c["train_batch_size"]) == (16, 1, 32)
    assert c["bf16"]["enabled"] is False and c["zero_optimization"] == {"stage": 2}
    c = deepspeed_config(TrainSettings(**{**s.__dict__, "micro_batch_size": 4, "zero_stage": 3}), world_size=2,
                         use_gpu=True)
    assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"], c["train_batch_size"]) == (4, 4, 32)
    assert c["bf16"]["enabled"] is True and c["zero_optimization"]["stage"] == 3
    c = deepspeed_config(TrainSettings(**{**s.__dict__, "batch_size": 30, "micro_batch_size": 4, "offload": True}),
                         world_size=4, use_gpu=False)
    assert c["gradient_accumulation_steps"] == 2  # ceil(30 / (4 x 4)); each step still sees 30 examples
    assert c["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


@pytest.mark.parametrize("n, world, accumulation", [(32, 2, 1), (30, 4, 2), (5, 4, 2), (1, 2, 1)])
def test_every_example_of_a_batch_lands_on_exactly_one_rank_with_its_share(n, world, accumulation):
    idx = np.arange(100, 100 + n)
    seen, total_weight, passes = [], 0.0, set()
    for rank in range(world):
        parts = list(_micro_batches(idx, rank, world, accumulation))
        passes.add(len(parts))
        for chunk, weight in parts:
            assert len(chunk) > 0  # an empty slot still runs one (weight-0) pass: collectives line up
            if weight:
                seen += list(chunk)
                assert math.isclose(weight, len(chunk) / n)
            total_weight += weight
    assert sorted(seen) == list(idx) and math.isclose(total_weight, 1.0) and passes == {accumulation}


def test_distributed_settings_are_validated_in_one_line_each():
    base = tiny_config("unused")
    for student, expected in [
        (dict(model="tiny-bert", num_workers=2, zero_stage=0, offload=True),
         "config error: students.0: dict: offload=True needs zero_stage 2 or 3; got zero_stage=0"),
        (dict(model="tiny-bert", zero_stage=1), "config error: students.0.zero_stage: 1: Input should be 0, 2 or 3"),
        (dict(model="tiny-bert", mode="prefix"),
         "config error: students.0.mode: 'prefix': Input should be 'full', 'lora' or 'head'"),
        (dict(model="tiny-bert", num_workers=0), "config error: students.0.num_workers: 0: expected a positive integer up to 1,024 or 'auto'"),
    ]:
        with pytest.raises(ConfigError) as e:
            parse_config({**base, "students": [student]})
        assert e.value.lines == [expected]


def test_settings_without_effect_warn():
    with pytest.warns(UserWarning, match="zero_stage is set but has no effect: num_workers is 1"):
        parse_config({**tiny_config("unused"), "students": [dict(model="tiny-bert", zero_stage=3)]})
    with pytest.warns(UserWarning, match="lora_rank is set but has no effect: mode is 'full'"):
        parse_config({**tiny_config("unused"), "students": [dict(model="tiny-bert", lora_rank=4)]})
    with pytest.warns(UserWarning, match="compile is set but has no effect: num_workers is 2"):
        parse_config({**tiny_config("unused"), "students": [dict(model="tiny-bert", compile=True, num_workers=2)]})


def test_compile_reaches_the_training_settings_of_one_worker_without_a_warning():
    import warnings

    from w2sweep.models import resolve_settings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = parse_config({**tiny_config("compiled"), "students": [dict(model="tiny-bert", compile=True)]})
    assert resolve_settings(config.students[0]).compile is True
    assert resolve_settings(parse_config(tiny_config("eager")).students[0]).compile is False


# --- DeepSpeed ranks against one process, without Ray ----------------------------------------------

RUNS = [  # (name, load kwargs, settings overrides)
    ("zero2", {}, dict(zero_stage=2)),
    ("zero3+accumulation", {}, dict(zero_stage=3, micro_batch_size=4)),
    ("zero2+lora", dict(mode="lora", lora_rank=4), dict(zero_stage=2)),
]
# ZeRO-Offload steps with DeepSpeedCPUAdam, whose first use JIT-builds a CPU op (1-4 min, cached).
OFFLOAD_RUNS = [("zero2+offload", {}, dict(zero_stage=2, offload=True))]


def _fine_tune_runs(runs) -> dict:
    """Train tiny-qwen2 (no dropout: runs are deterministic) for each of `runs`; a second stage checks
    that a model DeepSpeed handed back trains again."""
    from w2sweep.data.synthetic import make_sentiment
    from w2sweep.models import load_classifier
    from w2sweep.train import TokenizedTexts, fine_tune, predict

    task = make_sentiment(160, seed=0)
    texts, labels = list(task.texts[:100]), np.asarray(task.labels[:100], np.float32)
    val_texts, val_labels = list(task.texts[100:]), np.asarray(task.labels[100:])
    out = {}
    for name, load, overrides in runs:
        tokenizer, model = load_classifier("tiny-qwen2", seed=0, **load)
        settings = TrainSettings(lr=3e-3, epochs=2, batch_size=24, max_length=16, patience=5, **overrides)
        val = TokenizedTexts(tokenizer, val_texts, 16)
        stages = [fine_tune(model, TokenizedTexts(tokenizer, texts[:50 * (i + 1)], 16), labels[:50 * (i + 1)],
                            val_examples=val, val_labels=val_labels, settings=settings, seed=i, stage=i)
                  for i in range(2)]
        out[name] = dict(losses=[s["train_losses"] for s in stages], steps=[s["num_steps"] for s in stages],
                         scores=predict(model, val).tolist())
    return out


def _rank_main(rank: int, world: int, port: int, out_path: str, runs):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = _fine_tune_runs(runs)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(out, f)
    finally:
        dist.destroy_process_group()


def _compare_ranks_with_one_process(tmp_path, runs) -> dict:
    torch.set_num_threads(1)
    alone = _fine_tune_runs(runs)
    out = tmp_path / "ranks.json"
    mp.spawn(_rank_main, args=(2, free_port(), str(out), runs), nprocs=2)
    ranks = json.loads(out.read_text())
    for name, _, _ in runs:
        assert ranks[name]["steps"] == alone[name]["steps"] == [6, 10]  # ceil(50/24) x 2 epochs, ceil(100/24) x 2
        for a, b in zip(alone[name]["losses"], ranks[name]["losses"]):
            np.testing.assert_allclose(a, b, rtol=5e-3, err_msg=name)
        # gloo reduces in another order than one process, and ZeRO-3 with accumulation sums micro-batches:
        # float noise (up to ~2e-3 seen) that grows over training, well below a wrong share of a batch.
        np.testing.assert_allclose(alone[name]["scores"], ranks[name]["scores"], atol=1e-2, err_msg=name)
        # The runs learned something, so agreeing is not trivial.
        assert alone[name]["losses"][1][-1] < alone[name]["losses"][0][0]
    return alone


def test_two_deepspeed_ranks_train_like_one_process_with_the_same_effective_batch(tmp_path):
    _compare_ranks_with_one_process(tmp_path, RUNS)


@pytest.mark.slow
def test_zero_offload_trains_like_one_process(tmp_path):
    _compare_ranks_with_one_process(tmp_path, OFFLOAD_RUNS)


# --- Ray Train ---------------------------------------------------------------------------------------


def _cell(root, name: str, **student):
    from w2sweep.grid import expand_cells
    from w2sweep.storage import Storage
    from w2sweep.weak import ensure_weak_labels

    spec = dict(model="tiny-qwen2", name="q", epochs=3, batch_size=16, max_length=32, min_steps=0, patience=5)
    config = parse_config(tiny_config(str(root), name=name, students=[{**spec, **student}], budgets=[16],
                                      spending_fractions=[0.5]))
    (cell,) = expand_cells(config)
    ensure_weak_labels(Storage.from_uri(str(root)), name, cell.dataset, cell.weak_supervisor, cell.seed)
    return cell, config


def _killing(stage: int, epoch: int, rank: int, marker: str):
    """A `run` for Ray Train workers: `run_cell`, except that rank `rank` exits (as if its machine
    died) when it reaches the end of that epoch, before saving its checkpoint, once: the marker file
    records that it happened, so the restarted worker group runs through. Defined inside a function,
    so that Ray pickles it by value (the workers cannot import this test module)."""

    def run(cell, storage, *, claims, hooks, **options):
        import ray.train

        from w2sweep.cells import run_cell

        save_and_report = hooks.on_epoch_end

        def on_epoch_end(save, metrics):
            if (metrics["stage"], metrics["epoch"], ray.train.get_context().get_world_rank()) == (stage, epoch, rank):
                try:
                    open(marker, "x").close()
                except FileExistsError:
                    pass  # it already failed once
                else:
                    # Ray Train takes in a report when it next polls the workers (every 2 s); a worker
                    # group that fails before then loses it. A real epoch lasts far longer than that.
                    time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
                    os._exit(1)
            save_and_report(save, metrics)

        hooks.on_epoch_end = on_epoch_end
        return run_cell(cell, storage, claims=claims, hooks=hooks, **options)

    return run


@pytest.mark.ray
def test_ray_train_workers_with_zero2_and_zero3_give_the_loss_curve_of_one_worker(tmp_path, local_ray):
    from w2sweep.cells import run_cell
    from w2sweep.distributed import run_cell_on_workers
    from w2sweep.storage import Storage
    from w2sweep.train import TrainHooks

    one, _ = _cell(tmp_path, "one")
    hooks = TrainHooks()
    single = run_cell(one, Storage.from_uri(str(tmp_path)), hooks=hooks)
    losses = [s["train_losses"] for s in hooks.stages]
    assert [len(x) for x in losses] == [3, 3]
    for stage in (2, 3):
        cell, config = _cell(tmp_path, f"zero{stage}", num_workers=2, zero_stage=stage)
        metrics = run_cell_on_workers(cell, str(tmp_path), resources=config.resources, max_failures=0)
        for a, b in zip(losses, metrics["train_losses"]):
            np.testing.assert_allclose(a, b, rtol=1e-4)
        assert metrics["num_steps"] == sum(s["num_steps"] for s in hooks.stages)
        assert math.isclose(metrics["auroc"], single.auroc, abs_tol=1e-3)
        # Rank 0 wrote the cell's one result; the finished cell's checkpoints are gone.
        assert (tmp_path / f"zero{stage}" / "cells" / f"{cell.cell_id}.json").exists()
        assert not (tmp_path / f"zero{stage}" / "checkpoints" / cell.cell_id).exists()


@pytest.mark.ray
def test_killed_worker_resumes_from_its_checkpoint_with_the_same_number_of_steps(tmp_path, local_ray):
    from w2sweep.cells import run_cell
    from w2sweep.distributed import run_cell_on_workers

    results = {}
    for name in ("steady", "killed"):
        marker = tmp_path / f"{name}.fault"
        # The killed run loses rank 1 at the end of epoch 2 of stage 0, after epoch 1's checkpoint.
        run = _killing(0, 2, 1, str(marker)) if name == "killed" else run_cell
        cell, config = _cell(tmp_path, name, num_workers=2, zero_stage=2)
        results[name] = run_cell_on_workers(cell, str(tmp_path), resources=config.resources, max_failures=1,
                                            run=run)
        assert marker.exists() == (name == "killed")
    steady, killed = results["steady"], results["killed"]
    steps_per_epoch = 5  # ceil(80 weak labels / 16)
    assert killed["resumed"] and not steady["resumed"]
    assert killed["num_steps"] == steady["num_steps"] == 3 * steps_per_epoch + 3 * 1  # weak stage + oracle stage
    assert killed["num_steps_run"] == steady["num_steps"] - steps_per_epoch  # epoch 1 was not trained again
    for a, b in zip(steady["train_losses"], killed["train_losses"]):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert killed["auroc"] == pytest.approx(steady["auroc"], abs=1e-6)


@pytest.mark.ray
def test_sweep_mixes_encoder_and_causal_students_full_and_lora_one_and_two_workers(tmp_path, write_config):
    storage = tmp_path / "store"
    students = [
        dict(model="tiny-bert", name="encoder-full-1w", epochs=2, max_length=32),
        dict(model="tiny-qwen2", name="causal-lora-2w", epochs=2, max_length=32, batch_size=16, mode="lora",
             lora_rank=4, num_workers=2, zero_stage=2),
        dict(model="tiny-qwen2", name="causal-full-2w-zero3", epochs=2, max_length=32, batch_size=16,
             num_workers=2, zero_stage=3),
    ]
    path = write_config(tiny_config(str(storage), name="mixed", students=students, budgets=[16],
                                    spending_fractions=[0.5]))
    done = subprocess.run([sys.executable, "-m", "w2sweep.cli", "run", str(path)], cwd=tmp_path,
                          env=dict(os.environ, RAY_ADDRESS=""), capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 cells finished, 0 already done, 0 failed (of 3)" in done.stdout
    results = [json.loads(p.read_text()) for p in (storage / "mixed" / "cells").glob("*.json")]
    assert sorted(r["student"] for r in results) == sorted(s["name"] for s in students)
    for r in results:
        assert r["status"] == "ok" and 0 <= r["accuracy"] <= 1


@pytest.mark.slow
@pytest.mark.ray
def test_cell_started_again_after_its_run_failed_resumes_from_the_checkpoint(tmp_path, local_ray):
    """What a retried Tune trial or a re-run sweep does: a new TorchTrainer of the same cell (same run
    name and storage) finds the failed run's checkpoints. Here under ZeRO-3."""
    import ray.train

    from w2sweep.distributed import run_cell_on_workers

    cell, config = _cell(tmp_path, "again", num_workers=2, zero_stage=3)
    with pytest.raises(ray.train.TrainingFailedError):
        run_cell_on_workers(cell, str(tmp_path), resources=config.resources, max_failures=0,
                            run=_killing(0, 2, 1, str(tmp_path / "fault")))
    assert not (tmp_path / "again" / "cells" / f"{cell.cell_id}.json").exists()
    metrics = run_cell_on_workers(cell, str(tmp_path), resources=config.resources, max_failures=0)
    assert metrics["resumed"] and metrics["num_steps"] == 18 and metrics["num_steps_run"] == 18 - 5
    assert (tmp_path / "again" / "cells" / f"{cell.cell_id}.json").exists()
