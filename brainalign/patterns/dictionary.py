"""Sparse dictionary learning on a torch device: atoms over features, L1-sparse codes per sample.

The model is scikit-learn's::

    min_{U, V}  0.5 * ||X - U V||_F^2 + alpha * ||U||_1,1    subject to ||V_k||_2 <= 1

with ``X`` (n_samples, n_features), codes ``U`` (n_samples, n_components) and atoms ``V``
(n_components, n_features). In study A the samples are neurons and the features are TRs,
so the atoms are representative time courses and each neuron gets a sparse code.

Written by hand because scikit-learn's :class:`~sklearn.decomposition.DictionaryLearning`
and :class:`~sklearn.decomposition.MiniBatchDictionaryLearning` run on CPU only. The
solver choices:

- **Codes**: batched FISTA (Beck & Teboulle 2009) on every sample's lasso at once, one
  chunk of samples at a time: the chunk's ``X V^T`` is formed once, then each iteration
  costs a ``(chunk, K) x (K, K)`` product. Step size ``1 / L`` with ``L`` the largest
  eigenvalue of ``V V^T``; codes are warm-started between outer iterations.
- **Atoms**: one sweep of block coordinate descent over atoms using the sufficient
  statistics ``A = U^T U`` and ``B = U^T X`` (Mairal et al. 2009/2010, the same update
  as scikit-learn's ``_update_dict``), each atom projected onto the unit ball; atoms
  that no sample uses are re-drawn from the data.
- **Full batch** (``batch_size=None``): alternate codes and atoms over all samples, as
  :class:`~sklearn.decomposition.DictionaryLearning` does, until the objective's
  relative decrease falls below ``tol``.
- **Mini-batch / online** (``batch_size=int``): Mairal's online algorithm with
  scikit-learn's forgetting factor for the running ``A`` and ``B``; ``max_iter`` counts
  passes over the data. For very many samples this touches only a batch per step.
- **Out of core**: ``X`` may be a :class:`~brainalign.patterns.streaming.NeuronBlocks`
  (neuron time courses left on disk). Every step above already works one chunk of
  samples at a time, so full-batch fitting reads the file twice per iteration (codes,
  then statistics) and holds one chunk; ``init="svd"`` of more than
  :data:`EXACT_SVD_MAX_FEATURES` features uses randomized subspace iteration instead of the
  ``(n_features, n_features)`` Gram matrix.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state

from brainalign.patterns.streaming import (NeuronBlocks, centered_gram, default_chunk_rows,
                                           fitted_input, output_dtype, resolve_device,
                                           row_chunks, to_device, validated_input)

logger = logging.getLogger(__name__)

#: FISTA checks its stopping rule every this many iterations (each check syncs the device).
_CHECK_EVERY = 10
#: ``init="svd"`` solves the (n_features, n_features) Gram matrix exactly up to this many
#: features (128 MiB of float64); beyond it (a long reference corpus has 20,000 TRs) the
#: top singular vectors come from randomized subspace iteration.
EXACT_SVD_MAX_FEATURES = 4096
#: Subspace iterations and extra dimensions of the randomized SVD (Halko et al. 2011).
_POWER_ITERATIONS, _OVERSAMPLES = 4, 10


def randomized_right_singular_vectors(X, k: int, rng, chunk_rows: int) -> torch.Tensor:
    """Top ``k`` right singular vectors of ``X`` (n_samples, n_features), shape (k, n_features).

    Randomized subspace iteration (Halko, Martinsson & Tropp 2011, algorithm 4.4) with
    :data:`_OVERSAMPLES` extra dimensions and :data:`_POWER_ITERATIONS` iterations, using
    only chunked products ``X[rows] @ Q`` and ``X[rows].T @ Z``: each is one pass over the
    rows, which is what an out-of-core matrix (:class:`NeuronBlocks`) affords. Memory is
    ``(n_samples + n_features) x (k + oversamples)``. Vectors of a degenerate spectrum
    are defined up to rotation, as with any SVD.
    """
    n_samples, n_features = X.shape
    width = min(k + _OVERSAMPLES, n_samples, n_features)

    def times(Q):  # X @ Q, (n_samples, width)
        return torch.cat([X[rows].double() @ Q for rows in row_chunks(n_samples, chunk_rows)])

    def transpose_times(Z):  # X.T @ Z, (n_features, width)
        out = torch.zeros(n_features, Z.shape[1], dtype=torch.float64, device=Z.device)
        for rows in row_chunks(n_samples, chunk_rows):
            out += X[rows].double().T @ Z[rows]
        return out

    start = torch.as_tensor(rng.standard_normal((n_samples, width)), dtype=torch.float64,
                            device=X.device)
    Q = torch.linalg.qr(transpose_times(start)).Q
    for _ in range(_POWER_ITERATIONS):
        Q = torch.linalg.qr(transpose_times(torch.linalg.qr(times(Q)).Q)).Q
    B = times(Q)
    eigvals, eigvecs = torch.linalg.eigh(B.T @ B)
    order = torch.argsort(eigvals, descending=True)[:k]
    vectors = (Q @ eigvecs[:, order]).T.to(torch.float32)
    if k > width:  # more atoms than the subspace holds: pad randomly, as the exact path does
        vectors = torch.cat([vectors, torch.as_tensor(rng.standard_normal((k - width, n_features)),
                                                      dtype=torch.float32, device=X.device)])
    return vectors


def sparse_codes(
    X: torch.Tensor,
    atoms: torch.Tensor,
    alpha: float,
    *,
    init: torch.Tensor | None = None,
    max_iter: int = 500,
    tol: float = 1e-6,
    positive: bool = False,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Lasso codes of every row of ``X`` against ``atoms`` by batched FISTA.

    Solves ``min_u 0.5 * ||x - u V||^2 + alpha * ||u||_1`` for each row ``x``.

    Parameters
    ----------
    X : torch.Tensor, shape (n_samples, n_features)
    atoms : torch.Tensor, shape (n_components, n_features)
        The dictionary ``V``.
    alpha : float
        L1 penalty (same scale as scikit-learn's ``alpha``).
    init : torch.Tensor, shape (n_samples, n_components), optional
        Warm start.
    max_iter : int
        FISTA iterations per chunk at most.
    tol : float
        Stop a chunk when the largest change of a code, relative to the largest code,
        falls below ``tol``.
    positive : bool
        Constrain codes to be non-negative.
    chunk_rows : int, optional
        Samples per chunk.

    Returns
    -------
    codes : torch.Tensor, shape (n_samples, n_components)
    """
    n_samples = X.shape[0]
    n_components = atoms.shape[0]
    gram = atoms @ atoms.T
    lipschitz = float(torch.linalg.eigvalsh(gram.double()).max().clamp_min(1e-12))
    step, threshold = 1.0 / lipschitz, alpha / lipschitz
    chunk_rows = chunk_rows or default_chunk_rows(max(X.shape[1], 4 * n_components))
    codes = torch.empty(n_samples, n_components, dtype=X.dtype, device=X.device)
    for rows in row_chunks(n_samples, chunk_rows):
        correlation = X[rows] @ atoms.T
        u = torch.zeros_like(correlation) if init is None else init[rows].clone()
        y, t = u.clone(), 1.0
        for iteration in range(1, max_iter + 1):
            z = y - step * (y @ gram - correlation)
            u_new = (z - threshold).clamp_min(0) if positive else (
                torch.sign(z) * (z.abs() - threshold).clamp_min(0))
            t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
            y = u_new + ((t - 1) / t_new) * (u_new - u)
            converged = iteration % _CHECK_EVERY == 0 and bool(
                (u_new - u).abs().max() <= tol * u_new.abs().max().clamp_min(1e-12))
            u, t = u_new, t_new
            if converged:
                break
        codes[rows] = u
    return codes


def dictionary_objective(X: torch.Tensor, codes: torch.Tensor, atoms: torch.Tensor,
                         alpha: float, chunk_rows: int | None = None) -> float:
    """``0.5 * ||X - codes @ atoms||_F^2 + alpha * ||codes||_1``, exactly, by row chunks."""
    chunk_rows = chunk_rows or default_chunk_rows(X.shape[1])
    total = 0.0
    for rows in row_chunks(X.shape[0], chunk_rows):
        residual = X[rows] - codes[rows] @ atoms
        total += 0.5 * float((residual ** 2).sum(dtype=torch.float64))
        total += alpha * float(codes[rows].abs().sum(dtype=torch.float64))
    return total


class DictionaryLearning(TransformerMixin, BaseEstimator):
    """Sparse dictionary learning on CPU or CUDA with scikit-learn's interface.

    Parameters
    ----------
    n_components : int, default=64
        Number of atoms K.
    alpha : float, default=1.0
        L1 penalty on the codes.
    max_iter : int, default=100
        Outer iterations (full batch) or passes over the data (mini-batch).
    tol : float, default=1e-6
        Full batch: stop when the objective's relative decrease is below ``tol``.
        Mini-batch: stop when a pass changes the atoms by less than ``tol`` (relative
        Frobenius norm).
    batch_size : int or None, default=None
        None for full-batch alternation; an int for the online mini-batch algorithm.
    init : {"svd", "random"}, default="svd"
        Initial atoms: the top right singular vectors of ``X`` (scikit-learn's
        DictionaryLearning default; randomized beyond :data:`EXACT_SVD_MAX_FEATURES`
        features) or randomly chosen samples, normalised.
    code_max_iter : int, default=200
        FISTA iterations per code update.
    code_tol : float, default=1e-4
        FISTA relative stopping tolerance.
    positive_code : bool, default=False
        Non-negative codes.
    random_state : int, RandomState or None
    device : str, torch.device or None
    chunk_size : int, optional
        Samples per chunk for codes and statistics.

    Attributes
    ----------
    components_ : ndarray, shape (n_components, n_features), float32
        Atoms, each of L2 norm at most 1.
    n_iter_ : int
    objective_ : float
        Final value of the objective on the training data (full batch), or on the
        training data re-coded with the final atoms (mini-batch).
    n_features_in_ : int
    """

    def __init__(self, n_components: int = 64, *, alpha: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-6, batch_size: int | None = None, init: str = "svd",
                 code_max_iter: int = 200, code_tol: float = 1e-4, positive_code: bool = False,
                 random_state=None, device=None, chunk_size: int | None = None):
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.init = init
        self.code_max_iter = code_max_iter
        self.code_tol = code_tol
        self.positive_code = positive_code
        self.random_state = random_state
        self.device = device
        self.chunk_size = chunk_size

    def _sklearn_expected_failed_checks(self) -> dict[str, str]:
        """scikit-learn estimator checks expected to fail, with the reason (pass it as
        ``expected_failed_checks`` to ``check_estimator``/``parametrize_with_checks``)."""
        return {"check_methods_subset_invariance": (
            "codes are solved by batched FISTA in float32 with one stopping rule per chunk "
            "of rows, so a row's code agrees between batches to the solver tolerance "
            "(code_tol) and float32 rounding, not to the check's rtol=1e-7")}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- public API ---------------------------------------------------------------------

    def fit(self, X, y=None) -> "DictionaryLearning":
        """Learn atoms from ``X`` (n_samples, n_features); returns self."""
        self._fit(X)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Learn atoms and return the codes of ``X``, shape (n_samples, n_components).

        Computed in float32 on the device; float64 input gives float64 codes."""
        codes, dtype = self._fit(X)
        return codes.cpu().numpy().astype(dtype, copy=False)

    def transform(self, X) -> np.ndarray:
        """Sparse codes of ``X`` against the fitted atoms, shape (n_samples, n_components).

        Computed in float32 on the device; float64 input gives float64 codes."""
        X, device, dtype = fitted_input(self, X, "components_")
        atoms = torch.as_tensor(self.components_, device=device)
        return self._codes(X, atoms, None, self._chunk(X)).cpu().numpy().astype(dtype, copy=False)

    # -- internals ----------------------------------------------------------------------

    def _chunk(self, X) -> int:
        return default_chunk_rows(max(X.shape[1], 4 * self.n_components), self.chunk_size)

    def _codes(self, X, atoms, init, chunk, max_iter=None):
        return sparse_codes(X, atoms, self.alpha, init=init, positive=self.positive_code,
                            max_iter=max_iter or self.code_max_iter, tol=self.code_tol,
                            chunk_rows=chunk)

    def _check(self, X):
        n_samples, n_features = X.shape
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.init not in ("svd", "random"):
            raise ValueError(f"init must be 'svd' or 'random', got {self.init!r}")
        if self.init == "random" and self.n_components > n_samples:
            raise ValueError(f"init='random' needs n_components <= n_samples={n_samples}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be None or >= 1, got {self.batch_size}")

    def _initial_atoms(self, X, rng, chunk) -> torch.Tensor:
        n_samples, n_features = X.shape
        if self.init == "random":
            index = np.sort(rng.choice(n_samples, self.n_components, replace=False))
            atoms = X[torch.as_tensor(index, device=X.device)].clone()
        elif n_features <= EXACT_SVD_MAX_FEATURES:  # eigenvectors of the feature Gram matrix
            zero = torch.zeros(n_features, dtype=torch.float64, device=X.device)
            eigvals, eigvecs = torch.linalg.eigh(centered_gram(X, zero, chunk))
            order = torch.argsort(eigvals, descending=True)[: self.n_components]
            atoms = eigvecs[:, order].T.to(X.dtype)
        else:
            atoms = randomized_right_singular_vectors(X, self.n_components, rng, chunk)
        if self.init == "svd" and atoms.shape[0] < self.n_components:
            # more atoms than dimensions (an overcomplete dictionary): pad randomly
            extra = self.n_components - atoms.shape[0]
            atoms = torch.cat([atoms, torch.as_tensor(
                rng.standard_normal((extra, n_features)), dtype=X.dtype, device=X.device)])
        norms = atoms.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return atoms / norms

    def _update_atoms(self, atoms, A, B, X, rng):
        """One block-coordinate sweep: atom k <- proj(atom k + (B_k - A_k V) / A_kk)."""
        atoms = atoms.clone()
        diagonal = A.diagonal().cpu().numpy()
        for k in range(self.n_components):
            if diagonal[k] > 1e-6:
                atoms[k] += (B[k] - A[k] @ atoms) / A[k, k]
            else:  # unused atom: restart it from a random sample (scikit-learn's rule)
                atoms[k] = X[int(rng.randint(X.shape[0]))] + 0.01 * torch.as_tensor(
                    rng.standard_normal(X.shape[1]), dtype=atoms.dtype, device=atoms.device)
            atoms[k] /= atoms[k].norm().clamp_min(1.0)
        return atoms

    def _statistics(self, X, codes, chunk):
        A = codes.T @ codes
        B = torch.zeros(self.n_components, X.shape[1], dtype=X.dtype, device=X.device)
        for rows in row_chunks(X.shape[0], chunk):
            B += codes[rows].T @ X[rows]
        return A, B

    def _fit(self, X) -> tuple[torch.Tensor, np.dtype]:
        device = resolve_device(self.device)
        X = validated_input(self, X, reset=True)
        dtype = output_dtype(X)
        X = to_device(X, device, self.chunk_size)
        self._check(X)
        rng = check_random_state(self.random_state)
        chunk = self._chunk(X)
        if isinstance(X, NeuronBlocks) and self.batch_size is not None:
            raise ValueError("the mini-batch algorithm draws random samples, which an "
                             "out-of-core NeuronBlocks matrix cannot read efficiently; use "
                             "batch_size=None (full batch: two passes over the file per "
                             "iteration)")
        atoms = self._initial_atoms(X, rng, chunk)
        if self.batch_size is None:
            atoms, codes, n_iter = self._fit_full_batch(X, atoms, rng, chunk)
        else:
            atoms, n_iter = self._fit_minibatch(X, atoms, rng, chunk)
            codes = self._codes(X, atoms, None, chunk)
        self.components_ = atoms.cpu().numpy()
        self.n_iter_ = n_iter
        self.objective_ = dictionary_objective(X, codes, atoms, self.alpha, chunk)
        return codes, dtype

    def _fit_full_batch(self, X, atoms, rng, chunk):
        x_norm_sq = sum(float((X[rows] ** 2).sum(dtype=torch.float64))
                        for rows in row_chunks(X.shape[0], chunk))
        codes, previous = None, np.inf
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            codes = self._codes(X, atoms, codes, chunk)
            A, B = self._statistics(X, codes, chunk)
            atoms = self._update_atoms(atoms, A, B, X, rng)
            # objective of (codes, new atoms) from the sufficient statistics
            fit = x_norm_sq - 2 * float((atoms * B).sum(dtype=torch.float64)) + float(
                (A.double() * (atoms @ atoms.T).double()).sum())
            objective = 0.5 * fit + self.alpha * float(codes.abs().sum(dtype=torch.float64))
            logger.debug("dictionary iteration %d: objective %.6g", n_iter, objective)
            if previous - objective < self.tol * abs(previous):
                break
            previous = objective
        codes = self._codes(X, atoms, codes, chunk)  # codes for the final atoms
        return atoms, codes, n_iter

    def _fit_minibatch(self, X, atoms, rng, chunk):
        n_samples = X.shape[0]
        batch = min(self.batch_size, n_samples)
        A = torch.zeros(self.n_components, self.n_components, dtype=X.dtype, device=X.device)
        B = torch.zeros(self.n_components, X.shape[1], dtype=X.dtype, device=X.device)
        step = 0
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            before = atoms.clone()
            order = torch.as_tensor(rng.permutation(n_samples), device=X.device)
            for start in range(0, n_samples, batch):
                index = order[start:start + batch]
                X_batch = X[index]
                codes = self._codes(X_batch, atoms, None, chunk)
                # scikit-learn's forgetting factor for the running statistics
                theta = (step + 1) * batch if step < batch - 1 else batch ** 2 + step + 1 - batch
                beta = (theta + 1 - batch) / (theta + 1)
                A.mul_(beta).add_(codes.T @ codes / len(index))
                B.mul_(beta).add_(codes.T @ X_batch / len(index))
                atoms = self._update_atoms(atoms, A, B, X, rng)
                step += 1
            change = float((atoms - before).norm() / before.norm().clamp_min(1e-12))
            logger.debug("dictionary pass %d: relative atom change %.3g", n_iter, change)
            if change < self.tol:
                break
        return atoms, n_iter
