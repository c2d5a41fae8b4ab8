"""What a group test starts from: the subjects' maps on one masker's targets, checked.

:func:`resolve_masker` turns a fitted brainalign masker, a BrainData holding one, or a space
name into a fitted masker; :func:`prepare_maps` checks the maps (shape, finite values,
enough subjects), applies Fisher's z to correlation maps and finds the targets that can be
tested. This is bookkeeping on numpy arrays that no statistics library does for us.

Fisher's z, ``z = arctanh(r)``, makes the sampling distribution of a correlation close to
normal with a variance that does not depend on the true correlation, so t statistics of
z maps across subjects are better behaved than those of raw r (large r are otherwise
squeezed against 1). Group means are reported back in r units, ``tanh(mean z)``.
"""

from __future__ import annotations

import numpy as np

from brainalign.brain.base import BrainMasker
from brainalign.brain.roi_table import RoiTableMasker
from brainalign.brain.surface import FSAVERAGE_SPACES, SurfaceMasker

#: fsaverage space name -> vertices per hemisphere.
SURFACE_VERTICES = {name: n for n, name in FSAVERAGE_SPACES.items()}

NAN_POLICIES = ("raise", "omit")


def resolve_masker(masker_or_space, n_targets: int) -> BrainMasker:
    """A fitted masker over ``n_targets`` targets.

    Parameters
    ----------
    masker_or_space : fitted VolumeMasker / SurfaceMasker / RoiTableMasker, BrainData, or str
        A space name stands for every target of that space: ``"fsaverage3"`` ...
        ``"fsaverage"`` (both hemispheres, all vertices, left then right) or ``"roi"``
        (ROIs named ``roi000, roi001, ...``). Volumes need a masker (their mask).
    n_targets : int
        Number of targets of the maps.
    """
    if isinstance(masker_or_space, str):
        if masker_or_space in SURFACE_VERTICES:
            n_vertices = SURFACE_VERTICES[masker_or_space]
            masker = SurfaceMasker(mask={"L": np.ones(n_vertices, bool),
                                         "R": np.ones(n_vertices, bool)},
                                   space=masker_or_space).fit()
        elif masker_or_space == "roi":
            masker = RoiTableMasker(names=[f"roi{i:03d}" for i in range(n_targets)]).fit()
        else:
            raise ValueError(f"unknown space {masker_or_space!r}; give a fitted masker, or one of "
                             f"{[*SURFACE_VERTICES, 'roi']} (volumes need a VolumeMasker)")
    else:
        masker = getattr(masker_or_space, "masker", masker_or_space)
        if not isinstance(masker, BrainMasker) or not hasattr(masker, "n_targets_"):
            raise ValueError("group_map needs a fitted brainalign masker, a BrainData holding "
                             f"one, or a space name; got {type(masker_or_space).__name__}")
    if masker.n_targets_ != n_targets:
        raise ValueError(f"the maps have {n_targets} targets but the masker of space "
                         f"{masker.space_!r} has {masker.n_targets_}")
    return masker


def prepare_maps(subject_maps, *, fisher_z: bool,
                 nan_policy: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Checked (and Fisher z transformed) subject maps and the targets that can be tested.

    Parameters
    ----------
    subject_maps : array-like, shape (n_subjects, n_targets)
        One map per subject (a list of 1-D maps works too).
    fisher_z : bool
        Transform with ``arctanh`` (correlation maps; every value must lie in (-1, 1)).
    nan_policy : {"raise", "omit"}
        NaN values raise, or leave their targets out of the tested family.

    Returns
    -------
    values : ndarray, shape (n_subjects, n_targets), float64
        The maps (Fisher z when asked); NaN where the input was NaN.
    tested : ndarray of bool, shape (n_targets,)
        Targets with a value in every subject that are not the same in all subjects.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
    values = np.array(subject_maps, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError("subject_maps must have shape (n_subjects, n_targets), got shape "
                         f"{values.shape}")
    n_subjects, n_targets = values.shape
    if n_subjects < 2:
        raise ValueError(f"group inference needs maps of at least 2 subjects, got {n_subjects}")
    if np.isinf(values).any():
        raise ValueError(f"subject_maps hold {int(np.isinf(values).sum())} infinite values")
    missing = np.isnan(values)
    if missing.any() and nan_policy == "raise":
        raise ValueError(f"subject_maps hold NaN at {int(missing.any(axis=0).sum())} of "
                         f"{n_targets} targets (in {int(missing.any(axis=1).sum())} of "
                         f"{n_subjects} subjects); pass nan_policy='omit' to leave those "
                         "targets out of the test")
    if fisher_z:
        outside = np.abs(values[~missing]) >= 1
        if outside.any():
            raise ValueError(f"fisher_z=True needs correlations in (-1, 1), but "
                             f"{int(outside.sum())} values lie outside; pass fisher_z=False "
                             "for maps that are not correlations")
        values = np.arctanh(values)
    varies = np.ptp(np.where(missing, 0.0, values), axis=0) > 0
    tested = ~missing.any(axis=0) & varies
    if not tested.any():
        raise ValueError("no target can be tested: every target has a NaN in some subject or "
                         "the same value in all subjects")
    return values, tested
