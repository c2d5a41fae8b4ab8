"""Record neuron values word by word while a model reads a story, streaming them to disk.

:func:`record_story` is the recording loop:

1. The story's words are joined into one text and tokenized once; every token is given to
   its word from the tokenizer's character offsets (:mod:`brainalign.record.alignment`).
2. The tokens are cut into context windows (:func:`plan_windows`). Each window *keeps* a
   stretch of whole words and feeds the model ``context_tokens`` tokens of left context
   before it (causal models), or on both sides (encoders); every token is kept in exactly
   one window, so it is computed once with enough context. Windows run in batches.
3. Neuron values are read through :func:`brainalign.models.sites.site_hooks` and pooled
   to words inside the hook, on the model's device (``index_add_`` segment mean, or the
   first / last token of each word); the forward pass stops after the deepest requested
   site (:class:`~brainalign.models.sites.StopForward`).
4. The pooled rows are copied into pinned host buffers (asynchronously on CUDA; two
   buffer sets alternate) and a writer thread appends them to one ``.npy`` shard per
   (site, layer) (:mod:`brainalign.record.store`). Host memory is the model, one batch's
   activations and two batches of word rows, whatever the story's length (plus the
   story's token ids and word indices, a few bytes per token).

The recording is written to a private folder and renamed into place when complete; a
re-run skips a story whose manifest is complete, matches the settings (the interventions
in force included: a lesioned model's recording is never taken for the intact model's, or
another lesion's) and whose checksums verify. :func:`record_timecourses` runs the same loop straight to the TR grid
and keeps the TR rows in one host array instead of writing them (no disk in the way).
Leans on torch hooks, transformers and numpy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np
import torch

from brainalign.models.registry import LoadedModel
from brainalign.models.sites import (Site, StopForward, active_edits, declared_layout, load_layout,
                                     resolve_sites, site_hooks)
from brainalign.provenance import config_hash, file_sha256, provenance_block
from brainalign.record.alignment import WordAlignment, align_words
from brainalign.record.neurons import NeuronTable
from brainalign.record.store import (DISK_DTYPES, FORMAT, FORMAT_VERSION, MANIFEST, STORY_FILE,
                                     IncompleteRecordingError, ShardWriter, hash_threads,
                                     partial_dir,
                                     publish, read_manifest, remove_stale_partials,
                                     shard_path, story_to_json, verify_checksums, write_json,
                                     write_small_array)

from brainalign.stimuli.story import Story

if TYPE_CHECKING:  # brainalign.timecourse imports brainalign.record: imported when used
    from brainalign.record.to_tr import TrStream
    from brainalign.timecourse.timecourses import NeuronTimecourses, TrResampling

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "first", "last"]
POOLINGS = ("mean", "first", "last")
#: Left context of causal models, in tokens, when none is given.
DEFAULT_CONTEXT_TOKENS = 512
#: Order in which a block computes its sites (the last one of the deepest layer stops).
_SITE_ORDER = {"attn.out": 0, "mlp.router": 1, "mlp.inner": 2, "mlp.out": 3, "resid": 4}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ContextPolicy:
    """How much text the model sees around the words it is recorded on.

    Attributes
    ----------
    kind : {"causal", "encoder"}
        Causal models get left context only; encoders get context on both sides.
    context_tokens : int
        Tokens of context before (causal) or on each side of (encoder) the kept tokens;
        fewer only at the story's edges.
    stride_tokens : int
        Tokens kept per window (rounded to whole words; a window feeds at most
        ``context_tokens + stride_tokens`` story tokens, twice the context for encoders).
    """

    kind: str
    context_tokens: int
    stride_tokens: int

    def window_tokens(self, n_special: int) -> int:
        """Longest window fed to the model, special tokens included."""
        sides = 2 if self.kind == "encoder" else 1
        return sides * self.context_tokens + self.stride_tokens + n_special


@dataclass(frozen=True)
class Window:
    """One context window over the story's tokens (indices into ``input_ids``).

    Tokens ``[start, stop)`` are fed; ``[keep_start, keep_stop)`` (whole words) are kept.
    """

    start: int
    keep_start: int
    keep_stop: int
    stop: int


def _max_positions(model: torch.nn.Module) -> int | None:
    config = getattr(model.config, "text_config", None) or model.config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def context_policy(loaded: LoadedModel, n_special: int, context_tokens: int | None = None,
                   stride_tokens: int | None = None) -> ContextPolicy:
    """The context policy for a model, checked against its maximum sequence length.

    Defaults: causal models get :data:`DEFAULT_CONTEXT_TOKENS` of left context (at most
    half the model's length) and keep as many tokens per window, or more when the context
    is short (at least :data:`DEFAULT_CONTEXT_TOKENS`, within the model's length);
    encoders split their length in four: a quarter of context on each side, half kept.
    """
    max_len = _max_positions(loaded.model)
    usable = (max_len - n_special) if max_len else None
    if loaded.kind == "encoder":
        if context_tokens is None:
            context_tokens = (usable // 4) if usable else 128
        if stride_tokens is None:
            stride_tokens = (usable - 2 * context_tokens) if usable else 2 * context_tokens
    else:
        if context_tokens is None:
            context_tokens = min(DEFAULT_CONTEXT_TOKENS, usable // 2) if usable else DEFAULT_CONTEXT_TOKENS
        if stride_tokens is None:
            stride_tokens = max(context_tokens, DEFAULT_CONTEXT_TOKENS)
            if usable:
                stride_tokens = min(stride_tokens, usable - context_tokens)
    if context_tokens < 0 or stride_tokens < 1:
        raise ValueError(f"context_tokens must be >= 0 and stride_tokens >= 1, got "
                         f"{context_tokens} and {stride_tokens}")
    policy = ContextPolicy(loaded.kind, int(context_tokens), int(stride_tokens))
    if max_len and policy.window_tokens(n_special) > max_len:
        raise ValueError(
            f"a window of {policy.window_tokens(n_special)} tokens (context {context_tokens}"
            f"{' x 2' if loaded.kind == 'encoder' else ''} + stride {stride_tokens} + "
            f"{n_special} special) exceeds the model's {max_len} positions; lower "
            "context_tokens or stride_tokens")
    return policy


def plan_windows(alignment: WordAlignment, policy: ContextPolicy) -> list[Window]:
    """Cut the story's tokens into windows that keep whole words, each token once.

    Each kept stretch ends at the last word start within ``stride_tokens`` of its start
    (or, for a word longer than the stride, after that word).
    """
    n_tokens = alignment.n_tokens
    word_starts = alignment.word_token_starts
    windows = []
    keep_start = 0
    while keep_start < n_tokens:
        limit = keep_start + policy.stride_tokens
        if limit >= n_tokens:
            keep_stop = n_tokens
        else:
            index = np.searchsorted(word_starts, limit, side="right") - 1
            if word_starts[index] <= keep_start:
                index += 1  # a single word longer than the stride: keep it whole
            keep_stop = int(word_starts[index]) if index < len(word_starts) else n_tokens
        start = max(0, keep_start - policy.context_tokens)
        stop = keep_stop if policy.kind == "causal" else min(n_tokens,
                                                            keep_stop + policy.context_tokens)
        windows.append(Window(start, keep_start, keep_stop, stop))
        keep_start = keep_stop
    return windows


@dataclass
class _Batch:
    """Model inputs for a batch of windows and where its kept tokens' words are."""

    input_ids: torch.Tensor          # (batch, length)
    attention_mask: torch.Tensor     # (batch, length)
    kept_positions: torch.Tensor     # (n_kept,) flat index into batch * length
    kept_word: torch.Tensor          # (n_kept,) word index within the batch
    first_positions: torch.Tensor    # (n_words,) flat index of each word's first token
    last_positions: torch.Tensor     # (n_words,)
    word_counts: torch.Tensor        # (n_words,) float32
    first_word: int
    n_words: int
    n_tokens_fed: int


def _make_batch(alignment: WordAlignment, windows: Sequence[Window], pad_id: int,
                device: torch.device) -> _Batch:
    prefix, suffix = list(alignment.prefix_ids), list(alignment.suffix_ids)
    sequences = [prefix + alignment.input_ids[w.start:w.stop].tolist() + suffix for w in windows]
    length = max(len(s) for s in sequences)
    input_ids = np.full((len(windows), length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(windows), length), dtype=np.int64)
    positions = []
    for row, (window, sequence) in enumerate(zip(windows, sequences)):
        input_ids[row, :len(sequence)] = sequence
        attention_mask[row, :len(sequence)] = 1
        first = len(prefix) + window.keep_start - window.start
        positions.append(row * length + first + np.arange(window.keep_stop - window.keep_start))
    kept_positions = np.concatenate(positions)
    token_word = alignment.token_word[windows[0].keep_start:windows[-1].keep_stop]
    first_word = int(token_word[0])
    kept_word = token_word - first_word
    n_words = int(kept_word[-1]) + 1
    boundaries = np.flatnonzero(np.diff(kept_word)) + 1
    first_index = np.concatenate([[0], boundaries])
    last_index = np.concatenate([boundaries - 1, [len(kept_word) - 1]])

    def to_device(array, dtype=torch.long):
        return torch.as_tensor(array, dtype=dtype).to(device, non_blocking=device.type == "cuda")

    return _Batch(
        input_ids=to_device(input_ids), attention_mask=to_device(attention_mask),
        kept_positions=to_device(kept_positions), kept_word=to_device(kept_word),
        first_positions=to_device(kept_positions[first_index]),
        last_positions=to_device(kept_positions[last_index]),
        word_counts=to_device(np.bincount(kept_word), torch.float32),
        first_word=first_word, n_words=n_words, n_tokens_fed=int(attention_mask.sum()),
    )


def pool_to_words(hidden: torch.Tensor, batch: _Batch, pooling: Pooling) -> torch.Tensor:
    """Pool a site's token values to the batch's words, on the tensor's device.

    Parameters
    ----------
    hidden : Tensor, shape (batch, length, width)

    Returns
    -------
    Tensor, shape (n_words, width), float32
    """
    flat = hidden.reshape(-1, hidden.shape[-1])
    if pooling == "first":
        return flat.index_select(0, batch.first_positions).float()
    if pooling == "last":
        return flat.index_select(0, batch.last_positions).float()
    kept = flat.index_select(0, batch.kept_positions).float()
    summed = torch.zeros((batch.n_words, flat.shape[1]), dtype=torch.float32, device=flat.device)
    summed.index_add_(0, batch.kept_word, kept)
    return summed.div_(batch.word_counts[:, None])


#: Bytes of one pinned host buffer of :class:`_HostPipeline` (at least one row of a site).
HOST_BUFFER_BYTES = 64 * 2**20


def storage_dtype(dtype: str | None, device: torch.device) -> str:
    """The storage dtype's name: ``dtype``, or float16 on CUDA and float32 elsewhere."""
    name = dtype or ("float16" if device.type == "cuda" else "float32")
    if name not in DISK_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DISK_DTYPES)} (or None for float16 on "
                         f"CUDA, float32 on CPU), got {dtype!r}")
    return name


def _numpy_rows(host: torch.Tensor) -> np.ndarray:
    """A host tensor as the numpy array written to disk (bfloat16 as its 16-bit patterns)."""
    if host.dtype == torch.bfloat16:
        return host.view(torch.int16).numpy().view(np.uint16)
    return host.numpy()


class _HostPipeline:
    """Device rows -> pinned host buffers -> a consumer thread, with copies overlapping.

    :meth:`write` splits a device tensor of rows into pieces of at most
    :data:`HOST_BUFFER_BYTES`, copies each into a free host buffer (asynchronously on
    CUDA, into pinned memory) and queues it; a consumer thread hands it to
    :meth:`_consume`, which frees the buffer once done with it. Host memory is a fixed
    number of buffers, whatever the story's length. Subclasses say where rows go:
    :class:`_DiskPipeline` (shards on disk), :class:`_MemoryPipeline` (one host array).
    """

    def __init__(self, n_buffers: int, max_width: int, dtype: torch.dtype,
                 device: torch.device):
        self.device = device
        itemsize = torch.empty((), dtype=dtype).element_size()
        elements = max(max_width, HOST_BUFFER_BYTES // itemsize)
        pin = device.type == "cuda"
        self.buffers = [torch.empty(elements, dtype=dtype, pin_memory=pin)
                        for _ in range(n_buffers)]
        self.free: queue.Queue = queue.Queue()
        for index in range(len(self.buffers)):
            self.free.put(index)
        self.to_consume: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._consume_loop, name="brainalign-host",
                                       daemon=True)
        self.thread.start()

    def write(self, key: str, rows: torch.Tensor) -> None:
        """Queue ``rows`` (n, width) of the output ``key``, already in the storage dtype."""
        if not len(rows):
            return
        per_buffer = max(1, self.buffers[0].numel() // rows.shape[1])
        for piece in rows.split(per_buffer):
            self._raise_error()
            index = self.free.get()
            self._raise_error()
            host = self.buffers[index][:piece.numel()].view(piece.shape)
            # asynchronous on CUDA only, where an event on the copying device's stream says
            # when it landed (the model may sit on another GPU than the current one); other
            # accelerators (MPS) copy synchronously
            cuda = self.device.type == "cuda"
            host.copy_(piece, non_blocking=cuda)
            done = None
            if cuda:
                done = torch.cuda.Event()
                done.record(torch.cuda.current_stream(piece.device))
            self.to_consume.put((key, index, host, done))

    def _consume_loop(self) -> None:
        while (item := self.to_consume.get()) is not None:
            key, index, host, done = item
            try:
                if done is not None:
                    done.synchronize()
                if self.error is None:
                    self._consume(key, index, _numpy_rows(host))
                    continue
            except BaseException as err:  # handed to the main thread
                self.error = err
            self.free.put(index)

    def _consume(self, key: str, index: int, rows: np.ndarray) -> None:
        """Use the rows of buffer ``index``; put ``index`` back on :attr:`free` when done."""
        raise NotImplementedError

    def _raise_error(self) -> None:
        if self.error is not None:
            raise RuntimeError("handling recorded rows on the host failed") from self.error

    def close(self) -> None:
        """Wait for every queued piece to be consumed."""
        self.to_consume.put(None)
        self.thread.join()
        self._raise_error()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()


class _DiskPipeline(_HostPipeline):
    """Host buffers -> shards on disk: the consumer thread appends each piece to its shard,
    and a pool of :func:`~brainalign.record.store.hash_threads` threads hashes it
    (:meth:`ShardWriter.hash_piece`) and frees the buffer (two more buffers than hashers)."""

    def __init__(self, writers: dict[str, ShardWriter], max_width: int, dtype: torch.dtype,
                 device: torch.device):
        from concurrent.futures import ThreadPoolExecutor

        self.writers = writers
        n_hashers = hash_threads()
        self.hashers = ThreadPoolExecutor(max_workers=n_hashers,
                                          thread_name_prefix="brainalign-hash")
        super().__init__(n_hashers + 2, max_width, dtype, device)

    def _consume(self, key: str, index: int, rows: np.ndarray) -> None:
        piece = self.writers[key].write(rows)
        self.hashers.submit(self._hash, key, piece, rows, index)

    def _hash(self, key: str, piece: int, rows: np.ndarray, index: int) -> None:
        try:
            if self.error is None:
                self.writers[key].hash_piece(piece, rows)
        except BaseException as err:
            self.error = err
        finally:
            self.free.put(index)

    def close(self) -> None:
        """Wait for every queued piece to be written and hashed."""
        self.to_consume.put(None)
        self.thread.join()
        self.hashers.shutdown(wait=True)
        self._raise_error()


class _MemoryPipeline(_HostPipeline):
    """Host buffers -> consecutive rows of one host array (:attr:`result`), in the order the
    rows were written (TR rows of a recording held in memory)."""

    def __init__(self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device):
        self.result = np.empty(shape, dtype=_numpy_rows(torch.empty(0, dtype=dtype)).dtype)
        self.n_rows = 0
        super().__init__(3, shape[1], dtype, device)

    def _consume(self, key: str, index: int, rows: np.ndarray) -> None:
        stop = self.n_rows + len(rows)
        if stop > len(self.result):
            raise ValueError(f"{stop} rows written to a result of {len(self.result)}")
        self.result[self.n_rows:stop] = rows  # the first touch of these pages, off the main thread
        self.n_rows = stop
        self.free.put(index)


def _existing_recording(final: Path, settings_hash: str, overwrite: bool) -> bool:
    """Whether ``final`` holds this exact recording, complete and intact."""
    if not final.exists():
        return False
    try:
        manifest = read_manifest(final)
    except IncompleteRecordingError:
        logger.warning("%s is incomplete; recording it again", final)
        return False
    if manifest.get("settings_hash") != settings_hash:
        if overwrite:
            return False
        raise FileExistsError(
            f"{final} holds a recording made with other settings (model, sites, layers, "
            "context, pooling, story or the interventions in force differ); pass "
            "overwrite=True (--overwrite) or choose another output directory")
    bad = verify_checksums(final, manifest)
    if bad:
        logger.warning("%s: checksum mismatch for %s; recording it again", final, bad)
        return False
    return True


def record_story(
    loaded: LoadedModel,
    story: Story,
    sites: Iterable[str],
    out_dir: str | Path,
    layers: Iterable[int] | None = None,
    context_tokens: int | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    stride_tokens: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    dtype: str | None = None,
    to_tr: TrResampling | bool | None = None,
) -> Path:
    """Record the values of neuron sites, pooled to words, while ``loaded`` reads ``story``.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`brainalign.models.registry.load_model` (model, fast tokenizer, kind,
        provenance).
    story : Story
        The words, in reading order; context flows across run boundaries. With ``to_tr``
        it must carry its scan (:meth:`Story.with_scan`).
    sites : iterable of str
        Site names (``mlp.inner``, ``mlp.out``, ``resid``, ``attn.out``).
    out_dir : path-like
        The recording is written to ``out_dir / story.name``.
    layers : iterable of int, optional
        Layers to record; default all. The forward pass stops after the deepest one.
    context_tokens : int, optional
        Tokens of context before each kept word (causal) or on each side (encoder); see
        :func:`context_policy` for the defaults.
    pooling : {"mean", "first", "last"}
        How a word's tokens are reduced to one value per neuron.
    batch_size : int
        Windows per forward pass.
    device : str or torch.device, optional
        Where to run; default the model's device (the model is moved if another is given).
    stride_tokens : int, optional
        Tokens kept per window (default: see :func:`context_policy`).
    overwrite : bool
        Replace an existing complete recording made with other settings.
    progress : bool
        Show a tqdm progress bar over tokens.
    dtype : {"float32", "float16", "bfloat16"}, optional
        Storage dtype of the values written (pooling and resampling run in float32).
        Default float16 on CUDA (half the bytes to copy and write), float32 on CPU.
        bfloat16 is for word rows only (its 16-bit patterns are stored; read back as
        float32). Stated in the manifest and the provenance.
    to_tr : TrResampling or bool, optional
        Record straight to the TR grid of the story's scan: each batch's word rows are
        resampled, trimmed and z-scored per run on the device (:mod:`brainalign.record.to_tr`)
        and only TR rows reach the host. ``True`` uses :class:`TrResampling`'s defaults
        (Lanczos, no trimming, z-scored), the same as :func:`recording_to_tr`'s.

    Returns
    -------
    Path
        The story's recording directory: open it with :meth:`Recording.open`, or, with
        ``to_tr``, with :meth:`NeuronTimecourses.load`.
    """
    from brainalign.record.to_tr import TrStream
    from brainalign.timecourse.timecourses import TIMECOURSE_AXES, TIMECOURSE_DATA

    plan = _plan_recording(loaded, story, sites, layers, context_tokens, stride_tokens,
                           pooling, batch_size, device, dtype, to_tr)
    settings_hash = config_hash(plan.settings)
    if not story.name or story.name.startswith(".") or "/" in story.name or os.sep in story.name:
        raise ValueError(f"story name {story.name!r} cannot name a directory: use a name "
                         "without path separators that does not start with '.'")
    final = Path(out_dir) / story.name
    final.parent.mkdir(parents=True, exist_ok=True)
    if _existing_recording(final, settings_hash, overwrite):
        logger.info("%s is already recorded (manifest complete, checksums verified); skipped",
                    final)
        return final
    remove_stale_partials(final)
    partial = partial_dir(final)
    partial.mkdir()

    resolved, alignment, stored = plan.resolved, plan.alignment, plan.stored
    torch_dtype = _TORCH_DTYPES[stored]
    widths = {s.key: s.width for s in resolved}
    if plan.resampling is None:
        writers = {s.key: ShardWriter(partial / shard_path(s.name, s.layer),
                                      (alignment.n_words, s.width), DISK_DTYPES[stored])
                   for s in resolved}
        stream = None
    else:
        stream = TrStream(story, plan.resampling, widths, plan.device, torch_dtype)
        writers = {"data": ShardWriter(partial / TIMECOURSE_DATA,
                                       (stream.n_rows_kept, stream.n_neurons), DISK_DTYPES[stored])}
    try:
        pipeline = _DiskPipeline(writers, max(widths.values()) if stream is None else
                                 stream.n_neurons, torch_dtype, plan.device)
        timing = _read_story(loaded, story, plan, pooling, batch_size, pipeline, stream,
                             progress)
        checksums = {Path(w.path).relative_to(partial).as_posix(): w.close()
                     for w in writers.values()}
    except BaseException:
        for writer in writers.values():
            writer.discard()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    checksums["tokens/token_ids.npy"] = write_small_array(partial / "tokens" / "token_ids.npy",
                                                          alignment.input_ids)
    checksums["tokens/token_word.npy"] = write_small_array(
        partial / "tokens" / "token_word.npy", alignment.token_word)
    checksums[STORY_FILE] = write_json(partial / STORY_FILE, story_to_json(story))
    provenance = _recording_provenance(loaded, story, plan, pooling)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "complete": True,
        "grid": "word" if stream is None else "tr", "dtype": stored,
        "story": story.name, "n_words": alignment.n_words, "n_tokens": alignment.n_tokens,
        "n_neurons": sum(s.width for s in resolved),
        "arrays": [{"site": s.name, "layer": s.layer, "width": s.width,
                    "file": shard_path(s.name, s.layer) if stream is None else TIMECOURSE_DATA,
                    "shape": [alignment.n_words, s.width] if stream is None
                    else [stream.n_rows_kept, s.width],
                    "dtype": stored, "module": s.module_path, "capture": s.capture}
                   for s in resolved],
        "checksums": checksums,
        "settings": plan.settings, "settings_hash": settings_hash,
        "timing": timing,
        "provenance": provenance,
    }
    if stream is not None:
        manifest["n_tr"] = stream.n_rows_kept
        timecourses = _timecourses(story, plan, stream, provenance,
                                   np.empty((stream.n_rows_kept, stream.n_neurons),
                                            dtype=np.float32))  # shape only: data is on disk
        timecourses.save_axes(partial)
        checksums.update({name: file_sha256(partial / name) for name in TIMECOURSE_AXES})
    write_json(partial / MANIFEST, manifest)
    publish(partial, final)
    logger.info("recorded %s: %d words x %d neurons%s in %.1f s -> %s", story.name,
                alignment.n_words, manifest["n_neurons"],
                "" if stream is None else f" to {stream.n_rows_kept} TRs", timing["seconds"],
                final)
    return final


def record_timecourses(
    loaded: LoadedModel,
    story: Story,
    sites: Iterable[str],
    to_tr: TrResampling | bool = True,
    layers: Iterable[int] | None = None,
    context_tokens: int | None = None,
    pooling: Pooling = "mean",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    stride_tokens: int | None = None,
    progress: bool = True,
    dtype: str | None = None,
) -> NeuronTimecourses:
    """Record neuron time courses on the story's TR grid, held in memory (nothing on disk).

    The same recording as :func:`record_story` with ``to_tr`` (same windows, pooling,
    on-device resampling, trimming and z-scoring per run, same values), returned as a
    :class:`~brainalign.timecourse.NeuronTimecourses` instead of written to a folder. Each
    run's TR rows are copied to the host as soon as the run's last word is read, while the
    model reads the next run; the disk is not in the way, so on a GPU the recording runs
    at about the forward pass's speed. Host memory is the result (TR rows x neurons x 2
    bytes in float16) plus a few fixed buffers.

    Parameters are those of :func:`record_story` (``to_tr`` may not be ``False``; ``dtype``
    float16 or float32, default float16 on CUDA and float32 on CPU).

    Returns
    -------
    NeuronTimecourses
        ``data`` (n_tr, n_neurons) in the storage dtype; ``provenance`` holds the
        recording's (model, sites, context, dtype, device, ``settings``) and timing.
    """
    from brainalign.record.to_tr import TrStream

    if to_tr is False or to_tr is None:
        raise ValueError("record_timecourses records to the TR grid: give to_tr=True or a "
                         "TrResampling (record word rows to disk with record_story)")
    plan = _plan_recording(loaded, story, sites, layers, context_tokens, stride_tokens,
                           pooling, batch_size, device, dtype, to_tr)
    torch_dtype = _TORCH_DTYPES[plan.stored]
    stream = TrStream(story, plan.resampling, {s.key: s.width for s in plan.resolved},
                      plan.device, torch_dtype)
    pipeline = _MemoryPipeline((stream.n_rows_kept, stream.n_neurons), torch_dtype,
                               plan.device)
    timing = _read_story(loaded, story, plan, pooling, batch_size, pipeline, stream, progress)
    if pipeline.n_rows != stream.n_rows_kept:
        raise RuntimeError(f"{pipeline.n_rows} TR rows reached the host, expected "
                           f"{stream.n_rows_kept}")
    provenance = {**_recording_provenance(loaded, story, plan, pooling),
                  "settings": plan.settings, "settings_hash": config_hash(plan.settings),
                  "timing": timing}
    logger.info("recorded %s: %d words x %d neurons to %d TRs in %.1f s (in memory)",
                story.name, plan.alignment.n_words, stream.n_neurons, stream.n_rows_kept,
                timing["seconds"])
    return _timecourses(story, plan, stream, provenance, pipeline.result)


@dataclass
class _RecordingPlan:
    """What a recording reads and how: checked sites, tokens, context and storage dtype."""

    resolved: list[Site]
    alignment: WordAlignment
    policy: ContextPolicy
    stored: str                      # storage dtype name
    resampling: TrResampling | None  # None: word rows
    compute_dtype: str
    settings: dict                   # what the recording's values depend on
    device: torch.device


def _plan_recording(loaded, story, sites, layers, context_tokens, stride_tokens, pooling,
                    batch_size, device, dtype, to_tr) -> _RecordingPlan:
    """Check the options, move the model to ``device`` and plan the recording."""
    from brainalign.timecourse.timecourses import TrResampling

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = loaded.model
    if device is not None and torch.device(device) != loaded.device:
        model.to(device)
    device = loaded.device
    stored = storage_dtype(dtype, device)
    resampling = TrResampling() if to_tr is True else (to_tr or None)
    if resampling is not None:
        if stored == "bfloat16":
            raise ValueError("TR time courses are stored in float16 or float32 (z-scored values "
                             "fit float16, which keeps 3 more bits than bfloat16); got "
                             "dtype='bfloat16'")
        story.check_scan(resampling.allow_words_outside_scan)
    layout = getattr(loaded, "layout", None)  # else the model's declared one, if any
    resolved = resolve_sites(model, list(sites), layers, layout=layout)
    layout = load_layout(layout) if layout is not None else declared_layout(model)
    if not resolved:
        raise ValueError("no sites to record: give at least one site name")
    alignment = align_words(loaded.tokenizer, story.texts)
    policy = context_policy(loaded, len(alignment.prefix_ids) + len(alignment.suffix_ids),
                            context_tokens, stride_tokens)
    compute_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    settings = {
        "model_id": loaded.provenance.get("model_id", loaded.name),
        "model_sha256": loaded.provenance.get("file_sha256"),
        "sites": [s.key for s in resolved], "context": asdict(policy), "pooling": pooling,
        "compute_dtype": compute_dtype, "story_words": story.words_hash(),
        "dtype": stored,
    }
    if layout is not None:  # site keys name other modules than the automatic ones
        settings["layout"] = layout.key()
    edits = active_edits(model)
    if edits:  # a lesion or an edited region in force: not the intact model's values
        settings["interventions"] = edits
    if resampling is not None:
        settings["to_tr"] = {**resampling.provenance(), "tr_s": story.tr_s,
                             "n_volumes": list(story.n_volumes),
                             "first_volume_s": list(story.first_volume_s)}
    return _RecordingPlan(resolved, alignment, policy, stored, resampling, compute_dtype,
                          settings, device)


def _read_story(loaded: LoadedModel, story: Story, plan: _RecordingPlan, pooling: Pooling,
                batch_size: int, pipeline: _HostPipeline, stream: TrStream | None,
                progress: bool) -> dict:
    """Run the model over the story's windows, handing every row to ``pipeline`` (word rows
    per site, or with ``stream`` each finished run's TR rows under the key ``"data"``), and
    wait for the pipeline to finish. Returns the timing block of the manifest."""
    from tqdm.auto import tqdm

    model, alignment, device = loaded.model, plan.alignment, plan.device
    windows = plan_windows(alignment, plan.policy)
    batches = [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]
    torch_dtype = _TORCH_DTYPES[plan.stored]
    deepest = max(plan.resolved, key=lambda s: (s.layer, _SITE_ORDER[s.name]))
    pad_id = loaded.tokenizer.pad_token_id
    pad_id = int(pad_id) if pad_id is not None else int(alignment.input_ids[0])
    use_mask = loaded.kind == "encoder"  # causal: right padding never reaches kept tokens
    not_finite = torch.zeros((), dtype=torch.bool, device=device)
    n_tokens_fed = 0
    started = time.perf_counter()
    bar = tqdm(total=alignment.n_tokens, unit="tok", desc=f"record {story.name}",
               disable=not progress)
    try:
        for windows_in_batch in batches:
            batch = _make_batch(alignment, windows_in_batch, pad_id, device)
            segments = None if stream is None else stream.segments(batch.first_word, batch.n_words)

            def on_site(site: Site, hidden: torch.Tensor, batch=batch, segments=segments):
                pooled = pool_to_words(hidden, batch, pooling)
                if stream is not None:
                    stream.add(site.key, pooled, segments)
                    return None
                rows = pooled.to(torch_dtype)
                not_finite.logical_or_(~torch.isfinite(rows).all())
                pipeline.write(site.key, rows)
                return None

            with torch.inference_mode(), site_hooks(model, plan.resolved, on_site,
                                                    stop_after=deepest):
                try:
                    model(input_ids=batch.input_ids,
                          attention_mask=batch.attention_mask if use_mask else None,
                          use_cache=False)
                except StopForward:
                    pass
            if stream is not None:
                last_run = story.words[batch.first_word + batch.n_words - 1].run
                for _, rows in stream.finished_runs(last_run):
                    pipeline.write("data", rows)
            n_tokens_fed += batch.n_tokens_fed
            bar.update(windows_in_batch[-1].keep_stop - windows_in_batch[0].keep_start)
        if stream is not None:
            for _, rows in stream.finished_runs(stream.n_runs):
                pipeline.write("data", rows)
        pipeline.close()
    except BaseException:
        if pipeline.running:
            with contextlib.suppress(Exception):  # the original error is re-raised
                pipeline.close()
        raise
    finally:
        bar.close()
    if stream is not None:
        stream.check_finite()
    elif bool(not_finite):
        raise ValueError(f"recording {story.name!r}: the model produced NaN or inf values, "
                         f"or values beyond {plan.stored}'s range; record with dtype='float32'")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "tokens_fed": n_tokens_fed,
            "story_tokens_per_s": alignment.n_tokens / seconds if seconds else None,
            "n_windows": len(windows), "batch_size": batch_size}


def _recording_provenance(loaded: LoadedModel, story: Story, plan: _RecordingPlan,
                          pooling: Pooling) -> dict:
    resolved = plan.resolved
    return provenance_block(
        model=loaded.provenance, story_name=story.name, story_source=story.source,
        sites=sorted({s.name for s in resolved}), layers=sorted({s.layer for s in resolved}),
        context=asdict(plan.policy), pooling=pooling, compute_dtype=plan.compute_dtype,
        stored_dtype=plan.stored, device=str(plan.device),
        tokenizer=type(loaded.tokenizer).__name__, alignment="tokenizer character offsets",
        grid="word" if plan.resampling is None else "tr",
    )


def _timecourses(story: Story, plan: _RecordingPlan, stream: TrStream, recording: dict,
                 data: np.ndarray) -> NeuronTimecourses:
    """The TR recording's :class:`NeuronTimecourses` around ``data`` (n_tr, n_neurons)."""
    from brainalign.timecourse.timecourses import NeuronTimecourses, timecourse_provenance

    neurons = NeuronTable.from_sites((s.layer, s.name, s.width) for s in plan.resolved)
    return NeuronTimecourses(
        data, stream.times_s[stream.keep], stream.runs[stream.keep], neurons,
        timecourse_provenance(story, plan.resampling, recording,
                              resampled_on=str(stream.device)))
