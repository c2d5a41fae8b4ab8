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
from sklearn.utils.validation import check_is_fitted, validate_data

from .backend import (GPU_MEMORY_FRACTION, choose_backend, free_device_bytes,
                      himalaya_backend, target_batch_size)
from brainalign.timecourse.runs import check_runs

from .cv import inner_splits

logger = logging.getLogger(__name__)

#: Default alpha grid: 20 values, log-spaced from 1e-1 to 1e7, wide enough for
#: z-scored features with a few hundred to a few thousand time points.
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-1, 7, 20))

SOLVERS = ("auto", "primal", "kernel")

#: A grid edge chosen for more than this share of the targets extends the grid.
EDGE_SHARE = 0.05
#: Grid values added beyond an edge per extension (at the grid's own log spacing; at
#: least a factor 100), and the most extensions of one fit.
EDGE_STEPS, MAX_EXTENSIONS = 4, 3


def extended_grid(alphas: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The grid extended beyond any edge chosen for more than :data:`EDGE_SHARE` of targets.

    Parameters
    ----------
    alphas : ndarray, shape (n_alphas,)
        Increasing positive grid.
    chosen : ndarray, shape (n_targets,)
        Alpha chosen per target (NaN for targets not fitted).

    Returns
    -------
    grid : ndarray
        ``alphas`` with :data:`EDGE_STEPS` values added past each crowded edge (the
        same array when no edge is crowded).
    edges : list of str
        ``"upper"`` and/or ``"lower"``: the edges that were extended.
    """
    alphas = np.sort(np.asarray(alphas, dtype=np.float64))
    chosen = np.asarray(chosen, dtype=np.float64)
    chosen = chosen[np.isfinite(chosen)]
    if chosen.size == 0 or len(alphas) < 2:  # one alpha is the user's choice, not a search
        return alphas, []
    log = np.log10(alphas)
    step = max((log[-1] - log[0]) / max(len(log) - 1, 1), 0.5)
    step = max(step, 2.0 / EDGE_STEPS)
    new, edges = [alphas], []
    at_top = np.isclose(chosen, alphas[-1], rtol=1e-4).mean()
    at_bottom = np.isclose(chosen, alphas[0], rtol=1e-4).mean()
    if at_top > EDGE_SHARE:
        new.append(10 ** (log[-1] + step * np.arange(1, EDGE_STEPS + 1)))
        edges.append("upper")
    if at_bottom > EDGE_SHARE:
        new.append(10 ** (log[0] - step * np.arange(1, EDGE_STEPS + 1)))
        edges.append("lower")
    return np.unique(np.concatenate(new)), edges


def fit_with_grid_extension(fit_once, alphas, name: str = "ridge"):
    """Call ``fit_once(grid)`` and refit on an extended grid while an edge is crowded.

    Parameters
    ----------
    fit_once : callable
        ``fit_once(grid) -> (fitted, chosen_alphas)``.
    alphas : sequence of float
        The starting grid.
    name : str
        Used in the log message.

    Returns
    -------
    fitted : whatever ``fit_once`` returns first, for the kept grid
    chosen : ndarray, shape (n_targets,)
    grid : ndarray
        The grid of the kept fit.
    extensions : list of dict
        One ``{"edge", "share", "grid_min", "grid_max"}`` per extension (logged).
    """
    grid = np.sort(np.asarray(alphas, dtype=np.float64))
    fitted, chosen = fit_once(grid)
    extensions = []
    for _ in range(MAX_EXTENSIONS):
        new_grid, edges = extended_grid(grid, chosen)
        if not edges:
            break
        shares = {edge: float(np.isclose(chosen[np.isfinite(chosen)],
                                         grid[-1] if edge == "upper" else grid[0],
                                         rtol=1e-4).mean()) for edge in edges}
        logger.info("%s: the alpha grid's %s edge was chosen for %s of the targets; "
                    "extending the grid to %.3g..%.3g and refitting", name, " and ".join(edges),
                    ", ".join(f"{100 * v:.0f}%" for v in shares.values()), new_grid[0], new_grid[-1])
        extensions.extend({"edge": edge, "share": share, "grid_min": float(new_grid[0]),
                           "grid_max": float(new_grid[-1])} for edge, share in shares.items())
        grid = new_grid
        fitted, chosen = fit_once(grid)
    return fitted, chosen, grid, extensions


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


def _on_all_targets(values, valid: np.ndarray, fill: float, dtype) -> np.ndarray:
    """Per-target ``values`` (last axis over the valid targets) placed on all targets.

    Excluded targets get ``fill``. When every target is valid the values are returned as
    they are (cast to ``dtype``): a masked copy of a whole-brain coefficient matrix costs
    more than the copy back from the GPU.
    """
    values = np.asarray(values, dtype=dtype)
    if valid.all():
        return np.broadcast_to(values, valid.shape).copy() if values.ndim == 0 else values
    out = np.full(values.shape[:-1] + valid.shape if values.ndim else valid.shape, fill,
                  dtype=dtype)
    out[..., valid] = values
    return out


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
    extend_grid : bool
        When the chosen alpha sits at an edge of the grid for more than 5 % of the
        targets, extend the grid past that edge and refit (logged; see
        :func:`fit_with_grid_extension`).

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
    alphas_grid_ : ndarray
        The grid the kept fit searched (``alphas``, extended when an edge was crowded).
    grid_extensions_ : list of dict
        The extensions made (edge, share of targets at it, new grid range).
    n_features_in_ : int
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, solver: str = "auto", n_inner_splits: int = 5,
                 fit_intercept: bool = True, backend: str = "auto",
                 n_targets_batch="auto", dtype: str = "float32", extend_grid: bool = True):
        self.alphas = alphas
        self.solver = solver
        self.n_inner_splits = n_inner_splits
        self.fit_intercept = fit_intercept
        self.backend = backend
        self.n_targets_batch = n_targets_batch
        self.dtype = dtype
        self.extend_grid = extend_grid

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # one target per voxel, vertex or ROI
        return tags

    def _sklearn_expected_failed_checks(self) -> dict[str, str]:
        """scikit-learn estimator checks expected to fail, with the reason (pass it as
        ``expected_failed_checks`` to ``check_estimator``/``parametrize_with_checks``)."""
        if np.dtype(self.dtype) == np.float64:
            return {}
        return {"check_methods_sample_order_invariance": (
            f"predictions are computed in dtype={self.dtype!r} (GPU memory); reordering rows "
            "changes the BLAS blocking and so the float32 rounding (~1e-7 relative), beyond "
            "the check's rtol=1e-7 on float64 output; dtype='float64' passes")}

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
        # X: dense, finite, 2-D; Y: dense, 1-D or 2-D, may hold NaN (such targets are excluded)
        X, Y = validate_data(self, X, Y, validate_separately=(
            dict(accept_sparse=False, dtype=self.dtype),
            dict(accept_sparse=False, dtype=self.dtype, ensure_2d=False, ensure_all_finite=False)))
        self._y_1d = Y.ndim == 1
        if Y.ndim == 1:
            Y = Y[:, None]
        Y = _as_2d_float("Y", Y, self.dtype)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X has {X.shape[0]} time points but Y has {Y.shape[0]}")
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

            def fit_once(grid):
                grid = grid.astype(self.dtype)
                if self.solver_ == "primal":
                    from himalaya.ridge import RidgeCV

                    model = RidgeCV(alphas=grid, fit_intercept=self.fit_intercept, cv=splits,
                                    solver_params=dict(solver_params, warn=False),
                                    Y_in_cpu=self.targets_on_cpu_)
                else:
                    from himalaya.kernel_ridge import KernelRidgeCV

                    model = KernelRidgeCV(alphas=grid, kernel="linear",
                                          fit_intercept=self.fit_intercept, cv=splits,
                                          solver_params=solver_params,
                                          Y_in_cpu=self.targets_on_cpu_, warn=False)
                model.fit(X, Y_valid)
                # himalaya returns exp(-log(alpha)); snap back to the exact grid value
                log_chosen = np.log(np.asarray(hb.to_numpy(model.best_alphas_), dtype=np.float64))
                nearest = np.abs(log_chosen[:, None] - np.log(grid.astype(np.float64))[None, :])
                return model, grid[nearest.argmin(1)]

            if self.extend_grid:
                model, chosen, grid, self.grid_extensions_ = fit_with_grid_extension(
                    fit_once, alphas, "EncodingModel")
            else:
                (model, chosen), grid, self.grid_extensions_ = fit_once(alphas), alphas, []
            self.alphas_grid_ = np.asarray(grid, dtype=np.float64)
            coef = model.coef_ if self.solver_ == "primal" else model.get_primal_coef()
            self.coef_ = _on_all_targets(hb.to_numpy(coef), valid, 0.0, self.dtype)
            intercept = hb.to_numpy(model.intercept_) if self.fit_intercept else 0.0
            self.intercept_ = _on_all_targets(intercept, valid, 0.0, self.dtype)
            self.alphas_ = _on_all_targets(chosen, valid, np.nan, self.dtype)
            self.inner_cv_scores_ = _on_all_targets(hb.to_numpy(model.cv_scores_), valid, np.nan,
                                                    self.dtype)
        self.valid_targets_ = valid
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted time courses, shape (n_samples, n_targets), or (n_samples,) when the
        model was fitted on a 1-D ``Y``.

        Computed in ``dtype``; returned as float64 when ``X`` is float64 (or a list)."""
        prediction = self._predict_2d(X)
        return prediction[:, 0] if getattr(self, "_y_1d", False) else prediction

    def _predict_2d(self, X) -> np.ndarray:
        check_is_fitted(self, "coef_")
        in_dtype = getattr(X, "dtype", np.float64)  # lists, DataFrames: numpy's default float
        out_dtype = np.float64 if in_dtype == np.float64 else self.dtype
        X = validate_data(self, X, reset=False, accept_sparse=False, dtype=self.dtype)
        with himalaya_backend(self.backend_) as hb:
            prediction = hb.matmul(hb.asarray(X), hb.asarray(self.coef_)) + hb.asarray(self.intercept_)
            return np.asarray(hb.to_numpy(prediction), dtype=out_dtype)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean Pearson r over valid targets between predictions and ``y``
        (n_samples, n_targets) or (n_samples,)."""
        from .stats import pearson_r

        prediction = self._predict_2d(X)
        Y = np.asarray(y)
        if Y.ndim == 1:
            Y = Y[:, None]
        r = pearson_r(Y[:, self.valid_targets_], prediction[:, self.valid_targets_])
        return float(np.nanmean(r))
