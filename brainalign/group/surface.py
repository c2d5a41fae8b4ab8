"""Cluster and TFCE inference on a mesh, by sign flipping the subjects' maps.

Targets are vertices joined by the mesh's edges (:mod:`brainalign.group.mesh`). Each draw
flips the signs of some subjects' maps, recomputes the one-sample t map, and enters the
largest cluster statistic over the surface into the null (Maris & Oostenveld 2007):

- ``"cluster"``: clusters of neighbouring vertices whose t exceeds the t of the
  cluster-forming p-value (``cluster_p``, one-sided or two-sided with the test, n - 1
  degrees of freedom); a cluster's statistic is its mass, the sum of its t values. Every
  vertex of a cluster gets the cluster's p-value, vertices outside every cluster get 1;
  a significant cluster says that the effect is somewhere in it, not at each vertex.
- ``"tfce"``: threshold-free cluster enhancement (Smith & Nichols 2009): at every
  threshold ``h`` in ``0, step, 2 step, ...`` below the largest t, each vertex above ``h``
  gains ``extent ** 0.5 * h ** 2 * step`` (extent: the vertices of its cluster at ``h``);
  each vertex gets its own FWE p-value from the max-TFCE null.

The null holds the observed maps (the identity flip) and ``n_perm`` other flips drawn
without replacement, or every flip when ``n_perm`` reaches their number: ``2 ** n``
one-sided, ``2 ** (n - 1)`` two-sided (a flip and its negation give the same absolute
statistics, so the last subject keeps its sign). ``p = #{null >= observed} / len(null)``,
so p is never below ``1 / 2 ** n`` (exact) or ``1 / (n_perm + 1)``.

Why not :func:`mne.stats.permutation_cluster_1samp_test`, which computes the same
statistics (the two-sided exact test is checked against it): one-sided, its flips leave
out the negated maps and count the identity twice (it draws sign patterns from
``1 .. 2 ** n - 1`` and reads bit 1 as +), so its smallest p is ``2 / 2 ** n`` and its
p-values are one draw too large; with 5 subjects no TFCE vertex could reach .05. Clusters
are :func:`scipy.sparse.csgraph.connected_components` of the supra-threshold vertices.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components

#: TFCE's extent and height exponents (Smith & Nichols 2009; MNE's and FSL's defaults).
TFCE_E, TFCE_H = 0.5, 2.0
#: Sign-flip draws whose t maps are computed together.
FLIPS_PER_CHUNK = 32


def sign_flips(n_subjects: int, n_perm: int, two_sided: bool, random_state
               ) -> tuple[np.ndarray, bool]:
    """The sign flips of a one-sample test: the identity first, then the others.

    Returns
    -------
    flips : ndarray, shape (n_draws, n_subjects), float64 of +-1
        Every distinct flip when ``n_perm + 1`` reaches their number (``2 ** n``, or
        ``2 ** (n - 1)`` two-sided, the last subject's sign kept), else the identity and
        ``n_perm`` others drawn without replacement.
    exact : bool
    """
    free = n_subjects - int(two_sided)  # subjects whose sign is flipped
    rng = np.random.default_rng(random_state)
    exact = free < 63 and n_perm + 1 >= 2 ** free
    if exact:
        codes = np.arange(2 ** free, dtype=np.int64)
    elif free < 63:
        codes = 1 + rng.choice(2 ** free - 1, size=n_perm, replace=False)
        codes = np.concatenate([[0], codes])
    else:  # too many patterns to enumerate: a repeat is vanishingly unlikely
        bits = rng.integers(0, 2, size=(n_perm, free))
        bits = bits[bits.any(axis=1)]
        flips = np.vstack([np.ones((1, free)), 1.0 - 2.0 * bits])
        return np.hstack([flips, np.ones((len(flips), n_subjects - free))]), False
    bits = (codes[:, None] >> np.arange(free)) & 1
    flips = 1.0 - 2.0 * bits
    return np.hstack([flips, np.ones((len(flips), n_subjects - free))]), exact


def _t_maps(values: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """One-sample t of each flipped copy of ``values`` (n_subjects, n_targets):
    (n_flips, n_targets), as :func:`mne.stats.ttest_1samp_no_p`."""
    flipped = flips[:, :, None] * values[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return flipped.mean(axis=1) / np.sqrt(flipped.var(axis=1, ddof=1) / values.shape[0])


class _Clusters:
    """Connected supra-threshold vertices of a graph given by its edges."""

    def __init__(self, adjacency):
        upper = sparse.triu(sparse.csr_matrix(adjacency), k=1).tocoo()
        self.i, self.j = upper.row, upper.col
        self.n = adjacency.shape[0]

    def label(self, above: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The supra-threshold vertices and their cluster labels 0, 1, ... (by vertex order)."""
        members = np.flatnonzero(above)
        if not len(members):
            return members, members
        keep = above[self.i] & above[self.j]
        graph = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.int8),
                                   (self.i[keep], self.j[keep])), shape=(self.n, self.n))
        _, labels = connected_components(graph, directed=False)
        _, labels = np.unique(labels[members], return_inverse=True)
        return members, labels


def _cluster_masses(t: np.ndarray, clusters: _Clusters, threshold: float, two_sided: bool
                    ) -> list[tuple[np.ndarray, float]]:
    """(member vertices, mass) of every cluster of ``t > threshold`` (and ``t < -threshold``
    two-sided, with negative mass)."""
    out = []
    for sign in ((1.0, -1.0) if two_sided else (1.0,)):
        members, labels = clusters.label(sign * t > threshold)
        masses = np.bincount(labels, weights=t[members]) if len(members) else []
        out += [(members[labels == k], float(mass)) for k, mass in enumerate(masses)]
    return out


def _tfce(t: np.ndarray, clusters: _Clusters, step: float, two_sided: bool) -> np.ndarray:
    """TFCE score of every vertex (negative for the negative tail, two-sided)."""
    score = np.zeros_like(t)
    finite = np.where(np.isfinite(t), t, 0.0)
    for sign in ((1.0, -1.0) if two_sided else (1.0,)):
        signed = sign * finite
        for height in np.arange(0.0, signed.max(), step):
            members, labels = clusters.label(signed > height)
            extent = np.bincount(labels)
            score[members] += sign * extent[labels] ** TFCE_E * height ** TFCE_H * step
    return score


def _null(values, flips, clusters, method, threshold, step, two_sided) -> np.ndarray:
    """The largest |cluster mass| or |TFCE| of each flip's t map (0 without a cluster)."""
    out = np.zeros(len(flips))
    for start in range(0, len(flips), FLIPS_PER_CHUNK):
        for index, t in enumerate(_t_maps(values, flips[start:start + FLIPS_PER_CHUNK])):
            if method == "cluster":
                masses = [abs(m) for _, m in _cluster_masses(t, clusters, threshold, two_sided)]
                out[start + index] = max(masses, default=0.0)
            else:
                out[start + index] = np.abs(_tfce(t, clusters, step, two_sided)).max()
    return out


def _p_values(statistics: np.ndarray, null: np.ndarray) -> np.ndarray:
    """``#{null >= |statistic|} / len(null)``, ties within float rounding counted."""
    edge = np.abs(statistics) * (1 - 1e-12) - 1e-12
    return (null[None, :] >= edge[:, None]).mean(axis=1)


def cluster_test(values: np.ndarray, adjacency, *, method: str, n_perm: int, two_sided: bool,
                 cluster_p: float, tfce_step: float, random_state,
                 n_jobs: int = 1) -> tuple[np.ndarray, dict]:
    """Cluster-mass or TFCE permutation test of ``values`` on a mesh (upper tail unless
    ``two_sided``).

    Parameters
    ----------
    values : ndarray, shape (n_subjects, n_tested)
    adjacency : scipy.sparse matrix, shape (n_tested, n_tested)
    method : {"cluster", "tfce"}
    n_perm : int
        Sign flips besides the identity (every flip when ``n_perm + 1`` reaches their
        number: see the module docstring).
    two_sided : bool
    cluster_p : float
        Cluster-forming threshold as an uncorrected p-value (``"cluster"``).
    tfce_step : float
        Step between TFCE thresholds, in t units (``"tfce"``).
    random_state : int, numpy Generator or None
    n_jobs : int
        Processes sharing the draws (joblib).

    Returns
    -------
    p_fwe : ndarray, shape (n_tested,)
    parameters : dict
    """
    values = np.asarray(values, dtype=np.float64)
    n_subjects = len(values)
    clusters = _Clusters(adjacency)
    flips, exact = sign_flips(n_subjects, n_perm, two_sided, random_state)
    if method == "cluster":
        threshold = float(stats.t.isf(cluster_p / (2 if two_sided else 1), df=n_subjects - 1))
        parameters = {"cluster_forming_p": cluster_p, "cluster_forming_t": threshold,
                      "statistic": "cluster mass (sum of t)"}
    else:
        threshold = None
        parameters = {"tfce": {"start": 0.0, "step": float(tfce_step), "e_power": TFCE_E,
                               "h_power": TFCE_H}, "statistic": "max TFCE"}
    arguments = (clusters, method, threshold, tfce_step, two_sided)
    if n_jobs == 1:
        null = _null(values, flips, *arguments)
    else:
        from joblib import Parallel, delayed

        parts = np.array_split(flips, max(1, min(len(flips), abs(n_jobs) * 4)))
        null = np.concatenate(Parallel(n_jobs=n_jobs)(
            delayed(_null)(values, part, *arguments) for part in parts))
    (t_observed,) = _t_maps(values, flips[:1])
    p_fwe = np.ones(values.shape[1])
    if method == "cluster":
        for members, mass in _cluster_masses(t_observed, clusters, threshold, two_sided):
            p_fwe[members] = _p_values(np.array([mass]), null)[0]
    else:
        score = _tfce(t_observed, clusters, tfce_step, two_sided)
        scored = score != 0
        p_fwe[scored] = _p_values(score[scored], null)
    parameters.update(function="brainalign.group.surface.cluster_test (sign flips; clusters: "
                               "scipy.sparse.csgraph.connected_components)",
                      exact=exact, n_draws=len(flips))
    return p_fwe, parameters
