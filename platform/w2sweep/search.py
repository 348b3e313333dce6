"""Adaptive search: which spending fractions (and seeds) to train next for one dataset x weak supervisor
x student x method x budget, given the results so far, or that the best fraction is identified.

Why: a full grid trains every configured fraction on every seed, while the question a budget asks is
only *where the best fraction lies* and which regime that makes. The search starts coarse (the
configured fractions nearest to `coarse_fractions`, on the first `coarse_seeds` seeds), then brackets
the current best: its neighbours among the configured fractions (those that buy distinct label counts)
are trained until each is either separable from the best (the paired interval of best - neighbour
excludes 0) or within `tolerance` of it. Where a neighbour or an endpoint (f=0 and f=1, which decide
the regime) is neither, both get the next seed, while the config has seeds left. Then it settles
the regime as the grid's rule would decide it: the best, its adjacent candidates and both endpoints
on every seed, at the Bonferroni level of the fractions the config asks for (not of those run), and,
where the regime hinges on which of the fractions tied with the best (within `tolerance`) is the
best, the whole tie on every seed. It stops there, or when `max_cells_per_budget` cells are spent. Every (fraction, seed) it names is a grid cell, so the
cells it runs are the grid's, with the grid's ids.

Pure decisions, no Ray and no storage: `next_cells` works on (fraction, seed) -> accuracy, so
bench/adaptive.py replays it against recorded grids; `choose` maps it onto a grid's cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from w2sweep.frontier.stats import t_quantile
from w2sweep.results import NO_WEAK_SUPERVISOR

SEPARABLE, TIED, UNDECIDED = "separable", "within tolerance", "undecided"


@dataclass(frozen=True)
class Options:
    """`SearchOptions` of the config, as plain values (see `w2sweep.config.SearchOptions`)."""

    tolerance: float = 0.01
    confidence: float = 0.95
    coarse_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)
    coarse_seeds: int | None = None
    max_cells_per_budget: int | None = None

    @classmethod
    def of(cls, search_options) -> Options:
        d = search_options.model_dump()
        return cls(**{**d, "coarse_fractions": tuple(d["coarse_fractions"])})


@dataclass(frozen=True)
class Observation:
    """One attempted cell: its accuracy (NaN: failed, no result) and the result's stored 95% interval,
    which is what a comparison on one common seed falls back on."""

    accuracy: float
    ci_low: float = math.nan
    ci_high: float = math.nan


@dataclass
class Decision:
    """What to run next for one budget: (fraction, seed) pairs; none when `reason` says why it stopped."""

    run: list[tuple[float, int]]
    best: float | None
    reason: str


def compare(a: list[Observation], b: list[Observation], *, tolerance: float, confidence: float) -> str:
    """Whether fraction a (the best) is separable from b, within tolerance of it, or undecided, from
    their observations on the same seeds (lists aligned by seed). Paired t-interval over >= 2 common
    seeds, as the frontier pairs them; on one seed, the difference of the stored intervals
    (conservative: the seeds' noise is shared but unpaired here)."""
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x.accuracy) and math.isfinite(y.accuracy)]
    if not pairs:
        return UNDECIDED
    diffs = np.array([x.accuracy - y.accuracy for x, y in pairs])
    gap = float(diffs.mean())
    if gap <= tolerance + 1e-12:
        return TIED
    if len(pairs) >= 2:
        half = float(t_quantile(len(pairs) - 1, confidence)) * float(diffs.std(ddof=1)) / math.sqrt(len(pairs))
        low = gap - half
    else:
        (x, y), = pairs
        low = x.ci_low - y.ci_high
    return SEPARABLE if math.isfinite(low) and low > 0 else UNDECIDED


def _mean(observed: dict, f: float) -> float:
    values = [o.accuracy for (g, _), o in observed.items() if g == f and math.isfinite(o.accuracy)]
    return float(np.mean(values)) if values else math.nan


def _nearest(candidates: list[float], targets: Iterable[float]) -> list[float]:
    return sorted({min(candidates, key=lambda c: (abs(c - t), c)) for t in targets})


def next_cells(candidates: list[float], seeds: list[int], observed: dict[tuple[float, int], Observation],
               options: Options, *, num_fractions: int | None = None, at_chance: bool = False) -> Decision:
    """The next (fraction, seed) cells for one budget. `candidates`: the fractions that buy distinct
    label counts, sorted; `seeds`: the config's, in order; `observed`: every cell attempted so far
    (a failed one with NaN accuracy is never proposed again); `num_fractions`: the fractions the
    config asks for (None: the candidates), the Bonferroni family of the regime rule; `at_chance`:
    the unit's ceiling is at chance, so the frontier gives no regime whatever the cells show
    (`w2sweep.frontier.without_signal`): it runs the coarse round and brackets the best on the coarse
    seeds (the curve a user reads), and never adds seeds to settle a regime. New fractions
    come first: seeds are added only once the bracket around the best is fully run, so no seed is
    spent on a fraction the best is about to leave. Last, the best, its adjacent candidates and both
    endpoints get every seed (the regime rests on their paired differences, which then have the grid's
    seeds), and a tie at the top that the regime hinges on is run out (`_unsettled`)."""
    left = None if options.max_cells_per_budget is None else options.max_cells_per_budget - len(observed)
    if left is not None and left <= 0:
        return Decision([], _best(candidates, observed), "cell limit reached")
    first = seeds[: options.coarse_seeds or len(seeds)]
    todo = [(f, s) for f in _nearest(candidates, options.coarse_fractions) for s in first if (f, s) not in observed]
    if todo:
        return Decision(todo[:left], None, "coarse round")
    best = _best(candidates, observed)
    if best is None:
        return Decision([], None, "no result")
    ran = sorted({g for g, _ in observed})
    seeds_of_best = [s for s in seeds if math.isfinite(observed.get((best, s), Observation(math.nan)).accuracy)]
    step = _bracket(candidates, ran, best, observed)
    if step:
        return Decision([(f, s) for f in step for s in seeds_of_best][:left], best, "bracketing the best")
    if at_chance:
        return Decision([], best, "no signal: the ceiling's AUROC does not exclude 0.5")
    at = candidates.index(best)
    neighbours = [candidates[i] for i in (at - 1, at + 1) if 0 <= i < len(candidates)]
    family = max(num_fractions or len(candidates), len(candidates))
    level = 1 - (1 - options.confidence) / max(family - 1, 1)  # as the frontier's regimes test
    more = []
    for a, b in _rivals(best, neighbours, candidates, observed):
        one, other = ([observed.get((f, s), Observation(math.nan)) for s in seeds] for f in (a, b))
        if compare(one, other, tolerance=options.tolerance, confidence=level) != UNDECIDED:
            continue
        unused = [s for s in seeds if (a, s) not in observed or (b, s) not in observed]
        if unused:
            more += [(f, unused[0]) for f in (a, b) if (f, unused[0]) not in observed]
    more = list(dict.fromkeys(more))
    if more:
        return Decision(more[:left], best, "seeds where the best is not yet separable")
    regime = [(f, s) for f in sorted({best, *neighbours, candidates[0], candidates[-1]}) for s in seeds
              if (f, s) not in observed]
    if regime:
        return Decision(regime[:left], best, "the regime's comparisons on every seed")
    tie = _unsettled(candidates, seeds, observed, best, options, level)
    if tie:
        return Decision(tie[:left], best, "the regime depends on which tied fraction is best")
    return Decision([], best, "identified")


def _unsettled(candidates: list[float], seeds: list[int], observed: dict, best: float, options: Options,
               level: float) -> list[tuple[float, int]]:
    """Cells to run when the regime would change with the fraction taken as the best, [] when not.

    The regime compares the best with f=0 and f=1; fractions whose means are within `tolerance` of the
    best are a tie that noise breaks, and a grid breaks it among every fraction of the tie, run or not.
    When an endpoint is separated from some tied fraction and not from another, or is neither
    separated from a tied fraction nor within tolerance of it (so a tied fraction not yet run could
    separate it), the answer hinges on the tie: its span and the candidate on each side get every
    seed, until the tie's edges are beyond tolerance (a grid's best could not lie there) or every
    candidate of the span is run."""
    ends = candidates[0], candidates[-1]

    def row(f: float) -> list[Observation]:
        return [observed.get((f, s), Observation(math.nan)) for s in seeds]

    full = [f for f in candidates if all((f, s) in observed for s in seeds)]
    top = _mean(observed, best)
    tied = [f for f in full if _mean(observed, f) >= top - options.tolerance - 1e-12]
    verdicts = [[compare(row(f), row(e), tolerance=options.tolerance, confidence=level) for e in ends]
                for f in tied]
    differ = len({tuple(v == SEPARABLE for v in pair) for pair in verdicts}) > 1
    if not differ and UNDECIDED not in sum(verdicts, []):
        return []
    lo, hi = candidates.index(min(tied)), candidates.index(max(tied))
    span = candidates[max(lo - 1, 0): hi + 2]
    return [(f, s) for f in span for s in seeds if (f, s) not in observed]


def _bracket(candidates: list[float], ran: list[float], best: float, observed: dict) -> list[float]:
    """The fractions to try next around `best`, or [] when its adjacent candidates are run.

    First the vertex of the parabola through the best and the two run fractions nearest it (one on
    each side where there are, else the two next to an end): smooth accuracy-vs-fraction curves peak
    near it, so one cell there replaces a walk of one neighbour per round (steps a fine grid cannot
    resolve through noise), also when noise or the coarse round put the best at an end. Then the
    adjacent candidates, which decide whether the best is identified."""
    usable = [f for f in ran if math.isfinite(_mean(observed, f))]
    at = usable.index(best)
    lo = min(max(at - 1, 0), max(len(usable) - 3, 0))
    xs = np.array(usable[lo:lo + 3])
    if len(xs) == 3:
        a, b, _ = np.polyfit(xs, [_mean(observed, f) for f in xs], 2)
        vertex = float(np.clip(-b / (2 * a), xs[0], xs[2])) if a < 0 else best
        target = min(candidates, key=lambda c: (abs(c - vertex), c))
        if target not in ran:
            return [target]
    at = candidates.index(best)
    return [candidates[i] for i in (at - 1, at + 1) if 0 <= i < len(candidates) and candidates[i] not in ran]


def _rivals(best: float, neighbours: list[float], candidates: list[float], observed: dict) -> list[tuple]:
    """The comparisons the answer rests on, better mean first: the best against its neighbours and the
    endpoints (which decide the regime), and the endpoints against each other."""
    pairs = [(best, f) for f in sorted({*neighbours, candidates[0], candidates[-1]} - {best})]
    ends = candidates[0], candidates[-1]
    if ends[0] != ends[1] and best not in ends:
        pairs.append(ends if _mean(observed, ends[0]) >= _mean(observed, ends[1]) else ends[::-1])
    return pairs


def _best(candidates: list[float], observed: dict) -> float | None:
    """The candidate with the highest mean accuracy over its seeds (ties: the smallest fraction)."""
    means = [(m, -f, f) for f in candidates if math.isfinite(m := _mean(observed, f))]
    return max(means)[2] if means else None


# ---- onto a grid's cells -------------------------------------------------------------------------

def unit_of(cell) -> tuple:
    """The search's unit: a cell's dataset x weak supervisor x student x method x budget."""
    return cell.dataset.name, cell.weak_name, cell.student.label, cell.method, cell.budget


def candidate_fractions(cells) -> dict[float, tuple[int, int]]:
    """A unit's fractions that buy distinct (n_weak, n_oracle), smallest fraction of each count kept:
    two fractions buying the same labels would train the same thing twice."""
    kept: dict[tuple[int, int], float] = {}
    for cell in sorted(cells, key=lambda c: c.spending_fraction):
        kept.setdefault((cell.n_weak, cell.n_oracle), cell.spending_fraction)
    return {f: counts for counts, f in kept.items()}


def choose(cells: list, observed: dict[str, Observation], options: Options, *,
           num_fractions: int | None = None, at_chance: frozenset[tuple] = frozenset()) -> list:
    """The grid `cells` to run next, given `observed` (cell id -> observation of every cell attempted).

    Cells outside any search (explicit pairs, ceiling cells) are chosen at once; every unit of
    spending-fraction cells is asked `next_cells`, with `num_fractions` as the regimes' family: the
    sweep's `spending_fractions`, as `w2sweep frontier` takes it (None: each unit's own fractions;
    the same unless `grids:` picks fewer for a unit). `at_chance`: the (dataset, weak supervisor,
    student) whose ceiling is at chance (`w2sweep.frontier.at_chance`; a ceiling shared by every weak
    supervisor under NO_WEAK_SUPERVISOR), whose units add no seeds (`next_cells`). Returns the chosen
    cells in grid order; [] when every unit is done."""
    units: dict[tuple, list] = {}
    fixed = []
    for cell in cells:
        if cell.spending_fraction is None or cell.method == "ceiling":
            fixed.append(cell)
        else:
            units.setdefault(unit_of(cell), []).append(cell)
    chosen = {c.cell_id for c in fixed if c.cell_id not in observed}
    for unit_cells in units.values():
        keep = candidate_fractions(unit_cells)
        by_point = {(c.spending_fraction, c.seed): c for c in unit_cells if c.spending_fraction in keep}
        seeds = list(dict.fromkeys(c.seed for c in unit_cells))
        seen = {point: observed[c.cell_id] for point, c in by_point.items() if c.cell_id in observed}
        asked = num_fractions or len({c.spending_fraction for c in unit_cells})
        dataset, weak, student = unit_of(unit_cells[0])[:3]
        silent = {(dataset, weak, student), (dataset, NO_WEAK_SUPERVISOR, student)} & at_chance
        decision = next_cells(sorted(keep), seeds, seen, options, num_fractions=asked, at_chance=bool(silent))
        chosen.update(by_point[point].cell_id for point in decision.run if point in by_point)
    return [c for c in cells if c.cell_id in chosen]
