"""Where the 10,000-cell run's first minute goes: `run_sweep`'s own work before it hands the cells to
Ray Tune (expanding the grid, the config snapshot, the cell table), timed and profiled, with the Tune
run replaced by a stop (monkeypatched here, no hook in the library). What follows it (Tune's
controller, the trial processes starting) is Ray's.

    PYTHONPATH=platform .venv/bin/python bench/scale_startup.py [--num-cells 10000]
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class _Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cells", type=int, default=10000)
    args = parser.parse_args()

    import ray
    import scale  # bench/scale.py: the same config and the same sleeping cell

    import w2sweep.sweep.run as run
    from w2sweep.config import parse_config

    tmp = Path(tempfile.mkdtemp(prefix="w2sweep-startup-"))
    scale.write_dataset(tmp / "data.jsonl")
    config = parse_config(scale.bench_config(str(tmp / "store"), tmp / "data.jsonl", args.num_cells))
    start = {}

    def stop_at_tune(*_, **__):
        print(f"run_sweep before Tune: {time.time() - start['t']:.1f} s for {args.num_cells} cells", flush=True)
        raise _Stop

    run._tuner = stop_at_tune
    ray.init(num_cpus=16, include_dashboard=False, logging_level="ERROR")
    profile = cProfile.Profile()
    start["t"] = time.time()
    profile.enable()
    try:
        run.run_sweep(config, run=scale.SleepCell(str(tmp / "cells.jsonl"), 1.0, False))
    except _Stop:
        pass
    profile.disable()
    ray.shutdown()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
