"""Run one sweep as a Ray job: every unfinished cell of CONFIG, then its frontier.

On a running cluster (`ray up cluster.yaml`, then `ray dashboard cluster.yaml` in another terminal),
from the repository root:

    ray job submit --working-dir . -- python jobs/sweep.py jobs/configs/demo.yaml
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml \
        --entrypoint-resources '{"driver": 1}' -- python jobs/sweep.py jobs/configs/paper.yaml

(the client needs RAY_AUTH_MODE=token and RAY_ADDRESS=http://127.0.0.1:8265; `{"driver": 1}` puts the
driver on cluster.yaml's on-demand driver node).

On one machine, without a cluster (Ray starts a local one for the run):

    python jobs/sweep.py jobs/configs/demo.yaml

`--working-dir .` uploads this checkout (files listed in .gitignore stay behind;
jobs/runtime_env.yaml also leaves out .git). The sweep ships its own w2sweep package to every worker,
so the cluster runs this checkout's code. Storage settings (AWS_ENDPOINT_URL, AWS_REGION, credentials)
are read from the driver's environment and handed to the workers; on AWS the cluster's instance role
needs none. On more than one node, `storage` must be shared (s3://...): demo.yaml's `outputs` is a
directory on whichever node a cell ran. Progress is in `ray job logs --follow JOB_ID` and `w2sweep status STORAGE/SWEEP`.
"""

import sys
from pathlib import Path

# The package's source lives in platform/ (src layout), which is not on the import path of a job's
# driver; an installed w2sweep would otherwise shadow the checkout being submitted.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from w2sweep.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
