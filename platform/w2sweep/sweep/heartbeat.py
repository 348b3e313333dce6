"""The heartbeat of a running cell: ``running/<cell_id>.json`` in the sweep's storage, written when
its trial starts, rewritten every `HEARTBEAT_INTERVAL_S` by a background thread while the cell runs,
and deleted when the trial ends. A reader (`w2sweep status`) tells a live cell from one whose process
died (its heartbeat stays behind, no longer updated) by the ``updated`` field.

Contract (JSON object): ``cell_id``; ``host``; ``pid``; ``started`` and ``updated``, epoch seconds
(``updated`` is ``started`` at first and then the time of the latest rewrite).

Neither a failed rewrite nor a failed deletion ends the cell or hides its error: both are logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from w2sweep.layout import HEARTBEAT_INTERVAL_S
from w2sweep.storage import Storage

log = logging.getLogger(__name__)


class Heartbeat:
    """``with Heartbeat(storage, key, cell_id=...):`` around a cell's run (see the module)."""

    def __init__(self, storage: Storage, key: str, *, cell_id: str, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.storage, self.key, self.interval_s = storage, key, interval_s
        self.fields = dict(cell_id=cell_id, host=socket.gethostname(), pid=os.getpid(), started=time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{cell_id}", daemon=True)

    def _write(self) -> None:
        self.storage.write_bytes(self.key, json.dumps(dict(self.fields, updated=time.time())).encode())

    def _try_write(self) -> None:
        try:
            self._write()
        except Exception as e:  # an outage: the cell goes on, the next beat tries again
            log.warning("heartbeat %s not written: %s", self.key, e)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._try_write()

    def __enter__(self) -> Heartbeat:
        # Not fatal either: a short outage at a cell's start would otherwise spend its attempts
        # (max_failures) on nothing, while the cell's own writes ride it out (result_write_timeout_s).
        self._try_write()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()  # no rewrite after the deletion
        try:
            self.storage.delete(self.key)
        except Exception as e:  # never raised over the cell's own outcome
            log.warning("heartbeat %s not deleted: %s", self.key, e)
        return False
