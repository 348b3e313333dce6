"""A sweep root in a local directory (a plain path or ``file://``)."""

from __future__ import annotations

import os
import posixpath
import uuid
from urllib.parse import SplitResult

import pyarrow.fs as pafs

from w2sweep.storage.base import AlreadyExists, Storage, StorageError, is_listed


class LocalStorage(Storage, scheme="file"):
    """A local directory through pyarrow's LocalFileSystem. `write_once` publishes with link(2), which
    fails if the target exists: exclusive and atomic on POSIX."""

    def __init__(self, path: str):
        self.uri = self.root = os.path.abspath(os.path.expanduser(path))
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise StorageError(f"storage error: {self.root}: cannot create the directory ({e.strerror})") from None
        self._fs = pafs.LocalFileSystem()

    @classmethod
    def from_parts(cls, uri: str, parts: SplitResult, *, max_attempts: int | None) -> LocalStorage:
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"storage error: {uri}: file:// URIs name a local path; got host "
                               f"{parts.netloc!r}")
        return cls(parts.path)

    @property
    def is_local(self) -> bool:
        return True

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    def url(self, key: str = "") -> str:
        return self.path(key)

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        with open(self.path(key), "rb") as f:
            return f.read()

    def _write_temp(self, target: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = self._write_temp(target, data)
        os.replace(tmp, target)

    def write_once(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = self._write_temp(target, data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise AlreadyExists(key) from None
        finally:
            os.unlink(tmp)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def list_modified(self, prefix: str, *, suffix: str = "") -> dict[str, float]:
        try:
            entries = list(os.scandir(self.path(prefix)))
        except FileNotFoundError:
            return {}
        return {posixpath.join(prefix, e.name): e.stat().st_mtime for e in entries
                if e.is_file() and is_listed(e.name, suffix)}

    def check(self) -> None:
        try:
            super().check()
        except OSError as e:
            raise StorageError(f"storage error: {self.root}: not writable ({e.strerror or e})") from None
