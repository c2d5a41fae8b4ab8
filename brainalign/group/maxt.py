"""Target-level max-t inference by sign flipping: nilearn's ``permuted_ols``.

For ROI tables (and surfaces when asked), each target's one-sample t is compared with the
distribution of the largest t over all tested targets under random sign flips of the
subjects' maps (Nichols & Holmes 2002), which controls the family-wise error rate over
the targets. :func:`nilearn.mass_univariate.permuted_ols` runs it (an intercept-only
design is tested by sign flipping); p-values count the identity among the draws,
``(1 + #{max t >= t}) / (n_perm + 1)``.

Why not :func:`mne.stats.permutation_t_test`: it builds the max distribution from |t| for
every tail (mne-python issue #11511), so its one-sided p-values are about twice too large.
"""

from __future__ import annotations

import numpy as np


def maxt_test(values: np.ndarray, *, n_perm: int, two_sided: bool, random_state,
              n_jobs: int = 1) -> tuple[np.ndarray, dict]:
    """One-sample max-t permutation test of ``values`` (upper tail unless ``two_sided``).

    Parameters
    ----------
    values : ndarray, shape (n_subjects, n_tested)
    n_perm : int
        Random sign-flip draws.
    two_sided : bool
        Test |t| instead of t.
    random_state : int, RandomState or None
    n_jobs : int

    Returns
    -------
    p_fwe : ndarray, shape (n_tested,)
    parameters : dict
    """
    from nilearn.mass_univariate import permuted_ols

    outputs = permuted_ols(np.ones((len(values), 1)), values, model_intercept=True,
                           n_perm=n_perm, two_sided_test=two_sided, random_state=random_state,
                           n_jobs=n_jobs, verbose=0, output_type="dict")
    return (10.0 ** -outputs["logp_max_t"][0],
            {"function": "nilearn.mass_univariate.permuted_ols", "statistic": "max t"})
