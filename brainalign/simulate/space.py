"""Target spaces a simulation is planted in: fsaverage5 surface, MNI volume, ROI table.

A :class:`TargetSpace` is what the simulator needs to know about the brain: one network
label per target (vertex, voxel or ROI; 0 = no network), the network names, and where
each target lies (millimetre coordinates) so that network boundaries can be jittered per
subject and volume noise can be smoothed. Geometry comes from nilearn's bundled
fsaverage5 meshes and MNI152 brain masks; network labels come from an atlas, typically
``brainalign.networks.load_atlas("yeo7", ...)``, or from any integer label array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Number of vertices of one fsaverage5 hemisphere.
FSAVERAGE5_HEMI_VERTICES = 10242

#: Vertices per hemisphere of the icosahedral fsaverage meshes bundled through fsaverage5:
#: a coarser mesh's vertices are the first vertices of the finer one.
FSAVERAGE_HEMI_VERTICES = {"fsaverage5": 10242, "fsaverage4": 2562, "fsaverage3": 642}


@dataclass
class TargetSpace:
    """Where simulated BOLD lives.

    Attributes
    ----------
    name : str
        ``"fsaverage5"`` (or ``"fsaverage4"``, ``"fsaverage3"``), ``"MNI152NLin2009aSym_3mm"``
        (or ``_2mm``) or ``"roi"``.
    labels : ndarray of int, shape (n_targets,)
        Network of each target: ``k`` means ``network_names[k - 1]``; 0 means no network.
    network_names : list of str
        One name per network label 1..n_networks.
    coordinates : ndarray, shape (n_targets, 3), optional
        Millimetre position of each target (surface vertices on the sphere-free pial
        mesh, voxel centres in MNI space). Without it, boundaries are not jittered.
    mask_img : nibabel image, optional
        Brain mask of a volume space (targets are its nonzero voxels, in C order).
    """

    name: str
    labels: np.ndarray
    network_names: list[str]
    coordinates: np.ndarray | None = None
    mask_img: Any = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels)
        if self.labels.ndim != 1 or not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(
                f"labels must be a 1-D integer array (0 = no network), got dtype "
                f"{self.labels.dtype} and shape {self.labels.shape}"
            )
        self.network_names = [str(name) for name in self.network_names]
        if self.labels.min(initial=0) < 0 or self.labels.max(initial=0) > len(self.network_names):
            raise ValueError(
                f"labels must lie in 0..{len(self.network_names)} (one per network name), got "
                f"{self.labels.min()}..{self.labels.max()}"
            )
        if self.coordinates is not None:
            self.coordinates = np.asarray(self.coordinates, dtype=float)
            if self.coordinates.shape != (self.n_targets, 3):
                raise ValueError(
                    f"coordinates must have shape ({self.n_targets}, 3), got "
                    f"{self.coordinates.shape}"
                )

    @property
    def n_targets(self) -> int:
        return len(self.labels)

    @property
    def n_networks(self) -> int:
        return len(self.network_names)

    @property
    def kind(self) -> str:
        """``"surface"``, ``"volume"`` or ``"roi"``."""
        if self.name.startswith("fsaverage"):
            return "surface"
        if self.mask_img is not None:
            return "volume"
        return "roi"


def fsaverage_vertices(mesh: str = "fsaverage5") -> np.ndarray:
    """Indices of a mesh's vertices among both fsaverage5 hemispheres (left block first)."""
    if mesh not in FSAVERAGE_HEMI_VERTICES:
        raise ValueError(f"mesh must be one of {sorted(FSAVERAGE_HEMI_VERTICES)}, got {mesh!r}")
    n_vertices = FSAVERAGE_HEMI_VERTICES[mesh]
    return np.concatenate([np.arange(n_vertices), FSAVERAGE5_HEMI_VERTICES + np.arange(n_vertices)])


def fsaverage_coordinates(mesh: str = "fsaverage5") -> np.ndarray:
    """Pial coordinates of both hemispheres of an fsaverage mesh, left then right, in mm.

    Taken from nilearn's bundled fsaverage5 meshes (fsaverage4/3 are their first vertices).
    """
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage("fsaverage5")["pial"]
    both = np.concatenate([pial.parts["left"].coordinates, pial.parts["right"].coordinates])
    return both[fsaverage_vertices(mesh)]


def fsaverage_space(labels: np.ndarray, network_names: Sequence[str],
                    mesh: str = "fsaverage5") -> TargetSpace:
    """Both hemispheres of an fsaverage mesh (left first) with the given network labels.

    Parameters
    ----------
    labels : ndarray of int, shape (2 * n_hemi_vertices,)
        Network label per vertex (0 = none, e.g. the medial wall): 20,484 for fsaverage5,
        5,124 for fsaverage4, 1,284 for fsaverage3.
    network_names : sequence of str
        Names of networks 1..n_networks.
    mesh : {"fsaverage5", "fsaverage4", "fsaverage3"}
    """
    labels = np.asarray(labels)
    n_targets = len(fsaverage_vertices(mesh))
    if labels.shape != (n_targets,):
        raise ValueError(f"{mesh} labels must cover both hemispheres ({n_targets} vertices, "
                         f"left first), got shape {labels.shape}")
    return TargetSpace(mesh, labels, list(network_names), fsaverage_coordinates(mesh))


def volume_space(atlas_img: Any, network_names: Sequence[str], resolution_mm: int = 3,
                 mask_img: Any = None) -> TargetSpace:
    """MNI volume targets: the voxels of a brain mask, labelled by a network atlas image.

    Parameters
    ----------
    atlas_img : nibabel image or path
        3-D integer network atlas in MNI space (e.g. Yeo-7 at 2 mm); it is resampled with
        nearest-neighbour interpolation onto the mask grid.
    network_names : sequence of str
        Names of atlas labels 1..n_networks.
    resolution_mm : {2, 3}
        Grid of nilearn's bundled MNI152 brain mask (used when ``mask_img`` is None).
    mask_img : nibabel image, optional
        Brain mask defining the targets; default nilearn's MNI152 brain mask.
    """
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import load_img, resample_to_img

    from brainalign.brain.volume import NILEARN_MNI_SPACE

    if mask_img is None:
        if resolution_mm not in (2, 3):
            raise ValueError(f"resolution_mm must be 2 or 3, got {resolution_mm!r}")
        mask_img = load_mni152_brain_mask(resolution=resolution_mm)
    mask_img = load_img(mask_img)
    atlas = resample_to_img(load_img(atlas_img), mask_img, interpolation="nearest",
                            force_resample=True, copy_header=True)
    mask = np.asarray(mask_img.dataobj) > 0
    labels = np.rint(np.asarray(atlas.dataobj)[mask]).astype(np.int64)
    ijk = np.argwhere(mask)
    coordinates = ijk @ mask_img.affine[:3, :3].T + mask_img.affine[:3, 3]
    voxel_mm = int(round(abs(mask_img.affine[0, 0])))
    return TargetSpace(f"{NILEARN_MNI_SPACE}_{voxel_mm}mm", labels, list(network_names),
                       coordinates, mask_img)


def roi_space(labels: np.ndarray, network_names: Sequence[str],
              coordinates: np.ndarray | None = None) -> TargetSpace:
    """A table of regions of interest, each belonging to one network (0 = none)."""
    return TargetSpace("roi", np.asarray(labels), list(network_names), coordinates)


def space_from_atlas(atlas: Any, resolution_mm: int = 3) -> TargetSpace:
    """TargetSpace from a ``brainalign.networks.Atlas`` (deterministic labels).

    Surface atlases on fsaverage5/4/3 give that mesh's space; volume atlases (with an
    ``image``) are sampled on a brain mask at ``resolution_mm``; anything else is taken
    as an ROI table with one label per target.
    """
    data = np.asarray(atlas.data)
    if data.ndim != 1:
        raise ValueError(
            f"the simulator needs one integer network label per target; atlas {atlas.name!r} "
            f"has data of shape {data.shape} (probabilistic?). Pass its argmax labels instead."
        )
    space = str(getattr(atlas, "space", ""))
    if space in FSAVERAGE_HEMI_VERTICES:
        return fsaverage_space(data.astype(np.int64), atlas.labels, mesh=space)
    image = getattr(atlas, "image", None)
    if image is not None and space.startswith("MNI"):
        return volume_space(image, atlas.labels, resolution_mm=resolution_mm)
    return roi_space(data.astype(np.int64), atlas.labels, getattr(atlas, "coordinates_mm", None))
