"""Word-time values to the TR grid of a story's scan: features and whole neuron recordings.

The TR grid is the story's scan and nothing else (:meth:`Story.with_scan`): volume ``k``
of run ``r`` is at ``first_volume_s[r] + k * tr_s`` on the clock of that run's words.
There is no default onset: a scan without ``first_volume_s`` is refused, and words outside
the scan are an error unless ``allow_words_outside_scan=True`` (see
:meth:`Story.check_scan`). To try another onset, attach another scan.

:func:`words_to_tr` resamples any (n_words, n_features) array with the kernels of
:mod:`brainalign.timecourse.resample`, run by run, so nothing leaks across runs.
:func:`recording_to_tr` does the same for a recording's (n_words, n_neurons) matrix,
streaming it in neuron chunks from its memory map through a torch device (GPU when one
exists) so host memory stays bounded by one chunk, then trims and z-scores per run and
returns a :class:`NeuronTimecourses`, the contract the patterns and encoding stages read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Protocol, Sequence

import numpy as np

from brainalign.provenance import provenance_block
from brainalign.record.neurons import NeuronTable
from brainalign.stimuli.story import Story
from brainalign.timecourse.resample import (HRF_LENGTH_S, KERNEL_REVISION, METHODS, hrf_matrix,
                                           lanczos_matrix, tr_times)
from brainalign.timecourse.runs import check_runs, trim_mask, zscore_runs

logger = logging.getLogger(__name__)

Method = Literal["lanczos", "hrf"]
#: Files of a saved :class:`NeuronTimecourses`: the values, then the axes and provenance.
TIMECOURSE_DATA = "data.npy"
TIMECOURSE_AXES = ("axes.npz", "provenance.json")


@dataclass
class NeuronTimecourses:
    """Neuron activations on the fMRI TR grid.

    Attributes
    ----------
    data : ndarray, shape (n_tr, n_neurons), float32 (float16 when recorded so)
    times_s : ndarray, shape (n_tr,), float64
        Time of each TR in seconds, on the clock of its run's words.
    runs : ndarray of int, shape (n_tr,)
        Run (or story) label of each TR.
    neurons : NeuronTable
        Identity (layer, site, unit) of each column.
    provenance : dict
        How the time courses were made (recording provenance, method, TR, the scan's
        ``first_volume_s`` per run, trimming, ...).
    """

    data: np.ndarray
    times_s: np.ndarray
    runs: np.ndarray
    neurons: NeuronTable
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.data.ndim != 2:
            raise ValueError(f"data must be 2-D (n_tr, n_neurons), got shape {self.data.shape}")
        n_tr, n_neurons = self.data.shape
        if len(self.times_s) != n_tr:
            raise ValueError(f"times_s has {len(self.times_s)} entries for {n_tr} TRs")
        self.runs = check_runs(self.runs, n_tr)
        if len(self.neurons) != n_neurons:
            raise ValueError(f"neurons table has {len(self.neurons)} rows for {n_neurons} columns")

    @property
    def n_tr(self) -> int:
        return self.data.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.data.shape[1]

    def select(self, index: Sequence[int] | np.ndarray) -> "NeuronTimecourses":
        """The time courses of neurons ``index`` (integer indices or a boolean mask)."""
        index = np.asarray(index)
        return NeuronTimecourses(np.asarray(self.data[:, index]), self.times_s, self.runs,
                                 self.neurons.select(index), dict(self.provenance))

    def save(self, path: str | Path) -> Path:
        """Write to a directory: ``data.npy`` (float16 data stays float16, anything else is
        written as float32), ``axes.npz`` (times, runs, neuron table), ``provenance.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dtype = np.float16 if self.data.dtype == np.float16 else np.float32
        np.save(path / TIMECOURSE_DATA, np.asarray(self.data, dtype=dtype))
        self.save_axes(path)
        return path

    def save_axes(self, path: str | Path) -> None:
        """Write everything but ``data.npy`` (for writers that stream the values themselves)."""
        path = Path(path)
        axes, provenance = TIMECOURSE_AXES
        np.savez(path / axes, times_s=self.times_s, runs=self.runs,
                 layer=self.neurons.layer, site=self.neurons.site.astype(str), unit=self.neurons.unit)
        (path / provenance).write_text(json.dumps(self.provenance, indent=2, default=str))

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> "NeuronTimecourses":
        """Read a directory written by :meth:`save` (``data`` memory-mapped when ``mmap``)."""
        path = Path(path)
        missing = [name for name in (TIMECOURSE_DATA, *TIMECOURSE_AXES) if not (path / name).is_file()]
        if missing:
            what = ("a word-level recording (it has manifest.json): resample it to the TR grid "
                    "first (brainalign record --to-tr, or brainalign.timecourse.recording_to_tr)"
                    if (path / "manifest.json").is_file() and not (path / TIMECOURSE_DATA).is_file()
                    else "not a saved NeuronTimecourses folder")
            raise ValueError(f"{path} is {what}; missing {missing}")
        data = np.load(path / TIMECOURSE_DATA, mmap_mode="r" if mmap else None)
        if data.ndim != 2:
            raise ValueError(f"{path / TIMECOURSE_DATA} has shape {data.shape}; expected "
                             "(n_tr, n_neurons)")
        with np.load(path / TIMECOURSE_AXES[0]) as axes:
            neurons = NeuronTable(axes["layer"], axes["site"], axes["unit"])
            times_s, runs = axes["times_s"], axes["runs"]
        provenance = json.loads((path / TIMECOURSE_AXES[1]).read_text())
        return cls(data, times_s, runs, neurons, provenance)


class RecordingLike(Protocol):
    """What :func:`recording_to_tr` needs from a recording (``brainalign.record.Recording``)."""

    story: Story
    neurons: NeuronTable
    provenance: dict

    def matrix(self, sites=None, layers=None) -> np.ndarray: ...


def tr_grid(story: Story) -> tuple[np.ndarray, np.ndarray]:
    """Times and run labels of every volume of a story's scan.

    Parameters
    ----------
    story : Story
        With its scan attached (``tr_s``, ``n_volumes``, ``first_volume_s``).

    Returns
    -------
    times_s : ndarray, shape (n_tr_total,)
        ``first_volume_s[r] + k * tr_s`` for volume ``k`` of run ``r`` (s, on the run's
        word clock), runs concatenated in order.
    runs : ndarray of int, shape (n_tr_total,)
    """
    if not story.has_scan:
        story.check_scan()  # raises, naming what is missing and how to attach it
    times = [tr_times(n, story.tr_s, first)
             for n, first in zip(story.n_volumes, story.first_volume_s)]
    runs = [np.full(n, r, dtype=int) for r, n in enumerate(story.n_volumes)]
    return np.concatenate(times), np.concatenate(runs)


def _word_time(method: Method, word_time: str | None) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    word_time = word_time or ("middle" if method == "lanczos" else "onset")
    if word_time not in ("onset", "middle"):
        raise ValueError(f"word_time must be 'onset' or 'middle', got {word_time!r}")
    return word_time


@dataclass(frozen=True)
class TrResampling:
    """How word values become TR values: the settings of :func:`words_to_tr` and
    :func:`recording_to_tr`, gathered for the recorder's on-device route
    (:func:`brainalign.record.record_story` with ``to_tr=``).

    Attributes
    ----------
    method : {"lanczos", "hrf"}
    word_time : {"onset", "middle"}, optional
        Default: word middle for Lanczos, onset for HRF impulses.
    window, cutoff_mult : Lanczos parameters.
    hrf_model, oversampling : HRF parameters.
    trim : (int, int)
        TRs dropped at the start and end of every run (before z-scoring).
    zscore : bool
        Z-score every neuron within each run (after trimming).
    allow_words_outside_scan : bool
        Accept words before the first volume or after the last (see :meth:`Story.check_scan`).
    """

    method: Method = "lanczos"
    word_time: str | None = None
    window: int = 3
    cutoff_mult: float = 1.0
    hrf_model: str = "spm"
    oversampling: int = 50
    trim: tuple[int, int] = (0, 0)
    zscore: bool = True
    allow_words_outside_scan: bool = False

    def __post_init__(self):
        object.__setattr__(self, "word_time", _word_time(self.method, self.word_time))
        object.__setattr__(self, "trim", tuple(int(t) for t in self.trim))
        if len(self.trim) != 2 or min(self.trim) < 0:
            raise ValueError(f"trim must be two TR counts >= 0 (start, end), got {self.trim}")

    def word_times(self, story: Story) -> np.ndarray:
        """Sample time of every word (s, on its run's clock), shape (n_words,)."""
        onsets = np.array([w.onset_s for w in story.words], dtype=np.float64)
        if self.word_time == "onset":
            return onsets
        return (onsets + np.array([w.offset_s for w in story.words], dtype=np.float64)) / 2.0

    def kernel(self, word_times_s: np.ndarray, tr_times_s: np.ndarray, tr_s: float) -> np.ndarray:
        """Resampling matrix (n_tr, n_words) between any words and volumes of one run."""
        if self.method == "lanczos":
            return lanczos_matrix(word_times_s, tr_times_s, tr_s, self.window, self.cutoff_mult)
        return hrf_matrix(word_times_s, tr_times_s, tr_s, self.hrf_model, self.oversampling)

    def support_s(self, tr_s: float) -> tuple[float, float]:
        """Lags (s) outside which the kernel is zero: volume time - word time lies in
        ``[-before, after]``; returned as ``(before, after)``."""
        if self.method == "lanczos":
            reach = self.window * tr_s / self.cutoff_mult
            return reach, reach
        return 0.0, HRF_LENGTH_S

    def provenance(self) -> dict:
        """The settings as provenance entries (those of :func:`recording_to_tr`)."""
        return dict(
            method=self.method, allow_words_outside_scan=self.allow_words_outside_scan,
            word_time=self.word_time,
            lanczos={"window": self.window, "cutoff_mult": self.cutoff_mult,
                     "kernel_revision": KERNEL_REVISION}
            if self.method == "lanczos" else None,
            hrf={"model": self.hrf_model, "oversampling": self.oversampling}
            if self.method == "hrf" else None,
            trim=list(self.trim), zscore=self.zscore)


def timecourse_provenance(story: Story, resampling: TrResampling, recording: dict,
                          sites=None, layers=None, **extra) -> dict:
    """The provenance block of a :class:`NeuronTimecourses` made from a recording."""
    return provenance_block(
        stage="timecourse", story=story.name, tr_s=story.tr_s,
        n_volumes=list(story.n_volumes), first_volume_s=list(story.first_volume_s),
        n_words_outside_scan=[row["n_outside_scan"] for row in story.run_summary()],
        **resampling.provenance(),
        sites=None if sites is None else list(sites), layers=None if layers is None else list(layers),
        recording=dict(recording), **extra)


def _run_kernels(story: Story, resampling: TrResampling
                 ) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """For each run: (TR slice in the output, word indices, kernel (n_tr_run, n_words_run))."""
    word_runs = np.array([w.run for w in story.words])
    times_w = resampling.word_times(story)
    times_tr, runs_tr = tr_grid(story)
    start = 0
    for run, n_volumes in enumerate(story.n_volumes):
        word_index = np.flatnonzero(word_runs == run)
        kernel = resampling.kernel(times_w[word_index], times_tr[runs_tr == run], story.tr_s)
        yield slice(start, start + n_volumes), word_index, kernel
        start += n_volumes


def words_to_tr(values: np.ndarray, story: Story, method: Method = "lanczos", *,
                allow_words_outside_scan: bool = False, word_time: str | None = None,
                window: int = 3, cutoff_mult: float = 1.0, hrf_model: str = "spm",
                oversampling: int = 50) -> np.ndarray:
    """Resample word-level values onto the TR grid of the story's scan, run by run.

    Parameters
    ----------
    values : ndarray, shape (n_words,) or (n_words, n_features)
        One row per word of ``story`` (in ``story.words`` order).
    story : Story
        With its scan attached (:meth:`Story.with_scan`): volume ``k`` of run ``r`` is
        at ``story.first_volume_s[r] + k * story.tr_s`` on that run's word clock.
    method : {"lanczos", "hrf"}
        Lanczos interpolation (window ``window``, passband up to ``cutoff_mult / (2 tr_s)``) or
        impulses convolved with nilearn's ``hrf_model`` HRF; see
        :mod:`brainalign.timecourse.resample`.
    allow_words_outside_scan : bool, default False
        Accept words before the first volume or after the last (logged); otherwise they
        raise ValueError (see :meth:`Story.check_scan`).
    word_time : {"onset", "middle"}, optional
        Which time of a word is its sample time. Default: word middle for Lanczos (the
        Huth-lab convention), onset for HRF impulses.
    window, cutoff_mult : Lanczos parameters.
    hrf_model, oversampling : HRF parameters (``"spm"`` or ``"glover"``; fine-grid points per TR).

    Returns
    -------
    ndarray, shape (n_tr_total, n_features) (or (n_tr_total,) for 1-D input), float64
        ``n_tr_total = sum(story.n_volumes)``, runs concatenated in order.
    """
    values = np.asarray(values, dtype=np.float64)
    squeeze = values.ndim == 1
    values = values[:, None] if squeeze else values
    if values.ndim != 2 or values.shape[0] != len(story.words):
        raise ValueError(f"values must have shape ({len(story.words)}, n_features) for the "
                         f"{len(story.words)} words of story {story.name!r}, got {values.shape}")
    bad_rows = ~np.isfinite(values).all(axis=1)
    if bad_rows.any():
        raise ValueError(f"values hold NaN or inf on {int(bad_rows.sum())} word(s) "
                         f"(first at word {int(np.argmax(bad_rows))})")
    resampling = TrResampling(method, word_time, window, cutoff_mult, hrf_model, oversampling,
                              allow_words_outside_scan=allow_words_outside_scan)
    story.check_scan(allow_words_outside_scan)
    out = np.zeros((sum(story.n_volumes), values.shape[1]), dtype=np.float64)
    for tr_slice, word_index, kernel in _run_kernels(story, resampling):
        out[tr_slice] = kernel @ values[word_index]
    return out[:, 0] if squeeze else out


def _resolve_device(device):
    """None -> CUDA when available else numpy (returns None); otherwise a torch.device."""
    import torch

    if device is None:
        return torch.device("cuda") if torch.cuda.is_available() else None
    return torch.device(device)


def recording_to_tr(recording: RecordingLike, method: Method = "lanczos", *,
                    story: Story | None = None,
                    sites: Sequence[str] | None = None, layers: Sequence[int] | None = None,
                    zscore: bool = True, trim: tuple[int, int] = (0, 0),
                    allow_words_outside_scan: bool = False, word_time: str | None = None,
                    window: int = 3, cutoff_mult: float = 1.0, hrf_model: str = "spm",
                    oversampling: int = 50, device=None, chunk_neurons: int = 4096,
                    progress: bool = False) -> NeuronTimecourses:
    """Neuron time courses on the TR grid from a word-level recording.

    Parameters
    ----------
    recording : Recording-like
        Anything with ``.story`` (Story), ``.neurons`` (NeuronTable),
        ``.matrix(sites=[site], layers=[layer])`` -> (n_words, n_units) array whose columns
        follow the table's rows for that site and layer, and ``.provenance`` (dict). Each
        (site, layer) block is read on its own and streamed in chunks (a memory map is
        never loaded whole).
    method, allow_words_outside_scan, word_time, window, cutoff_mult, hrf_model, oversampling :
        As in :func:`words_to_tr`.
    story : Story, optional
        The recording's words with the scan to resample onto, when the scan is known only
        after recording (e.g. from the brain data); its words must equal the recording's.
        Default: ``recording.story``, which must then carry its scan.
    sites, layers : optional
        Restrict to these sites / layers (passed to ``recording.matrix``).
    zscore : bool
        Z-score every neuron within each run (after trimming).
    trim : (int, int)
        TRs dropped at the start and end of every run (before z-scoring).
    device : str or torch.device, optional
        Where the resampling product runs. Default: CUDA when available, else numpy.
    chunk_neurons : int
        Neurons resampled at once; host memory holds one (n_words, chunk_neurons) chunk.
    progress : bool
        Show a tqdm bar over chunks.

    Returns
    -------
    NeuronTimecourses
        ``data`` (n_tr_kept, n_neurons) float32.
    """
    from tqdm.auto import tqdm

    if story is None:
        story = recording.story
    elif story.words != recording.story.words:
        raise ValueError(f"story {story.name!r} ({len(story.words)} words) does not have the "
                         f"words of the recording of {recording.story.name!r} "
                         f"({len(recording.story.words)} words)")
    resampling = TrResampling(method, word_time, window, cutoff_mult, hrf_model, oversampling,
                              trim, zscore, allow_words_outside_scan)
    story.check_scan(allow_words_outside_scan)
    if chunk_neurons < 1:
        raise ValueError(f"chunk_neurons must be >= 1, got {chunk_neurons}")
    neurons = recording.neurons
    if sites is not None or layers is not None:
        neurons = neurons.select(neurons.mask(sites, layers))
    n_words, n_neurons = len(story.words), len(neurons)
    if n_neurons == 0:
        raise ValueError(f"no recorded neurons at sites {sites} and layers {layers}")
    times_s, runs = tr_grid(story)
    keep = trim_mask(runs, trim)
    kernels = list(_run_kernels(story, resampling))
    torch_device = _resolve_device(device)
    if torch_device is not None:
        import torch

        kernels = [(s, torch.as_tensor(i, device=torch_device),
                    torch.as_tensor(k, dtype=torch.float32, device=torch_device)) for s, i, k in kernels]
    logger.info("resampling %d neurons x %d words to %d TRs (%s, %s)", n_neurons, n_words,
                int(keep.sum()), method, torch_device or "numpy")

    # one (site, layer) block at a time, so a recording's memory maps are never concatenated
    pairs = list(dict.fromkeys(zip(neurons.site.tolist(), neurons.layer.tolist())))
    jobs = []
    for site, layer in pairs:
        columns = np.flatnonzero((neurons.site == site) & (neurons.layer == layer))
        jobs += [(site, layer, columns, a) for a in range(0, len(columns), chunk_neurons)]
    data = np.empty((int(keep.sum()), n_neurons), dtype=np.float32)
    n_tr_total = len(runs)
    block_key, block = None, None
    for site, layer, columns, start in tqdm(jobs, disable=not progress, desc="word->TR"):
        if block_key != (site, layer):
            block_key, block = (site, layer), recording.matrix(sites=[site], layers=[layer])
            if block.shape != (n_words, len(columns)):
                raise ValueError(f"recording matrix for {site} layer {layer} has shape {block.shape}; "
                                 f"expected ({n_words} words, {len(columns)} neurons)")
        stop = min(start + chunk_neurons, len(columns))
        chunk = np.array(block[:, start:stop], dtype=np.float32)  # one chunk read from disk
        if torch_device is None:
            chunk = chunk.astype(np.float64)
            resampled = np.zeros((n_tr_total, stop - start))
            for tr_slice, word_index, kernel in kernels:
                resampled[tr_slice] = kernel @ chunk[word_index]
        else:
            chunk_t = torch.as_tensor(chunk, dtype=torch.float32, device=torch_device)
            resampled_t = torch.zeros((n_tr_total, stop - start), dtype=torch.float32, device=torch_device)
            for tr_slice, word_index, kernel in kernels:
                resampled_t[tr_slice] = kernel @ chunk_t[word_index]
            resampled = resampled_t.cpu().numpy()
        if not np.isfinite(resampled).all():
            raise ValueError(f"recording holds NaN or inf values at {site} layer {layer}, "
                             f"units {start}..{stop - 1}")
        resampled = resampled[keep]
        if zscore:
            resampled = zscore_runs(resampled, runs[keep])
        data[:, columns[start:stop]] = resampled

    provenance = timecourse_provenance(story, resampling, recording.provenance, sites, layers)
    return NeuronTimecourses(data, times_s[keep], runs[keep], neurons, provenance)

