"""Reading a config file into plain data: `yaml.safe_load` semantics, with what it lets through
refused as one line each (`LoadError`): a file that is missing, a directory or too large; bytes that
are not UTF-8; a key written twice (YAML keeps the last silently); nesting or alias expansion beyond
what a config needs (3,000 nested lists raised RecursionError; aliases can expand exponentially).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from w2sweep.config_checks import MAX_SHOWN, clip, shown

MAX_CONFIG_BYTES = 10 * 2**20  # a config is a few KB; 10 MiB is far beyond any real one
MAX_DEPTH = 32  # levels of nested mappings and lists
MAX_VALUES = 1_000_000  # values after YAML aliases are expanded (a "billion laughs" stays small as text)


class LoadError(ValueError):
    """A config file that cannot be read into plain data; the message is one line without the
    ``config error: `` prefix."""


class _DuplicateKey(ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping key written twice. Keys brought in by a merge
    (``<<: *base``) may still be overridden, as YAML intends."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(None, None, f"key {shown(key)} is given twice (lines {seen[key]} and "
                                            f"{line}); YAML would keep the last silently", key_node.start_mark)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader says so below
                    continue
        return super().construct_mapping(node, deep=deep)


def _read_text(path: str | Path) -> str:
    """The file's text, read as UTF-8 up to `MAX_CONFIG_BYTES`."""
    if os.path.isdir(path):
        raise LoadError("is a directory; expected a YAML file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise LoadError(f"cannot read ({e.strerror or type(e).__name__})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise LoadError(f"larger than {MAX_CONFIG_BYTES // 2**20} MiB; a config is a small YAML file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _check_size(raw: object) -> None:
    """Refuse nesting deeper than `MAX_DEPTH` and more than `MAX_VALUES` values, walking without
    recursion (a shared alias counts each time it is used, as validation would visit it)."""
    todo, count = [(raw, 1)], 0
    while todo:
        value, depth = todo.pop()
        count += 1
        if count > MAX_VALUES:
            raise LoadError(f"more than {MAX_VALUES:,} values (counting each use of a YAML alias)")
        if depth > MAX_DEPTH:
            raise LoadError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
            todo.extend((k, depth + 1) for k in value)
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


def read_yaml(path: str | Path) -> object:
    """The file at `path` as plain data; LoadError (one line) for any file `yaml.safe_load` would
    refuse, raise on or silently misread."""
    text = _read_text(path)
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as e:
        raise LoadError(clip(e.problem, 2 * MAX_SHOWN)) from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise LoadError(f"not valid YAML{line}") from None
    except RecursionError:
        raise LoadError(f"nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. an int of over 4300 digits, a bad date
        raise LoadError(f"not valid YAML ({clip(str(e), MAX_SHOWN)})") from None
    _check_size(raw)
    return raw
