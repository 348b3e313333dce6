"""Where Ray's own log lines go during a run: a file, not the console. Tune logs a ~100-line traceback
for every failed attempt of a trial, and `ray.init` warns about token authentication and the like;
on the console they bury the progress bar and the one line per failed cell that matter. The file's
path is printed once, at the start of the run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import ray  # noqa: F401 - importing Ray installs its console handler on the "ray" logger, replaced here

from w2sweep import layout
from w2sweep.storage import Storage


def run_log_path(storage: Storage, sweep: str) -> Path:
    """``<sweep>/logs/run-<UTC time>.log`` under a local storage root; under ``$W2SWEEP_CACHE/logs/<sweep>/``
    (default ``~/.cache/w2sweep``) for an s3:// root, which a file handler cannot append to."""
    name = f"run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    if storage.is_local:
        return Path(storage.path(layout.logs(sweep, name)))
    cache = Path(os.environ.get("W2SWEEP_CACHE") or Path.home() / ".cache" / "w2sweep")
    return cache / "logs" / sweep / name


class _FileOnFirstRecord(logging.FileHandler):
    """A file handler that creates its file (and folder) only when a record comes: a run that stops
    before it starts (no cluster at RAY_ADDRESS) leaves nothing in storage."""

    def __init__(self, path: Path):
        super().__init__(path, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def announce(path: Path) -> None:
    """The run's one console line about the file (printed once Ray is up)."""
    print(f"Ray's log lines and the tracebacks of failed attempts (if any): {path}", flush=True)


@contextlib.contextmanager
def ray_logs_in_file(path: Path):
    """While the block runs, every record of the ``ray`` loggers (Ray Core, Tune, Train) goes to `path`
    instead of Ray's console handler; the handlers are put back afterwards."""
    handler = _FileOnFirstRecord(path)
    handler.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(name)s:%(lineno)s -- %(message)s"))
    ray_logger = logging.getLogger("ray")
    before = list(ray_logger.handlers)
    for h in before:
        ray_logger.removeHandler(h)
    ray_logger.addHandler(handler)
    try:
        yield path
    finally:
        ray_logger.removeHandler(handler)
        handler.close()
        for h in before:
            ray_logger.addHandler(h)
