"""FastICA and CanICA-style group ICA on a torch device.

Written by hand because scikit-learn's :class:`~sklearn.decomposition.FastICA` and
nilearn's ``CanICA`` run on CPU only. :class:`FastICA` follows scikit-learn step by step
so that the two agree: centring of the features, whitening by PCA of the feature Gram
matrix (eigenvectors signed by their first entry), the logcosh contrast, the parallel
(symmetric) fixed-point update with symmetric decorrelation ``W <- (W W^T)^(-1/2) W``
(Hyvarinen 1999), the same ``w_init`` draw from ``random_state``, and unit-variance
sources. The data are touched only to form the ``(n_features, n_features)`` Gram matrix
and the ``(n_components, n_samples)`` whitened matrix, both one chunk of rows at a time;
the fixed-point iterations then run on the small whitened matrix.

:class:`GroupICA` is the CanICA recipe (Varoquaux et al. 2010) without the CCA step:
reduce each input by PCA to its leading spatial components, concatenate them, reduce the
stack again by PCA, and unmix the group subspace with FastICA, so that the components are
independent maps over the shared spatial axis (neurons, for study B).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from brainalign.patterns.streaming import (centered_gram, column_mean, default_chunk_rows,
                                           fitted_input, output_dtype, resolve_device, row_chunks,
                                           to_device, validated_input)

logger = logging.getLogger(__name__)


def _symmetric_decorrelation(W: torch.Tensor) -> torch.Tensor:
    """``(W W^T)^(-1/2) W`` computed in float64 (W is small: n_components square)."""
    W64 = W.double()
    eigvals, eigvecs = torch.linalg.eigh(W64 @ W64.T)
    eigvals = eigvals.clamp_min(torch.finfo(torch.float64).tiny)
    return ((eigvecs / eigvals.sqrt()) @ eigvecs.T @ W64).to(W.dtype)


class FastICA(TransformerMixin, BaseEstimator):
    """FastICA (logcosh, parallel) on CPU or CUDA with scikit-learn's interface.

    Parameters
    ----------
    n_components : int, default=10
        Number of independent components.
    max_iter : int, default=200
        Fixed-point iterations at most.
    tol : float, default=1e-4
        Stop when ``max |(|diag(W_new W^T)| - 1)|`` is below ``tol`` (scikit-learn's rule).
    random_state : int, RandomState or None
        Seed of the initial unmixing matrix (drawn exactly as scikit-learn draws it).
    device : str, torch.device or None
    chunk_size : int, optional
        Rows per chunk when forming the Gram matrix and the whitened data.

    Attributes
    ----------
    components_ : ndarray, shape (n_components, n_features)
        Unmixing matrix applied to centred data: ``sources = (X - mean_) @ components_.T``.
    mixing_ : ndarray, shape (n_features, n_components)
        Pseudo-inverse of ``components_``.
    mean_ : ndarray, shape (n_features,)
    whitening_ : ndarray, shape (n_components, n_features)
    explained_variance_ : ndarray, shape (n_components,)
        Eigenvalues of the feature covariance kept by the whitening (PCA) step.
    n_iter_ : int
    n_features_in_ : int
    """

    def __init__(self, n_components: int = 10, *, max_iter: int = 200, tol: float = 1e-4,
                 random_state=None, device=None, chunk_size: int | None = None):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.chunk_size = chunk_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def fit(self, X, y=None) -> "FastICA":
        """Estimate the unmixing matrix from ``X`` (n_samples, n_features); returns self."""
        self._fit(X)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        """Fit and return the unit-variance sources, shape (n_samples, n_components).

        Computed in float32 on the device; float64 input gives float64 sources."""
        sources, dtype = self._fit(X)
        return sources.cpu().numpy().astype(dtype, copy=False)

    def transform(self, X) -> np.ndarray:
        """Sources of ``X``: ``(X - mean_) @ components_.T``, shape (n_samples, n_components).

        float32 input gives float32 sources; float64 input gives float64 sources, the
        product computed in float64 from the float32 copy of ``X`` on the device."""
        X, device, dtype = fitted_input(self, X, "components_")
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        return self._sources(X, torch.as_tensor(self.components_, device=device, dtype=torch_dtype),
                             torch.as_tensor(self.mean_, device=device, dtype=torch_dtype)
                             ).cpu().numpy()

    def inverse_transform(self, S) -> np.ndarray:
        """Data from sources: ``S @ mixing_.T + mean_``, shape (n_samples, n_features)."""
        check_is_fitted(self, "components_")
        return np.asarray(S) @ self.mixing_.T + self.mean_

    def _sources(self, X, components, mean) -> torch.Tensor:
        chunk = default_chunk_rows(X.shape[1], self.chunk_size)
        return torch.cat([(X[rows].to(components.dtype) - mean) @ components.T
                          for rows in row_chunks(X.shape[0], chunk)])

    def _fit(self, X) -> tuple[torch.Tensor, np.dtype]:
        device = resolve_device(self.device)
        X = validated_input(self, X, reset=True)
        dtype = output_dtype(X)
        X = to_device(X, device, self.chunk_size)
        n_samples, n_features = X.shape
        if not 1 <= self.n_components <= min(n_samples, n_features):
            raise ValueError(f"n_components must be between 1 and min(n_samples, n_features)="
                             f"{min(n_samples, n_features)}, got {self.n_components}")
        rng = check_random_state(self.random_state)
        chunk = default_chunk_rows(n_features, self.chunk_size)

        # whitening by PCA of the centred feature covariance
        mean = column_mean(X, chunk)
        eigvals, eigvecs = torch.linalg.eigh(centered_gram(X, mean, chunk))
        order = torch.argsort(eigvals, descending=True)[: self.n_components]
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        eigvals = eigvals.clamp_min(torch.finfo(torch.float64).eps * 10)
        eigvecs = eigvecs * torch.sign(eigvecs[0])
        whitening = (eigvecs / eigvals.sqrt()).T  # (n_components, n_features), float64
        whitening32, mean32 = whitening.to(torch.float32), mean.to(torch.float32)
        X1 = torch.cat([whitening32 @ (X[rows] - mean32).T
                        for rows in row_chunks(n_samples, chunk)], dim=1)
        X1 *= n_samples ** 0.5  # (n_components, n_samples), white

        # parallel FastICA with the logcosh contrast
        w_init = rng.normal(size=(self.n_components, self.n_components))
        W = _symmetric_decorrelation(torch.as_tensor(w_init, dtype=torch.float32, device=device))
        n_iter = self.max_iter
        for n_iter in range(1, self.max_iter + 1):
            gwtx = torch.tanh(W @ X1)
            g_wtx = (1 - gwtx ** 2).mean(1)
            W_new = _symmetric_decorrelation(gwtx @ X1.T / n_samples - g_wtx[:, None] * W)
            limit = float((torch.einsum("ij,ij->i", W_new, W).abs() - 1).abs().max())
            W = W_new
            if limit < self.tol:
                break
        else:
            logger.warning("FastICA did not converge in %d iterations (tol %g)",
                           self.max_iter, self.tol)
        del X1

        components = W.double() @ whitening
        sources = self._sources(X, components.to(torch.float32), mean32)
        std = sources.std(0, unbiased=False).clamp_min(1e-12)
        sources /= std
        components = components / std.double()[:, None]

        self.components_ = components.to(torch.float32).cpu().numpy()
        self.mixing_ = np.linalg.pinv(components.cpu().numpy()).astype(np.float32)
        self.mean_ = mean.to(torch.float32).cpu().numpy()
        self.whitening_ = whitening32.cpu().numpy()
        self.explained_variance_ = (eigvals / n_samples).to(torch.float32).cpu().numpy()
        self.n_iter_ = n_iter
        return sources, dtype


def _leading_components(X: torch.Tensor, n_components: int, chunk: int) -> torch.Tensor:
    """Top principal components of ``X`` (n_time, n_space) as maps, scaled by singular value.

    Centres every spatial column over time and returns ``S_r V_r^T``, shape
    (n_components, n_space), from the smaller of the two Gram matrices.
    """
    n_time, n_space = X.shape
    mean = column_mean(X, chunk).to(torch.float32)
    if n_time <= n_space:  # time Gram: (X - m)(X - m)^T
        centred = X - mean
        eigvals, eigvecs = torch.linalg.eigh((centred @ centred.T).double())
        order = torch.argsort(eigvals, descending=True)[:n_components]
        return eigvecs[:, order].T.to(torch.float32) @ centred
    eigvals, eigvecs = torch.linalg.eigh(centered_gram(X, mean, chunk))
    order = torch.argsort(eigvals, descending=True)[:n_components]
    vectors = eigvecs[:, order].T
    return (vectors * eigvals[order].clamp_min(0).sqrt()[:, None]).to(torch.float32)


class GroupICA(BaseEstimator):
    """CanICA-style group ICA: independent spatial maps shared by many inputs.

    Parameters
    ----------
    n_components : int, default=10
        Number of group components.
    n_components_per_input : int, optional
        Principal components kept from each input (default ``2 * n_components``).
    max_iter, tol, random_state, device, chunk_size
        Passed to :class:`FastICA`.

    Attributes
    ----------
    components_ : ndarray, shape (n_components, n_space)
        Independent maps over the spatial axis, unit variance, each signed so that its
        heavy tail is positive (positive skewness).
    group_subspace_ : ndarray, shape (n_components, n_space)
        The group PCA reduction the ICA unmixed.
    n_features_in_ : int
        Size of the spatial axis.
    """

    def __init__(self, n_components: int = 10, *, n_components_per_input: int | None = None,
                 max_iter: int = 200, tol: float = 1e-4, random_state=None, device=None,
                 chunk_size: int | None = None):
        self.n_components = n_components
        self.n_components_per_input = n_components_per_input
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.chunk_size = chunk_size

    def fit(self, inputs: Sequence, y=None) -> "GroupICA":
        """Fit on a sequence of arrays, each (n_time_i, n_space) with a common n_space.

        Returns self.
        """
        if sparse.issparse(inputs) or (isinstance(inputs, (np.ndarray, torch.Tensor))
                                       and inputs.ndim <= 2):
            inputs = [inputs]  # one input; validated_input explains what is wrong with it
        if len(inputs) == 0:
            raise ValueError("GroupICA.fit needs at least one input (n_time, n_space) array")
        device = resolve_device(self.device)
        per_input = self.n_components_per_input or 2 * self.n_components
        reduced = []
        n_space = None
        for i, data in enumerate(inputs):
            if i > 0 and np.ndim(data) == 2 and np.shape(data)[1] != n_space:
                raise ValueError(f"inputs[{i}] has {np.shape(data)[1]} columns, expected {n_space} "
                                 "(every input must share the spatial axis)")
            data = validated_input(self, data, reset=i == 0, name=f"inputs[{i}]",
                                   ensure_min_samples=2)
            X = to_device(data, device, self.chunk_size, name=f"inputs[{i}]")
            n_space = X.shape[1]
            chunk = default_chunk_rows(X.shape[1], self.chunk_size)
            k = min(per_input, X.shape[0] - 1, X.shape[1])
            if k < 1:
                raise ValueError(f"inputs[{i}] has {X.shape[0]} rows; need at least 2")
            reduced.append(_leading_components(X, k, chunk))
            del X
        stack = torch.cat(reduced)
        if self.n_components > min(stack.shape):
            raise ValueError(f"n_components={self.n_components} exceeds the rank available "
                             f"from the inputs ({min(stack.shape)})")
        chunk = default_chunk_rows(n_space, self.chunk_size)
        subspace = _leading_components(stack, self.n_components, chunk)
        ica = FastICA(self.n_components, max_iter=self.max_iter, tol=self.tol,
                      random_state=self.random_state, device=device, chunk_size=self.chunk_size)
        maps = torch.as_tensor(ica.fit_transform(subspace.T), device=device).T
        skew = ((maps - maps.mean(1, keepdim=True)) ** 3).mean(1)
        maps = maps * torch.where(skew < 0, -1.0, 1.0)[:, None]
        self.components_ = maps.cpu().numpy()
        self.group_subspace_ = subspace.cpu().numpy()
        return self
