"""Re-aggregate a sweep's results into frontier CSVs and a plot, as a Ray job (no training).

    ray job submit --working-dir . -- python jobs/frontier.py s3://my-bucket/w2sweep/paper
    ray job submit --working-dir . -- python jobs/frontier.py s3://my-bucket/w2sweep/paper --tolerance 0.02
    python jobs/frontier.py outputs/demo            # the same, on this machine

The argument is STORAGE/SWEEP: the storage root of the sweep's config followed by its name. The job
only reads cells/*.json and writes frontier/; `w2sweep pull` then fetches the CSVs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))  # src layout: platform/w2sweep

from w2sweep.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["frontier", *sys.argv[1:]]))
