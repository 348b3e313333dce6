"""`w2sweep pull`: bring a sweep's frontier (CSVs, plots, report.html) from storage to a local folder.

The frontier is recomputed in storage first when it is stale: no ``frontier/manifest.json`` yet, a
cell result (or sweep.yaml) that the manifest's inputs digest does not cover, or options asked for
that differ from the ones it was computed with. Cell results are written once and never change, so
the set of cell keys is a complete account of the inputs: unlike object mtimes it also notices a
deleted result, and it does not depend on clocks. Every downloaded file is checked against the
manifest's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from w2sweep import layout
from w2sweep.frontier import MANIFEST, inputs_digest, manifest_key, write_frontier
from w2sweep.results import cell_keys
from w2sweep.storage import Storage

# Options of `write_frontier` that pull can ask for; None in `pull(options=...)` means "as stored".
OPTION_NAMES = ("tolerance", "axis", "gpu_hour_price", "label_unit_price", "c_weak", "budgets",
                "dataset_groups", "metric", "confidence")


class PullError(RuntimeError):
    """The frontier could not be brought over intact."""


@dataclass
class PullReport:
    out: Path
    recomputed: bool
    reason: str  # why it was (or was not) recomputed
    files: list[Path] = field(default_factory=list)
    num_bytes: int = 0


def read_manifest(storage: Storage, sweep: str) -> dict | None:
    """The stored manifest, or None when absent or unreadable (both mean: recompute)."""
    key = manifest_key(sweep)
    try:
        if not storage.exists(key):
            return None
        manifest = json.loads(storage.read_bytes(key))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def _normalize(name: str, value):
    if name in ("c_weak", "budgets") and value is not None:
        return [float(v) for v in value]
    if name == "dataset_groups" and value is not None:
        return {k: sorted(v) for k, v in value.items()}
    return value


def staleness(storage: Storage, sweep: str, manifest: dict | None, options: dict) -> str:
    """Why the stored frontier cannot be used as is ("" when it can). `options`: explicit asks only."""
    if manifest is None:
        return "no frontier computed yet"
    keys = cell_keys(storage, sweep)
    yaml_key = layout.sweep_yaml(sweep)
    sweep_yaml = storage.read_bytes(yaml_key) if storage.exists(yaml_key) else b""
    if manifest.get("inputs_digest") != inputs_digest(keys, sweep_yaml):
        return (f"results changed since the frontier was computed "
                f"({manifest.get('num_cells', '?')} cell objects then, {len(keys)} now, or sweep.yaml edited)")
    resolved = manifest.get("resolved") or {}
    changed = [f"{name} {resolved.get(name)!r} -> {value!r}" for name, value in options.items()
               if _normalize(name, value) != _normalize(name, resolved.get(name))]
    if changed:
        return "options differ: " + "; ".join(changed)
    return ""


def _recompute(storage: Storage, sweep: str, manifest: dict | None, options: dict) -> dict:
    """Recompute with the options the stored frontier was asked with, overridden by `options`."""
    asked = {k: v for k, v in ((manifest or {}).get("options") or {}).items() if k in OPTION_NAMES}
    write_frontier(storage, sweep, **(asked | options))
    manifest = read_manifest(storage, sweep)
    if manifest is None:
        raise PullError(f"{storage.path(manifest_key(sweep))}: not readable right after writing it")
    return manifest


def _write_local(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def pull(storage: Storage, sweep: str, out: str | Path, *, options: dict | None = None,
         recompute: bool = False, progress: bool = True) -> PullReport:
    """Download ``<sweep>/frontier/`` (every file its manifest lists, and the manifest) into `out`,
    keeping the layout (``c_weak=<v>/`` views become subfolders). `options` holds `write_frontier`
    options to insist on (absent or None: as stored); `recompute` forces a recomputation."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"pull options {unknown}: allowed: {', '.join(OPTION_NAMES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails before any work
    manifest = read_manifest(storage, sweep)
    reason = "--recompute" if recompute else staleness(storage, sweep, manifest, options)
    recomputed = bool(reason)
    if recomputed:
        manifest = _recompute(storage, sweep, manifest, options)
    report = PullReport(out=out, recomputed=recomputed, reason=reason or "up to date")

    files = manifest["files"]
    total = sum(int(meta.get("bytes", 0)) for meta in files.values())
    with tqdm(total=total, desc=f"pull {sweep}", unit="B", unit_scale=True, disable=not progress,
              dynamic_ncols=True) as bar:
        for name in sorted(files):
            if name.startswith("/") or ".." in Path(name).parts:
                raise PullError(f"manifest lists {name!r}: not a path inside the frontier folder")
            data = storage.read_bytes(layout.frontier(sweep, name))
            if hashlib.sha256(data).hexdigest() != files[name]["sha256"]:
                if recomputed:
                    raise PullError(f"{storage.path(layout.frontier(sweep, name))}: content does not match "
                                    "the manifest written with it (is another process writing the frontier?)")
                # Outputs from an interrupted or concurrent write: recompute once and start over.
                return pull(storage, sweep, out, options=options, recompute=True, progress=progress)
            _write_local(out / name, data)
            report.files.append(out / name)
            report.num_bytes += len(data)
            bar.update(len(data))
    _write_local(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    report.files.append(out / MANIFEST)
    return report
