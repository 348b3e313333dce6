"""Checkpoints of a one-worker cell in the sweep's storage, so that a killed trial, a lost node or an
interrupted driver costs at most one validation interval: the next attempt of the cell (a Tune retry,
or a re-run of the same command) resumes from the last one.

The training state is what `w2sweep.train.checkpoint` saves for Ray Train cells too (one format):
the loop hands `on_epoch_end` a `save(directory)`; this copies that directory to a new folder
``checkpoints/<cell_id>/<version>/`` and only then rewrites the pointer ``latest.json`` (one atomic
object) to name it, so a kill during the upload leaves the previous checkpoint in force. The folder
before is deleted afterwards. Nothing here imports Ray: the trial runs it, and tests call it directly.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid

import pyarrow.fs as pafs

from w2sweep import layout
from w2sweep.storage import Storage
from w2sweep.train import TrainHooks

log = logging.getLogger(__name__)


class StorageHooks(TrainHooks):
    """`TrainHooks` that keep each validation's training state in `storage` (see the module)."""

    checkpoints = True

    def __init__(self, storage: Storage, sweep: str, cell_id: str):
        super().__init__()
        self.storage, self.sweep, self.cell_id = storage, sweep, cell_id
        self._pointer = layout.checkpoint_latest(sweep, cell_id)
        try:
            self._version = json.loads(storage.read_bytes(self._pointer))["version"]
        except FileNotFoundError:
            self._version = None
        self.resumed = self._version is not None
        self._local: str | None = None
        self._latest_saved: str | None = None  # the version this attempt wrote last; the one before goes

    def _path(self, version: str) -> str:
        return self.storage.path(layout.checkpoint_version(self.sweep, self.cell_id, version))

    def resume_dir(self) -> str | None:
        """The checkpoint this attempt started from, downloaded once."""
        if not self.resumed:
            return None
        if self._local is None:
            local = tempfile.mkdtemp(prefix="w2sweep-resume-")
            pafs.copy_files(self._path(self._version), local, source_filesystem=self.storage.filesystem,
                            destination_filesystem=pafs.LocalFileSystem())
            self._local = local
        return self._local

    def on_epoch_end(self, save, metrics: dict) -> None:
        previous = self._latest_saved
        version = f"s{metrics['stage']}-e{metrics['epoch']}-{uuid.uuid4().hex[:8]}"
        with tempfile.TemporaryDirectory(prefix="w2sweep-checkpoint-") as tmp:
            save(tmp)  # a flat folder: a one-worker cell trains with the plain loop
            self.storage.filesystem.create_dir(self._path(version), recursive=True)
            pafs.copy_files(tmp, self._path(version), source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.storage.filesystem)
        self.storage.write_bytes(self._pointer, json.dumps(dict(version=version, **metrics)).encode())
        self._latest_saved = version
        if previous is not None:
            self._delete(self._path(previous))

    def _delete(self, path: str) -> None:
        try:
            self.storage.filesystem.delete_dir(path)
        except OSError as e:  # leftovers cost space, not correctness
            log.warning("could not delete checkpoint %s: %s", path, e)

    def discard(self) -> None:
        """Delete the cell's checkpoints: called once its result is stored, which is what counts."""
        self.cleanup()
        if self.resumed or self._latest_saved is not None:  # a prompted cell saved nothing
            self._delete(self.storage.path(layout.checkpoints(self.sweep, self.cell_id)))

    def cleanup(self) -> None:
        if self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)
            self._local = None
