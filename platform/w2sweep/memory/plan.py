"""The planning step's memory checks: every student's estimate against its `gpu_memory_gb` (the
student's, else `resources.gpu_memory_gb`; no budget, no check), ``num_workers: auto`` resolved to the
fewest workers that fit, and a refusal that names the cheapest change that would fit."""

from __future__ import annotations

import dataclasses

from w2sweep.config import ConfigError, ModelSpec, SweepConfig, error_line
from w2sweep.memory.estimate import MAX_WORKERS, Estimate, Layout, estimate, layout_of
from w2sweep.memory.shape import spec_shape
from w2sweep.models.registry import resolve_settings

AUTO = "auto"


def budget_gb(spec: ModelSpec, config: SweepConfig) -> float | None:
    """GB one worker of `spec` may allocate: its own `gpu_memory_gb`, else the sweep's, else None."""
    return spec.gpu_memory_gb if spec.gpu_memory_gb is not None else config.resources.gpu_memory_gb


def at_longest(spec: ModelSpec, config: SweepConfig) -> ModelSpec:
    """`spec` with ``max_length: auto`` replaced by its longest length over what its cells read (it is
    resolved per dataset, and for +fewshot prompts, when cells are made): memory is planned for the
    longest texts a worker sees."""
    if spec.max_length != "auto":
        return spec
    from w2sweep.truncation import readers, resolve_auto

    resolved = [resolve_auto(spec, dataset, shots) for dataset, role, reader, shots in readers(config)
                if role == "student" and reader.label == spec.label]
    return max(resolved, key=lambda s: s.max_length, default=spec)


def prompts_only(spec: ModelSpec, config: SweepConfig) -> bool:
    """Whether every cell of `spec` prompts it without training (fewshot-prompt, and no ceiling): the
    estimate is a training worker's, which such a student never runs, so it is not planned."""
    from w2sweep.methods import CEILING, parse_method
    from w2sweep.subgrids import sub_configs

    return not any(sub.ceiling or any(m == CEILING or parse_method(m).train for m in sub.methods)
                   for sub in sub_configs(config) if any(s.label == spec.label for s in sub.students))


def student_layout(spec: ModelSpec, num_workers: int | None = None) -> Layout:
    """`spec`'s Layout with `num_workers` (default: its own, which must be a number)."""
    return layout_of(spec, resolve_settings(spec), num_workers)


def fewest_workers(spec: ModelSpec, budget: float) -> int | None:
    """The fewest workers (1..MAX_WORKERS) whose estimate fits `budget` GB; None when none does.
    One worker is the plain loop; more train with DeepSpeed at the spec's zero_stage and offload."""
    shape = spec_shape(spec)
    for workers in range(1, MAX_WORKERS + 1):
        if estimate(shape, student_layout(spec, workers)).gb <= budget:
            return workers
    return None


def _alternatives(spec: ModelSpec, layout: Layout):
    """(kind rank, change as the config writes it, layout): the changes the refusal considers, each
    then tried with smaller micro batches too. Rank at equal GPUs: a smaller micro batch alone (same
    result, slower), more workers, a higher ZeRO stage, offload (slower steps), LoRA (trains less)."""
    yield 0, "", layout
    stage = 2 if layout.zero_stage == 0 else layout.zero_stage
    for workers in range(layout.num_workers, MAX_WORKERS + 1):
        base = student_layout(spec, workers)  # the micro batch follows the workers unless the config sets it
        base = dataclasses.replace(base, zero_stage=stage if workers > layout.num_workers else layout.zero_stage)
        if workers > layout.num_workers:
            change = f"num_workers: {workers}" + (f", zero_stage: {stage}" if stage != layout.zero_stage else "")
            yield 1, change, base
        if workers > 1 and base.zero_stage < 3:
            yield 2, _join(workers, layout, "zero_stage: 3"), dataclasses.replace(base, zero_stage=3)
        if workers > 1 and not layout.offload:
            offload = dataclasses.replace(base, offload=True, zero_stage=max(base.zero_stage, 2))
            yield 3, _join(workers, layout, f"zero_stage: {offload.zero_stage}, offload: true"), offload
    if layout.mode == "full":
        yield 4, "mode: lora", dataclasses.replace(layout, mode="lora")


def _join(workers: int, layout: Layout, change: str) -> str:
    return change if workers == layout.num_workers else f"num_workers: {workers}, {change}"


def _largest_micro_batch(shape, candidate: Layout, budget: float) -> tuple[Layout, Estimate] | None:
    """`candidate` at the largest micro batch (up to its own) that fits `budget` GB, with its estimate."""
    for micro in range(candidate.micro_batch, 0, -1):
        layout = dataclasses.replace(candidate, micro_batch=micro)
        found = estimate(shape, layout)
        if found.gb <= budget:
            return layout, found
    return None


def fixes(spec: ModelSpec, layout: Layout, budget: float) -> list[tuple[tuple, str, Estimate]]:
    """Every change of `_alternatives` that fits `budget` GB as (cost, change, estimate), cheapest
    first: fewest GPUs (workers), then the kind's rank, then the largest micro batch."""
    shape, found = spec_shape(spec), []
    for rank, change, candidate in _alternatives(spec, layout):
        fit = _largest_micro_batch(shape, candidate, budget)
        if fit is None:
            continue
        fitted, est = fit
        if fitted.micro_batch != candidate.micro_batch:
            change = ", ".join(filter(None, (change, f"micro_batch_size: {fitted.micro_batch}")))
        if change:
            found.append(((fitted.num_workers, rank, -fitted.micro_batch), change, est))
    return sorted(found, key=lambda f: f[0])


def describe(layout: Layout) -> str:
    """A layout in words, for the refusal line."""
    if layout.num_workers == 1:
        how = "1 worker"
    else:
        how = f"{layout.num_workers} workers, ZeRO-{layout.zero_stage}" + (" + offload" if layout.offload else "")
    return f"{layout.mode}, {how}, micro batch {layout.micro_batch} x {layout.max_length} tokens"


def _refusal(i: int, spec: ModelSpec, layout: Layout, found: Estimate, budget: float) -> str:
    """One line: what the student needs, its budget, the cheapest fix (and the cheapest that keeps
    training every weight, when the cheapest is LoRA)."""
    options = fixes(spec, layout, budget)
    if not options:
        advice = f"nothing up to {MAX_WORKERS} workers with ZeRO-3, offload, LoRA and micro batch 1 fits"
    else:
        advice = f"cheapest that fits: {options[0][1]} ({options[0][2].gb:.2f} GB)"
        full = next((o for o in options if o[0][1] != 4), None)
        if options[0][0][1] == 4 and full is not None:
            advice += f"; training every weight: {full[1]} ({full[2].gb:.2f} GB)"
    return error_line(f"students.{i}", spec.label, f"needs ~{found.gb:.2f} GB per worker ({describe(layout)}) "
                      f"but gpu_memory_gb is {budget:g}; {advice}")


def plan_memory(config: SweepConfig) -> SweepConfig:
    """`config` with every ``num_workers: auto`` resolved; raises ConfigError with one line per student
    that cannot fit its budget. Does nothing (reads no model config) unless a budget or auto is set."""
    lines, students = [], []
    for i, given in enumerate(config.students):
        budget = budget_gb(given, config)
        if prompts_only(given, config):
            students.append(given if given.num_workers != AUTO else given.model_copy(update=dict(num_workers=1)))
            continue
        if budget is None and given.num_workers != AUTO:
            students.append(given)
            continue
        spec = at_longest(given, config)
        if spec.num_workers == AUTO:
            if budget is None:
                lines.append(error_line(f"students.{i}.num_workers", AUTO, "auto needs gpu_memory_gb (on the "
                                        "student or in resources) to pick the fewest workers that fit"))
                students.append(spec)
                continue
            workers = fewest_workers(spec, budget)
            spec = spec.model_copy(update=dict(num_workers=workers or MAX_WORKERS))
        if budget is not None:
            layout = student_layout(spec)
            found = estimate(spec_shape(spec), layout)
            if found.gb > budget:
                lines.append(_refusal(i, spec, layout, found, budget))
        students.append(given.model_copy(update=dict(num_workers=spec.num_workers)))
    for i, spec in enumerate(config.weak_supervisors):
        if spec.num_workers == AUTO:
            lines.append(error_line(f"weak_supervisors.{i}.num_workers", AUTO, "auto is for students; give a number"))
    if lines:
        raise ConfigError(lines)
    return config if students == config.students else config.model_copy(update=dict(students=students))


def memory_table(config: SweepConfig) -> list[str]:
    """`w2sweep validate`'s per-student lines: mode, workers, ZeRO, estimated GB per worker, budget.
    A model whose config cannot be read here (a hub id offline) shows "?"."""
    from w2sweep.models.registry import ModelError

    rows = [("student", "mode", "workers", "ZeRO", "GB/worker", "budget GB")]
    for spec in (at_longest(s, config) for s in config.students):
        if prompts_only(spec, config):
            rows.append((spec.label, "prompt", "1", "-", "not planned: prompted, never trained", "-"))
            continue
        layout = student_layout(spec)
        zero = "-" if layout.num_workers == 1 else f"{layout.zero_stage}" + ("+offload" if layout.offload else "")
        try:
            found = f"{estimate(spec_shape(spec), layout).gb:.2f}"
        except (ModelError, OSError, ValueError) as e:
            found = f"? ({str(e).splitlines()[0][:60]})"
        budget = budget_gb(spec, config)
        rows.append((spec.label, spec.mode, str(layout.num_workers), zero, found,
                     "-" if budget is None else f"{budget:g}"))
    widths = [max(len(row[k]) for row in rows) for k in range(5)]
    return ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[5] for row in rows]
