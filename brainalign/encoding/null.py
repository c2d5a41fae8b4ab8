"""A permutation null for cross-validated held-out scores that refits the ridge maps.

Why not simply permute the held-out predictions? In K-fold (or leave-one-run-out) CV the
data of fold j train the model that predicts fold k and vice versa, so the held-out
correlations of different folds share terms and their mean varies about twice as much
under the null as a within-fold shuffle of predictions suggests (measured here: 11 % of
pure-noise targets under p = .05). Shuffling the *data* and recomputing every fold's
predictions keeps that coupling, and is cheap for ridge because, at fixed
hyperparameters and features, the held-out prediction is linear in the data. With
``K = Zc_train Zc_train^T = U diag(lam) U^T`` the (centred) training kernel of a fold,

    pred_test = K_test,train U diag(1 / (lam + alpha)) U^T y_train

One eigendecomposition per fold serves all alphas and all targets of plain ridge (from an
SVD of the design: ``K_test,train U = Zc_test V S``, ``lam = S**2``). Banded ridge gives each
target its own band weights: targets with the same weights share one kernel
``sum_b exp(delta_b) K_b`` (penalty 1, himalaya's convention), so a fold holds one
:class:`OperatorBlock` per distinct weight vector. Each surrogate costs two small matrix
products per block, batched over targets and surrogates with torch (on the GPU when there
is one). The hyperparameters chosen on the real data are held fixed, the usual
approximation.

Cleaning inside folds (:mod:`brainalign.encoding.cleaning`) is linear in the data, so a
fold's operator also carries its cleaning rows: ``y_train = C[train] y`` and
``y_test = C[test] y``. Surrogates shuffle the data cleaned run by run on all of its rows
(no drift left to scatter across blocks); the fold's cleaning of those is its cleaning of
the raw data up to the small slow remainder that a held-out block's own basis does not
span, and the observed statistic is computed the same way as the null. Scrubbed volumes
stay out of the surrogates: only the kept rows are reordered, and the scrubbed ones stay
in place, zeroed (no fold trains or tests on them).
Written by hand: no maintained library offers this for many targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .stats import _torch_device, null_indices
from .tail import permutation_p_values

#: Memory budget of one batch of surrogates on CPU, in bytes.
CPU_NULL_BYTES = 1 << 24


@dataclass
class OperatorBlock:
    """The held-out prediction map of one group of targets that share a kernel.

    Attributes
    ----------
    targets : ndarray of int
        Targets (columns of the data) of the group.
    test_basis : ndarray, shape (n_test, rank)
        ``K_test,train U``.
    train_basis_t : ndarray, shape (rank, n_train)
        ``U^T``.
    eigenvalues : ndarray, shape (rank,)
        ``lam``, the eigenvalues of the training kernel.
    alphas : ndarray, shape (n_targets_in_group,)
        Penalty of each target (1 for banded ridge, whose weights are in the kernel).
    """

    targets: np.ndarray
    test_basis: np.ndarray
    train_basis_t: np.ndarray
    eigenvalues: np.ndarray
    alphas: np.ndarray

    @classmethod
    def from_kernel(cls, kernel: np.ndarray, train: np.ndarray, test: np.ndarray,
                    targets: np.ndarray, alphas: np.ndarray) -> "OperatorBlock":
        """From a kernel over all rows, already centred on the training rows."""
        eigenvalues, vectors = np.linalg.eigh(kernel[np.ix_(train, train)])
        keep = eigenvalues > max(eigenvalues.max(), 0) * 1e-10
        vectors = vectors[:, keep]
        return cls(np.asarray(targets), kernel[np.ix_(test, train)] @ vectors, vectors.T,
                   eigenvalues[keep], np.asarray(alphas, dtype=np.float64))


@dataclass
class FoldOperator:
    """What is needed to recompute one outer fold's held-out predictions from new data.

    Attributes
    ----------
    train, test : ndarray of int
        Rows of the fold.
    blocks : list of OperatorBlock
        One per group of targets sharing a kernel (one block for plain ridge).
    cleaning : ndarray, shape (n_samples, n_samples), optional
        The fold's cleaning as a matrix over all rows (None: no cleaning).
    scored : ndarray of bool, shape (n_targets,), optional
        Targets this fold scores (None: all). A target whose held-out data are flat in
        the fold is left out of this fold's share of its mean r, as in
        :func:`brainalign.encoding.fit_encoding`.
    """

    train: np.ndarray
    test: np.ndarray
    blocks: list = field(default_factory=list)
    cleaning: np.ndarray | None = None
    scored: np.ndarray | None = None

    @classmethod
    def from_design(cls, design: np.ndarray, train: np.ndarray, test: np.ndarray,
                    alphas: np.ndarray, cleaning: np.ndarray | None = None,
                    scored: np.ndarray | None = None) -> "FoldOperator":
        """Plain ridge: from the fold's design (all rows) and its per-target alphas."""
        mean = design[train].mean(0)
        u, s, vt = np.linalg.svd(design[train] - mean, full_matrices=False)
        keep = s > s.max() * 1e-10 if s.size else s > 0
        alphas = np.asarray(alphas, dtype=np.float64)
        block = OperatorBlock(np.arange(len(alphas)), (design[test] - mean) @ vt[keep].T * s[keep],
                              u[:, keep].T, s[keep] ** 2, alphas)
        return cls(train, test, [block], cleaning, scored)

    @classmethod
    def from_band_kernels(cls, kernels: np.ndarray, train: np.ndarray, test: np.ndarray,
                          weights: np.ndarray, cleaning: np.ndarray | None = None,
                          scored: np.ndarray | None = None) -> "FoldOperator":
        """Banded ridge: from each band's kernel and every target's band weights.

        Parameters
        ----------
        kernels : ndarray, shape (n_bands, n_samples, n_samples)
            ``Z_b Z_b^T`` of each band's design over all rows, centred on the training rows.
        weights : ndarray, shape (n_bands, n_targets)
            ``exp(delta)`` of each target (penalty 1).
        """
        groups, inverse = np.unique(np.asarray(weights).T, axis=0, return_inverse=True)
        inverse = np.ravel(inverse)
        blocks = []
        for index, group in enumerate(groups):
            targets = np.flatnonzero(inverse == index)
            kernel = np.tensordot(group, kernels, axes=1)
            blocks.append(OperatorBlock.from_kernel(kernel, train, test, targets,
                                                    np.ones(len(targets))))
        return cls(train, test, blocks, cleaning, scored)


def refit_null_test(Y: np.ndarray, folds: list[FoldOperator], runs: np.ndarray, n_perm: int = 1000,
                    method: str = "mirror", block_tr: int = 10, random_state=0,
                    device: str = "auto", tail: str = "gpd", return_null: bool = False,
                    kept=None):
    """p-values of the fold-mean held-out r with the data shuffled and the folds refitted.

    Parameters
    ----------
    Y : array, shape (n_samples, n_targets)
        Data (all rows; every kept row is in exactly one fold's test set). With cleaning
        in the folds, pass the data cleaned run by run on all rows (surrogates shuffle
        them).
    folds : list of FoldOperator
    runs : array of int, shape (n_samples,)
        Surrogate data are reordered only within runs (see
        :func:`brainalign.encoding.stats.null_indices`).
    kept : array of int, optional
        Rows the surrogates reorder (e.g. the volumes a sample mask keeps); None: all.
        The others (scrubbed volumes) are set to zero and stay in place, so that nothing
        they held reaches a kept position; no fold may train or test on them.
    n_perm, method, block_tr, random_state, device
        As in :func:`brainalign.encoding.stats.permutation_test`.
    tail : {"gpd", "empirical"}
        How p-values are read off the null (:func:`brainalign.encoding.tail.permutation_p_values`):
        ``"gpd"`` resolves p-values below ``1 / (n_perm + 1)`` with a Pareto tail fit
        where fewer than 10 draws exceed the observed r.
    return_null : bool
        Also return the null statistics.

    Returns
    -------
    p_values : PermutationPValues
        p-values per target (``.p_values``) and how each was obtained.
    observed : ndarray, shape (n_targets,)
        The held-out r recomputed by the operators, averaged over the folds that score
        each target (:attr:`FoldOperator.scored`; NaN where none does); equals the fitted
        model's ``r`` up to rounding.
    null : ndarray, shape (n_perm, n_targets)
        Only with ``return_null``.
    """
    import torch

    Y = np.array(Y, dtype=np.float64)
    n_samples, n_targets = Y.shape
    runs = np.asarray(runs)
    kept = np.arange(n_samples) if kept is None else np.asarray(kept)
    scrubbed = np.setdiff1d(np.arange(n_samples), kept)
    for index, fold in enumerate(folds):
        if np.isin(fold.train, scrubbed).any() or np.isin(fold.test, scrubbed).any():
            raise ValueError(f"fold {index} trains or tests on rows outside `kept`; the "
                             "folds must leave scrubbed rows out")
    Y[scrubbed] = 0.0
    order = np.tile(np.arange(n_samples), (n_perm + 1, 1))      # row 0: the real data
    order[1:, kept] = kept[null_indices(runs[kept], n_perm, method, block_tr, random_state)]
    dev = _torch_device(device)
    dtype = torch.float32
    as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)  # noqa: E731
    Y_t = as_t(Y)
    order_t = torch.as_tensor(order, device=dev)
    operators = []
    for fold in folds:
        if fold.cleaning is None:
            rows = (torch.as_tensor(fold.train, device=dev), torch.as_tensor(fold.test, device=dev))
        else:
            rows = (as_t(fold.cleaning[fold.train]), as_t(fold.cleaning[fold.test]))
        blocks = [(torch.as_tensor(b.targets, device=dev), as_t(b.test_basis), as_t(b.train_basis_t),
                   as_t(b.eigenvalues), as_t(b.alphas)) for b in fold.blocks]
        scored = as_t(np.ones(n_targets) if fold.scored is None else fold.scored)
        operators.append((fold.cleaning is not None, rows, blocks, scored))

    itemsize = torch.finfo(dtype).bits // 8
    budget = torch.cuda.mem_get_info(dev)[0] // 4 if dev.type == "cuda" else CPU_NULL_BYTES
    n_targets_batch = int(max(1, min(n_targets, budget // (3 * n_samples * itemsize))))
    n_perm_batch = int(max(1, min(n_perm + 1, budget // (3 * n_samples * n_targets_batch * itemsize))))

    statistic = torch.zeros((n_perm + 1, n_targets), dtype=dtype, device=dev)
    for t0 in range(0, n_targets, n_targets_batch):
        t1 = min(t0 + n_targets_batch, n_targets)
        for p0 in range(0, n_perm + 1, n_perm_batch):
            # (n_samples, P, T): time first, so each fold is two plain matrix products
            surrogate = Y_t[:, t0:t1][order_t[p0:p0 + n_perm_batch].T]
            n_batch, width = surrogate.shape[1], surrogate.shape[2]
            flat = surrogate.reshape(n_samples, -1)
            total, count = 0, 0
            for cleaned, (train_rows, test_rows), blocks, scored in operators:
                if cleaned:
                    train_data = (train_rows @ flat).reshape(-1, n_batch, width)
                    data = (test_rows @ flat).reshape(-1, n_batch, width)
                else:
                    train_data, data = surrogate[train_rows], surrogate[test_rows]
                prediction = torch.zeros_like(data)
                for targets, test_basis, train_basis_t, eigenvalues, alphas in blocks:
                    inside = (targets >= t0) & (targets < t1)
                    if not bool(inside.any()):
                        continue
                    local = targets[inside] - t0
                    shrink = 1.0 / (eigenvalues[:, None] + alphas[inside][None, :])  # (rank, T)
                    part = train_data[:, :, local]
                    projected = (train_basis_t @ part.reshape(part.shape[0], -1)
                                 ).reshape(-1, n_batch, len(local)) * shrink[:, None, :]
                    prediction[:, :, local] = (test_basis @ projected.reshape(projected.shape[0], -1)
                                               ).reshape(-1, n_batch, len(local))
                data = data - data.mean(0)
                prediction = prediction - prediction.mean(0)
                norm = torch.sqrt((data ** 2).sum(0) * (prediction ** 2).sum(0))
                r = (data * prediction).sum(0) / torch.clamp(norm, min=torch.finfo(dtype).tiny)
                total = total + r * scored[t0:t1]
                count = count + scored[t0:t1]
            statistic[p0:p0 + n_perm_batch, t0:t1] = total / count   # NaN: no fold scores
    statistic = statistic.cpu().numpy().astype(np.float64)
    observed, null = statistic[0], statistic[1:]
    tolerance = 16 * np.finfo(np.float32).eps  # float32 rounding: a tie counts as exceeding
    p_values = permutation_p_values(observed - tolerance, null, tail=tail)
    if return_null:
        return p_values, observed, null
    return p_values, observed
