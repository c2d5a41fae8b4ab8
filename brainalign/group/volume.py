"""Voxel-, cluster- and TFCE-level inference in a volume: nilearn's ``non_parametric_inference``.

The subjects' maps go back to images through the masker and into
:func:`nilearn.glm.second_level.non_parametric_inference` with an intercept-only design
(a one-sample test by sign flipping, through :func:`nilearn.mass_univariate.permuted_ols`),
inside a mask of the tested voxels. Which of nilearn's FWE-corrected maps is read:

- ``"maxt"``: voxel-level max-t (``logp_max_t``);
- ``"cluster"``: cluster mass (``logp_max_mass``): clusters of face-connected voxels whose
  t exceeds that of the cluster-forming p-value ``cluster_p``; nilearn's mass is the sum
  of (t - threshold) over a cluster. Every voxel of a cluster gets the cluster's p-value,
  voxels outside clusters get (almost) 1;
- ``"tfce"``: threshold-free cluster enhancement (``logp_max_tfce``, nilearn's steps).

nilearn's voxel-level and TFCE p-values count the identity among the draws,
``(1 + #{null >= observed}) / (n_perm + 1)``; its cluster p-values are
``#{null >= observed} / n_perm``, kept within [1 / n_perm, 1 - 1 / n_perm].
"""

from __future__ import annotations

import warnings

import numpy as np

#: nilearn's -log10 FWE p image read for each method.
NILEARN_OUTPUTS = {"maxt": "logp_max_t", "cluster": "logp_max_mass", "tfce": "logp_max_tfce"}


def volume_test(values: np.ndarray, masker, tested: np.ndarray, *, method: str, n_perm: int,
                two_sided: bool, cluster_p: float, random_state,
                n_jobs: int = 1) -> tuple[np.ndarray, dict]:
    """One-sample permutation test of voxel maps (upper tail unless ``two_sided``).

    Parameters
    ----------
    values : ndarray, shape (n_subjects, n_tested)
        The tested voxels' values.
    masker : fitted brainalign.brain.VolumeMasker
    tested : ndarray of bool, shape (n_voxels,)
        Which of the masker's voxels ``values`` holds (in the masker's order).
    method : {"maxt", "cluster", "tfce"}
    n_perm : int
    two_sided : bool
    cluster_p : float
        Cluster-forming threshold as an uncorrected p-value (``"cluster"``).
    random_state : int, RandomState or None
    n_jobs : int

    Returns
    -------
    p_fwe : ndarray, shape (n_tested,)
    parameters : dict
    """
    import pandas as pd
    from nilearn.glm.second_level import non_parametric_inference
    from nilearn.image import iter_img
    from nilearn.masking import apply_mask

    full = np.zeros((len(values), masker.n_targets_), dtype=np.float32)
    full[:, tested] = values
    family = masker.inverse_transform(tested.astype(np.float32))  # 1 on tested voxels
    images = list(iter_img(masker.inverse_transform(full)))
    with warnings.catch_warnings():  # nilearn's own cluster-label images are int64
        warnings.filterwarnings("ignore", message=r".*contains 64-bit ints", category=UserWarning)
        outputs = non_parametric_inference(
            images, design_matrix=pd.DataFrame({"intercept": np.ones(len(values))}),
            second_level_contrast="intercept", mask=family, n_perm=n_perm,
            two_sided_test=two_sided, random_state=random_state, n_jobs=n_jobs,
            threshold=cluster_p if method == "cluster" else None, tfce=method == "tfce")
    if method == "maxt":  # nilearn returns the one image
        outputs = {"logp_max_t": outputs}
    log_p = apply_mask(outputs[NILEARN_OUTPUTS[method]], family)
    parameters = {"function": "nilearn.glm.second_level.non_parametric_inference",
                  "statistic": {"maxt": "max t", "cluster": "cluster mass (sum of t - threshold)",
                                "tfce": "max TFCE"}[method],
                  "connectivity": "voxel faces (6-neighbourhood)"}
    if method == "cluster":
        parameters["cluster_forming_p"] = cluster_p
    return 10.0 ** -log_p, parameters
