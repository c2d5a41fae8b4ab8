"""Cluster and TFCE inference on a mesh: MNE's ``permutation_cluster_1samp_test``.

Targets are vertices joined by the mesh's edges (:mod:`brainalign.group.mesh`). The subjects'
maps are sign flipped (exhaustively when ``n_perm`` covers every flip) and, per draw, the
largest cluster statistic over the surface enters the null (Maris & Oostenveld 2007):

- ``"cluster"``: clusters of neighbouring vertices whose t exceeds the t of the
  cluster-forming p-value (``cluster_p``, one-sided or two-sided with the test, n - 1
  degrees of freedom); a cluster's statistic is its mass, the sum of its t values. Every
  vertex of a cluster gets the cluster's p-value, vertices outside every cluster get 1;
  a significant cluster says that the effect is somewhere in it, not at each vertex.
- ``"tfce"``: threshold-free cluster enhancement (Smith & Nichols 2009) with MNE's
  ``threshold=dict(start=0, step=tfce_step)`` (E = 0.5, H = 2); each vertex gets its own
  FWE p-value from the max-TFCE null.

MNE counts the identity among the draws. All the statistics are MNE's; this module maps
its clusters back to one p-value per vertex.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


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
        Sign-flip draws (MNE enumerates all ``2 ** (n_subjects - two_sided)`` flips when
        ``n_perm`` is larger).
    two_sided : bool
    cluster_p : float
        Cluster-forming threshold as an uncorrected p-value (``"cluster"``).
    tfce_step : float
        Step between TFCE thresholds, in t units (``"tfce"``).
    random_state : int, numpy Generator or None
    n_jobs : int

    Returns
    -------
    p_fwe : ndarray, shape (n_tested,)
    parameters : dict
    """
    from mne.stats import permutation_cluster_1samp_test

    n_subjects = len(values)
    if method == "cluster":
        threshold = float(stats.t.isf(cluster_p / (2 if two_sided else 1), df=n_subjects - 1))
        parameters = {"cluster_forming_p": cluster_p, "cluster_forming_t": threshold,
                      "statistic": "cluster mass (sum of t)"}
    else:
        threshold = {"start": 0.0, "step": float(tfce_step)}
        parameters = {"tfce": {**threshold, "e_power": 0.5, "h_power": 2.0},
                      "statistic": "max TFCE"}
    with warnings.catch_warnings():  # no supra-threshold vertex: MNE warns, p is 1 everywhere
        warnings.filterwarnings("ignore", message="No clusters found", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=r".*more extreme than data statistics",
                                category=RuntimeWarning)
        _, clusters, cluster_pv, _ = permutation_cluster_1samp_test(
            values, threshold=threshold, n_permutations=n_perm, tail=0 if two_sided else 1,
            adjacency=adjacency, n_jobs=n_jobs, rng=random_state, out_type="indices",
            verbose=False)
    p_fwe = np.ones(values.shape[1])
    for members, p_value in zip(clusters, cluster_pv):
        p_fwe[members] = p_value
    parameters.update(function="mne.stats.permutation_cluster_1samp_test",
                      exact=n_perm > 2 ** (n_subjects - two_sided) - 1)
    return p_fwe, parameters
