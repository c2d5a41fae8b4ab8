"""Brain spaces of a study: simulated target spaces, their atlases and map writers.

A study's fMRI lives in one or more spaces (``fsaverage5``, ``MNI152_3mm``, ``MNI152_2mm``,
``roi``). For each, this module gives the :class:`~brainalign.networks.Atlas` used to plant
networks in a simulation and to map patterns onto networks, and a fitted masker from
:mod:`brainalign.brain` that :func:`brainalign.export.save_map` writes maps with.

Atlases come from :func:`brainalign.networks.load_atlas`. Yeo in MNI space needs the
neuroparc files (``$BRAINALIGN_SHARED_DATA/yeo2011_mni``); where they are absent, volume
spaces fall back to Dosenbach's 160 spheres (6 networks) rendered on the same grid from the
coordinate table that ships with nilearn, and the choice is recorded in a note. ROI spaces
use the Dosenbach ROIs themselves (one target per ROI).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: fMRI spaces a study can name in ``fmri.spaces``.
SPACES = ("fsaverage5", "MNI152_3mm", "MNI152_2mm", "roi")


@dataclass
class SpaceAtlas:
    """The network atlas of one space and why it was chosen.

    Attributes
    ----------
    space : str
        The study's space name (``fmri.spaces`` entry).
    atlas : Atlas
        Network atlas over the space's targets.
    note : str
        Empty, or the reason a fallback atlas replaced the requested one.
    mask_img : nibabel image or None
        Volume spaces: the target voxels.
    """

    space: str
    atlas: object
    note: str = ""
    mask_img: object = None


def mni_mask(space: str):
    """nilearn's bundled MNI152 brain mask at the space's resolution (3 or 2 mm).

    Its template is ICBM 2009a nonlinear symmetric, so maps on it are labelled
    ``space-MNI152NLin2009aSym`` (:data:`brainalign.brain.volume.NILEARN_MNI_SPACE`)."""
    from nilearn.datasets import load_mni152_brain_mask

    return load_mni152_brain_mask(resolution=3 if space == "MNI152_3mm" else 2)


def yeo_mni_folder() -> Path | None:
    """Folder of the Yeo MNI files: ``$BRAINALIGN_SHARED_DATA/yeo2011_mni``, else the
    ``shared/data/yeo2011_mni`` folder beside a source checkout (as the tests look for it),
    else None."""
    env = os.environ.get("BRAINALIGN_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    folder = root / "yeo2011_mni"
    return folder if folder.is_dir() else None


def space_atlas(space: str, atlas_name: str = "yeo7", mask_img=None) -> SpaceAtlas:
    """The network atlas of a study space (``atlas_name`` when it exists there).

    Parameters
    ----------
    space : {"fsaverage5", "MNI152_3mm", "MNI152_2mm", "roi"}
    atlas_name : str
        ``networks.atlas`` of the study: a name known to ``load_atlas`` or a file path.
    mask_img : nibabel image, optional
        Volume spaces: the voxels that are targets. Default: the voxels of nilearn's MNI152
        brain mask that the atlas labels (the cortex for Yeo), so that a simulated volume
        holds the networks and no white matter.

    Returns
    -------
    SpaceAtlas
    """
    from brainalign.networks import load_atlas

    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; allowed: {list(SPACES)}")
    coordinate_atlases = ("seitzman", "dosenbach")
    if space == "fsaverage5":
        if atlas_name in coordinate_atlases:
            raise ValueError(f"{atlas_name} is a coordinate atlas; it has no fsaverage5 version "
                             "(use yeo7 or yeo17 on surfaces)")
        return SpaceAtlas(space, load_atlas(atlas_name, "fsaverage5"))
    if space == "roi":
        name = atlas_name if atlas_name in coordinate_atlases else "dosenbach"
        note = "" if name == atlas_name else (
            f"{atlas_name} has no ROI-table version; the ROI space uses Dosenbach's 160 ROIs")
        return SpaceAtlas(space, load_atlas(name, "roi"), note)
    note = ""
    target = mask_img if mask_img is not None else mni_mask(space)
    try:
        atlas = load_atlas(atlas_name, "MNI", target=target,
                           path=yeo_mni_folder())
    except FileNotFoundError as err:
        note = (f"{atlas_name} in MNI space is not installed ({err}); the volume space uses "
                "Dosenbach's 160 spheres (6 networks) from nilearn's bundled table instead")
        logger.warning(note)
        atlas = load_atlas("dosenbach", "MNI", target=target)
    if mask_img is None:
        mask_img = labelled_mask(atlas, mni_mask(space))
        atlas = load_atlas(atlas.name, "MNI", target=mask_img, path=yeo_mni_folder())
    return SpaceAtlas(space, atlas, note, mask_img)


def labelled_mask(atlas, brain_mask):
    """The voxels of ``brain_mask`` that ``atlas`` (loaded on that mask) gives a network."""
    import nibabel as nib

    inside = np.asarray(brain_mask.dataobj) > 0
    data = np.asarray(atlas.data)
    labelled = data > 0 if data.ndim == 1 else data.max(axis=0) > 0
    values = np.zeros(inside.shape, dtype=np.uint8)
    values[inside] = labelled.astype(np.uint8)
    return nib.Nifti1Image(values, brain_mask.affine)


def target_space(space_atlas_: SpaceAtlas):
    """The :class:`~brainalign.simulate.TargetSpace` a simulation is planted in."""
    from brainalign.simulate import fsaverage_space, roi_space, volume_space

    atlas = space_atlas_.atlas
    labels = np.asarray(atlas.data)
    if labels.ndim != 1:
        labels = np.where(labels.max(axis=0) > 0, labels.argmax(axis=0) + 1, 0)
    labels = labels.astype(np.int64)
    if space_atlas_.space == "fsaverage5":
        return fsaverage_space(labels, atlas.labels)
    if space_atlas_.space == "roi":
        return roi_space(labels, atlas.labels, atlas.coordinates_mm)
    return volume_space(atlas.image, atlas.labels, mask_img=space_atlas_.mask_img)


def space_masker(space: str, n_targets: int, target_names: list[str] | None = None,
                 mask_img=None):
    """A fitted :mod:`brainalign.brain` masker whose targets are the space's targets.

    Parameters
    ----------
    space : str
        A study space (see :data:`SPACES`).
    n_targets : int
        Number of targets the maps have (checked against the masker).
    target_names : list of str, optional
        ROI names (ROI space).
    mask_img : nibabel image, optional
        Volume spaces: the target voxels (default nilearn's MNI152 brain mask).
    """
    from brainalign.brain import RoiTableMasker, SurfaceMasker, VolumeMasker
    from brainalign.brain.volume import NILEARN_MNI_SPACE

    if space == "fsaverage5":
        n_hemi = n_targets // 2
        masker = SurfaceMasker(mask={"L": np.ones(n_hemi, bool), "R": np.ones(n_hemi, bool)},
                               space="fsaverage5").fit()
    elif space == "roi":
        names = target_names or [f"roi{i:03d}" for i in range(n_targets)]
        masker = RoiTableMasker(names=names).fit()
    else:
        masker = VolumeMasker(mask_img=mask_img if mask_img is not None else mni_mask(space),
                              space=NILEARN_MNI_SPACE).fit()
    if masker.n_targets_ != n_targets:
        raise ValueError(f"space {space!r} has {masker.n_targets_} targets, the maps {n_targets}")
    return masker
