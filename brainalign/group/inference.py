"""Group-level inference with family-wise error control: :func:`group_map`, the one entry point.

Per-subject maps on one masker's targets (held-out r, a band's unique r, ...) are tested
against zero across subjects by sign flipping, with the family-wise error rate controlled
over the masker's targets. The test follows the space:

================  ======================  ===================================================
masker            methods (``"auto"``     library
                  picks the first)
================  ======================  ===================================================
RoiTableMasker    maxt                    :func:`nilearn.mass_univariate.permuted_ols`
SurfaceMasker     cluster, tfce, maxt     :func:`brainalign.group.surface.cluster_test`
                                          (sign flips, scipy's connected components on
                                          the mesh's edges; max-t: nilearn)
VolumeMasker      cluster, maxt, tfce     :func:`nilearn.glm.second_level.non_parametric_inference`
================  ======================  ===================================================

Cluster inference (cluster mass above a cluster-forming p of ``cluster_p``) is the default
where targets have neighbours: it is the more sensitive test for spatially extended
effects, at the price of saying only that an effect lies somewhere in a significant
cluster. ``"maxt"`` gives a p-value per target; ``"tfce"`` per target without a
cluster-forming threshold, slower. Correlation maps are Fisher z transformed before the
test (:mod:`brainalign.group.inputs`); the t map is
:func:`mne.stats.ttest_1samp_no_p` of the tested values in every space.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Mapping, Sequence

import numpy as np

from brainalign.brain.roi_table import RoiTableMasker
from brainalign.brain.surface import SurfaceMasker
from brainalign.brain.volume import VolumeMasker

from .inputs import prepare_maps, resolve_masker
from .result import GroupMap

logger = logging.getLogger(__name__)

#: Methods each kind of masker allows; ``"auto"`` means the first.
SPACE_METHODS = {RoiTableMasker: ("maxt",), SurfaceMasker: ("cluster", "tfce", "maxt"),
                 VolumeMasker: ("cluster", "maxt", "tfce")}
METHODS = ("auto", "maxt", "cluster", "tfce")
TAILS = (1, 0, -1)


def group_map(subject_maps, masker_or_space, *, method: str = "auto", n_perm: int = 1000,
              tail: int = 1, fisher_z: bool = True, cluster_p: float = 0.001,
              tfce_step: float = 0.2, adjacency=None, nan_policy: str = "raise",
              subjects: Sequence[str] | None = None, measure: str = "r",
              random_state: int | None = None, n_jobs: int = 1,
              provenance: Mapping[str, Any] | None = None) -> GroupMap:
    """Test per-subject maps against zero across subjects, with family-wise error control.

    Parameters
    ----------
    subject_maps : array-like, shape (n_subjects, n_targets)
        One map per subject on the masker's targets (e.g. held-out Pearson r of each
        subject's encoding model). At least 2 subjects; with n subjects a sign-flip test
        cannot give p below about ``1 / 2 ** n`` (one-sided), so 5 or more are needed for
        p < .05 and 10 or more for a useful test. The result's
        ``parameters["smallest_attainable_p"]`` records that floor, and a warning is
        logged when it is .05 or more.
    masker_or_space : fitted VolumeMasker / SurfaceMasker / RoiTableMasker, BrainData, or str
        The space of the maps; a name (``"fsaverage5"``, ``"fsaverage4"``, ``"roi"``...)
        stands for every target of that space (see
        :func:`~brainalign.group.inputs.resolve_masker`).
    method : {"auto", "maxt", "cluster", "tfce"}
        ``"auto"``: cluster on surfaces and volumes, max-t on ROI tables (see the module
        docstring for what each space allows).
    n_perm : int
        Sign-flip permutations (surface clusters and TFCE use every flip when ``n_perm + 1``
        reaches their number). The smallest attainable p is about ``1 / (n_perm + 1)``
        (``1 / n_perm`` for volume clusters, whose null nilearn draws without the identity).
    tail : {1, 0, -1}
        1: test for a group mean above zero (the default: held-out r is informative only
        when positive); -1: below zero; 0: two-sided.
    fisher_z : bool
        Fisher z transform (``arctanh``) the maps before testing; for correlation maps
        (values in (-1, 1)). Set False for differences of correlations (a band's unique
        r), coefficients or other unbounded maps.
    cluster_p : float
        Cluster-forming threshold (``"cluster"``), an uncorrected p-value of the one-sample
        t with n_subjects - 1 degrees of freedom (two-sided when ``tail=0``).
    tfce_step : float
        Step between TFCE thresholds in t units (surfaces; nilearn picks its own steps
        in volumes).
    adjacency : scipy.sparse matrix, shape (n_targets, n_targets), optional
        Surfaces: which targets are neighbours. Default: the edges of the fsaverage mesh
        named by the masker's space (fsaverage3, fsaverage4, fsaverage5;
        :func:`brainalign.group.mesh.surface_adjacency`).
    nan_policy : {"raise", "omit"}
        A NaN in a subject's map raises, or leaves that target out of the tested family
        (NaN in the outputs). Targets with the same value in every subject are always left
        out (their t is undefined).
    subjects : sequence of str, optional
        Subject labels (default ``"01", "02", ...``).
    measure : str
        What the maps hold, kept in the result and file sidecars (``"r"``,
        ``"unique_r:<band>"``).
    random_state : int or None
        Seed of the sign flips.
    n_jobs : int
        Parallel jobs of the permutation loop.
    provenance : mapping, optional
        Description stored with the result (model, study config hash...).

    Returns
    -------
    GroupMap
        ``t``, ``mean`` and ``p_fwe`` per target (NaN where untested).

    References
    ----------
    Nichols & Holmes (2002), Hum Brain Mapp 15:1-25 (max-t); Maris & Oostenveld (2007),
    J Neurosci Methods 164:177-190 (cluster mass); Smith & Nichols (2009), NeuroImage
    44:83-98 (TFCE).
    """
    from mne.stats import ttest_1samp_no_p

    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {list(TAILS)}, got {tail!r}")
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm must be an integer >= 1, got {n_perm!r}")
    if not 0 < cluster_p < 1:
        raise ValueError(f"cluster_p must lie in (0, 1), got {cluster_p!r}")
    if not tfce_step > 0:
        raise ValueError(f"tfce_step must be > 0, got {tfce_step!r}")
    values, tested = prepare_maps(subject_maps, fisher_z=fisher_z, nan_policy=nan_policy)
    n_subjects, n_targets = values.shape
    masker = resolve_masker(masker_or_space, n_targets)
    allowed = next(methods for kind, methods in SPACE_METHODS.items() if isinstance(masker, kind))
    chosen = allowed[0] if method == "auto" else method
    if chosen not in allowed:
        raise ValueError(f"method {method!r} is not available for {type(masker).__name__} "
                         f"targets; allowed: {['auto', *allowed]}")
    if adjacency is not None and not isinstance(masker, SurfaceMasker):
        raise ValueError(f"adjacency is for surfaces; the maps are on a {type(masker).__name__}")
    subjects = ([f"{i + 1:02d}" for i in range(n_subjects)] if subjects is None
                else [str(s) for s in subjects])
    if len(subjects) != n_subjects:
        raise ValueError(f"subjects has {len(subjects)} labels for {n_subjects} maps")

    smallest_p = smallest_attainable_p(
        n_subjects, n_perm, tail,
        counts_identity=not (isinstance(masker, VolumeMasker) and chosen == "cluster"))
    if smallest_p >= 0.05:
        logger.warning("group map of %s: with %d subjects the smallest attainable p_FWE is "
                       "%.3g, so no target can pass p < .05; 5 or more subjects are needed "
                       "(10 or more for a useful test)", measure, n_subjects, smallest_p)
    # tail -1 tests the negated maps' upper tail; tail 0 is two-sided
    flipped = (-1.0 if tail == -1 else 1.0) * values[:, tested]
    options = dict(n_perm=int(n_perm), two_sided=tail == 0, random_state=random_state,
                   n_jobs=n_jobs)
    if chosen == "maxt":
        from .maxt import maxt_test

        p_tested, parameters = maxt_test(flipped, **options)
        library = "nilearn"
    elif isinstance(masker, SurfaceMasker):
        from .mesh import surface_adjacency
        from .surface import cluster_test

        graph = (surface_adjacency(masker) if adjacency is None
                 else _check_adjacency(adjacency, n_targets))
        p_tested, parameters = cluster_test(flipped, graph[tested][:, tested], method=chosen,
                                            cluster_p=cluster_p, tfce_step=tfce_step, **options)
        parameters["adjacency"] = f"{masker.space_} mesh edges" if adjacency is None else "given"
        library = "scipy"
    else:
        from .volume import volume_test

        p_tested, parameters = volume_test(flipped, masker, tested, method=chosen,
                                           cluster_p=cluster_p, **options)
        library = "nilearn"

    t, mean, p_fwe = (np.full(n_targets, np.nan) for _ in range(3))
    t[tested] = ttest_1samp_no_p(values[:, tested])
    mean[tested] = values[:, tested].mean(axis=0)
    if fisher_z:
        mean = np.tanh(mean)
    p_fwe[tested] = p_tested
    parameters.update(library=f"{library} {metadata.version(library)}",
                      smallest_attainable_p=smallest_p,
                      random_state=random_state, n_tested=int(tested.sum()),
                      n_targets=n_targets)
    return GroupMap(t=t, mean=mean, p_fwe=p_fwe, tested=tested, method=chosen,
                    n_perm=int(n_perm), tail=tail, subjects=subjects, space=masker.space_,
                    measure=measure, fisher_z=fisher_z, parameters=parameters,
                    provenance=dict(provenance or {}))


def smallest_attainable_p(n_subjects: int, n_perm: int, tail: int,
                          counts_identity: bool = True) -> float:
    """The smallest p_FWE a sign-flip test of ``n_subjects`` maps can give (about).

    A sign-flip null has ``2 ** n_subjects`` flips (half as many distinct ones two-sided,
    ``tail=0``), the observed one among them, so p cannot go below about ``1 / 2 ** n``
    (random flips drawn with replacement estimate it), nor below ``1 / (n_perm + 1)``, or
    ``1 / n_perm`` for a null of ``n_perm`` draws that leaves the identity out
    (``counts_identity=False``: nilearn's volume clusters).
    """
    return max(2.0 ** -(n_subjects - (tail == 0)),
               1.0 / (n_perm + 1 if counts_identity else n_perm))


def _check_adjacency(adjacency, n_targets: int):
    from scipy import sparse

    if not sparse.issparse(adjacency) or adjacency.shape != (n_targets, n_targets):
        raise ValueError(f"adjacency must be a scipy sparse matrix of shape ({n_targets}, "
                         f"{n_targets}), got {type(adjacency).__name__} of shape "
                         f"{getattr(adjacency, 'shape', None)}")
    # an edge is an edge whichever triangle stores it (and a stored 0 is none)
    edges = sparse.csr_matrix(adjacency) != 0
    return sparse.csr_matrix(edges + edges.T, dtype=np.int8)
