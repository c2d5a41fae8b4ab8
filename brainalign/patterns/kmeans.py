"""k-means clustering on a torch device (Lloyd's algorithm with greedy k-means++ seeding).

Written by hand because scikit-learn's :class:`sklearn.cluster.KMeans` runs on CPU only
and no maintained library clusters half a million 2,000-dimensional neuron time courses
on a GPU. The algorithm follows scikit-learn's choices so results agree with it: greedy
k-means++ with ``2 + log(k)`` local trials, a tolerance relative to the mean feature
variance, strict convergence when labels stop changing, the best of ``n_init`` runs by
inertia, and empty clusters moved to the points farthest from their centres.

Squared distances are computed as ``|x|^2 - 2 x.c + |c|^2`` one block of rows at a time,
so the data exist once on the device. Blocks are sized by the temporaries they create:
about 256 MiB of ``(rows, n_clusters)`` distances, or of ``(rows, n_features)`` values
where a step forms those (norms, inertia). On a GPU the distance blocks therefore hold
many more rows than the feature blocks, and k-means++ seeding, whose distances have only
``2 + log(k)`` columns, computes each round in one matrix product.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state

from brainalign.patterns.streaming import (column_mean, default_chunk_rows, fitted_input,
                                           resolve_device, row_chunks, to_device,
                                           validated_input)

logger = logging.getLogger(__name__)


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means on CPU or CUDA with scikit-learn's interface.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k.
    n_init : int, default=1
        Number of k-means++ seedings; the run with the lowest inertia is kept
        (scikit-learn's ``n_init="auto"`` is 1 for k-means++).
    max_iter : int, default=300
        Maximum Lloyd iterations per run.
    tol : float, default=1e-4
        Convergence when the summed squared centre shift is below ``tol`` times the
        mean variance of the features (scikit-learn's rule). ``tol=0`` runs until labels
        stop changing or ``max_iter``.
    random_state : int, RandomState or None
        Seed of the k-means++ draws.
    device : str, torch.device or None
        Compute device; None picks CUDA when available.
    chunk_size : int, optional
        Rows per block of data processed at once (default: blocks whose temporaries,
        ``(rows, n_clusters)`` distances or ``(rows, n_features)`` values, hold about
        256 MiB of float32).

    Attributes
    ----------
    cluster_centers_ : ndarray, shape (n_clusters, n_features), float32
    labels_ : ndarray, shape (n_samples,), int64
    inertia_ : float
        Sum of squared distances of samples to their centre.
    n_iter_ : int
        Lloyd iterations of the kept run.
    n_features_in_ : int
    """

    def __init__(self, n_clusters: int = 8, *, n_init: int = 1, max_iter: int = 300,
                 tol: float = 1e-4, random_state=None, device=None, chunk_size: int | None = None):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.chunk_size = chunk_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- public API ---------------------------------------------------------------------

    def fit(self, X, y=None) -> "KMeans":
        """Cluster the rows of ``X`` (n_samples, n_features); returns self."""
        device = resolve_device(self.device)
        X = to_device(validated_input(self, X, reset=True), device, self.chunk_size)
        n_samples, n_features = X.shape
        if not 1 <= self.n_clusters <= n_samples:
            raise ValueError(
                f"n_clusters must be between 1 and n_samples={n_samples}, got {self.n_clusters}")
        if self.n_init < 1 or self.max_iter < 1:
            raise ValueError(f"n_init and max_iter must be >= 1, got {self.n_init}, {self.max_iter}")
        rng = check_random_state(self.random_state)
        chunk = default_chunk_rows(n_features, self.chunk_size)
        x_sq = torch.cat([(X[rows] ** 2).sum(1) for rows in row_chunks(n_samples, chunk)])
        tol = self._scaled_tol(X, chunk)
        best = None
        for run in range(self.n_init):
            centers = self._kmeans_plusplus(X, x_sq, rng)
            centers, labels, inertia, n_iter = self._lloyd(X, x_sq, centers, tol, chunk)
            logger.info("k-means run %d/%d: inertia %.6g after %d iterations",
                        run + 1, self.n_init, inertia, n_iter)
            if best is None or inertia < best[2]:
                best = (centers, labels, inertia, n_iter)
        centers, labels, inertia, n_iter = best
        self.cluster_centers_ = centers.cpu().numpy()
        self.labels_ = labels.cpu().numpy()
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        return self

    def predict(self, X) -> np.ndarray:
        """Index of the closest centre for each row of ``X``, shape (n_samples,)."""
        labels, _ = self._assign(*self._prepared(X)[:3])
        return labels.cpu().numpy()

    def transform(self, X) -> np.ndarray:
        """Euclidean distance of each row to each centre, shape (n_samples, n_clusters).

        float32 input gives float32 distances; float64 input gives float64 distances,
        computed in float64 from the float32 copy of ``X`` on the device (the expanded form
        loses digits to cancellation in float32)."""
        X, x_sq, centers, chunk, dtype = self._prepared(X)
        if dtype == np.float64:
            centers = centers.double()
            x_sq = torch.cat([(X[rows].double() ** 2).sum(1)
                              for rows in row_chunks(X.shape[0], chunk)])
        out = [torch.sqrt(self._sq_dist_to(X, x_sq, centers, rows))
               for rows in row_chunks(X.shape[0], chunk)]
        return torch.cat(out).cpu().numpy()

    def score(self, X, y=None) -> float:
        """Opposite of the inertia of ``X`` under the fitted centres."""
        X, x_sq, centers, chunk, _ = self._prepared(X)
        labels, _ = self._assign(X, x_sq, centers)
        return -self._inertia(X, centers, labels, chunk)

    # -- internals ----------------------------------------------------------------------

    def _prepared(self, X):
        X, device, dtype = fitted_input(self, X, "cluster_centers_")
        chunk = default_chunk_rows(X.shape[1], self.chunk_size)
        x_sq = torch.cat([(X[rows] ** 2).sum(1) for rows in row_chunks(X.shape[0], chunk)])
        centers = torch.as_tensor(self.cluster_centers_, device=device)
        return X, x_sq, centers, chunk, dtype

    def _scaled_tol(self, X: torch.Tensor, chunk: int) -> float:
        if self.tol == 0:
            return 0.0
        mean = column_mean(X, chunk)
        sq = torch.zeros_like(mean)
        for rows in row_chunks(X.shape[0], chunk):
            sq += ((X[rows].double() - mean) ** 2).sum(0)
        return float((sq / X.shape[0]).mean()) * self.tol

    @staticmethod
    def _sq_dist_to(X, x_sq, points, rows):
        """Squared distances of rows ``rows`` of X to ``points`` (m, n_features), computed
        in the dtype of ``points``; one fused product, no temporary the size of the block."""
        p_sq = (points ** 2).sum(1)
        block = X[rows].to(points.dtype)  # a view when the dtypes agree
        return torch.addmm(x_sq[rows, None] + p_sq, block, points.T, alpha=-2).clamp_min(0)

    def _distance_rows(self, n_points: int) -> int:
        """Rows per block of an ``(rows, n_points)`` distance computation."""
        return default_chunk_rows(n_points, self.chunk_size)

    def _kmeans_plusplus(self, X, x_sq, rng) -> torch.Tensor:
        """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, scikit-learn's variant)."""
        n_samples = X.shape[0]
        n_local_trials = 2 + int(math.log(self.n_clusters))
        chunk = self._distance_rows(n_local_trials)
        centers = torch.empty(self.n_clusters, X.shape[1], dtype=X.dtype, device=X.device)
        centers[0] = X[rng.randint(n_samples)]
        closest = torch.cat([self._sq_dist_to(X, x_sq, centers[:1], rows)[:, 0]
                             for rows in row_chunks(n_samples, chunk)]).double()
        potential = closest.sum()
        for c in range(1, self.n_clusters):
            draws = torch.as_tensor(rng.uniform(size=n_local_trials), device=X.device,
                                    dtype=torch.float64) * potential
            candidates = torch.searchsorted(torch.cumsum(closest, 0), draws)
            candidates.clamp_(max=n_samples - 1)
            trial = torch.cat([self._sq_dist_to(X, x_sq, X[candidates], rows)
                               for rows in row_chunks(n_samples, chunk)]).double()
            trial = torch.minimum(trial, closest[:, None])
            potentials = trial.sum(0)
            best = int(torch.argmin(potentials))
            closest, potential = trial[:, best], potentials[best]
            centers[c] = X[candidates[best]]
        return centers

    def _assign(self, X, x_sq, centers):
        """Closest centre and squared distance for every row, block by block."""
        labels, dists = [], []
        for rows in row_chunks(X.shape[0], self._distance_rows(len(centers))):
            d, lab = self._sq_dist_to(X, x_sq, centers, rows).min(1)
            labels.append(lab)
            dists.append(d)
        return torch.cat(labels), torch.cat(dists)

    def _assign_and_sum(self, X, x_sq, centers):
        """One pass of a Lloyd step: labels, squared distances and per-cluster row sums.

        The sums are ``onehot(labels).T @ X`` per block, a matrix product on the block just
        used for the distances (on a GPU, faster than scattering rows with atomic adds in a
        second pass over the data).
        """
        labels, dists = [], []
        sums = torch.zeros_like(centers)
        for rows in row_chunks(X.shape[0], self._distance_rows(len(centers))):
            block = X[rows]
            d, lab = self._sq_dist_to(X, x_sq, centers, rows).min(1)
            onehot = torch.zeros(len(lab), len(centers), dtype=block.dtype, device=block.device)
            onehot.scatter_(1, lab[:, None], 1.0)
            sums += onehot.T @ block
            labels.append(lab)
            dists.append(d)
        return torch.cat(labels), torch.cat(dists), sums

    def _lloyd(self, X, x_sq, centers, tol, chunk):
        labels_old = None
        strict = False
        for n_iter in range(1, self.max_iter + 1):
            labels, dists, sums = self._assign_and_sum(X, x_sq, centers)
            counts = torch.bincount(labels, minlength=self.n_clusters)
            empty = torch.nonzero(counts == 0).flatten()
            new_centers = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
            if len(empty):  # move empty clusters to the worst-fitted points
                far = torch.topk(dists, len(empty)).indices
                new_centers[empty] = X[far]
            shift = float(((new_centers - centers) ** 2).sum())
            centers = new_centers
            if labels_old is not None and torch.equal(labels, labels_old):
                strict = True
                break
            if shift <= tol:
                break
            labels_old = labels
        if not strict:  # labels must match the final centres
            labels, _ = self._assign(X, x_sq, centers)
        return centers, labels, self._inertia(X, centers, labels, chunk), n_iter

    @staticmethod
    def _inertia(X, centers, labels, chunk) -> float:
        """Exact sum of squared distances (differences, not the expanded form)."""
        total = 0.0
        for rows in row_chunks(X.shape[0], chunk):
            total += float(((X[rows] - centers[labels[rows]]) ** 2).sum(dtype=torch.float64))
        return total
