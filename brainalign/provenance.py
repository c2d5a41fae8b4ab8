"""Provenance shared by every result file: package versions, file hashes, config hashes.

Every array brainalign writes is paired with a JSON document built from these helpers
so that a result can be traced back to the model file, the code versions and the
configuration that produced it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

#: Distributions whose versions are recorded in every provenance block.
TRACKED_PACKAGES = (
    "brainalign", "torch", "transformers", "numpy", "scipy", "scikit-learn",
    "himalaya", "nilearn", "nibabel", "mne",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed version of each named distribution (``"not installed"`` if absent)."""
    return dict(_installed_versions(tuple(names)))


@functools.lru_cache(maxsize=None)
def _installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """:func:`package_versions`, read once per process (reading the installed packages'
    metadata takes tens of ms, and every recording and result asks for it)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks so large model files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | Path) -> str | None:
    """A hash of a file's size and modification time (nanoseconds), or of every file's
    under a folder: cheap for gigabytes, and changed by any rewrite. None for a path that
    is not on disk (a hub id, a registry name)."""
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return None
    stamps = []
    for file in files:
        stat = file.stat()
        stamps.append([file.relative_to(path).as_posix() if file != path else "",
                       stat.st_size, stat.st_mtime_ns])
    return config_hash({"files": stamps})


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any], length: int = 16) -> str:
    """Short hex hash of a configuration mapping (order of keys does not matter)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:length]


def provenance_block(**fields: Any) -> dict[str, Any]:
    """A provenance dictionary: the given fields plus versions and a UTC timestamp."""
    block = dict(fields)
    block["versions"] = package_versions()
    block["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return block
