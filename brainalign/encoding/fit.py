"""fit_encoding: held-out scores, significance and final coefficients in one call.

The recipe (each step named in the result's ``cv`` dictionary):

1. outer split: leave one run (story) out, or contiguous blocks of time for one run
   (:func:`brainalign.encoding.cv.outer_splits`);
2. in each outer training set: an optional feature transformer (e.g. PCA) and the
   feature z-scoring are fitted on the training rows only, FIR delays are added with
   :class:`brainalign.timecourse.Delayer` (never across runs), and an
   :class:`~brainalign.encoding.ridge.EncodingModel` chooses one alpha per target by
   inner CV grouped by run;
3. each outer fold's held-out predictions are scored per target and the scores are
   averaged over folds (``r`` Pearson, ``r2`` coefficient of determination); scoring
   folds separately keeps the offset each fold's model adds out of the score;
4. ``r`` is tested against a block-permutation / circular-shift null of the data with
   every fold's ridge map re-applied (:mod:`brainalign.encoding.null`), and
   FDR-corrected with MNE;
5. the model is refitted on all the data for the coefficients and alphas that are kept.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import clone
from sklearn.preprocessing import StandardScaler

from brainalign.provenance import config_hash, provenance_block
from brainalign.timecourse.runs import check_runs

from .cv import outer_splits
from .null import FoldOperator, refit_null_test
from .result import EncodingResult
from .ridge import DEFAULT_ALPHAS, EncodingModel, valid_target_mask
from .stats import fdr, fold_mean_r, pearson_r, permutation_test, r2_score

logger = logging.getLogger(__name__)


def _design(X: np.ndarray, runs: np.ndarray, train: np.ndarray, preprocessing, standardize: bool,
            delays) -> np.ndarray:
    """Features for all rows: transformers fitted on ``train`` rows only, then FIR delays."""
    steps = ([clone(preprocessing)] if preprocessing is not None else []) + (
        [StandardScaler()] if standardize else [])
    for step in steps:
        X = np.asarray(step.fit(X[train]).transform(X), dtype=np.float64)
    if delays is not None:
        from brainalign.timecourse import Delayer

        X = Delayer(delays=delays).fit_transform(X, runs=runs)
    return X


def fit_encoding(X, Y, runs=None, *, delays=None, alphas=DEFAULT_ALPHAS, preprocessing=None,
                 standardize: bool = True,
                 n_inner_splits: int = 5, n_blocks: int = 5, n_perm: int = 1000,
                 null: str = "block", null_scope: str = "refit", block_tr: int = 10, fdr_alpha: float = 0.05,
                 noise_ceiling=None, solver: str = "auto", backend: str = "auto",
                 dtype: str = "float32", random_state: int | None = 0,
                 provenance: dict | None = None) -> EncodingResult:
    """Fit and evaluate a voxelwise ridge encoding model with nested, run-wise CV.

    Parameters
    ----------
    X : array, shape (n_tr, n_features)
        Features on the fMRI TR grid (stacked over runs/stories in time order).
    Y : array, shape (n_tr, n_targets)
        Brain time courses (voxels, vertices or ROIs) on the same grid.
    runs : array of int, shape (n_tr,), optional
        Run / story of each TR (contiguous blocks). None: one run, and the outer CV uses
        ``n_blocks`` contiguous blocks of time.
    delays : sequence of int, optional
        FIR delays in TRs added by :class:`brainalign.timecourse.Delayer` (never across
        runs). None when X is already delayed (or no delays are wanted).
    alphas : sequence of float
        Ridge penalty grid (one alpha per target is chosen from it).
    preprocessing : scikit-learn transformer, optional
        Applied to X before the delays, fitted on the training rows of each outer fold
        only (e.g. ``PCA(20)``); ``coef`` is then in its output space.
    standardize : bool
        z-score every feature (after ``preprocessing``, before the delays) with the mean
        and standard deviation of the training rows, so that one alpha grid suits
        features of any scale.
    n_inner_splits : int
        Inner folds for alpha selection.
    n_blocks : int
        Outer contiguous blocks when there is a single run.
    n_perm : int
        Permutations for the null of ``r`` (0 skips the test; p-values are NaN).
    null : {"block", "circular"}
        How surrogates reorder time (see :func:`brainalign.encoding.stats.null_indices`).
    null_scope : {"refit", "predictions"}
        ``"refit"`` (default): the data are shuffled and every outer fold's ridge map is
        re-applied at the chosen alphas (:mod:`brainalign.encoding.null`), which keeps
        the coupling between CV folds and is calibrated. ``"predictions"``: the held-out
        predictions are shuffled within each fold
        (:func:`~brainalign.encoding.stats.permutation_test`); faster but liberal for
        CV scores (about 11 % of pure-noise targets under p = .05 in our tests).
    block_tr : int
        Block length / minimum shift of the null, in TRs.
    fdr_alpha : float
        FDR level passed to MNE (the adjusted p-values do not depend on it).
    noise_ceiling : array, shape (n_targets,), optional
        Attached to the result (see :mod:`brainalign.encoding.ceiling`).
    solver, backend, dtype
        Passed to :class:`~brainalign.encoding.ridge.EncodingModel`.
    random_state : int or None
        Seed of the permutation null.
    provenance : dict, optional
        Extra fields for the result's provenance (model, site, features...).

    Returns
    -------
    EncodingResult
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    if not np.issubdtype(Y.dtype, np.floating):
        Y = Y.astype(np.float64)  # float32 whole brains stay float32 (no 2x copy)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X must be (n_tr, n_features) and Y (n_tr, n_targets); got {X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} TRs but Y has {Y.shape[0]}; put both on the same TR grid")
    n_tr, n_targets = Y.shape
    runs = check_runs(runs, n_tr)
    valid = valid_target_mask(Y)
    if not valid.any():
        raise ValueError("every target is constant or contains NaN; nothing to fit")
    if noise_ceiling is not None:
        noise_ceiling = np.asarray(noise_ceiling, dtype=np.float64)
        if noise_ceiling.shape != (n_targets,):
            raise ValueError(f"noise_ceiling must have shape ({n_targets},), got {noise_ceiling.shape}")
    if null_scope not in ("refit", "predictions"):
        raise ValueError(f"null_scope must be 'refit' or 'predictions', got {null_scope!r}")
    Yv = Y[:, valid]
    model = EncodingModel(alphas=alphas, solver=solver, n_inner_splits=n_inner_splits,
                          backend=backend, dtype=dtype)

    splits, outer_scheme = outer_splits(runs, n_blocks=n_blocks)
    fold_of_tr = np.empty(n_tr, dtype=int)
    prediction = np.empty_like(Yv)
    operators = []
    r_folds = np.full((len(splits), n_targets), np.nan)
    r2_folds = np.full((len(splits), n_targets), np.nan)
    for i, split in enumerate(splits):
        logger.info("outer fold %d/%d: testing on group %s (%d TRs)", i + 1, len(splits),
                    split.test_groups, len(split.test))
        design = _design(X, runs, split.train, preprocessing, standardize, delays)
        fold_model = clone(model).fit(design[split.train], Yv[split.train], runs=runs[split.train])
        if n_perm > 0 and null_scope == "refit":
            operators.append(FoldOperator.from_design(design, split.train, split.test,
                                                      fold_model.alphas_))
        prediction[split.test] = fold_model.predict(design[split.test])
        r_folds[i, valid] = pearson_r(Yv[split.test], prediction[split.test])
        r2_folds[i, valid] = r2_score(Yv[split.test], prediction[split.test])
        fold_of_tr[split.test] = i

    r = np.full(n_targets, np.nan)
    r[valid] = fold_mean_r(Yv, prediction, fold_of_tr)
    r2 = np.full(n_targets, np.nan)
    r2[valid] = r2_folds[:, valid].mean(0)
    p_values = np.full(n_targets, np.nan)
    if n_perm > 0 and null_scope == "refit":
        p_values[valid], _ = refit_null_test(Yv, operators, runs, n_perm=n_perm, method=null,
                                             block_tr=block_tr, random_state=random_state)
    elif n_perm > 0:
        order = np.argsort(fold_of_tr, kind="stable")  # folds as consecutive rows for the null
        p_values[valid] = permutation_test(Yv[order], prediction[order], groups=fold_of_tr[order],
                                           n_perm=n_perm, method=null, block_tr=block_tr,
                                           random_state=random_state)
    _, p_fdr = fdr(p_values, alpha=fdr_alpha)

    logger.info("final fit on all %d TRs", n_tr)
    design = _design(X, runs, np.arange(n_tr), preprocessing, standardize, delays)
    final = clone(model).fit(design, Y, runs=runs)

    config = dict(outer=outer_scheme, n_outer_folds=len(splits),
                  outer_test_groups=[list(s.test_groups) for s in splits],
                  inner=final.inner_cv_, n_inner_splits=n_inner_splits,
                  alphas_grid=[float(a) for a in alphas], null=null if n_perm > 0 else None,
                  n_perm=n_perm, null_scope=null_scope if n_perm > 0 else None, block_tr=block_tr, fdr="benjamini-hochberg (mne.stats.fdr_correction)",
                  preprocessing=None if preprocessing is None else repr(preprocessing),
                  standardize=standardize,
                  backend=final.backend_, n_targets_batch=final.n_targets_batch_, dtype=dtype,
                  r="mean over outer folds of the held-out Pearson r",
                  r2="mean over outer folds of the held-out 1 - SS_res/SS_tot")
    extra = dict(provenance or {})
    result = EncodingResult(
        r=r, r2=r2, alphas=final.alphas_.astype(np.float64), coef=final.coef_,
        intercept=final.intercept_, p_values=p_values, p_fdr=p_fdr, solver=final.solver_,
        cv=config, valid_targets=valid, noise_ceiling=noise_ceiling, r_folds=r_folds,
        delays=None if delays is None else [int(d) for d in np.atleast_1d(delays)],
        provenance=provenance_block(stage="encoding", config_hash=config_hash(config),
                                    n_tr=n_tr, n_features=int(X.shape[1]), n_targets=n_targets,
                                    n_invalid_targets=int((~valid).sum()), random_state=random_state,
                                    **extra))
    return result
