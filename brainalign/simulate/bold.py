"""Planted BOLD signal: patterns convolved with a per-target shifted hemodynamic response.

Each responsive target sees its network's pattern through nilearn's Glover HRF, shifted
by the target's own delay. Delays are rounded to a grid (``delay_step_s``) so that one
convolution per pattern and delay serves every target that shares them; convolution
restarts at every run boundary (no response leaks from one scanner run into the next).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from brainalign.timecourse import zscore_runs


def hrf_kernel(tr_s: float, delay_s: float = 0.0, time_length_s: float = 32.0,
               oversampling: int = 50) -> np.ndarray:
    """Glover HRF sampled on the TR grid, shifted later by ``delay_s`` seconds.

    Returns
    -------
    kernel : ndarray, shape (ceil(time_length_s / tr_s),)
        Scaled to a peak of 1.
    """
    from nilearn.glm.first_level import glover_hrf

    fine = glover_hrf(t_r=tr_s, oversampling=oversampling, time_length=time_length_s,
                      onset=delay_s)
    kernel = fine[::oversampling]
    return kernel / np.abs(kernel).max()


def convolve_runs(signal: np.ndarray, kernel: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """Causal convolution of each column with ``kernel``, restarted at every run start.

    Parameters
    ----------
    signal : ndarray, shape (n_tr, n_columns)
    kernel : ndarray, shape (n_taps,)
    runs : ndarray of int, shape (n_tr,)
    """
    out = np.empty_like(signal, dtype=np.float64)
    for run in np.unique(runs):
        rows = runs == run
        out[rows] = lfilter(kernel, [1.0], signal[rows], axis=0)
    return out


def planted_signal(atoms: np.ndarray, runs: np.ndarray, tr_s: float, target_pattern: np.ndarray,
                   delay_s: np.ndarray, delay_step_s: float = 0.1) -> np.ndarray:
    """Unit-variance hemodynamic response of each target to its pattern.

    Parameters
    ----------
    atoms : ndarray, shape (n_tr, n_patterns)
        Planted patterns on the TR grid.
    runs : ndarray of int, shape (n_tr,)
    tr_s : float
        Repetition time in seconds.
    target_pattern : ndarray of int, shape (n_targets,)
        Pattern driving each target (-1 = none: the column stays 0).
    delay_s : ndarray, shape (n_targets,)
        HRF shift of each target in seconds (rounded to ``delay_step_s``).
    delay_step_s : float
        Resolution of the delay grid.

    Returns
    -------
    signal : ndarray, float32, shape (n_tr, n_targets)
        Each responsive column has mean 0 and variance 1 within every run.
    """
    n_tr, n_targets = atoms.shape[0], len(target_pattern)
    signal = np.zeros((n_tr, n_targets), dtype=np.float32)
    responsive = np.flatnonzero(target_pattern >= 0)
    if responsive.size == 0:
        return signal
    steps = np.rint(np.asarray(delay_s)[responsive] / delay_step_s).astype(np.int64)
    for step in np.unique(steps):
        kernel = hrf_kernel(tr_s, float(step * delay_step_s))
        responses = zscore_runs(convolve_runs(atoms, kernel, runs), runs)
        columns = responsive[steps == step]
        signal[:, columns] = responses[:, target_pattern[columns]]
    return signal
