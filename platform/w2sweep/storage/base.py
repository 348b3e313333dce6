"""The storage interface every backend implements, its errors, and `Storage.from_uri`, which picks the
backend from the URI's scheme. Keys are relative to the root; see `w2sweep.storage`."""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

import pyarrow.fs as pafs


def in_storage_env(env: dict[str, str], fn, /, *args, **kwargs):
    """Call `fn` in a worker after putting the driver's storage settings into its environment. (Here,
    not in `w2sweep.sweep`: a Ray task worker unpickling it then imports this module, not Ray Tune.)"""
    os.environ.update(env)
    return fn(*args, **kwargs)


class StorageError(RuntimeError):
    """A storage operation failed for good. ``str()`` is one line: where, what went wrong, and what to
    check. It never holds a credential."""


class AlreadyExists(FileExistsError):
    """`write_once` found the object already there: another attempt of the same cell won."""


class Storage:
    """A sweep root. Build one with `Storage.from_uri`; it pickles (for Ray tasks) without credentials."""

    uri: str  # the root as given (an absolute path for local roots)
    root: str  # the root as a path inside `filesystem`

    # URI scheme -> the backend that opens it. Each backend registers itself (`__init_subclass__`), so
    # `from_uri` reaches them all without this module importing them, which import it.
    _backends: dict[str, type[Storage]] = {}

    def __init_subclass__(cls, *, scheme: str, **kwargs):
        super().__init_subclass__(**kwargs)
        Storage._backends[scheme] = cls

    @staticmethod
    def from_uri(uri: str, *, max_attempts: int | None = None) -> Storage:
        """A plain path or ``file://`` URI is a local directory (created if missing); ``s3://bucket/prefix``
        is an S3 prefix. `max_attempts` (S3 only) overrides ``AWS_MAX_ATTEMPTS``."""
        if "://" not in uri:
            return Storage._backends["file"](uri)
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme not in Storage._backends:
            raise StorageError(f"storage error: {scheme}://{parts.netloc}{parts.path}: unsupported scheme "
                               f"{scheme!r}; allowed: a local path, file://, s3://")
        return Storage._backends[scheme].from_parts(uri, parts, max_attempts=max_attempts)

    @classmethod
    def from_parts(cls, uri: str, parts: SplitResult, *, max_attempts: int | None) -> Storage:
        """The root `uri` of this backend's scheme (split into `parts`); `StorageError` if it is malformed."""
        raise NotImplementedError

    # ---- the interface; keys are relative to the root -----------------------------------------

    @property
    def is_local(self) -> bool:
        return False

    @property
    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem on which `path(key)` names the same object (for Ray Tune)."""
        raise NotImplementedError

    def path(self, key: str) -> str:
        """`key` as a path inside `filesystem`."""
        return posixpath.join(self.root, key) if key else self.root

    def url(self, key: str = "") -> str:
        """`key` as something a person can paste: a local path or an ``s3://`` URI."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError if there is none."""
        raise NotImplementedError

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace `key` atomically: a reader sees the old or the new object, never a part."""
        raise NotImplementedError

    def write_once(self, key: str, data: bytes) -> None:
        """Create `key` holding `data`, or raise `AlreadyExists`; never a partial object."""
        raise NotImplementedError

    def compute_once(self, key: str, make: Callable[[], bytes]) -> None:
        """Store `make()` under `key` unless an object is there already: what is computed once per key
        (weak labels, features). Safe to call concurrently: the first writer wins."""
        if self.exists(key):
            return
        try:
            self.write_once(key, make())
        except AlreadyExists:
            pass

    def delete(self, key: str) -> None:
        """Remove `key`; no error if it is not there."""
        raise NotImplementedError

    def list_modified(self, prefix: str, *, suffix: str = "") -> dict[str, float]:
        """Key -> last-modified time (seconds since the epoch) of the objects directly under `prefix`."""
        raise NotImplementedError

    def list(self, prefix: str, *, suffix: str = "") -> list[str]:
        """Keys (relative to the root) of the objects directly under `prefix`, sorted."""
        return sorted(self.list_modified(prefix, suffix=suffix))

    def check(self) -> None:
        """Raise `StorageError` (one line) unless the root is writable: writes and deletes a probe
        object. Cheap; meant to run before any compute."""
        key = f".w2sweep-check-{uuid.uuid4().hex}"
        self.write_bytes(key, b"ok")
        self.delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url()!r})"


def is_listed(name: str, suffix: str) -> bool:
    """Whether `list` shows object `name`: it ends in `suffix` and is neither a temporary file being
    written nor a `check` probe."""
    return name.endswith(suffix) and ".tmp-" not in name and not name.startswith(".w2sweep-check-")
