"""Variance partitioning of a banded encoding model, and a null for each band's unique part.

For feature bands A, B, ... of one model (e.g. word rate, a study's published predictors,
a language model) a reviewer asks what each band explains that the others do not. Per
target and outer fold, brainalign fits and scores on the held-out rows:

* the full model (all bands, banded ridge);
* each band alone (plain ridge with its own penalty);
* the model without each band (banded ridge on the others; with two bands, the other
  band alone);

so that the unique contribution of band ``k`` is ``r(full) - r(without k)`` (and the same
in R^2), averaged over folds like every held-out score. himalaya's product-measure split of
the full model's R^2 (:func:`himalaya.scoring.r2_score_split`, on data and per-band
predictions centred within the test fold, since its split refuses an intercept) is kept
beside it: its per-band parts sum to the full model's R^2.

The null of a unique contribution (:func:`band_shift_null`) moves band ``k`` by circular
shifts inside runs (its pre-delay values, so the FIR delays stay within runs; at least
``min_shift_tr`` TRs) and refits the full model at the hyperparameters chosen on the real
data, with every other band and the data unchanged, as :mod:`brainalign.encoding.unique`
does per feature. The model without band ``k`` does not change with the shift, so the
p-value compares the full model's held-out r with band ``k`` in place against its r with
band ``k`` shifted. Targets that share band weights share a kernel; each shifted model is
a Cholesky solve of the training kernel, batched over shifts with torch. Written by hand:
no maintained library refits banded ridge under a permutation of one band.
"""

from __future__ import annotations

import numpy as np


#: Memory budget of one batch of shifted kernels and predictions, in bytes.
SHIFT_BYTES = 1 << 26


def delayed_rows(order: np.ndarray, delays, runs: np.ndarray) -> np.ndarray:
    """Source rows of a shifted, delayed feature: ``out[d, i] = order[i - delays[d]]``.

    Parameters
    ----------
    order : ndarray of int, shape (n_orders, n_samples)
        Row orders (e.g. circular shifts inside runs; the identity is no shift).
    delays : sequence of int
        FIR delays in TRs (empty: the feature enters undelayed).
    runs : ndarray of int, shape (n_samples,)

    Returns
    -------
    ndarray of int, shape (n_orders, n_delays_or_1, n_samples)
        Row of the original values each delayed, shifted row takes; ``n_samples`` (one past
        the end) where the delay reaches before the start of the run (a zero row).
    """
    order = np.atleast_2d(order)
    n_samples = order.shape[1]
    if not len(delays):
        return order[:, None, :]
    index = np.arange(n_samples)
    run_start = np.zeros(n_samples, dtype=int)
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    run_start[starts] = starts
    run_start = np.maximum.accumulate(run_start)
    padded = np.concatenate([order, np.full((order.shape[0], 1), n_samples)], axis=1)
    sources = []
    for delay in delays:
        source = index - int(delay)
        source = np.where(source >= run_start, source, n_samples)   # before the run: zero row
        sources.append(padded[:, source])
    return np.stack(sources, axis=1)


def _compressed(values: np.ndarray) -> np.ndarray:
    """Values with at most n_samples columns and the same Gram matrix ``V V^T`` (exact for
    ridge, whose predictions depend on the design only through its kernel)."""
    if values.shape[1] <= values.shape[0]:
        return values
    u, s, _ = np.linalg.svd(values, full_matrices=False)
    keep = s > s.max() * 1e-10
    return u[:, keep] * s[keep]


def _design(values: np.ndarray, delays, runs: np.ndarray, order: np.ndarray,
            train: np.ndarray) -> np.ndarray:
    """Delayed designs of reordered values, centred on ``train``: (n_orders, n_samples, n_cols)."""
    padded = np.vstack([values, np.zeros((1, values.shape[1]))])
    sources = delayed_rows(order, delays, runs)                       # (B, n_delays, n)
    design = padded[sources].transpose(0, 2, 1, 3).reshape(len(order), values.shape[0], -1)
    return design - design[:, train].mean(axis=1, keepdims=True)


def band_shift_null(values: list, delays: list, runs: np.ndarray, train: np.ndarray,
                    test: np.ndarray, Y: np.ndarray, weights: np.ndarray, band: int,
                    orders: np.ndarray) -> np.ndarray:
    """Held-out r of the full banded model with one band's rows reordered, per order.

    Parameters
    ----------
    values : list of ndarray, shape (n_samples, n_features_b)
        Pre-delay values of every band in this fold (z-scored on the training rows).
    delays : list of list of int
        Each band's FIR delays.
    runs : ndarray of int, shape (n_samples,)
    train, test : ndarray of int
    Y : ndarray, shape (n_samples, n_targets)
        The fold's cleaned targets.
    weights : ndarray, shape (n_bands, n_targets)
        ``exp(delta)`` of every target's fitted model in this fold (penalty 1).
    band : int
        The band whose rows are reordered.
    orders : ndarray of int, shape (n_orders, n_samples)
        Row orders of that band (row 0 may be the identity: the observed model).

    Returns
    -------
    r : ndarray, shape (n_orders, n_targets)
        Pearson r on the test rows of the model refitted with each order.

    Notes
    -----
    With ``K = sum_b w_b Z_b Z_b^T`` over the training rows, the model's dual weights are
    ``(K + I)^-1 y``. Of the two parts of ``K + I`` (the reordered band, the others) the
    one with fewer design columns, ``L``, is a low-rank update of the other, ``M``, and
    the Woodbury identity ``(M + L L^T)^-1 = M^-1 - M^-1 L (I + L^T M^-1 L)^-1 L^T M^-1``
    is applied in the eigenbasis of ``M``: eigendecomposed once per group of targets when
    ``M`` holds the fixed bands, once per order (shared by all groups, whose weights only
    scale its eigenvalues) when ``M`` holds the reordered band. Each order then costs
    products with ``L`` only.
    """
    if len(values) < 2 or not 0 <= band < len(values):
        raise ValueError(f"a band's unique contribution needs >= 2 bands and a band index "
                         f"among them; got {len(values)} band(s) and band {band}")
    from threadpoolctl import threadpool_limits

    # many small matrices: one BLAS thread each is fastest, and on a shared machine
    # multi-threaded BLAS on them runs several times slower
    with threadpool_limits(1, user_api="blas"):
        return _band_shift_null(values, delays, runs, train, test, Y, weights, band, orders)


def _band_shift_null(values, delays, runs, train, test, Y, weights, band, orders) -> np.ndarray:
    """:func:`band_shift_null` without the argument check and thread limit."""
    values = [_compressed(np.asarray(v, dtype=np.float64)) for v in values]
    identity = np.arange(len(runs))[None]
    others = [b for b in range(len(values)) if b != band]
    fixed = {b: _design(values[b], delays[b], runs, identity, train)[0] for b in others}
    n_shifted = values[band].shape[1] * max(len(delays[band]), 1)
    n_fixed = sum(design.shape[1] for design in fixed.values())
    groups, inverse = np.unique(np.asarray(weights).T, axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    y_train = Y[train] - Y[train].mean(0)
    y_test = Y[test] - Y[test].mean(0)
    y_test = y_test / np.where(np.linalg.norm(y_test, axis=0) > 0,
                               np.linalg.norm(y_test, axis=0), 1.0)
    n_orders, n_train = orders.shape[0], len(train)
    r = np.zeros((n_orders, Y.shape[1]))
    batch = int(max(1, min(n_orders, SHIFT_BYTES // (8 * len(runs) * max(len(runs), n_shifted) * 3))))

    chunk = int(max(1, SHIFT_BYTES // (8 * batch * len(runs) * 3)))   # targets at once

    def score(prediction, columns):
        prediction = prediction - prediction.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(prediction, axis=1)
        return (prediction * y_test[:, columns]).sum(1) / np.where(norm > 0, norm, 1.0)

    def chunks(columns):
        return (columns[i:i + chunk] for i in range(0, len(columns), chunk))

    if n_shifted <= n_fixed:
        # M = fixed bands + I, per group; L = the reordered band
        prepared = []
        for index, group in enumerate(groups):
            columns = np.flatnonzero(inverse == index)
            scaled = np.hstack([np.sqrt(group[b]) * fixed[b] for b in others])
            kernel = scaled[train] @ scaled[train].T
            eigenvalues, basis = np.linalg.eigh(kernel + np.eye(n_train))
            inverse_d = 1.0 / eigenvalues
            d_y = inverse_d[:, None] * (basis.T @ y_train[:, columns])
            cross = (scaled[test] @ scaled[train].T) @ basis
            prepared.append((columns, np.sqrt(group[band]), basis, inverse_d, d_y, cross))
        for start in range(0, n_orders, batch):
            shifted = _design(values[band], delays[band], runs, orders[start:start + batch], train)
            shifted_train, shifted_test = shifted[:, train], shifted[:, test]
            for columns, scale, basis, inverse_d, d_y, cross in prepared:
                low = basis.T @ (scale * shifted_train)                    # (B, n_train, p)
                weighted = inverse_d[None, :, None] * low
                core = np.eye(low.shape[2]) + low.transpose(0, 2, 1) @ weighted
                for part in chunks(np.arange(len(columns))):
                    u = np.linalg.solve(core, low.transpose(0, 2, 1) @ d_y[:, part])
                    inner = d_y[None, :, part] - weighted @ u              # (B, n_train, T)
                    prediction = cross @ inner + (scale * shifted_test) @ (
                        low.transpose(0, 2, 1) @ inner)
                    r[start:start + len(shifted), columns[part]] = score(prediction, columns[part])
        return r
    # M = reordered band + I, per order; L = the fixed bands, per group
    fixed_train = np.hstack([fixed[b] for b in others])[train]
    fixed_test = np.hstack([fixed[b] for b in others])[test]
    band_of_column = np.concatenate([np.full(fixed[b].shape[1], b) for b in others])
    for start in range(0, n_orders, batch):
        shifted = _design(values[band], delays[band], runs, orders[start:start + batch], train)
        kernel = shifted[:, train] @ shifted[:, train].transpose(0, 2, 1)
        eigenvalues, basis = np.linalg.eigh(kernel)                         # (B, n), (B, n, n)
        basis_t = basis.transpose(0, 2, 1)
        fixed_rotated = basis_t @ fixed_train                               # (B, n_train, p_o)
        cross_band = (shifted[:, test] @ shifted[:, train].transpose(0, 2, 1)) @ basis
        for index, group in enumerate(groups):
            scale = np.sqrt(group[band_of_column])
            inverse_d = 1.0 / (1.0 + group[band] * np.clip(eigenvalues, 0, None))   # (B, n)
            low = fixed_rotated * scale
            weighted = inverse_d[:, :, None] * low
            core = np.eye(low.shape[2]) + low.transpose(0, 2, 1) @ weighted
            for columns in chunks(np.flatnonzero(inverse == index)):
                d_y = inverse_d[:, :, None] * (basis_t @ y_train[:, columns])   # (B, n_train, T)
                u = np.linalg.solve(core, low.transpose(0, 2, 1) @ d_y)
                inner = d_y - weighted @ u
                prediction = ((fixed_test * scale) @ (low.transpose(0, 2, 1) @ inner)
                              + group[band] * (cross_band @ inner))
                r[start:start + len(shifted), columns] = score(prediction, columns)
    return r
