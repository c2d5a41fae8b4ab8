"""Recording straight to the TR grid: word rows become TR rows on the model's device.

Study A needs neuron time courses on the fMRI grid, not word rows. Copying every word row
of every neuron to the host is bandwidth-bound on a GPU (an 8B model's 458,752
``mlp.inner`` neurons are 1.8 MB per word in float32), while the same neurons on a 2 s TR
grid, in float16, are about a tenth of that. :class:`TrStream` therefore applies the word
-> TR resampling matrix of :class:`~brainalign.timecourse.timecourses.TrResampling`
(Lanczos or HRF, exactly the kernel of :func:`~brainalign.timecourse.recording_to_tr`) to
each batch's pooled word rows on the device, and accumulates them into the TR rows of the
current run:

1. Before each forward pass, :meth:`TrStream.segments` cuts the batch's words by run and
   into pieces of :data:`SEGMENT_WORDS`, and builds, for each piece, the kernel between
   those words and the volumes they reach (the kernel is zero beyond
   :meth:`TrResampling.support_s`), as a small device matrix.
2. In each site's hook, :meth:`TrStream.add` adds ``kernel @ pooled_words`` into that
   site's columns of the run's accumulator, of shape (n_volumes_in_run, n_neurons),
   float32, on the device.
3. Once the words of a run are all read, :meth:`TrStream.finished_runs` trims the run's
   volumes, z-scores every neuron within the run (population std, constant neurons
   become 0, as :func:`~brainalign.timecourse.zscore_runs`), casts to the storage dtype
   and hands the rows to the recorder, which copies them to the host piece by piece.

Device memory is one run's accumulator (volumes x neurons x 4 bytes; two while a batch
spans the boundary between runs) plus the kernels, whatever the number of runs;
the recorder's host buffers are of fixed size, whatever the story's length. Runs must
come in order (the story's reading order); words within a run may come in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from brainalign.stimuli.story import Story
from brainalign.timecourse.runs import trim_mask
from brainalign.timecourse.timecourses import TrResampling, tr_grid


#: Words per resampling kernel: a batch's words are cut into pieces this long.
SEGMENT_WORDS = 512


@dataclass
class Segment:
    """The words of one run inside a batch and the kernel that carries them to its volumes.

    Attributes
    ----------
    run : int
    word_slice : slice
        Rows of the batch's pooled words (0-based within the batch).
    row_slice : slice
        Volumes of the run (0-based within the run) that the words reach.
    kernel : Tensor, shape (n_rows, n_words), float32, on the device
    """

    run: int
    word_slice: slice
    row_slice: slice
    kernel: torch.Tensor


class TrStream:
    """Accumulate pooled word rows into the TR rows of each run, on the device.

    Parameters
    ----------
    story : Story
        With its scan attached (``tr_s``, ``n_volumes``, ``first_volume_s``).
    resampling : TrResampling
    widths : dict of str to int
        Neurons of each site key (``"L03.mlp.inner"``...), in output column order.
    device : torch.device
    storage_dtype : torch.dtype
        float32 or float16: the dtype of the rows handed to the host.
    """

    def __init__(self, story: Story, resampling: TrResampling, widths: dict[str, int],
                 device: torch.device, storage_dtype: torch.dtype):
        story.check_scan(resampling.allow_words_outside_scan)
        self.story, self.resampling = story, resampling
        self.device, self.storage_dtype = device, storage_dtype
        self.columns: dict[str, slice] = {}
        start = 0
        for key, width in widths.items():
            self.columns[key] = slice(start, start + width)
            start += width
        self.n_neurons = start
        self.word_times = resampling.word_times(story)
        self.word_runs = np.array([w.run for w in story.words], dtype=np.int64)
        if np.any(np.diff(self.word_runs) < 0):
            raise ValueError(f"story {story.name!r}: words must come run by run in reading "
                             "order to be recorded to the TR grid")
        times, runs = tr_grid(story)
        self.times_s, self.runs = times, runs
        self.keep = trim_mask(runs, resampling.trim)
        self.run_times = [times[runs == r] for r in range(len(story.n_volumes))]
        self.run_keep = [self.keep[runs == r] for r in range(len(story.n_volumes))]
        self.max_rows_kept = max(int(k.sum()) for k in self.run_keep)
        self.n_rows_kept = int(self.keep.sum())
        self._accumulators: dict[int, torch.Tensor] = {}
        self._next_run = 0  # first run not yet handed over
        self._bad = torch.zeros((), dtype=torch.bool, device=device)

    @property
    def n_runs(self) -> int:
        return len(self.story.n_volumes)

    def segments(self, first_word: int, n_words: int) -> list[Segment]:
        """The kernels of words ``[first_word, first_word + n_words)``: one per run they
        span and per :data:`SEGMENT_WORDS` words, so that each kernel covers only the
        volumes its words reach (the full matrix is banded)."""
        before, after = self.resampling.support_s(self.story.tr_s)
        words = np.arange(first_word, first_word + n_words)
        out = []
        for run in np.unique(self.word_runs[words]):
            in_run = words[self.word_runs[words] == run]
            volumes = self.run_times[run]
            for start in range(0, len(in_run), SEGMENT_WORDS):
                piece = in_run[start:start + SEGMENT_WORDS]
                times = self.word_times[piece]
                lo = int(np.searchsorted(volumes, times.min() - before, side="left"))
                hi = int(np.searchsorted(volumes, times.max() + after, side="right"))
                if hi <= lo:
                    continue  # words outside the scan (allowed): they reach no volume
                kernel = self.resampling.kernel(times, volumes[lo:hi], self.story.tr_s)
                word_slice = slice(int(piece[0] - first_word), int(piece[-1] - first_word) + 1)
                out.append(Segment(int(run), word_slice, slice(lo, hi),
                                   torch.as_tensor(kernel, dtype=torch.float32).to(
                                       self.device, non_blocking=self.device.type == "cuda")))
        return out

    def _accumulator(self, run: int) -> torch.Tensor:
        if run not in self._accumulators:
            self._accumulators[run] = torch.zeros((len(self.run_times[run]), self.n_neurons),
                                                  dtype=torch.float32, device=self.device)
        return self._accumulators[run]

    def add(self, key: str, pooled: torch.Tensor, segments: list[Segment]) -> None:
        """Add one site's pooled word rows (n_words, width), float32, into its run rows."""
        columns = self.columns[key]
        for segment in segments:
            rows = self._accumulator(segment.run)[segment.row_slice, columns]
            rows.addmm_(segment.kernel, pooled[segment.word_slice])

    def finished_runs(self, up_to_run: int) -> list[tuple[int, torch.Tensor]]:
        """Hand over runs ``< up_to_run`` not handed over yet: trimmed, z-scored rows.

        Returns
        -------
        list of (run, Tensor of shape (n_volumes_kept, n_neurons), storage dtype, device)
        """
        with torch.inference_mode():  # the accumulators were made in the hooks' mode
            return self._finish(up_to_run)

    def _finish(self, up_to_run: int) -> list[tuple[int, torch.Tensor]]:
        out = []
        while self._next_run < min(up_to_run, self.n_runs):
            run = self._next_run
            rows = self._accumulator(run)
            del self._accumulators[run]
            keep = self.run_keep[run]
            if not keep.all():
                rows = rows[torch.as_tensor(keep, device=self.device)]
            if self.resampling.zscore and len(rows):  # in place: one run's rows at a time
                constant = rows.amax(0) == rows.amin(0)  # -> 0, as zscore_runs
                rows.sub_(rows.mean(0))
                std = torch.linalg.vector_norm(rows, dim=0).div_(len(rows) ** 0.5)
                constant |= std <= 1e-12
                rows.div_(torch.where(constant, torch.full_like(std, float("inf")), std))
            rows = rows.to(self.storage_dtype)
            self._bad |= ~torch.isfinite(rows).all()
            out.append((run, rows))
            self._next_run += 1
        return out

    def check_finite(self) -> None:
        """Raise if any value handed over was NaN or inf (e.g. beyond float16's range)."""
        if bool(self._bad):
            dtype = str(self.storage_dtype).replace("torch.", "")
            raise ValueError(
                f"TR time courses of story {self.story.name!r} hold NaN or inf in {dtype}: the "
                "model produced non-finite values, or values beyond float16's +-65504 "
                "(zscore=False); record with dtype='float32'")
