"""BandedEncodingModel: ridge with one penalty per feature band, solved by himalaya.

When a model holds several feature sets (bands) of different size and relevance, e.g.
word rate (1 column), the 12 published predictors of a study and thousands of language
model features, one ridge penalty for all of them lets the large band drown the small
ones. Banded ridge (Nunez-Elizalde, Huth & Gallant 2019, NeuroImage 197:482; Dupre la
Tour et al. 2022, NeuroImage 264:119728) gives every band its own scaling: the design is
``Z_b = exp(delta_b / 2) X_b`` and the fit minimises ``||Z b - y||^2 + ||b||^2`` per
target, with the log band weights ``delta`` chosen by inner cross-validation (random
search over weights on the simplex x the alpha grid). The solvers are himalaya's:

* primal, :class:`himalaya.ridge.BandedRidgeCV`, when the training set has at least as
  many time points as design columns;
* dual, :class:`himalaya.kernel_ridge.MultipleKernelRidgeCV` on one precomputed linear
  kernel per band, when columns outnumber time points (a band of every neuron of a model).

Both search the same weight candidates (same ``n_iter``, ``concentration`` and
``random_state``), so they return the same model; the cheaper one is chosen from the
shapes. The data are centred on the training rows here and solved without intercept, so
that himalaya's per-band split of the predictions is available (it refuses an intercept);
``predict(X, split=True)`` returns each band's part. An alpha at the edge of the grid for
more than 5 % of targets extends the grid, as in :class:`~brainalign.encoding.EncodingModel`.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from brainalign.timecourse.runs import check_runs

from .backend import choose_backend, himalaya_backend
from .cv import inner_splits
from .ridge import DEFAULT_ALPHAS, SOLVERS, choose_solver, fit_with_grid_extension

logger = logging.getLogger(__name__)

#: Band-weight candidates of the random search (himalaya's default is 100; 32 keeps
#: whole-brain fits affordable on a CPU and covers two or three bands well).
DEFAULT_N_ITER = 32


class BandedEncodingModel(RegressorMixin, BaseEstimator):
    """Banded ridge with per-target band weights and alpha chosen by run-grouped inner CV.

    Parameters
    ----------
    band_sizes : sequence of int
        Number of design columns of each band; the columns of ``X`` are the bands one
        after another in this order.
    alphas : sequence of float
        Ridge penalty grid (``delta_b = log(gamma_b / alpha)``, gamma on the simplex).
    n_iter : int
        Band-weight candidates of the random search (the first is equal weights).
    concentration : float or list of float
        Dirichlet concentration(s) of the weight candidates (himalaya's default).
    solver : {"auto", "primal", "kernel"}
        ``"auto"``: primal when ``n_samples >= n_columns``, else the kernel form.
    n_inner_splits : int
        Inner folds (whole runs held out together; contiguous blocks for one run).
    backend : {"auto", "numpy", "torch", "torch_cuda"}
    dtype : {"float32", "float64"}
    random_state : int or None
        Seed of the weight candidates.
    extend_grid : bool
        Extend the alpha grid past an edge chosen for more than 5 % of targets.

    Attributes
    ----------
    coef_ : ndarray, shape (n_columns, n_targets)
        Primal coefficients on the unscaled design columns.
    intercept_ : ndarray, shape (n_targets,)
    deltas_ : ndarray, shape (n_bands, n_targets)
        Log band weights (alpha included, himalaya's convention).
    alphas_ : ndarray, shape (n_targets,)
        Chosen alpha per target (``1 / sum(exp(deltas))``).
    band_weights_ : ndarray, shape (n_bands, n_targets)
        ``gamma_b``: the share of each band in the penalty (columns sum to 1).
    x_mean_, y_mean_ : ndarray
        Training means removed before the solve.
    solver_, backend_, inner_cv_ : str
    alphas_grid_ : ndarray
    grid_extensions_ : list of dict
    n_features_in_ : int
    """

    def __init__(self, band_sizes: Sequence[int] = (1,), alphas=DEFAULT_ALPHAS,
                 n_iter: int = DEFAULT_N_ITER, concentration=(0.1, 1.0), solver: str = "auto",
                 n_inner_splits: int = 5, backend: str = "auto", dtype: str = "float32",
                 random_state: int | None = 0, extend_grid: bool = True):
        self.band_sizes = band_sizes
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.solver = solver
        self.n_inner_splits = n_inner_splits
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.extend_grid = extend_grid

    def _band_slices(self) -> list[slice]:
        sizes = [int(n) for n in self.band_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"band_sizes must be positive column counts, got {self.band_sizes!r}")
        edges = np.concatenate([[0], np.cumsum(sizes)])
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def fit(self, X, Y, runs=None) -> "BandedEncodingModel":
        """Fit on training data.

        Parameters
        ----------
        X : array, shape (n_samples, n_columns)
            The bands' design columns side by side (delayed already).
        Y : array, shape (n_samples, n_targets)
            Valid (finite, non-constant) targets.
        runs : array of int, shape (n_samples,), optional
            Run of each sample; groups the inner folds.

        Returns
        -------
        self
        """
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        slices = self._band_slices()
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        if X.ndim != 2 or X.shape[1] != slices[-1].stop:
            raise ValueError(f"X must be (n_samples, {slices[-1].stop}) for bands of "
                             f"{list(self.band_sizes)} columns, got shape {X.shape}")
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} time points but Y has {Y.shape[0]}")
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise ValueError("X and Y must be finite")
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or (alphas <= 0).any():
            raise ValueError(f"alphas must be a non-empty 1-D sequence of positive values, got {self.alphas!r}")
        n_samples, n_columns = X.shape
        runs = check_runs(runs, n_samples)
        splits, self.inner_cv_ = inner_splits(runs, self.n_inner_splits)
        self.solver_ = choose_solver(n_samples, n_columns) if self.solver == "auto" else self.solver
        self.backend_ = choose_backend(self.backend)
        self.x_mean_, self.y_mean_ = X.mean(0), Y.mean(0)
        Xc = (X - self.x_mean_).astype(self.dtype)
        Yc = (Y - self.y_mean_).astype(self.dtype)
        blocks = [Xc[:, part] for part in slices]

        with himalaya_backend(self.backend_) as hb:
            kernels = None
            if self.solver_ == "kernel":
                kernels = hb.stack([hb.matmul(hb.asarray(b), hb.asarray(b).T) for b in blocks])

            def fit_once(grid):
                solver_params = dict(n_iter=int(self.n_iter), alphas=grid.astype(self.dtype),
                                     concentration=self.concentration, progress_bar=False)
                if self.solver_ == "primal":
                    from himalaya.ridge import BandedRidgeCV

                    model = BandedRidgeCV(groups="input", solver_params=dict(solver_params, warn=False),
                                          fit_intercept=False, cv=splits,
                                          random_state=self.random_state)
                    model.fit([hb.asarray(b) for b in blocks], hb.asarray(Yc))
                else:
                    from himalaya.kernel_ridge import MultipleKernelRidgeCV

                    model = MultipleKernelRidgeCV(kernels="precomputed", solver_params=solver_params,
                                                  fit_intercept=False, cv=splits,
                                                  random_state=self.random_state)
                    model.fit(kernels, hb.asarray(Yc))
                log_chosen = np.log(np.asarray(hb.to_numpy(model.best_alphas_), dtype=np.float64))
                nearest = np.abs(log_chosen[:, None] - np.log(grid)[None, :]).argmin(1)
                return model, grid[nearest]

            if self.extend_grid:
                model, chosen, grid, self.grid_extensions_ = fit_with_grid_extension(
                    fit_once, alphas, "BandedEncodingModel")
            else:
                (model, chosen), grid, self.grid_extensions_ = fit_once(alphas), alphas, []
            self.alphas_grid_ = np.asarray(grid, dtype=np.float64)
            self.deltas_ = np.asarray(hb.to_numpy(model.deltas_), dtype=np.float64)
            if self.solver_ == "primal":
                coef = hb.to_numpy(model.coef_)
            else:
                coef = np.concatenate([hb.to_numpy(c) for c in
                                       model.get_primal_coef([hb.asarray(b) for b in blocks])])
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.alphas_ = np.asarray(chosen, dtype=np.float64)
        weights = np.exp(self.deltas_)
        self.band_weights_ = weights / weights.sum(0, keepdims=True)
        self.intercept_ = self.y_mean_ - self.x_mean_ @ self.coef_
        self.n_features_in_ = n_columns
        return self

    def predict(self, X, split: bool = False) -> np.ndarray:
        """Predictions, shape (n_samples, n_targets); with ``split``, each band's part
        (without intercept), shape (n_bands, n_samples, n_targets)."""
        check_is_fitted(self, "coef_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must be (n_samples, {self.n_features_in_}), got shape {X.shape}")
        Xc = X - self.x_mean_
        if split:
            return np.stack([Xc[:, part] @ self.coef_[part] for part in self._band_slices()])
        return Xc @ self.coef_ + self.y_mean_
