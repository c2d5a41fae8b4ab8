"""Unique held-out contribution of each feature, tested against circular shifts of itself.

Why: in a ridge model with correlated features (dictionary atoms are not orthogonal, and
FIR delays correlate them further) a feature that drives nothing still receives
coefficients where a correlated feature drives the data, so its coefficient map has the
shape of somebody else's network. And where the background itself is organised into
networks (real resting-state fluctuations), a feature that correlates with it by chance
over a short story gets a network-shaped map too. Neither is detected by a spatial null,
which only asks whether a map looks like a network.

The statistic here asks the temporal question instead. For feature ``k`` and target
``j`` (e.g. the mean signal of a brain network):

    unique_r[k, j] = r_heldout(all features) - r_heldout(all features but k)

with the usual outer leave-one-run-out CV (the mean over folds of the per-fold Pearson
r, as :func:`~brainalign.encoding.fit_encoding` scores), FIR delays inside runs, and one
alpha per target and fold chosen by inner CV on the real design. The null replaces
feature ``k`` by copies circularly shifted inside each run (by at least ``min_shift_tr``
TRs; :func:`~brainalign.encoding.stats.null_indices`), keeping every other feature and
the data, and recomputes ``unique_r`` at the same alphas. A shifted copy keeps the
feature's own autocorrelation, so slow chance correlations with structured noise are in
the null as much as in the observation, while a feature that only borrows a correlated
feature's signal adds nothing that the others do not already give.

The shifts of one call depend only on ``runs``, ``n_shifts`` and ``random_state``, so
calls for several subjects with the same arguments share them and their nulls can be
averaged shift by shift (:func:`shift_test_p_values`, whose p-values take a generalised
Pareto tail where few shifts reach the statistic: :mod:`brainalign.encoding.tail`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import StandardScaler

from brainalign.timecourse.delays import DEFAULT_DELAYS
from brainalign.timecourse.runs import check_runs

from .cleaning import FoldCleaner, resolve_cleaning
from .cv import outer_splits
from .ridge import DEFAULT_ALPHAS, EncodingModel
from .stats import null_indices, pearson_r
from .tail import PermutationPValues, permutation_p_values

#: Shifted copies solved at once (memory: about batch x n_tr x n_delays float64 x 4).
SHIFT_BATCH = 1024


@dataclass
class UniqueR:
    """Observed unique held-out r of every feature on every target, and its shift null.

    Attributes
    ----------
    observed : ndarray, shape (n_features, n_targets)
        ``r(all) - r(all but k)``, mean over outer folds.
    null : ndarray, shape (n_shifts, n_features, n_targets)
        The same with feature ``k`` circularly shifted inside runs.
    min_shift_tr : int
    random_state : int or None
    """

    observed: np.ndarray
    null: np.ndarray
    min_shift_tr: int
    random_state: int | None

    @property
    def n_shifts(self) -> int:
        return self.null.shape[0]


def _added_feature_r(others: np.ndarray, added: np.ndarray, Y: np.ndarray, train: np.ndarray,
                     test: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-out r of ridge on ``others`` alone and on ``others`` plus each ``added`` block.

    Parameters
    ----------
    others : ndarray, shape (n_samples, n_others)
        Columns common to every model.
    added : ndarray, shape (n_batch, n_samples, n_added)
        One block of extra columns per model (e.g. the delays of one shifted feature).
    Y : ndarray, shape (n_samples, n_targets)
    train, test : ndarray of int
    alphas : ndarray, shape (n_targets,)
        Ridge penalty of each target (the intercept is not penalised: columns and data
        are centred on the training rows).

    Returns
    -------
    r_others : ndarray, shape (n_targets,)
    r_with : ndarray, shape (n_batch, n_targets)

    Notes
    -----
    Block elimination: with ``A = O'O + alpha I`` the reduced fit is ``b0 = A^-1 O'y``.
    Adding ``Z`` gives ``bZ = (Z'Z + alpha I - Z'O A^-1 O'Z)^-1 Z'(y - O b0)`` and the
    prediction ``O b0 + (Z - O A^-1 O'Z) bZ``, so each model costs products with the
    small blocks only; one inverse of ``A`` per alpha serves all of them.
    """
    o_mean = others[train].mean(0)
    o_train, o_test = others[train] - o_mean, others[test] - o_mean
    z_mean = added[:, train].mean(axis=1, keepdims=True)
    z_train, z_test = added[:, train] - z_mean, added[:, test] - z_mean
    y_train = Y[train] - Y[train].mean(0)
    n_added = added.shape[2]
    cross = o_train.T @ z_train                                  # (batch, n_others, n_added)
    z_gram = z_train.transpose(0, 2, 1) @ z_train                # (batch, n_added, n_added)
    base = np.zeros((len(test), Y.shape[1]))
    extra = np.zeros((added.shape[0], len(test), Y.shape[1]))
    for alpha in np.unique(alphas):
        targets = np.flatnonzero(alphas == alpha)
        # with no other columns A is 0 x 0 and the same algebra gives the plain fit of Z
        inverse = np.linalg.inv(o_train.T @ o_train + alpha * np.eye(others.shape[1]))
        coef = inverse @ (o_train.T @ y_train[:, targets])
        residual = y_train[:, targets] - o_train @ coef
        base[:, targets] = o_test @ coef
        solved = inverse @ cross                                 # A^-1 O'Z
        schur = z_gram + alpha * np.eye(n_added) - cross.transpose(0, 2, 1) @ solved
        z_test_part = z_test - o_test @ solved
        coef_added = np.linalg.solve(schur, z_train.transpose(0, 2, 1) @ residual)
        extra[:, :, targets] = z_test_part @ coef_added
    return _pearson(Y[test], base[None])[0], _pearson(Y[test], base[None] + extra)


def _pearson(data: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """r between ``data`` (n, T) and each prediction (batch, n, T); 0 where one is constant
    (a model without columns predicts a constant)."""
    n_batch, n_samples, n_targets = prediction.shape
    flat = prediction.transpose(1, 0, 2).reshape(n_samples, n_batch * n_targets)
    r = pearson_r(np.tile(data, (1, n_batch)), flat)
    return np.nan_to_num(r).reshape(n_batch, n_targets)


def _delayed(X: np.ndarray, runs: np.ndarray, delays) -> np.ndarray:
    """FIR-delayed copies of the columns of X inside runs, (n_tr, n_delays * n_columns)."""
    from brainalign.timecourse import Delayer

    return Delayer(delays=delays).fit_transform(X, runs=runs)


def unique_r_shift_test(X, Y, runs=None, *, delays=DEFAULT_DELAYS, n_shifts: int = 1000,
                        min_shift_tr: int = 10, alphas=DEFAULT_ALPHAS, n_inner_splits: int = 5,
                        clean=True, tr_s: float | None = None,
                        random_state: int | None = 0) -> UniqueR:
    """Unique held-out r of each feature on each target, and its circular-shift null.

    Parameters
    ----------
    X : array, shape (n_tr, n_features)
        Features on the TR grid (z-scored here with each outer fold's training rows).
    Y : array, shape (n_tr, n_targets)
        A few targets, e.g. network-mean signals (the cost grows with
        ``n_shifts * n_features * n_targets``; whole brains are not meant here).
    runs : array of int, shape (n_tr,), optional
        Run of each TR; None is one run (outer CV over contiguous blocks).
    delays : sequence of int
        FIR delays in TRs (default :data:`brainalign.timecourse.DEFAULT_DELAYS`).
    n_shifts : int
        Circularly shifted copies per feature.
    min_shift_tr : int
        Smallest shift from either end of a run, in TRs (longer than the data's
        autocorrelation).
    alphas : sequence of float
        Ridge grid; one alpha per target and outer fold is chosen by inner CV.
    n_inner_splits : int
    clean : bool or Cleaning
        Nuisance removal of features and targets alike, fitted inside each outer fold on
        its training rows, as :func:`~brainalign.encoding.fit_encoding` does (run means,
        linear trends, and with ``tr_s`` the cosine drifts; False: none). Shifted copies
        are made of the raw features and cleaned the same way.
    tr_s : float, optional
        Repetition time in seconds (for the high-pass part of the cleaning).
    random_state : int or None
        Seed of the shifts.

    Returns
    -------
    UniqueR
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X must be (n_tr, n_features) and Y (n_tr, n_targets) on the same "
                         f"TRs; got {X.shape} and {Y.shape}")
    if not np.all(np.isfinite(Y)) or np.any(Y.std(axis=0) == 0):
        raise ValueError("every target must be finite and non-constant")
    if n_shifts < 1:
        raise ValueError(f"n_shifts must be >= 1, got {n_shifts}")
    n_tr, n_features = X.shape
    runs = check_runs(runs, n_tr)
    order = null_indices(runs, n_shifts, "circular", min_shift_tr, random_state)
    splits, _ = outer_splits(runs)
    column_feature = np.tile(np.arange(n_features), len(np.atleast_1d(delays)))
    observed = np.zeros((n_features, Y.shape[1]))
    null = np.zeros((n_shifts, n_features, Y.shape[1]))
    cleaning = resolve_cleaning(clean, tr_s)
    for split in splits:
        cleaner = None if cleaning is None else FoldCleaner(cleaning, runs, split.train, tr_s)

        def prepared(values: np.ndarray) -> np.ndarray:
            """Features (or shifted copies) cleaned as the targets are, then z-scored on
            the fold's training rows: a shifted copy goes through what the feature does."""
            if cleaner is not None:
                values = cleaner.apply(values)
            return StandardScaler().fit(values[split.train]).transform(values)

        Yc = Y if cleaner is None else cleaner.apply(Y)
        Xz = prepared(X)
        design = _delayed(Xz, runs, delays)
        alphas_fold = np.asarray(EncodingModel(alphas=alphas, n_inner_splits=n_inner_splits)
                                 .fit(design[split.train], Yc[split.train],
                                      runs=runs[split.train]).alphas_, dtype=np.float64)
        identity = np.arange(n_tr)[None]
        for k in range(n_features):
            others = design[:, column_feature != k]
            for start in range(0, n_shifts + 1, SHIFT_BATCH):
                # row 0 of the orders is the feature itself, the others its shifted copies
                rows = np.vstack([identity, order])[start:start + SHIFT_BATCH]
                # (n_tr, n_delays * n_rows) delay-major -> (n_rows, n_tr, n_delays)
                added = _delayed(prepared(X[rows, k].T), runs, delays).reshape(
                    n_tr, -1, len(rows))
                r_without, r_with = _added_feature_r(others, added.transpose(2, 0, 1), Yc,
                                                     split.train, split.test, alphas_fold)
                unique = (r_with - r_without) / len(splits)
                if start == 0:
                    observed[k] += unique[0]
                    unique = unique[1:]
                first = max(start - 1, 0)
                null[first:first + len(unique), k] += unique
    return UniqueR(observed, null, int(min_shift_tr), random_state)


def shift_test_p_values(results: list[UniqueR], *, tail: str = "gpd"
                        ) -> tuple[np.ndarray, PermutationPValues]:
    """One-sided p-values of the subject-mean unique r against the subject-mean null.

    Parameters
    ----------
    results : list of UniqueR
        One per subject, computed with the same runs, ``n_shifts`` and ``random_state``
        (so that shift ``s`` is the same stimulus shift in every subject).
    tail : {"gpd", "empirical"}
        Where fewer than 10 shifts reach the statistic, a generalised Pareto fit to the
        null's tail gives p-values below ``1 / (1 + n_shifts)``
        (:func:`brainalign.encoding.tail.permutation_p_values`).

    Returns
    -------
    statistic : ndarray, shape (n_features, n_targets)
        Subject-mean unique r.
    p_values : PermutationPValues
        ``p_values.p_values`` (n_features, n_targets), with the method of each; shifts
        within 1e-12 of the statistic count as reaching it.
    """
    if not results:
        raise ValueError("no unique-r results to combine")
    shapes = {result.null.shape for result in results}
    seeds = {(result.random_state, result.min_shift_tr) for result in results}
    if len(shapes) != 1 or len(seeds) != 1:
        raise ValueError(f"subjects' shift nulls differ (shapes {shapes}, seeds and minimum "
                         f"shifts {seeds}); compute them with the same arguments")
    statistic = np.mean([result.observed for result in results], axis=0)
    null = np.mean([result.null for result in results], axis=0)
    tolerance = 1e-12
    return statistic, permutation_p_values(statistic - tolerance, null, tail=tail)
