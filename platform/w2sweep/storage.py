"""One storage layer for a sweep root: a local directory or any URI pyarrow.fs understands.

Paths handed to `Storage` methods are relative to the root (e.g. ``"demo/cells/ab12.json"``).
A cell result is written with `write_once`: the reader sees nothing or the whole object, and a second
writer of the same key loses instead of overwriting.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs


class AlreadyExists(FileExistsError):
    """`write_once` found the object already there: another attempt of the same cell won."""


@dataclass(frozen=True)
class Storage:
    uri: str
    filesystem: pafs.FileSystem
    root: str  # the root as a path inside `filesystem`

    @classmethod
    def from_uri(cls, uri: str) -> Storage:
        """A plain path or ``file://`` URI is a local directory (created if missing)."""
        if "://" not in uri:
            uri = os.path.abspath(os.path.expanduser(uri))
            os.makedirs(uri, exist_ok=True)
            return cls(uri=uri, filesystem=pafs.LocalFileSystem(), root=uri)
        filesystem, root = pafs.FileSystem.from_uri(uri)
        if isinstance(filesystem, pafs.LocalFileSystem):
            os.makedirs(root, exist_ok=True)
        return cls(uri=uri, filesystem=filesystem, root=root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    def exists(self, key: str) -> bool:
        return self.filesystem.get_file_info(self.path(key)).type != pafs.FileType.NotFound

    def read_bytes(self, key: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(key)) as f:
            return f.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Overwrite `key` atomically: a temporary sibling is written, then renamed over it."""
        target = self.path(key)
        self.filesystem.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        with self.filesystem.open_output_stream(tmp) as f:
            f.write(data)
        self.filesystem.move(tmp, target)

    def write_once(self, key: str, data: bytes) -> None:
        """Create `key` holding `data`, or raise `AlreadyExists`; never a partial object."""
        target = self.path(key)
        self.filesystem.create_dir(posixpath.dirname(target), recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        with self.filesystem.open_output_stream(tmp) as f:
            f.write(data)
        try:
            if self.is_local:
                # link(2) fails if the target exists: an exclusive, atomic publish on POSIX.
                try:
                    os.link(tmp, target)
                except FileExistsError as e:
                    raise AlreadyExists(key) from e
            else:
                if self.exists(key):
                    raise AlreadyExists(key)
                self.filesystem.copy_file(tmp, target)
        finally:
            self.filesystem.delete_file(tmp)

    def list(self, prefix: str, *, suffix: str = "") -> list[str]:
        """Keys (relative to the root) of the objects directly under `prefix`, sorted."""
        selector = pafs.FileSelector(self.path(prefix), allow_not_found=True)
        infos = self.filesystem.get_file_info(selector)
        keys = [
            posixpath.join(prefix, info.base_name)
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name.endswith(suffix)
            and ".tmp-" not in info.base_name
        ]
        return sorted(keys)
