"""From result rows to curves, frontiers, regimes, budget tables and PGR: the sweep's answer.

Units: budget and label cost are in label units (one oracle label costs ``c_oracle``); compute is in
GPU-seconds and its cost in dollars (GPU-seconds / 3600 x $ per GPU-hour); accuracy and AUROC are
fractions in [0, 1] on the test pool; a spending fraction is the oracle share of the label cost.
Only rows with ``status == "ok"`` and a finite accuracy enter the statistics; `write_frontier` counts
the others. Everything is vectorized pandas (groupby, sort + cummax, merge_asof): a million result
rows aggregate in seconds (bench/aggregate.py). No Ray import: this runs anywhere storage is readable.

One module per responsibility: `tables` (usable rows, curves, costs, Pareto frontier, budget table,
and the shared vocabulary: the base the others import), `read` (the sweep's inputs; result objects
only through `w2sweep.results`, the one reader of the result schema), `stats` (intervals and paired
comparisons, from per-example predictions where stored), `regimes`, `gap` (PGR and "no signal"),
`plots`, and `write` (the files of each view and their manifest, last). The names below are the
ones callers use; import them from here.
"""

from w2sweep.frontier.plots import MAX_PANELS, plot_budget_table, plot_curves, plot_frontier
from w2sweep.frontier.read import inputs_digest, read_sweep_yaml
from w2sweep.frontier.gap import at_chance, ceilings, no_signal, pgr, without_signal
from w2sweep.frontier.regimes import CEILING_METHOD, ORACLE_METHOD, regimes
from w2sweep.frontier.stats import CONFIDENCE, METRICS
from w2sweep.frontier.tables import (
    ALL_METHODS,
    AXES,
    DEFAULT_GPU_HOUR_PRICE,
    GROUP,
    MODELS,
    add_dataset_groups,
    budget_points,
    budget_table,
    curves,
    gpu_seconds,
    pareto_frontier,
    recost,
    usable,
    with_baselines,
    with_costs,
)
from w2sweep.frontier.write import (
    MANIFEST,
    Aggregate,
    aggregate,
    manifest_key,
    results_parquet,
    view_outputs,
    write_frontier,
)

__all__ = [
    "ALL_METHODS", "AXES", "Aggregate", "CEILING_METHOD", "CONFIDENCE", "METRICS", "at_chance", "ceilings", "no_signal",
    "without_signal",
    "with_baselines", "DEFAULT_GPU_HOUR_PRICE", "GROUP", "MANIFEST",
    "MAX_PANELS", "MODELS", "ORACLE_METHOD", "add_dataset_groups", "aggregate",
    "budget_points", "budget_table", "curves", "gpu_seconds", "inputs_digest", "manifest_key",
    "pareto_frontier", "pgr", "plot_budget_table", "plot_curves", "plot_frontier",
    "read_sweep_yaml", "recost", "regimes", "results_parquet", "usable", "view_outputs", "with_costs",
    "write_frontier",
]
