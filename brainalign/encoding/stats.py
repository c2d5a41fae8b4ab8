"""Held-out scores and their significance: Pearson r, R², permutation nulls, FDR.

Two scores are kept apart by name everywhere in brainalign:

* ``r`` — Pearson correlation between held-out predictions and data (scale-free);
* ``r2`` — coefficient of determination, 1 - SS_residual / SS_total (can be negative;
  it is *not* the square of ``r``).

Significance of ``r`` per target comes from a null distribution that keeps the temporal
autocorrelation of fMRI: held-out predictions are reversed in time and circularly
shifted within each run (mirrored shift, the default), circularly shifted (circular
shift), or cut into blocks of ``block_tr`` TRs whose order is shuffled within each run
(block permutation), and correlated with the unchanged data. Block permutation breaks
every autocorrelation across a block's edges and, in the refitted null of
:mod:`brainalign.encoding.null`, the spectrum of the run-cleaned data: on pure-noise
targets it gave 6.1 % (white noise) to 11.7 % (AR(1) 0.9) and 11.2 % (real resting-state
BOLD) of p-values under .05 in two runs; the mirrored shift 4.5-5.9 % in every case
(``benchmarks/calibration.py``, part ``encoding``: runs of 132-279 TRs). Short runs are
harder for both: a review measured 7.1-7.8 % for the mirrored shift and 6.9-8.1 % for
blocks with 6 runs of 25 TRs. A run of n TRs has n distinct mirrored surrogates, so with
one run and more permutations than TRs the draws repeat, and p-values below 1 / n come
from the tail fit (:mod:`brainalign.encoding.tail`). The permutations are applied
in batches to all targets at once with torch (on the GPU when there is one).
:func:`null_indices` (the surrogate orders) is shared with the cross-validation-aware
null of :mod:`brainalign.encoding.null`. This null is written here by hand because no
maintained library offers a batched block-permutation test for many targets; the
multiple-comparison step is MNE's Benjamini-Hochberg :func:`mne.stats.fdr_correction`.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

NULL_METHODS = ("block", "circular", "mirror")

#: Memory budget of one batch of permuted predictions, in bytes (CPU: small batches stay
#: in cache, which makes the gather several times faster); on a GPU a
#: quarter of the free memory is used.
CPU_PERMUTATION_BYTES = 1 << 23


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred.reshape(-1, 1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"data and predictions differ in shape: {y_true.shape} vs {y_pred.shape}")
    return y_true, y_pred


def pearson_r(y_true, y_pred) -> np.ndarray:
    """Pearson correlation per column (target), computed in float64.

    Parameters
    ----------
    y_true, y_pred : array, shape (n_samples, n_targets)

    Returns
    -------
    r : ndarray, shape (n_targets,)
        NaN where either column is constant.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    a = y_true - y_true.mean(0)
    b = y_pred - y_pred.mean(0)
    denominator = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(0) / np.where(denominator > 0, denominator, 1), np.nan)


def r2_score(y_true, y_pred) -> np.ndarray:
    """Coefficient of determination per column: 1 - SS_res / SS_tot (float64).

    Returns NaN where the data column is constant.
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)


def null_indices(groups: np.ndarray, n_perm: int, method: str = "mirror", block_tr: int = 10,
                 random_state=None) -> np.ndarray:
    """Time-point orders for a block-permutation, circular-shift or mirrored-shift null.

    Parameters
    ----------
    groups : array of int, shape (n_samples,)
        Run (or held-out fold) of each time point; time points never move between
        groups. Each group must occupy consecutive rows.
    n_perm : int
    method : {"mirror", "circular", "block"}
        ``"mirror"`` (default): reverse time inside each group, then roll it by any shift
        (0 to n - 1, uniform; ``block_tr`` is not used). ``"circular"``: roll each group
        by a random shift of at least ``block_tr`` TRs from either end. ``"block"``: cut
        each group into blocks of ``block_tr`` TRs (the last one may be shorter) and
        shuffle their order. A reversed series keeps its power spectrum, as a shifted one
        does, but never lines up with the original, so no shift needs to be left out;
        leaving the short shifts out of a circular null makes it anti-conservative where
        the statistic changes slowly with the shift (see
        :func:`brainalign.networks.spatial.spatial_shift_test`). Blocks lose every
        autocorrelation across their edges, so a block null is anti-conservative unless
        the blocks are much longer than the autocorrelation (module docstring).
    block_tr : int
        Block length (block) or minimum shift (circular), in TRs (10 TRs = 20 s at TR 2 s
        is the default).
    random_state : int, Generator or None

    Returns
    -------
    order : ndarray of int, shape (n_perm, n_samples)
        ``y_pred[order[k]]`` is the k-th surrogate.
    """
    if method not in NULL_METHODS:
        raise ValueError(f"method must be one of {NULL_METHODS}, got {method!r}")
    if block_tr < 1:
        raise ValueError(f"block_tr must be >= 1, got {block_tr}")
    groups = np.asarray(groups)
    rng = np.random.default_rng(random_state)
    order = np.empty((n_perm, len(groups)), dtype=np.int64)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        if np.any(np.diff(rows) != 1):
            raise ValueError(f"group {g} is not a run of consecutive rows")
        n = len(rows)
        if method == "block":
            starts = np.arange(0, n, block_tr)
            if len(starts) < 2:
                raise ValueError(f"group {g} has {n} TRs: too short for blocks of {block_tr} TRs")
            blocks = [rows[s:s + block_tr] for s in starts]
            for k in range(n_perm):
                order[k, rows] = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        elif method == "mirror":
            shifts = rng.integers(0, n, size=n_perm)
            local = (shifts[:, None] - np.arange(n)[None, :]) % n   # reversed, then rolled
            order[:, rows] = rows[local]
        else:
            if n <= 2 * block_tr:
                raise ValueError(f"group {g} has {n} TRs: too short for shifts of at least {block_tr} TRs")
            shifts = rng.integers(block_tr, n - block_tr + 1, size=n_perm)
            local = (np.arange(n)[None, :] - shifts[:, None]) % n
            order[:, rows] = rows[local]
    return order


def _torch_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _unit_columns(a: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Centre each column within each group and scale it to unit norm there, then divide
    by sqrt(n_groups): the sum over rows of the product of two such arrays is the mean over
    groups of the within-group Pearson r."""
    out = np.zeros_like(a, dtype=np.float64)
    labels = np.unique(groups)
    for g in labels:
        rows = groups == g
        block = a[rows] - a[rows].mean(0)
        norm = np.sqrt((block * block).sum(0))
        out[rows] = block / np.where(norm > 0, norm, 1)
    return out / np.sqrt(len(labels))


def fold_mean_r(y_true, y_pred, groups=None) -> np.ndarray:
    """Mean over groups (held-out folds) of the within-group Pearson r, per target.

    Scoring each held-out fold on its own makes the score blind to the offset each
    fold's model adds (a concatenation of folds would reward or punish differences in
    fold means that no feature explains).

    Parameters
    ----------
    y_true, y_pred : array, shape (n_samples, n_targets)
    groups : array of int, shape (n_samples,), optional
        Fold of each sample; None is one fold (plain Pearson r).

    Returns
    -------
    r : ndarray, shape (n_targets,)
    """
    y_true, y_pred = _check_pair(y_true, y_pred)
    groups = np.zeros(len(y_true), dtype=int) if groups is None else np.asarray(groups)
    return (_unit_columns(y_true, groups) * _unit_columns(y_pred, groups)).sum(0)


def permutation_test(y_true, y_pred, groups=None, n_perm: int = 1000, method: str = "mirror",
                     block_tr: int = 10, random_state=0, device: str = "auto",
                     return_null: bool = False):
    """One-sided p-value of the held-out r of each target under a temporal null.

    The statistic is :func:`fold_mean_r` (the mean over ``groups`` of the within-group
    Pearson r; plain Pearson r when ``groups`` is None), for the data and for each
    surrogate of the predictions.

    Valid when the predictions come from a model that saw none of ``y_true`` (e.g. one
    held-out test run). For cross-validated predictions, where each fold's data trained
    the other folds' models, it is liberal; use :func:`brainalign.encoding.null.refit_null_test`
    (what :func:`~brainalign.encoding.fit_encoding` does by default).

    Parameters
    ----------
    y_true : array, shape (n_samples, n_targets)
        Data (held-out time points).
    y_pred : array, shape (n_samples, n_targets)
        Held-out predictions.
    groups : array of int, shape (n_samples,), optional
        Run / fold of each time point (surrogates never move time points across groups).
    n_perm : int
        Number of surrogates.
    method : {"mirror", "circular", "block"}
        See :func:`null_indices`.
    block_tr : int
        Block length or minimum circular shift, in TRs (not used by ``"mirror"``).
    random_state : int or None
    device : str
        torch device ("auto": CUDA when available, else CPU).
    return_null : bool
        Also return the null correlations.

    Returns
    -------
    p_values : ndarray, shape (n_targets,)
        ``(1 + #{null r >= observed r}) / (1 + n_perm)``; NaN for constant targets.
    null : ndarray, shape (n_perm, n_targets)
        Only when ``return_null``.
    """
    import torch

    y_true, y_pred = _check_pair(y_true, y_pred)
    n_samples, n_targets = y_true.shape
    groups = np.zeros(n_samples, dtype=int) if groups is None else np.asarray(groups)
    if groups.shape != (n_samples,):
        raise ValueError(f"groups must have shape ({n_samples},), got {groups.shape}")
    order = null_indices(groups, n_perm, method, block_tr, random_state)

    dev = _torch_device(device)
    dtype = torch.float32
    # surrogates keep rows within groups, so the within-group scaling is unchanged
    z_true = torch.as_tensor(_unit_columns(y_true, groups), dtype=dtype, device=dev)
    z_pred = torch.as_tensor(_unit_columns(y_pred, groups), dtype=dtype, device=dev)
    order_t = torch.as_tensor(order, device=dev)
    observed = (z_true * z_pred).sum(0)

    tolerance = 16 * torch.finfo(dtype).eps  # float32 rounding: a tie counts as exceeding
    itemsize = torch.finfo(dtype).bits // 8
    if dev.type == "cuda":
        budget = torch.cuda.mem_get_info(dev)[0] // 4
    else:
        budget = CPU_PERMUTATION_BYTES
    n_targets_batch = int(max(1, min(n_targets, budget // (n_samples * itemsize))))
    n_perm_batch = int(max(1, min(n_perm, budget // (n_samples * n_targets_batch * itemsize))))

    exceed = torch.zeros(n_targets, dtype=torch.int64, device=dev)
    null = np.empty((n_perm, n_targets)) if return_null else None
    for t0 in range(0, n_targets, n_targets_batch):
        cols = slice(t0, t0 + n_targets_batch)
        for p0 in range(0, n_perm, n_perm_batch):
            rows = order_t[p0:p0 + n_perm_batch]
            # (n_perm_batch, n_samples, n_targets_batch) surrogate predictions
            surrogate = z_pred[:, cols][rows]
            null_r = (surrogate * z_true[:, cols]).sum(1)
            exceed[cols] += (null_r >= observed[cols] - tolerance).sum(0)
            if return_null:
                null[p0:p0 + n_perm_batch, cols] = null_r.cpu().numpy()
    p_values = (1.0 + exceed.cpu().numpy()) / (1.0 + n_perm)
    constant = (np.ptp(y_true, 0) == 0) | (np.ptp(y_pred, 0) == 0)
    p_values[constant] = np.nan
    if return_null:
        return p_values, null
    return p_values


def fdr(p_values, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg FDR correction with :func:`mne.stats.fdr_correction`.

    NaN p-values (invalid targets) are left out of the correction and stay NaN.

    Parameters
    ----------
    p_values : array, shape (n_targets,)
    alpha : float
        FDR level.

    Returns
    -------
    reject : ndarray of bool, shape (n_targets,)
    p_fdr : ndarray, shape (n_targets,)
        BH-adjusted p-values.
    """
    from mne.stats import fdr_correction

    p_values = np.asarray(p_values, dtype=float)
    reject = np.zeros(p_values.shape, dtype=bool)
    p_fdr = np.full(p_values.shape, np.nan)
    finite = np.isfinite(p_values)
    if finite.any():
        reject[finite], p_fdr[finite] = fdr_correction(p_values[finite], alpha=alpha, method="indep")
    return reject, p_fdr
