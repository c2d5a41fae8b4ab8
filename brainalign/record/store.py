"""On-disk recordings: streamed ``.npy`` shards, a JSON manifest, memory-mapped reading.

One directory per story::

    <out_dir>/<story name>/
        manifest.json          shapes, sha256 checksums, configuration, provenance
        story.json             the Story (words with times, runs, TR), as read back by .story
        tokens/token_ids.npy   the story's tokens (int64) and the word of each token
        tokens/token_word.npy
        <site>/L<layer>.npy    (n_words, width), one file per (site, layer), in the storage
                               dtype: float32, float16, or bfloat16 kept as its 16-bit
                               patterns (numpy has no bfloat16; read back as float32)

A recording made straight to the TR grid (``record_story(..., to_tr=...)``) is instead a
:class:`~brainalign.timecourse.NeuronTimecourses` directory (``data.npy``, ``axes.npz``,
``provenance.json``) with the same ``manifest.json`` (``"grid": "tr"``) and ``story.json``.

Shards are plain NumPy ``.npy`` files (readable by any tool, memory-mapped by
``numpy.load(mmap_mode="r")``). They are written row block by row block through
:class:`ShardWriter`, which hashes each block as it goes (on several threads), so
neither the writer nor the checksum ever holds a whole array, and hands each block to the
disk as soon as it is written (on Linux), so the disk writes while the model runs. A
recording is first written to a private ``.<name>.partial-<pid>`` folder and renamed into
place only once its manifest is written: a run killed at any point leaves nothing that
:meth:`Recording.open` accepts as complete.
Leans on numpy's ``.npy`` format helpers and the standard library.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import json
import os
import shutil
import sys
import zlib
from dataclasses import dataclass, field
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
#: Where the kernel cannot be asked to start writing a range early (not Linux), a shard
#: is flushed to disk every this many bytes while it is written, so that the disk works
#: alongside the model instead of after it (the page cache would otherwise hold everything
#: until the final fsync).
SYNC_BYTES = 256 * 2**20
#: On Linux each written piece is handed to the disk at once (``sync_file_range``, which
#: returns without waiting); a shard's writer waits for its oldest pieces only once more
#: than this many bytes of it are still on their way, so the disk never idles while the
#: writer copies, and the page cache holds a bounded amount per shard.
WRITEBACK_BYTES = 128 * 2**20
#: Storage dtypes and how each is kept on disk.
DISK_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
               "bfloat16": np.dtype(np.uint16)}


def _load_sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None where it is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


#: ``sync_file_range`` and its flags (``<linux/fs.h>``).
sync_file_range = _load_sync_file_range()
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4


class _Writeback:
    """Keep the disk writing a file's pieces while later pieces are still being written.

    :meth:`written` is told each piece (byte range) once it is in the page cache. On Linux
    it asks the kernel to start writing it out now and, once more than
    :data:`WRITEBACK_BYTES` are in flight, waits for the oldest pieces to be on disk.
    Elsewhere, or if the file system refuses ``sync_file_range``, it falls back to an
    ``fdatasync`` every :data:`SYNC_BYTES`. Either way durability still comes from the
    ``fsync`` at the end (``sync_file_range`` flushes neither metadata nor the disk's cache).
    """

    def __init__(self, fileno: int):
        self.fileno = fileno
        self.in_flight: collections.deque = collections.deque()
        self.in_flight_bytes = 0
        self.unsynced = 0
        self.early = sync_file_range is not None

    def written(self, start: int, length: int) -> None:
        if self.early and sync_file_range(self.fileno, start, length, SYNC_FILE_RANGE_WRITE):
            self.early = False  # refused here (e.g. the file system): flush instead
            self.unsynced += self.in_flight_bytes
            self.in_flight.clear()
            self.in_flight_bytes = 0
        if not self.early:
            self.unsynced += length
            if self.unsynced >= SYNC_BYTES:
                getattr(os, "fdatasync", os.fsync)(self.fileno)
                self.unsynced = 0
            return
        self.in_flight.append((start, length))
        self.in_flight_bytes += length
        while self.in_flight_bytes > WRITEBACK_BYTES and len(self.in_flight) > 1:
            oldest, size = self.in_flight.popleft()
            sync_file_range(self.fileno, oldest, size, SYNC_FILE_RANGE_WAIT_BEFORE
                            | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)
            self.in_flight_bytes -= size


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values kept as their 16-bit patterns -> float32 (exact)."""
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


class BFloat16Shard:
    """A memory-mapped bfloat16 shard, read as float32 one selection at a time.

    Indexing (``shard[:, a:b]``) and ``numpy.asarray(shard)`` return float32; only the
    selected part is read from disk.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, bits: np.ndarray):
        self.bits = bits

    @property
    def shape(self) -> tuple[int, ...]:
        return self.bits.shape

    @property
    def ndim(self) -> int:
        return self.bits.ndim

    def __len__(self) -> int:
        return len(self.bits)

    def __getitem__(self, index) -> np.ndarray:
        return bfloat16_to_float32(self.bits[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = bfloat16_to_float32(self.bits)
        return values if dtype is None else values.astype(dtype)


class IncompleteRecordingError(FileNotFoundError):
    """A recording directory without a complete, consistent manifest."""


def shard_path(site: str, layer: int) -> str:
    """Relative path of one (site, layer) shard, e.g. ``"mlp.inner/L03.npy"``."""
    return f"{site}/L{layer:02d}.npy"


class ShardWriter:
    """Stream a 2-D float array into a ``.npy`` file, row block by row block.

    The header is written for the final shape up front; :meth:`append` (or :meth:`write`
    then :meth:`hash_piece`) adds rows in order. Each written piece of rows gets its own
    SHA-256, so pieces can be hashed by several threads while later ones are written; the
    shard's checksum (:meth:`close`) is the SHA-256 of the header's digest followed by the
    pieces' digests, with the pieces' row counts, so it is known without reading the file
    back and :func:`pieces_checksum` recomputes it from the file.

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
        self._piece_digests: list[bytes | None] = []
        self._piece_crc32: list[int | None] = []
        self._piece_rows: list[int] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": self.shape}
        header_digest = hashlib.sha256()
        np.lib.format.write_array_header_1_0(self._HashingFile(self._handle, header_digest),
                                             header)
        self._header_digest = header_digest.digest()
        self._handle.flush()
        self._offset = self._handle.tell()
        self._writeback = _Writeback(self._handle.fileno())

    class _HashingFile:
        """File wrapper that hashes what numpy's header writer writes."""

        def __init__(self, handle, digest):
            self.handle, self.digest = handle, digest

        def write(self, data: bytes) -> int:
            self.digest.update(data)
            return self.handle.write(data)

    def append(self, rows: np.ndarray) -> None:
        """Write the next ``rows`` (shape ``(n, n_columns)``, this writer's dtype) and hash them."""
        self.hash_piece(self.write(rows), rows)

    def write(self, rows: np.ndarray) -> int:
        """Write the next ``rows`` without hashing them; the piece's index, for
        :meth:`hash_piece` (which another thread may call, in any order)."""
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or rows.dtype != self.dtype:
            raise ValueError(f"{self.path.name}: expected rows of shape (n, {self.shape[1]}) "
                             f"{self.dtype}, got {rows.shape} {rows.dtype}")
        if self.rows_written + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows_written + len(rows)} rows would "
                             f"exceed the declared {self.shape[0]}")
        data = memoryview(np.ascontiguousarray(rows)).cast("B")
        self._handle.write(data)
        self._handle.flush()
        self._writeback.written(self._offset, data.nbytes)  # start the disk now, not at close
        self._offset += data.nbytes
        self.rows_written += len(rows)
        self._piece_digests.append(None)
        self._piece_crc32.append(None)
        self._piece_rows.append(len(rows))
        return len(self._piece_digests) - 1

    def hash_piece(self, index: int, rows: np.ndarray) -> None:
        """Hash piece ``index`` (the ``rows`` given to :meth:`write`): its SHA-256, and the
        CRC-32 that readers check (:meth:`Recording.block`); thread-safe."""
        data = memoryview(np.ascontiguousarray(rows)).cast("B")
        self._piece_digests[index] = hashlib.sha256(data).digest()
        self._piece_crc32[index] = zlib.crc32(data)

    def discard(self) -> None:
        """Close the file without checks (the recording is being abandoned)."""
        if not self._handle.closed:
            self._handle.close()

    def close(self) -> dict:
        """Flush to disk; the checksum (see :func:`pieces_checksum`). Raises if fewer rows
        than declared arrived, or a piece was never hashed."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if self.rows_written != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.rows_written} rows written, "
                             f"{self.shape[0]} declared")
        if any(d is None for d in self._piece_digests):
            raise ValueError(f"{self.path.name}: a written piece was never hashed")
        return {"sha256_of_pieces": _combine(self._header_digest, self._piece_digests),
                "piece_rows": list(self._piece_rows), "piece_crc32": list(self._piece_crc32)}


def _combine(header_digest: bytes, piece_digests: list[bytes]) -> str:
    return hashlib.sha256(header_digest + b"".join(piece_digests)).hexdigest()


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header bytes) of a ``.npy`` file, from its header alone."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle)
        return shape, dtype, handle.tell()


def check_shard_size(path: Path, shape: tuple[int, int], dtype: str) -> None:
    """Raise :class:`IncompleteRecordingError`, naming the file, unless ``path`` is a
    ``.npy`` of ``shape`` in the storage ``dtype`` with exactly the bytes that takes."""
    try:
        found_shape, found_dtype, header_bytes = _npy_layout(path)
    except (OSError, ValueError) as err:
        raise IncompleteRecordingError(f"{path}: not a readable .npy shard ({err}); record the "
                                       "story again") from None
    expected = header_bytes + int(np.prod(shape)) * DISK_DTYPES[dtype].itemsize
    size = os.path.getsize(path)
    if tuple(found_shape) != tuple(shape) or found_dtype != DISK_DTYPES[dtype] or size != expected:
        raise IncompleteRecordingError(
            f"{path}: expected a {tuple(shape)} {dtype} shard of {expected:,} bytes, found "
            f"{tuple(found_shape)} {found_dtype} in {size:,} bytes (truncated or replaced); "
            "record the story again")


def _piece_ranges(path: Path, piece_rows: list[int]) -> tuple[bytes, list[tuple[int, int]]]:
    """The header's bytes and each piece's (byte offset, byte length) in a shard."""
    shape, dtype, header_bytes = _npy_layout(path)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    starts = header_bytes + row_bytes * np.concatenate([[0], np.cumsum(piece_rows)[:-1]])
    with open(path, "rb") as handle:
        header = handle.read(header_bytes)
    return header, [(int(a), n * row_bytes) for a, n in zip(starts.tolist(), piece_rows)]


def _map_pieces(path: Path, ranges: list[tuple[int, int]], function, threads: int | None):
    from concurrent.futures import ThreadPoolExecutor

    def read(item):
        start, length = item
        with open(path, "rb") as piece:
            piece.seek(start)
            return function(piece.read(length))

    with ThreadPoolExecutor(max_workers=threads or hash_threads()) as pool:
        return list(pool.map(read, ranges))


def pieces_checksum(path: Path, piece_rows: list[int], threads: int | None = None) -> str:
    """Recompute a shard's checksum from its file (pieces hashed on ``threads`` threads)."""
    shape, _, header_bytes = _npy_layout(path)
    header, ranges = _piece_ranges(path, piece_rows)
    if sum(piece_rows) != shape[0] or os.path.getsize(path) != ranges[-1][0] + ranges[-1][1]:
        return "size mismatch"
    digests = _map_pieces(path, ranges, lambda data: hashlib.sha256(data).digest(), threads)
    return _combine(hashlib.sha256(header).digest(), digests)


def check_piece_crc32(path: Path, checksum: dict, threads: int | None = None) -> None:
    """Raise :class:`IncompleteRecordingError`, naming the file and rows, if a piece of the
    shard no longer has the CRC-32 recorded when it was written (a cheap check, run on
    every first read of a shard by :meth:`Recording.block`)."""
    piece_rows, expected = checksum["piece_rows"], checksum["piece_crc32"]
    _, ranges = _piece_ranges(path, piece_rows)
    found = _map_pieces(path, ranges, zlib.crc32, threads)
    bad = [i for i, (a, b) in enumerate(zip(found, expected)) if a != b]
    if bad:
        first = int(np.sum(piece_rows[:bad[0]]))
        raise IncompleteRecordingError(
            f"{path}: rows {first}..{first + piece_rows[bad[0]] - 1} differ from what was "
            f"recorded (CRC-32 mismatch in {len(bad)} of {len(piece_rows)} pieces); the file "
            "was changed or damaged after recording: record the story again")


def hash_threads() -> int:
    """Threads that hash shard pieces (hashlib releases the GIL on large buffers)."""
    return max(1, min(8, os.cpu_count() or 1))


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
    """Files of a recording whose size or checksum differ from the manifest (empty if none).

    Small files carry a plain SHA-256; shards carry :class:`ShardWriter`'s checksum of
    pieces, recomputed by :func:`pieces_checksum`.
    """
    path = Path(path)
    manifest = manifest or read_manifest(path)
    bad = []
    for relative, expected in manifest["checksums"].items():
        file = path / relative
        if not file.is_file():
            bad.append(relative)
        elif isinstance(expected, dict):
            if pieces_checksum(file, expected["piece_rows"]) != expected["sha256_of_pieces"]:
                bad.append(relative)
        elif file_sha256(file) != expected:
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
    check_blocks : bool
        Check each shard's pieces against their CRC-32 the first time it is read.
    """

    path: Path
    story: Story
    neurons: NeuronTable
    sites: tuple[str, ...]
    layers: tuple[int, ...]
    provenance: dict
    manifest: dict
    check_blocks: bool = True
    _checked: set = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False,
             check_blocks: bool = True) -> "Recording":
        """Open a recording directory (written by :func:`brainalign.record.record_story`).

        Every shard's size is checked against the manifest (a truncated or replaced file
        raises :class:`IncompleteRecordingError` naming it).

        Parameters
        ----------
        verify : bool
            Recompute every file's SHA-256 and compare with the manifest (reads all data).
        check_blocks : bool
            Check each shard's pieces against the CRC-32 recorded with them the first time
            the shard is read (about one extra pass over it at memory speed); recordings
            made before piece checksums existed are read unchecked.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if manifest.get("grid", "word") != "word":
            raise IncompleteRecordingError(
                f"{path} was recorded straight to the TR grid: open it with "
                "brainalign.timecourse.NeuronTimecourses.load")
        if verify:
            bad = verify_checksums(path, manifest)
            if bad:
                raise IncompleteRecordingError(f"{path}: checksum mismatch for {bad}")
        for entry in manifest["arrays"]:
            check_shard_size(path / entry["file"], entry["shape"], entry.get("dtype", "float32"))
        story = story_from_json(json.loads((path / STORY_FILE).read_text(encoding="utf-8")))
        arrays = manifest["arrays"]
        neurons = NeuronTable.from_sites((a["layer"], a["site"], a["width"]) for a in arrays)
        sites = tuple(dict.fromkeys(a["site"] for a in arrays))
        layers = tuple(sorted({a["layer"] for a in arrays}))
        return cls(path, story, neurons, sites, layers, manifest["provenance"], manifest,
                   check_blocks)

    @property
    def n_words(self) -> int:
        return int(self.manifest["n_words"])

    @property
    def dtype(self) -> str:
        """Storage dtype of the shards (``float32``, ``float16`` or ``bfloat16``)."""
        return self.manifest.get("dtype", "float32")

    def _load(self, entry: dict):
        """A shard, memory-mapped; its pieces' CRC-32 checked on its first read."""
        checksum = self.manifest["checksums"].get(entry["file"])
        if (self.check_blocks and entry["file"] not in self._checked
                and isinstance(checksum, dict) and "piece_crc32" in checksum):
            check_piece_crc32(self.path / entry["file"], checksum)
            self._checked.add(entry["file"])
        try:
            shard = np.load(self.path / entry["file"], mmap_mode="r")
        except (OSError, ValueError) as err:
            raise IncompleteRecordingError(f"{self.path / entry['file']}: cannot be read "
                                           f"({err})") from None
        return BFloat16Shard(shard) if entry.get("dtype") == "bfloat16" else shard

    def block(self, site: str, layer: int) -> np.ndarray:
        """One (site, layer) shard, memory-mapped, shape ``(n_words, width)``, in the storage
        dtype (a :class:`BFloat16Shard`, read as float32, for bfloat16)."""
        for entry in self.manifest["arrays"]:
            if entry["site"] == site and entry["layer"] == layer:
                return self._load(entry)
        raise KeyError(f"no {site!r} layer {layer} in {self.path} (sites {list(self.sites)}, "
                       f"layers {list(self.layers)})")

    def matrix(self, sites: Iterable[str] | None = None,
               layers: Iterable[int] | None = None) -> np.ndarray:
        """Word-by-neuron values, shape ``(n_words, n_neurons)``, in the storage dtype.

        Columns follow ``self.neurons.select(self.neurons.mask(sites, layers))``. A single
        (site, layer) is returned memory-mapped (see :meth:`block`); several are
        concatenated in memory (float32 for bfloat16 recordings).
        """
        sites = None if sites is None else [sites] if isinstance(sites, str) else list(sites)
        layers = None if layers is None else [layers] if isinstance(layers, int) else list(layers)
        unknown = sorted(set(sites or ()) - set(self.sites)) + sorted(set(layers or ()) - set(self.layers))
        if unknown:
            raise KeyError(f"{unknown} not recorded in {self.path} (sites {list(self.sites)}, "
                           f"layers {list(self.layers)})")
        chosen = [a for a in self.manifest["arrays"]
                  if (sites is None or a["site"] in sites) and (layers is None or a["layer"] in layers)]
        blocks = [self._load(a) for a in chosen]
        if len(blocks) == 1:
            return blocks[0]
        return np.concatenate(blocks, axis=1)

    def token_ids(self) -> np.ndarray:
        """The story's tokens (non-special), shape (n_tokens,)."""
        return np.load(self.path / "tokens" / "token_ids.npy")

    def token_word(self) -> np.ndarray:
        """Index of the word each token belongs to, shape (n_tokens,)."""
        return np.load(self.path / "tokens" / "token_word.npy")
