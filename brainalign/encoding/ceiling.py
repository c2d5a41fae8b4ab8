"""Noise ceilings: how much of a target's time course any stimulus model could explain.

* :func:`intersubject_ceiling` — several subjects heard the same stimulus: the
  leave-one-subject-out inter-subject correlation (ISC), i.e. the Pearson r between each
  subject's time course and the mean of the other subjects' (Nastase et al., 2019,
  SCAN 14:667). It is on the scale of a held-out ``r``.
* :func:`explainable_variance` — one subject heard the stimulus several times: the
  fraction of variance shared by the repeats, var(mean over repeats) / mean(var of each
  repeat), with the small-sample bias correction ev - (1 - ev) / (n_repeats - 1)
  (Hsu, Borst & Theunissen, 2004, Network 15:91; the Gallant-lab convention). It is on
  the scale of ``r2``.

Plain numpy (float64); no maintained library exposes these for many targets at once.
"""

from __future__ import annotations

import numpy as np

from .stats import pearson_r


def _check_stack(name: str, data) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n_{name}, n_samples, n_targets) with at "
                         f"least 2 {name}; got shape {data.shape}")
    return data


def intersubject_ceiling(data) -> np.ndarray:
    """Leave-one-subject-out inter-subject correlation.

    Parameters
    ----------
    data : array, shape (n_subjects, n_samples, n_targets)
        Time courses of the same targets (ROIs, or voxels in a common space) in each
        subject, on the same time grid.

    Returns
    -------
    isc : ndarray, shape (n_subjects, n_targets)
        r between subject s and the mean of all others. Average over subjects for one
        ceiling per target.
    """
    data = _check_stack("subjects", data)
    n_subjects = data.shape[0]
    total = data.sum(0)
    return np.stack([pearson_r(data[s], (total - data[s]) / (n_subjects - 1))
                     for s in range(n_subjects)])


def explainable_variance(data, bias_correction: bool = True) -> np.ndarray:
    """Explainable variance of each target from repeated presentations.

    Parameters
    ----------
    data : array, shape (n_repeats, n_samples, n_targets)
        The same stimulus presented ``n_repeats`` times, on the same time grid.
    bias_correction : bool
        Apply ev - (1 - ev) / (n_repeats - 1), which removes the positive bias that
        noise leaves in the variance of the mean over few repeats.

    Returns
    -------
    ev : ndarray, shape (n_targets,)
        Between -inf and 1 (about 0 for pure noise); NaN for constant targets.
    """
    data = _check_stack("repeats", data)
    n_repeats = data.shape[0]
    mean_of_variances = data.var(axis=1).mean(axis=0)
    variance_of_mean = data.mean(axis=0).var(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ev = np.where(mean_of_variances > 0,
                      variance_of_mean / np.where(mean_of_variances > 0, mean_of_variances, 1), np.nan)
    if bias_correction:
        ev = ev - (1 - ev) / (n_repeats - 1)
    return ev
