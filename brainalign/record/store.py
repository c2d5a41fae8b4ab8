"""On-disk recordings: streamed ``.npy`` shards, a JSON manifest, memory-mapped reading.

One directory per story::

    <out_dir>/<story name>/
        manifest.json          shapes, sha256 checksums, configuration, provenance
        story.json             the Story (words with times, runs, TR), as read back by .story
        tokens/token_ids.npy   the story's tokens (int64) and the word of each token
        tokens/token_word.npy
        <site>/L<layer>.npy    (n_words, width) float32, one file per (site, layer)

Shards are plain NumPy ``.npy`` files (readable by any tool, memory-mapped by
``numpy.load(mmap_mode="r")``). They are written row block by row block through
:class:`ShardWriter`, which hashes the bytes as they go, so neither the writer nor the
checksum ever holds a whole array. A recording is first written to a private
``.<name>.partial-<pid>`` folder and renamed into place only once its manifest is written:
a run killed at any point leaves nothing that :meth:`Recording.open` accepts as complete.
Leans on numpy's ``.npy`` format helpers and the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from brainalign.provenance import file_sha256
from brainalign.record.neurons import NeuronTable
from brainalign.stimuli.story import Story, Word

MANIFEST = "manifest.json"
STORY_FILE = "story.json"
FORMAT = "brainalign.recording"
FORMAT_VERSION = 1


class IncompleteRecordingError(FileNotFoundError):
    """A recording directory without a complete, consistent manifest."""


def shard_path(site: str, layer: int) -> str:
    """Relative path of one (site, layer) shard, e.g. ``"mlp.inner/L03.npy"``."""
    return f"{site}/L{layer:02d}.npy"


class ShardWriter:
    """Stream a 2-D float array into a ``.npy`` file, row block by row block.

    The header is written for the final shape up front; :meth:`append` adds rows in order
    and feeds every byte written into a SHA-256, so the checksum of the finished file is
    known without reading it back.

    Parameters
    ----------
    path : Path
        The ``.npy`` file to create.
    shape : tuple of int
        Final ``(n_rows, n_columns)``.
    dtype : numpy dtype
    """

    def __init__(self, path: Path, shape: tuple[int, int], dtype=np.float32):
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.rows_written = 0
        self._digest = hashlib.sha256()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._HashingFile(self._handle, self._digest),
                                             header)

    class _HashingFile:
        """File wrapper that hashes what numpy's header writer writes."""

        def __init__(self, handle, digest):
            self.handle, self.digest = handle, digest

        def write(self, data: bytes) -> int:
            self.digest.update(data)
            return self.handle.write(data)

    def append(self, rows: np.ndarray) -> None:
        """Write the next ``rows`` (shape ``(n, n_columns)``, this writer's dtype)."""
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or rows.dtype != self.dtype:
            raise ValueError(f"{self.path.name}: expected rows of shape (n, {self.shape[1]}) "
                             f"{self.dtype}, got {rows.shape} {rows.dtype}")
        if self.rows_written + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows_written + len(rows)} rows would "
                             f"exceed the declared {self.shape[0]}")
        data = memoryview(np.ascontiguousarray(rows)).cast("B")
        self._digest.update(data)
        self._handle.write(data)
        self.rows_written += len(rows)

    def discard(self) -> None:
        """Close the file without checks (the recording is being abandoned)."""
        if not self._handle.closed:
            self._handle.close()

    def close(self) -> str:
        """Flush to disk; the file's SHA-256. Raises if fewer rows than declared arrived."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if self.rows_written != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows_written} rows written, "
                             f"{self.shape[0]} declared")
        return self._digest.hexdigest()


def write_small_array(path: Path, array: np.ndarray) -> str:
    """Write a small array as ``.npy`` in one go; its SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return file_sha256(path)


def story_to_json(story: Story) -> dict:
    """A Story as a JSON document, words stored column by column (lossless floats)."""
    return {
        "name": story.name,
        "tr_s": story.tr_s,
        "n_volumes": list(story.n_volumes) if story.n_volumes is not None else None,
        "first_volume_s": list(story.first_volume_s) if story.first_volume_s is not None else None,
        "source": story.source,
        "metadata": story.metadata,
        "words": {
            "text": [w.text for w in story.words],
            "onset_s": [w.onset_s for w in story.words],
            "offset_s": [w.offset_s for w in story.words],
            "run": [w.run for w in story.words],
        },
    }


def story_from_json(document: dict) -> Story:
    """Inverse of :func:`story_to_json`."""
    columns = document["words"]
    words = tuple(Word(t, float(a), float(b), int(r)) for t, a, b, r in zip(
        columns["text"], columns["onset_s"], columns["offset_s"], columns["run"]))
    n_volumes, first_volume_s = document.get("n_volumes"), document.get("first_volume_s")
    return Story(document["name"], words, document.get("tr_s"),
                 tuple(n_volumes) if n_volumes is not None else None,
                 document.get("source"), document.get("metadata") or {},
                 tuple(first_volume_s) if first_volume_s is not None else None)


def write_json(path: Path, document: dict) -> str:
    """Write JSON (UTF-8, indented, flushed to disk); its SHA-256."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, ensure_ascii=False, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return file_sha256(path)


def partial_dir(final: Path) -> Path:
    """The private folder a recording is written to before being renamed to ``final``."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def remove_stale_partials(final: Path) -> None:
    """Delete partial folders of ``final`` left by processes that no longer run."""
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(partial: Path, final: Path) -> None:
    """Atomically move a finished partial folder into place (replacing an invalid one)."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(partial, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a complete recording; :class:`IncompleteRecordingError` otherwise."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise IncompleteRecordingError(
            f"{path} is not a complete brainalign recording: no {MANIFEST} (an interrupted "
            "run leaves none; record the story again)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise IncompleteRecordingError(f"{manifest_path}: unreadable JSON ({err})") from None
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise IncompleteRecordingError(f"{manifest_path}: not a complete {FORMAT} manifest")
    return manifest


def verify_checksums(path: str | os.PathLike, manifest: dict | None = None) -> list[str]:
    """Files of a recording whose size or SHA-256 differ from the manifest (empty if none)."""
    path = Path(path)
    manifest = manifest or read_manifest(path)
    bad = []
    for relative, expected in manifest["checksums"].items():
        file = path / relative
        if not file.is_file() or file_sha256(file) != expected:
            bad.append(relative)
    return bad


@dataclass
class Recording:
    """A recorded story, read lazily from its directory.

    Attributes
    ----------
    path : Path
    story : Story
        The words the values are aligned to (one row per word).
    neurons : NeuronTable
        Identity of every column of :meth:`matrix` (all sites and layers, in file order).
    sites : tuple of str
        Site names recorded (``mlp.inner``...).
    layers : tuple of int
        Layers recorded.
    provenance : dict
        Model, context policy, pooling, dtypes, package versions, story source.
    manifest : dict
        The full manifest (shapes, checksums, configuration).
    """

    path: Path
    story: Story
    neurons: NeuronTable
    sites: tuple[str, ...]
    layers: tuple[int, ...]
    provenance: dict
    manifest: dict

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "Recording":
        """Open a recording directory (written by :func:`brainalign.record.record_story`).

        Parameters
        ----------
        verify : bool
            Recompute every file's SHA-256 and compare with the manifest (reads all data).
        """
        path = Path(path)
        manifest = read_manifest(path)
        if verify:
            bad = verify_checksums(path, manifest)
            if bad:
                raise IncompleteRecordingError(f"{path}: checksum mismatch for {bad}")
        story = story_from_json(json.loads((path / STORY_FILE).read_text(encoding="utf-8")))
        arrays = manifest["arrays"]
        neurons = NeuronTable.from_sites((a["layer"], a["site"], a["width"]) for a in arrays)
        sites = tuple(dict.fromkeys(a["site"] for a in arrays))
        layers = tuple(sorted({a["layer"] for a in arrays}))
        return cls(path, story, neurons, sites, layers, manifest["provenance"], manifest)

    @property
    def n_words(self) -> int:
        return int(self.manifest["n_words"])

    def block(self, site: str, layer: int) -> np.ndarray:
        """One (site, layer) shard, memory-mapped, shape ``(n_words, width)`` float32."""
        for entry in self.manifest["arrays"]:
            if entry["site"] == site and entry["layer"] == layer:
                return np.load(self.path / entry["file"], mmap_mode="r")
        raise KeyError(f"no {site!r} layer {layer} in {self.path} (sites {list(self.sites)}, "
                       f"layers {list(self.layers)})")

    def matrix(self, sites: Iterable[str] | None = None,
               layers: Iterable[int] | None = None) -> np.ndarray:
        """Word-by-neuron values, shape ``(n_words, n_neurons)`` float32.

        Columns follow ``self.neurons.select(self.neurons.mask(sites, layers))``. A single
        (site, layer) is returned memory-mapped; several are concatenated in memory.
        """
        sites = None if sites is None else [sites] if isinstance(sites, str) else list(sites)
        layers = None if layers is None else [layers] if isinstance(layers, int) else list(layers)
        unknown = sorted(set(sites or ()) - set(self.sites)) + sorted(set(layers or ()) - set(self.layers))
        if unknown:
            raise KeyError(f"{unknown} not recorded in {self.path} (sites {list(self.sites)}, "
                           f"layers {list(self.layers)})")
        chosen = [a for a in self.manifest["arrays"]
                  if (sites is None or a["site"] in sites) and (layers is None or a["layer"] in layers)]
        blocks = [np.load(self.path / a["file"], mmap_mode="r") for a in chosen]
        if len(blocks) == 1:
            return blocks[0]
        return np.concatenate(blocks, axis=1)

    def token_ids(self) -> np.ndarray:
        """The story's tokens (non-special), shape (n_tokens,)."""
        return np.load(self.path / "tokens" / "token_ids.npy")

    def token_word(self) -> np.ndarray:
        """Index of the word each token belongs to, shape (n_tokens,)."""
        return np.load(self.path / "tokens" / "token_word.npy")
