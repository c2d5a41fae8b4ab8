"""Per-run bookkeeping of TR-grid arrays: run labels, trimming and z-scoring within runs.

Every TR-grid array in brainalign travels with a ``runs`` vector (n_tr,) of integer run
labels, so that operations which must not mix scanner runs or stories (z-scoring,
trimming the first and last TRs, FIR delays, cross-validation folds) can respect the
boundaries. Plain numpy; nothing here needs another library.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def runs_from_lengths(run_lengths: Sequence[int]) -> np.ndarray:
    """Run label of each TR from the number of TRs in each run.

    Parameters
    ----------
    run_lengths : sequence of int
        Number of TRs of each run, in order.

    Returns
    -------
    runs : ndarray of int, shape (sum(run_lengths),)
        ``0`` for the TRs of the first run, ``1`` for the second, ...
    """
    lengths = [int(n) for n in run_lengths]
    if any(n < 0 for n in lengths):
        raise ValueError(f"run lengths must be >= 0, got {lengths}")
    return np.repeat(np.arange(len(lengths)), lengths)


def check_runs(runs: np.ndarray | Sequence[int] | None, n_tr: int) -> np.ndarray:
    """Validate a run-label vector against ``n_tr`` rows (None means a single run).

    Runs must be contiguous blocks: a label may not reappear after another run started.
    """
    if runs is None:
        return np.zeros(n_tr, dtype=int)
    runs = np.asarray(runs)
    if runs.ndim != 1 or runs.shape[0] != n_tr:
        raise ValueError(f"runs must have shape ({n_tr},) to match the data, got {runs.shape}")
    if not np.issubdtype(runs.dtype, np.integer):
        if not np.all(np.equal(np.mod(runs, 1), 0)):
            raise ValueError("runs must hold integer run labels")
        runs = runs.astype(int)
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    if len(np.unique(runs[starts])) != len(starts):
        raise ValueError("runs must be contiguous blocks (a run label reappears after another run)")
    return runs


def run_slices(runs: np.ndarray) -> list[slice]:
    """Contiguous slice of each run, in order of appearance."""
    runs = check_runs(runs, len(runs))
    bounds = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1], True])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def trim_mask(runs: np.ndarray, trim: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Boolean mask keeping all but the first ``trim[0]`` and last ``trim[1]`` TRs of each run.

    Parameters
    ----------
    runs : ndarray of int, shape (n_tr,)
    trim : (int, int)
        TRs dropped at the start and at the end of every run.

    Returns
    -------
    keep : ndarray of bool, shape (n_tr,)
    """
    n_start, n_end = (int(t) for t in trim)
    if n_start < 0 or n_end < 0:
        raise ValueError(f"trim must hold two non-negative TR counts, got {trim}")
    keep = np.zeros(len(runs), dtype=bool)
    for part in run_slices(runs):
        length = part.stop - part.start
        if n_start + n_end >= length:
            raise ValueError(
                f"trim {trim} removes every TR of a run that has only {length} TRs"
            )
        keep[part.start + n_start: part.stop - n_end] = True
    return keep


def trim_runs(data: np.ndarray, runs: np.ndarray,
              trim: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Drop the first ``trim[0]`` and last ``trim[1]`` TRs of every run.

    Parameters
    ----------
    data : ndarray, shape (n_tr, ...)
    runs : ndarray of int, shape (n_tr,)
    trim : (int, int)

    Returns
    -------
    data : ndarray, shape (n_kept, ...)
    runs : ndarray of int, shape (n_kept,)
    """
    runs = check_runs(runs, len(data))
    keep = trim_mask(runs, trim)
    return data[keep], runs[keep]


def zscore_runs(data: np.ndarray, runs: np.ndarray | None = None, eps: float = 1e-12) -> np.ndarray:
    """Z-score each column within each run (mean 0, population std 1 per run).

    Columns that are constant within a run (all values equal, or std below ``eps``) become
    0 in that run rather than NaN, or the +-1 that the mean's rounding error would give.

    Parameters
    ----------
    data : ndarray, shape (n_tr, n_features)
    runs : ndarray of int, shape (n_tr,), optional
        None z-scores over all rows as one run.
    eps : float

    Returns
    -------
    ndarray, shape (n_tr, n_features), same floating dtype as ``data`` (float64 for ints)
    """
    data = np.asarray(data)
    dtype = data.dtype if np.issubdtype(data.dtype, np.floating) else np.float64
    runs = check_runs(runs, data.shape[0])
    out = np.empty(data.shape, dtype=dtype)
    for part in run_slices(runs):
        block = data[part].astype(np.float64)
        mean = block.mean(axis=0)
        std = block.std(axis=0)
        constant = (std <= eps) | (block.max(axis=0) == block.min(axis=0))
        scale = np.where(constant, np.inf, std)
        out[part] = (block - mean) / scale
    return out
