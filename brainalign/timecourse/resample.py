"""Resampling kernels that carry word-time values onto the fMRI TR grid.

Both methods brainalign offers are linear maps from word values to TR values, so each is
built once per run as a matrix ``W`` of shape (n_tr, n_words) and applied as ``W @ values``
(on a torch device for large recordings, see :mod:`brainalign.timecourse.timecourses`).

``"lanczos"``
    Lanczos-windowed sinc interpolation from irregular word times to regular TR times,
    the convention of the Huth lab's encoding work (Huth et al. 2016, Nature 532:453; their
    ``lanczosinterp2D``): window of 3 lobes, sinc rate ``cutoff_mult / tr_s`` (one zero
    crossing per TR at ``cutoff_mult = 1``), which passes frequencies up to
    ``cutoff_mult / (2 tr_s)``, the Nyquist frequency of the TR grid. Written by hand here
    because no maintained library offers resampling from irregular sample times. The
    kernel value of a word at time ``t_w`` for a TR at time ``t_k`` is

        x = (t_k - t_w) * cutoff_mult / tr_s
        L(x) = window * sin(pi x) * sin(pi x / window) / (pi x)**2,   L(0) = 1,
        L(x) = 0 where |x| > window.

    As in that convention the kernel is not normalised by the sampling density: a
    feature equal to 1 on every word becomes, on the TR grid, roughly the number of
    words heard per ``tr_s / cutoff_mult`` seconds (a word-rate regressor). Per-run
    z-scoring removes this scale. Before :data:`KERNEL_REVISION` 2 the sinc rate was half
    this, ``cutoff_mult / (2 tr_s)``, which passed only up to a quarter of the TR rate.

``"hrf"``
    Each word is an impulse at its onset, scaled by its value, convolved with a
    canonical haemodynamic response function from nilearn
    (:func:`nilearn.glm.first_level.spm_hrf` or ``glover_hrf``), sampled on a fine grid
    of ``tr_s / oversampling`` seconds and read at the TR times by linear interpolation.
    The kernel is nilearn's, with nilearn's scaling (its samples sum to one), so a
    single word gives the same regressor as :func:`nilearn.glm.first_level.compute_regressor`
    with a zero-duration event, up to nilearn's rounding of onsets to its fine grid.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

METHODS = ("lanczos", "hrf")
#: Revision of the resampling kernels, recorded in provenance and in the cache keys of
#: every stage that resamples: 2 = Lanczos sinc rate ``cutoff_mult / tr_s`` (Nyquist
#: passband); revision 1 used half that rate.
KERNEL_REVISION = 2
HRF_MODELS = ("spm", "glover")
#: Length of the canonical HRF kernel (s): a word moves no volume later than this.
HRF_LENGTH_S = 32.0


def tr_times(n_volumes: int, tr_s: float, first_volume_s: float) -> np.ndarray:
    """Acquisition time of each volume of one run, on the words' clock.

    Parameters
    ----------
    n_volumes : int
        Number of volumes in the run.
    tr_s : float
        Repetition time in seconds.
    first_volume_s : float
        Stimulus time (s, same clock as the word onsets of the run) of volume 0; no
        default, since a wrong value shifts every resampled feature by whole TRs.
        Volume ``k`` is stamped ``first_volume_s + k * tr_s``.

    Returns
    -------
    times_s : ndarray, shape (n_volumes,), float64
    """
    return float(first_volume_s) + tr_s * np.arange(int(n_volumes), dtype=np.float64)


def lanczos_kernel(x: np.ndarray, window: int = 3) -> np.ndarray:
    """The Lanczos kernel ``L(x)`` for ``x`` in units of ``tr_s / cutoff_mult`` (module doc).

    Parameters
    ----------
    x : ndarray, any shape
        Time differences multiplied by the sinc rate (dimensionless).
    window : int
        Number of lobes on each side; the kernel is zero beyond ``|x| > window``.

    Returns
    -------
    ndarray, same shape as ``x``, float64
    """
    x = np.asarray(x, dtype=np.float64)
    values = np.ones_like(x)
    nonzero = x != 0
    xn = x[nonzero]
    values[nonzero] = window * np.sin(np.pi * xn) * np.sin(np.pi * xn / window) / (np.pi * xn) ** 2
    values[np.abs(x) > window] = 0.0
    return values


def lanczos_matrix(word_times_s: np.ndarray, tr_times_s: np.ndarray, tr_s: float,
                   window: int = 3, cutoff_mult: float = 1.0) -> np.ndarray:
    """Lanczos resampling matrix for one run.

    Parameters
    ----------
    word_times_s : ndarray, shape (n_words,)
        Time of each word (s).
    tr_times_s : ndarray, shape (n_tr,)
        Time of each volume (s), same clock.
    tr_s : float
        Repetition time (s); the sinc rate is ``cutoff_mult / tr_s`` and the passband
        ends at ``cutoff_mult / (2 tr_s)`` Hz.
    window : int
        Lanczos window (lobes per side), 3 by convention.
    cutoff_mult : float
        Multiplier of the cutoff (1 by convention: the Nyquist frequency of the TR grid).

    Returns
    -------
    W : ndarray, shape (n_tr, n_words), float64
    """
    rate_hz = cutoff_mult / tr_s
    lags_s = np.asarray(tr_times_s, np.float64)[:, None] - np.asarray(word_times_s, np.float64)[None, :]
    return lanczos_kernel(lags_s * rate_hz, window)


#: Fewest HRF grid points per TR (nilearn's default is 50).
MIN_OVERSAMPLING = 10


def hrf_samples(tr_s: float, hrf_model: Literal["spm", "glover"] = "spm",
                oversampling: int = 50, time_length_s: float = HRF_LENGTH_S) -> tuple[np.ndarray, float]:
    """nilearn's canonical HRF on a fine grid.

    Returns
    -------
    hrf : ndarray, shape (n_samples,)
        Kernel values at lags ``0, dt, 2 dt, ...`` (nilearn's scaling: they sum to 1).
    dt_s : float
        Grid step in seconds, ``tr_s / oversampling``.
    """
    from nilearn.glm.first_level import glover_hrf, spm_hrf

    if hrf_model not in HRF_MODELS:
        raise ValueError(f"hrf_model must be one of {HRF_MODELS}, got {hrf_model!r}")
    if int(oversampling) < MIN_OVERSAMPLING:
        raise ValueError(f"oversampling must be >= {MIN_OVERSAMPLING}, got {oversampling}: the "
                         "HRF is sampled every tr_s / oversampling seconds, and a coarser grid "
                         "moves its peak (to 6 s instead of 5 s at 1 or 2 points per 2 s TR)")
    function = spm_hrf if hrf_model == "spm" else glover_hrf
    hrf = function(tr_s, oversampling=int(oversampling), time_length=time_length_s)
    return np.asarray(hrf, dtype=np.float64), tr_s / int(oversampling)


def hrf_matrix(onsets_s: np.ndarray, tr_times_s: np.ndarray, tr_s: float,
               hrf_model: Literal["spm", "glover"] = "spm", oversampling: int = 50,
               time_length_s: float = HRF_LENGTH_S) -> np.ndarray:
    """HRF convolution matrix for one run: impulses at word onsets, read at TR times.

    Parameters
    ----------
    onsets_s : ndarray, shape (n_words,)
        Word onsets (s).
    tr_times_s : ndarray, shape (n_tr,)
        Volume times (s), same clock.
    tr_s : float
        Repetition time (s); sets nilearn's fine grid ``tr_s / oversampling``.
    hrf_model : {"spm", "glover"}
    oversampling : int
        Fine-grid points per TR.
    time_length_s : float
        Length of the HRF kernel (s).

    Returns
    -------
    W : ndarray, shape (n_tr, n_words), float64
        ``W[k, w]`` is the response at volume ``k`` to a unit impulse at word ``w``.
    """
    hrf, dt_s = hrf_samples(tr_s, hrf_model, oversampling, time_length_s)
    lags_s = np.asarray(tr_times_s, np.float64)[:, None] - np.asarray(onsets_s, np.float64)[None, :]
    grid_s = dt_s * np.arange(hrf.size)
    return np.interp(lags_s, grid_s, hrf, left=0.0, right=0.0)
