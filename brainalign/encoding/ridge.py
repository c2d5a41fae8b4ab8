"""EncodingModel: cross-validated ridge with one alpha per target, solved by himalaya.

For each target (voxel, vertex, ROI) ridge regression predicts its time course from
features; the regularisation alpha is chosen per target by an inner cross-validation
grouped by run (:mod:`brainalign.encoding.cv`). The heavy lifting is himalaya's:

* primal form, :class:`himalaya.ridge.RidgeCV` (an SVD of the features), when the
  training set has at least as many time points as features;
* kernel form, :class:`himalaya.kernel_ridge.KernelRidgeCV` with a linear kernel (an
  eigendecomposition of the n_samples x n_samples Gram matrix) when features outnumber
  time points.

Both give the same solution; the cheaper one is chosen from the shapes and recorded in
``solver_``. The primal coefficients are always returned (for the kernel form they are
``X_fit.T @ dual_coef``). Targets that are constant or contain NaN are excluded from the
fit and reported in ``valid_targets_`` (their coefficients are zero, their alpha NaN).
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .backend import (GPU_MEMORY_FRACTION, choose_backend, free_device_bytes,
                      himalaya_backend, target_batch_size)
from brainalign.timecourse.runs import check_runs

from .cv import inner_splits

logger = logging.getLogger(__name__)

#: Default alpha grid: 20 values, log-spaced from 1e-1 to 1e7, wide enough for
#: z-scored features with a few hundred to a few thousand time points.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 7, 20))

SOLVERS = ("auto", "primal", "kernel")


def valid_target_mask(Y: np.ndarray) -> np.ndarray:
    """True for targets that are finite everywhere and not constant over time.

    Parameters
    ----------
    Y : ndarray, shape (n_samples, n_targets)

    Returns
    -------
    valid : ndarray of bool, shape (n_targets,)
    """
    Y = np.asarray(Y)
    finite = np.isfinite(Y).all(axis=0)
    spread = np.zeros(Y.shape[1], dtype=bool)
    if finite.any():
        spread[finite] = np.ptp(Y[:, finite], axis=0) > 0
    return finite & spread


def _valid_target_mask_on_backend(Y) -> np.ndarray:
    """:func:`valid_target_mask` for a numpy array or a torch tensor (computed where Y lives)."""
    if isinstance(Y, np.ndarray):
        return valid_target_mask(Y)
    import torch

    finite = torch.isfinite(Y).all(0)
    spread = (Y.amax(0) - Y.amin(0)) > 0  # NaN compares False
    return (finite & spread).cpu().numpy()


def choose_solver(n_samples: int, n_features: int) -> str:
    """``"primal"`` when n_samples >= n_features, else ``"kernel"`` (the cheaper solve)."""
    return "primal" if n_samples >= n_features else "kernel"


def _as_2d_float(name: str, array, dtype) -> np.ndarray:
    array = np.asarray(array, dtype=dtype)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_{'features' if name == 'X' else 'targets'}); "
                         f"got shape {array.shape}")
    return array


class EncodingModel(RegressorMixin, BaseEstimator):
    """Ridge encoding model with a per-target alpha chosen by run-grouped inner CV.

    Parameters
    ----------
    alphas : sequence of float
        Grid of ridge penalties searched for every target.
    solver : {"auto", "primal", "kernel"}
        ``"auto"`` picks from the training shapes (see :func:`choose_solver`).
    n_inner_splits : int
        Number of inner folds (whole runs are held out together; contiguous blocks of
        time when the training data hold a single run).
    fit_intercept : bool
        Fit an intercept per target (features and targets need not be centred).
    backend : {"auto", "numpy", "torch", "torch_cuda"}
        himalaya backend (see :mod:`brainalign.encoding.backend`).
    n_targets_batch : int or "auto"
        Targets solved at once; ``"auto"`` sizes it from free GPU memory, or from a
        1 GiB budget on CPU.
    dtype : {"float32", "float64"}
        Precision of the solve.

    Attributes
    ----------
    coef_ : ndarray, shape (n_features, n_targets)
        Primal ridge coefficients (zero for invalid targets).
    intercept_ : ndarray, shape (n_targets,)
    alphas_ : ndarray, shape (n_targets,)
        Chosen alpha per target (NaN for invalid targets).
    inner_cv_scores_ : ndarray, shape (n_targets,)
        Mean inner-CV negative mean squared error at the chosen alpha.
    valid_targets_ : ndarray of bool, shape (n_targets,)
    solver_ : str
        ``"primal"`` or ``"kernel"``.
    backend_ : str
        himalaya backend used.
    n_targets_batch_ : int
    targets_on_cpu_ : bool
        True when Y was too large for the GPU and stayed in host memory.
    inner_cv_ : str
        Description of the inner splits.
    n_features_in_ : int
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, solver: str = "auto", n_inner_splits: int = 5,
                 fit_intercept: bool = True, backend: str = "auto",
                 n_targets_batch="auto", dtype: str = "float32"):
        self.alphas = alphas
        self.solver = solver
        self.n_inner_splits = n_inner_splits
        self.fit_intercept = fit_intercept
        self.backend = backend
        self.n_targets_batch = n_targets_batch
        self.dtype = dtype

    def fit(self, X, Y, runs=None) -> "EncodingModel":
        """Fit on training data.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)
            Features on the fMRI time grid (already delayed if delays are wanted).
        Y : array, shape (n_samples, n_targets) or (n_samples,)
            Brain time courses.
        runs : array of int, shape (n_samples,), optional
            Run of each time point, used to group the inner folds.

        Returns
        -------
        self
        """
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        X = _as_2d_float("X", X, self.dtype)
        Y = np.asarray(Y)
        if Y.ndim == 1:
            Y = Y[:, None]
        Y = _as_2d_float("Y", Y, self.dtype)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} time points but Y has {Y.shape[0]}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values")
        n_samples, n_features = X.shape
        n_targets = Y.shape[1]
        runs = check_runs(runs, n_samples)
        alphas = np.asarray(self.alphas, dtype=self.dtype)
        if alphas.ndim != 1 or alphas.size == 0 or (alphas <= 0).any():
            raise ValueError(f"alphas must be a non-empty 1-D sequence of positive values, got {self.alphas!r}")

        self.solver_ = choose_solver(n_samples, n_features) if self.solver == "auto" else self.solver
        self.backend_ = choose_backend(self.backend)
        itemsize = np.dtype(self.dtype).itemsize
        if self.n_targets_batch == "auto":
            self.n_targets_batch_ = target_batch_size(n_targets, n_samples, n_features, len(alphas),
                                                      self.solver_, self.backend_, itemsize)
        else:
            self.n_targets_batch_ = int(self.n_targets_batch)
        free = free_device_bytes(self.backend_)
        self.targets_on_cpu_ = bool(free is not None and
                                    n_samples * n_targets * itemsize > GPU_MEMORY_FRACTION * free)
        splits, self.inner_cv_ = inner_splits(runs, self.n_inner_splits)
        solver_params = dict(n_targets_batch=self.n_targets_batch_,
                             n_targets_batch_refit=self.n_targets_batch_)

        with himalaya_backend(self.backend_) as hb:
            # move the targets to the device once; check them there (fast on whole brains)
            Y_device = Y if (self.backend_ == "numpy" or self.targets_on_cpu_) else hb.asarray(Y)
            valid = _valid_target_mask_on_backend(Y_device)
            if not valid.all():
                logger.warning("%d of %d targets are constant or contain NaN: excluded from the fit",
                               int((~valid).sum()), n_targets)
            if not valid.any():
                raise ValueError("every target is constant or contains NaN; nothing to fit")
            # no copy of a whole brain when every target is valid
            Y_valid = Y_device if valid.all() else Y_device[:, hb.asarray(np.flatnonzero(valid))]
            if self.solver_ == "primal":
                from himalaya.ridge import RidgeCV

                solver_params["warn"] = False
                model = RidgeCV(alphas=alphas, fit_intercept=self.fit_intercept, cv=splits,
                                solver_params=solver_params, Y_in_cpu=self.targets_on_cpu_)
                model.fit(X, Y_valid)
                coef = model.coef_
            else:
                from himalaya.kernel_ridge import KernelRidgeCV

                model = KernelRidgeCV(alphas=alphas, kernel="linear", fit_intercept=self.fit_intercept,
                                      cv=splits, solver_params=solver_params,
                                      Y_in_cpu=self.targets_on_cpu_, warn=False)
                model.fit(X, Y_valid)
                coef = model.get_primal_coef()
            self.coef_ = np.zeros((n_features, n_targets), dtype=self.dtype)
            self.coef_[:, valid] = hb.to_numpy(coef)
            self.intercept_ = np.zeros(n_targets, dtype=self.dtype)
            if self.fit_intercept:
                self.intercept_[valid] = hb.to_numpy(model.intercept_)
            self.alphas_ = np.full(n_targets, np.nan, dtype=self.dtype)
            # himalaya returns exp(-log(alpha)); snap back to the exact grid value
            chosen = np.log(np.asarray(hb.to_numpy(model.best_alphas_), dtype=np.float64))
            nearest = np.abs(chosen[:, None] - np.log(alphas.astype(np.float64))[None, :]).argmin(1)
            self.alphas_[valid] = alphas[nearest]
            self.inner_cv_scores_ = np.full(n_targets, np.nan, dtype=self.dtype)
            self.inner_cv_scores_[valid] = hb.to_numpy(model.cv_scores_)
        self.valid_targets_ = valid
        self.n_features_in_ = n_features
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted time courses, shape (n_samples, n_targets)."""
        check_is_fitted(self, "coef_")
        X = _as_2d_float("X", X, self.dtype)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features; the model was fitted with "
                             f"{self.n_features_in_}")
        with himalaya_backend(self.backend_) as hb:
            prediction = hb.matmul(hb.asarray(X), hb.asarray(self.coef_)) + hb.asarray(self.intercept_)
            return hb.to_numpy(prediction)

    def score(self, X, Y, sample_weight=None) -> float:
        """Mean Pearson r over valid targets between predictions and ``Y``."""
        from .stats import pearson_r

        Y = np.asarray(Y)
        if Y.ndim == 1:
            Y = Y[:, None]
        r = pearson_r(Y[:, self.valid_targets_], self.predict(X)[:, self.valid_targets_])
        return float(np.nanmean(r))
