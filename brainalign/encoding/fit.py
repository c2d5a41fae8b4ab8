"""fit_encoding: held-out scores, variance partitioning, significance and final coefficients.

The recipe (each step named in the result's ``cv`` dictionary):

1. outer split: leave one run (story) out, or contiguous blocks of time for one run
   (:func:`brainalign.encoding.cv.outer_splits`);
2. in each outer fold, fitted on its training rows only: the cleaning of targets *and*
   features (nuisance regression per run: mean, trend, cosine drifts, confounds; then
   z-scoring; :mod:`brainalign.encoding.cleaning`), each band's reduction (PCA, atoms),
   the feature z-scoring; then FIR delays per band inside runs
   (:mod:`brainalign.encoding.bands`) and the model: one band is plain ridge
   (:class:`~brainalign.encoding.ridge.EncodingModel`), several are banded ridge
   (:class:`~brainalign.encoding.banded.BandedEncodingModel`), hyperparameters per
   target by inner CV grouped by run; an alpha grid crowded at an edge is extended;
3. each fold's held-out predictions are scored per target. The headline ``r`` is the mean
   over folds of the within-fold Pearson r (blind to the offset each fold's model adds);
   ``r_concat`` is r on the predictions concatenated over folds; ``r2`` is the mean over
   folds of the within-fold R^2. A fold where a target's held-out data are flat (constant
   up to the rounding that cleaning leaves, e.g. signal dropout in that run) does not
   score it: NaN there, and that target's means are over its other folds;
4. with several bands, variance partitioning per fold (:mod:`brainalign.encoding.partition`):
   each band alone, the model without each band, each band's unique contribution and
   himalaya's split R^2; each band's unique r is tested against circular shifts of that
   band (others fixed) and FDR-corrected over targets;
5. ``r`` is tested against a block-permutation / circular-shift null of the data with
   every fold's ridge map re-applied (:mod:`brainalign.encoding.null`), FDR-corrected
   with MNE;
6. the model is refitted on all the data (cleaning and reductions too) for the
   coefficients and hyperparameters that are kept.
"""

from __future__ import annotations

import logging

import numpy as np

from brainalign.provenance import config_hash, provenance_block
from brainalign.timecourse.delays import DEFAULT_DELAYS, check_fir_delays
from brainalign.timecourse.runs import check_runs

from .banded import DEFAULT_N_ITER, BandedEncodingModel
from .bands import band_design, fold_band_values, resolve_bands
from .cleaning import FoldCleaner, resolve_cleaning
from .cv import outer_splits
from .null import FoldOperator, refit_null_test
from .partition import band_shift_null
from .result import EncodingResult
from .ridge import DEFAULT_ALPHAS, EncodingModel, valid_target_mask
from .stats import NULL_METHODS, fdr, null_indices, pearson_r, permutation_test, r2_score
from .tail import permutation_p_values

logger = logging.getLogger(__name__)

#: A fold's held-out column is flat (not scored) when its standard deviation after the
#: nuisance removal is at most this fraction of the root mean square of its raw values,
#: the scale of the rounding error that cleaning leaves.
FLAT_TOLERANCE = 1e-10

#: Partition scores kept per band, each (n_bands, n_targets).
PARTITION_SCORES = ("r_alone", "r2_alone", "r_without", "r2_without", "r_unique", "r2_unique",
                    "r2_split")


class _Models:
    """Builds the ridge model of any subset of bands with the fit's shared settings."""

    def __init__(self, alphas, n_iter, solver, n_inner_splits, backend, dtype, random_state):
        self.common = dict(alphas=alphas, solver=solver, n_inner_splits=n_inner_splits,
                           backend=backend, dtype=dtype)
        self.banded = dict(n_iter=n_iter, random_state=random_state)

    def fit(self, design, layout, Y, runs):
        """Plain ridge for one band, banded ridge for several; fitted on all given rows."""
        if len(layout) == 1:
            return EncodingModel(**self.common).fit(design, Y, runs=runs)
        sizes = [b["columns"][1] - b["columns"][0] for b in layout]
        return BandedEncodingModel(band_sizes=sizes, **self.common, **self.banded).fit(
            design, Y, runs=runs)


def _columns(layout, names) -> tuple[np.ndarray, list[dict]]:
    """Design columns and re-based layout of the bands ``names`` (in layout order)."""
    picked, new_layout, start = [], [], 0
    for band in layout:
        if band["name"] in names:
            a, b = band["columns"]
            picked.append(np.arange(a, b))
            new_layout.append({**band, "columns": [start, start + b - a]})
            start += b - a
    return np.concatenate(picked), new_layout


def _split_r2(model, design_test, y_test) -> np.ndarray:
    """himalaya's product-measure split of R^2 on test-centred data, (n_bands, n_targets)."""
    from himalaya.scoring import r2_score_split

    parts = model.predict(design_test, split=True)
    parts = parts - parts.mean(axis=1, keepdims=True)
    centred = y_test - y_test.mean(0)
    return np.asarray(r2_score_split(centred, parts), dtype=np.float64)


def fit_encoding(X, Y, runs=None, *, delays=DEFAULT_DELAYS, alphas=DEFAULT_ALPHAS,
                 preprocessing=None, standardize: bool = True, clean=True,
                 tr_s: float | None = None, confounds=None, sample_mask=None,
                 outer_groups=None, partition: bool = True,
                 n_band_shifts: int = 1000, min_shift_tr: int = 10, n_iter: int = DEFAULT_N_ITER,
                 n_inner_splits: int = 5, n_blocks: int = 5, n_perm: int = 1000,
                 null: str = "mirror", null_scope: str = "refit", block_tr: int = 10,
                 fdr_alpha: float = 0.05, noise_ceiling=None, solver: str = "auto",
                 backend: str = "auto", dtype: str = "float32", random_state: int | None = 0,
                 provenance: dict | None = None) -> EncodingResult:
    """Fit and evaluate a voxelwise ridge encoding model with nested, run-wise CV.

    Parameters
    ----------
    X : array (n_tr, n_features), Band, FoldFeatures, or dict name -> any of these
        Features on the fMRI TR grid (stacked over runs/stories in time order). A dict
        holds named feature bands (:class:`brainalign.encoding.Band`: own delays, own
        reduction); several bands are fitted with banded ridge and partitioned.
    Y : array, shape (n_tr, n_targets)
        Brain time courses (voxels, vertices or ROIs) on the same grid.
    runs : array of int, shape (n_tr,), optional
        Run / story of each TR (contiguous blocks). None: one run, and the outer CV uses
        ``n_blocks`` contiguous blocks of time.
    delays : sequence of int or None
        FIR delays in TRs (>= 0) of bands that do not set their own (never across runs;
        :data:`brainalign.timecourse.DEFAULT_DELAYS`). None: no delays (X is already
        delayed or HRF-convolved). Bands marked ``hrf_convolved`` get none.
    alphas : sequence of float
        Ridge penalty grid (one alpha per target is chosen from it; extended when more
        than 5 % of targets pick an edge).
    preprocessing : scikit-learn transformer, optional
        For a single unnamed X: applied after cleaning, fitted on the training rows of
        each outer fold only (e.g. ``PCA(20)``); ``coef`` is then in its output space.
    standardize : bool
        z-score every feature column (after reduction, before delays) with the training
        rows' mean and standard deviation, so that one alpha grid suits any scale.
    clean : bool or Cleaning
        Clean targets and features alike inside each fold (fitted on its training rows):
        each run's mean, a linear trend, cosine drifts below 1/128 Hz (when ``tr_s`` is
        given), ``confounds``, then z-scoring. ``False`` turns it off.
    tr_s : float, optional
        Repetition time in seconds (needed by the high-pass filter of the cleaning).
    confounds : array, shape (n_tr, n_confounds), optional
        Nuisance regressors (motion...) removed from targets and features within runs.
    sample_mask : array of int or bool, optional
        The volumes kept (indices, as nilearn's ``load_confounds`` returns, or a boolean
        mask of length n_tr); the others are scrubbed: left out of every model fit, score,
        nuisance fit and permutation surrogate, for features and targets alike (what
        the targets hold there, NaN included, changes nothing). The features keep their FIR
        delays on the acquisition grid (a kept volume's delayed features may come from a
        scrubbed one, whose stimulus is not corrupted). Their predictions are NaN.
    outer_groups : array of int, shape (n_tr,), optional
        Label of each TR for the outer split (e.g. its story: leave one story out); runs
        must nest in the groups. Default: the runs.
    partition : bool
        With several bands: fit each band alone and the model without each band, and
        test each band's unique r.
    n_band_shifts : int
        Circular shifts of a band in the null of its unique r (0: no test).
    min_shift_tr : int
        Smallest such shift from either end of a run, in TRs.
    n_iter : int
        Band-weight candidates of banded ridge's random search.
    n_inner_splits : int
        Inner folds for hyperparameter selection.
    n_blocks : int
        Outer contiguous blocks when there is a single run.
    n_perm : int
        Permutations for the null of ``r`` (0 skips the test; p-values are NaN).
    null : {"mirror", "circular", "block"}
        How surrogates reorder time (see :func:`brainalign.encoding.stats.null_indices`).
        ``"mirror"`` (reversed and shifted inside each run) is the one calibrated on
        autocorrelated and real resting-state noise; ``"block"`` (the default before
        2026-11-28) gives up to 12 % of p < .05 on pure noise.
    null_scope : {"refit", "predictions"}
        ``"refit"`` (default): the data are shuffled and every outer fold's ridge map is
        re-applied at the chosen hyperparameters (:mod:`brainalign.encoding.null`), which
        keeps the coupling between CV folds and is calibrated. ``"predictions"``: the
        held-out predictions are shuffled within each fold; faster but liberal for CV
        scores (about 11 % of pure-noise targets under p = .05 in our tests).
    block_tr : int
        Block length / minimum shift of the ``"block"`` / ``"circular"`` null, in TRs.
    fdr_alpha : float
        FDR level passed to MNE (the adjusted p-values do not depend on it).
    noise_ceiling : array, shape (n_targets,), optional
        Attached to the result (see :mod:`brainalign.encoding.ceiling`).
    solver, backend, dtype
        Passed to the ridge models.
    random_state : int or None
        Seed of the nulls and of banded ridge's weight candidates.
    provenance : dict, optional
        Extra fields for the result's provenance (model, site, features...).

    Returns
    -------
    EncodingResult
    """
    Y = np.asarray(Y)
    if not np.issubdtype(Y.dtype, np.floating):
        Y = Y.astype(np.float64)  # float32 whole brains stay float32 (no 2x copy)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] == 0:
        raise ValueError(f"Y must be (n_tr, n_targets) with at least one TR; got shape {Y.shape}")
    n_tr, n_targets = Y.shape
    if delays is not None:
        check_fir_delays(delays, "delays")
    bands = resolve_bands(X, n_tr, delays, preprocessing)
    runs = check_runs(runs, n_tr)
    for name, value, low in (("n_perm", n_perm, 0), ("n_band_shifts", n_band_shifts, 0),
                             ("block_tr", block_tr, 1), ("min_shift_tr", min_shift_tr, 1),
                             ("n_iter", n_iter, 1), ("n_inner_splits", n_inner_splits, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if null not in NULL_METHODS:
        raise ValueError(f"null must be one of {NULL_METHODS}, got {null!r}")
    if null_scope not in ("refit", "predictions"):
        raise ValueError(f"null_scope must be 'refit' or 'predictions', got {null_scope!r}")
    cleaning = resolve_cleaning(clean, tr_s)
    kept, censored = _kept_rows(sample_mask, n_tr)
    valid = valid_target_mask(Y[kept])
    if not valid.any():
        raise ValueError("every target is constant or contains NaN; nothing to fit")
    if noise_ceiling is not None:
        noise_ceiling = np.asarray(noise_ceiling, dtype=np.float64)
        if noise_ceiling.shape != (n_targets,):
            raise ValueError(f"noise_ceiling must have shape ({n_targets},), got {noise_ceiling.shape}")
    if not valid.all():
        logger.warning("%d of %d targets are constant or contain NaN: excluded from the fit",
                       int((~valid).sum()), n_targets)
    Yv = Y[:, valid]
    n_valid = Yv.shape[1]
    models = _Models(alphas, n_iter, solver, n_inner_splits, backend, dtype, random_state)
    names = [band.name for band in bands]
    do_partition = partition and len(bands) >= 2
    shifts = (null_indices(runs, n_band_shifts, "circular", min_shift_tr, random_state)
              if do_partition and n_band_shifts > 0 else None)

    splits, outer_scheme = outer_splits(runs, n_blocks=n_blocks, groups=outer_groups)
    n_folds = len(splits)
    fold_of_tr = np.empty(n_tr, dtype=int)
    prediction = np.full(Yv.shape, np.nan)
    held_out = np.full(Yv.shape, np.nan)      # each fold's cleaned test rows
    operators, extensions = [], []
    r_folds = np.full((n_folds, n_targets), np.nan)
    r2_folds = np.full((n_folds, n_targets), np.nan)
    scored = np.zeros((n_folds, n_valid), dtype=bool)   # folds whose test data are not flat
    alphas_folds = np.full((n_folds, n_targets), np.nan)
    scores = {key: np.zeros((len(bands), n_valid)) for key in PARTITION_SCORES}
    shift_r = (np.zeros((len(bands), n_band_shifts + 1, n_valid)) if shifts is not None
               else None)
    for i, split in enumerate(splits):
        logger.info("outer fold %d/%d: testing on group %s (%d TRs)", i + 1, n_folds,
                    split.test_groups, len(split.test))
        cleaner = (None if cleaning is None else
                   FoldCleaner(cleaning, runs, split.train, tr_s, confounds, censored))
        train, test = _uncensored(split.train, censored), _uncensored(split.test, censored)
        if cleaner is None:
            Yc = Yv
            scored[i] = ~_flat_columns(Yv[test], Yv[test])
        else:
            residuals = cleaner.remove_nuisance(Yv)
            scored[i] = ~_flat_columns(residuals[test], Yv[test])
            Yc = cleaner.rescale(residuals).astype(Yv.dtype, copy=False)
        values = [fold_band_values(band, i, train, cleaner, standardize, split.train)
                  for band in bands]
        design, layout = band_design(values, bands, runs)
        fold_model = models.fit(design[train], layout, Yc[train], runs[train])
        extensions.append(fold_model.grid_extensions_)
        alphas_folds[i, valid] = fold_model.alphas_
        prediction[test] = fold_model.predict(design[test])
        held_out[test] = Yc[test]
        flat = np.flatnonzero(~scored[i])
        # a flat column's residue is rounding noise: held at its mean, it scores 0 in the
        # fold-wise statistic of the predictions null, as it is left out of r here
        held_out[np.ix_(test, flat)] = Yc[np.ix_(test, flat)].mean(0)
        r_folds[i, valid], r2_folds[i, valid] = _fold_scores(Yc[test], prediction[test],
                                                             scored[i])
        fold_of_tr[test] = i
        if n_perm > 0 and null_scope == "refit":
            matrix = None if cleaner is None else cleaner.matrix()
            if len(bands) == 1:
                operators.append(FoldOperator.from_design(design, train, test, fold_model.alphas_,
                                                          matrix, scored[i]))
            else:
                centred = design - design[train].mean(0)
                kernels = np.stack([centred[:, a:b] @ centred[:, a:b].T
                                    for a, b in (band["columns"] for band in layout)])
                operators.append(FoldOperator.from_band_kernels(kernels, train, test,
                                                                np.exp(fold_model.deltas_), matrix,
                                                                scored[i]))
        if do_partition:
            _partition_fold(scores, shift_r, models, fold_model, bands, values, layout, design,
                            Yc, runs, train, test, shifts, scored[i])

    n_flat = int((~scored.all(0)).sum())
    if n_flat:
        logger.warning("%d of %d targets are flat in some outer test fold (constant there, "
                       "e.g. signal dropout): those folds do not score them", n_flat, n_valid)
    r = np.full(n_targets, np.nan)
    r[valid] = _mean_over_scored(r_folds[:, valid], scored)
    r_concat = np.full(n_targets, np.nan)
    r_concat[valid] = pearson_r(held_out[kept], prediction[kept])
    r2 = np.full(n_targets, np.nan)
    r2[valid] = _mean_over_scored(r2_folds[:, valid], scored)
    p_values = np.full(n_targets, np.nan)
    p_method = None
    if n_perm > 0 and null_scope == "refit":
        surrogate_base = Yv if cleaning is None else FoldCleaner(
            cleaning, runs, np.arange(n_tr), tr_s, confounds, censored).remove_nuisance(Yv)
        tested, _ = refit_null_test(surrogate_base, operators, runs, n_perm=n_perm, method=null,
                                    block_tr=block_tr, random_state=random_state, kept=kept)
        p_values[valid] = tested.p_values
        p_method = tested.describe()
    elif n_perm > 0:
        order = kept[np.argsort(fold_of_tr[kept], kind="stable")]  # folds as consecutive rows
        tested = permutation_test(held_out[order], prediction[order], groups=fold_of_tr[order],
                                  n_perm=n_perm, method=null, block_tr=block_tr,
                                  random_state=random_state)
        p_values[valid] = np.where(scored.any(0), tested, np.nan)   # no fold scores: no test
    _, p_fdr = fdr(p_values, alpha=fdr_alpha)

    logger.info("final fit on all %d kept TRs", len(kept))
    cleaner = None if cleaning is None else FoldCleaner(cleaning, runs, np.arange(n_tr), tr_s,
                                                        confounds, censored)
    Yc = Yv if cleaner is None else cleaner.apply(Yv).astype(Yv.dtype, copy=False)
    values = [fold_band_values(band, None, kept, cleaner, standardize) for band in bands]
    design, layout = band_design(values, bands, runs)
    final = models.fit(design[kept], layout, Yc[kept], runs[kept])
    extensions.append(final.grid_extensions_)

    coef = np.zeros((design.shape[1], n_targets), dtype=np.float64)
    coef[:, valid] = final.coef_
    intercept = np.zeros(n_targets)
    intercept[valid] = final.intercept_
    final_alphas = np.full(n_targets, np.nan)
    final_alphas[valid] = final.alphas_
    deltas = None
    if len(bands) > 1:
        deltas = np.full((len(bands), n_targets), np.nan)
        deltas[:, valid] = final.deltas_
    predictions = np.full((n_tr, n_targets), np.nan, dtype=np.float32)
    predictions[:, valid] = prediction

    partition_result, unique_method = None, None
    if do_partition:
        partition_result = {"bands": names}
        n_scored = scored.sum(0)
        for key, values_ in scores.items():
            full = np.full((len(bands), n_targets), np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                full[:, valid] = values_ / n_scored
            partition_result[key] = full
        p_unique = np.full((len(bands), n_targets), np.nan)
        if shift_r is not None:
            # the full model with the band in place against it with the band shifted
            with np.errstate(invalid="ignore", divide="ignore"):
                shift_r /= n_scored
            tested = permutation_p_values(shift_r[:, 0] - 1e-12, shift_r[:, 1:].transpose(1, 0, 2))
            p_unique[:, valid] = tested.p_values
            unique_method = tested.describe()
        partition_result["p_unique"] = p_unique
        partition_result["p_unique_fdr"] = np.vstack([fdr(p, alpha=fdr_alpha)[1] for p in p_unique])

    config = dict(outer=outer_scheme, n_outer_folds=n_folds,
                  outer_test_groups=[list(s.test_groups) for s in splits],
                  inner=getattr(final, "inner_cv_", None), n_inner_splits=n_inner_splits,
                  alphas_grid=[float(a) for a in alphas],
                  alphas_grid_final=[float(a) for a in final.alphas_grid_],
                  grid_extensions={"folds": extensions[:-1], "final": extensions[-1]},
                  null=null if n_perm > 0 else None, n_perm=n_perm, p_values=p_method,
                  null_scope=null_scope if n_perm > 0 else None,
                  block_tr=block_tr if n_perm > 0 and null != "mirror" else None,
                  fdr="benjamini-hochberg (mne.stats.fdr_correction)",
                  bands=[band.describe() for band in bands],
                  model="ridge (himalaya)" if len(bands) == 1 else
                  f"banded ridge (himalaya, random search over {n_iter} band weights)",
                  cleaning=None if cleaning is None else dict(cleaning.describe(), tr_s=tr_s,
                                                              confounds=None if confounds is None
                                                              else int(np.shape(confounds)[1] if np.ndim(confounds) == 2 else 1),
                                                              fitted="on each outer fold's training rows; a held-out run on its own rows"),
                  scrubbed_volumes=censored.tolist(),
                  standardize=standardize,
                  partition=None if not do_partition else dict(
                      unique="r(full) - r(without the band), mean over outer folds",
                      null=f"{n_band_shifts} circular shifts of the band inside runs (at least "
                           f"{min_shift_tr} TRs), other bands and hyperparameters fixed",
                      fdr="over targets, per band", p_values=unique_method,
                      split_r2="himalaya r2_score_split on test-fold-centred data and band "
                      "predictions"),
                  backend=getattr(final, "backend_", None), dtype=dtype,
                  r="mean over outer folds of the held-out Pearson r (the headline score)",
                  r_concat="Pearson r of the held-out predictions concatenated over folds",
                  r2="mean over outer folds of the held-out 1 - SS_res/SS_tot",
                  flat_folds=f"a fold where a target's held-out data are flat (std after "
                  f"nuisance removal <= {FLAT_TOLERANCE:g} x the root mean square of the raw "
                  "values) does not score it; r, r2, partition scores and nulls average the "
                  "other folds")
    extra = dict(provenance or {})
    return EncodingResult(
        r=r, r2=r2, alphas=final_alphas, coef=coef, intercept=intercept, p_values=p_values,
        p_fdr=p_fdr, solver=final.solver_, cv=config, valid_targets=valid,
        noise_ceiling=noise_ceiling, r_folds=r_folds, delays=_legacy_delays(bands),
        bands=layout, r_concat=r_concat, predictions=predictions, alphas_folds=alphas_folds,
        deltas=deltas, partition=partition_result,
        provenance=provenance_block(stage="encoding", config_hash=config_hash(config),
                                    n_tr=n_tr, n_features=int(sum(b["n_features"] for b in layout)),
                                    n_targets=n_targets, n_invalid_targets=int((~valid).sum()),
                                    random_state=random_state, **extra))


def _kept_rows(sample_mask, n_tr: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, scrubbed) row indices from a sample mask (indices or booleans; None: all)."""
    if sample_mask is None:
        return np.arange(n_tr), np.array([], dtype=int)
    mask = np.asarray(sample_mask)
    if mask.dtype == bool:
        if mask.shape != (n_tr,):
            raise ValueError(f"a boolean sample_mask needs one entry per TR ({n_tr}), got "
                             f"shape {mask.shape}")
        keep = mask
    else:
        if mask.ndim != 1 or not np.issubdtype(mask.dtype, np.integer) or (
                mask.size and (mask.min() < 0 or mask.max() >= n_tr)):
            raise ValueError(f"sample_mask must hold indices of kept TRs in [0, {n_tr}) or "
                             f"{n_tr} booleans, got {mask.tolist()[:10]}...")
        keep = np.zeros(n_tr, dtype=bool)
        keep[mask] = True
    if keep.sum() < 2:
        raise ValueError(f"sample_mask keeps {int(keep.sum())} of {n_tr} TRs; nothing to fit")
    return np.flatnonzero(keep), np.flatnonzero(~keep)


def _flat_columns(residuals: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """True for columns that are flat over these rows: the standard deviation of
    ``residuals`` (the values after nuisance removal, or the raw values themselves) is at
    most :data:`FLAT_TOLERANCE` times the root mean square of the ``raw`` values."""
    spread = np.std(residuals, axis=0, dtype=np.float64)
    magnitude = np.sqrt(np.mean(np.square(raw, dtype=np.float64), axis=0))
    return spread <= FLAT_TOLERANCE * magnitude


def _fold_scores(data: np.ndarray, prediction: np.ndarray, scored: np.ndarray):
    """Held-out Pearson r and R^2 of one fold per target: NaN where the fold does not score
    the target (``scored`` False), r = 0 where the prediction is constant (it explains
    nothing; the refit null counts it so too)."""
    r = np.nan_to_num(pearson_r(data, prediction), nan=0.0)
    r2 = r2_score(data, prediction)
    return np.where(scored, r, np.nan), np.where(scored, r2, np.nan)


def _mean_over_scored(values: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Mean over folds (axis 0) of the folds that score each target (NaN where none does)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scored, values, 0.0).sum(0) / scored.sum(0)


def _uncensored(rows: np.ndarray, censored: np.ndarray) -> np.ndarray:
    return rows if not len(censored) else rows[~np.isin(rows, censored)]


def _legacy_delays(bands) -> list | None:
    """``EncodingResult.delays``: the delays when every band shares them (else None)."""
    delays = {tuple(band.delays) for band in bands}
    if len(delays) != 1:
        return None
    only = list(next(iter(delays)))
    return only or None


def _partition_fold(scores, shift_r, models, fold_model, bands, values, layout, design, Yc,
                    runs, train, test, shifts, scored) -> None:
    """Add one fold's terms of every partition score (and of the shift null) in place: sums
    over the folds that score each target (``scored``), divided by their number later."""
    names = [band.name for band in bands]

    def fold_scores(prediction):
        return tuple(np.nan_to_num(s) for s in _fold_scores(Yc[test], prediction, scored))

    full = fold_model.predict(design[test])
    r_full, r2_full = fold_scores(full)
    with np.errstate(invalid="ignore", divide="ignore"):     # flat targets: not scored
        split = _split_r2(fold_model, design[test], Yc[test])
    scores["r2_split"] += np.where(scored, split, 0.0)
    alone = {}
    for k, name in enumerate(names):
        columns, sub_layout = _columns(layout, [name])
        model = models.fit(design[np.ix_(train, columns)], sub_layout, Yc[train], runs[train])
        alone[name] = model.predict(design[np.ix_(test, columns)])
        r_alone, r2_alone = fold_scores(alone[name])
        scores["r_alone"][k] += r_alone
        scores["r2_alone"][k] += r2_alone
    for k, name in enumerate(names):
        rest = [other for other in names if other != name]
        if len(rest) == 1:
            without = alone[rest[0]]
        else:
            columns, sub_layout = _columns(layout, rest)
            model = models.fit(design[np.ix_(train, columns)], sub_layout, Yc[train], runs[train])
            without = model.predict(design[np.ix_(test, columns)])
        r_without, r2_without = fold_scores(without)
        scores["r_without"][k] += r_without
        scores["r2_without"][k] += r2_without
        scores["r_unique"][k] += r_full - r_without
        scores["r2_unique"][k] += r2_full - r2_without
    if shift_r is None:
        return
    orders = np.vstack([np.arange(len(runs))[None], shifts])
    for k, name in enumerate(names):
        logger.info("unique-r null of band %r: %d shifts", name, len(shifts))
        shifted = band_shift_null(values, [b.delays for b in bands], runs, train, test, Yc,
                                  np.exp(fold_model.deltas_), k, orders)
        shift_r[k] += np.where(scored, shifted, 0.0)
