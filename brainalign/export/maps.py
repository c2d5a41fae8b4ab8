"""Per-target maps (scores, coefficients, p-values) to brain files with JSON sidecars.

:func:`save_map` writes values defined on a masker's targets through that masker's
``inverse_transform``: NIfTI for volumes (nibabel via nilearn), one GIfTI per hemisphere
for surfaces, TSV for ROI tables. Every map file gets a JSON sidecar holding what the
caller describes (model, site, features, delays, CV, alphas, ...) plus a config hash,
package versions and a timestamp (:mod:`brainalign.provenance`). File names follow the
BIDS-derivative pattern, e.g.::

    sub-01_space-fsaverage5_hemi-L_desc-atom03_stat-r_map.func.gii
    sub-01_space-MNI152NLin2009cAsym_res-2_desc-wordrate_stat-r_map.nii.gz
    sub-01_space-roi_desc-wordrate_stat-r_map.tsv

:func:`load_map` reads a map back onto the masker's targets; :func:`save_encoding_maps`
writes every per-target statistic of an encoding result.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from brainalign.brain.base import BrainMasker
from brainalign.brain.roi_table import RoiTableMasker
from brainalign.brain.surface import SurfaceMasker
from brainalign.brain.volume import VolumeMasker
from brainalign.provenance import config_hash, provenance_block

#: Order of entities in a file name (others follow in the order given).
ENTITY_ORDER = ("sub", "ses", "task", "acq", "run", "space", "res", "den", "hemi", "desc", "stat")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def bids_name(entities: Mapping[str, Any], suffix: str = "map", extension: str = "") -> str:
    """``key-value`` pairs joined by ``_`` in BIDS order, then the suffix and extension.

    Parameters
    ----------
    entities : mapping str -> str or int
        Labels must be alphanumeric (BIDS); None values are left out.
    suffix : str
    extension : str
        With its leading dot (``".nii.gz"``).
    """
    present = {k: v for k, v in entities.items() if v is not None}
    ordered = [k for k in ENTITY_ORDER if k in present] + [k for k in present if k not in ENTITY_ORDER]
    parts = []
    for key in ordered:
        label = str(present[key])
        if not _LABEL.match(label) or not _LABEL.match(key):
            raise ValueError(f"BIDS entity {key}-{label}: keys and labels must be alphanumeric "
                             "(no '_', '-', '.' or spaces)")
        parts.append(f"{key}-{label}")
    return "_".join(parts + [suffix]) + extension


def _jsonable(obj: Any) -> Any:
    """Numpy arrays and scalars (also nested in dicts and lists) as JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _resolve_masker(brain) -> BrainMasker:
    masker = getattr(brain, "masker", brain)
    if not isinstance(masker, BrainMasker) or not hasattr(masker, "n_targets_"):
        raise ValueError("save_map needs a fitted brainalign masker or a BrainData holding one, "
                         f"got {type(brain).__name__}")
    return masker


def _resolution_label(masker: VolumeMasker) -> str | None:
    res = masker.resolution_mm_
    if res is None:
        return None
    return str(int(round(res))) if np.isclose(res, round(res)) else None


def map_names(entities: Mapping[str, Any], n_maps: int | None) -> list[str]:
    """Default names of a file's maps: its ``stat`` label (else ``desc``, else ``"map"``)
    for one map, that label with a zero-padded index (``"coef00"``...) for several."""
    label = str(entities.get("stat") or entities.get("desc") or "map")
    if n_maps is None:
        return [label]
    width = max(2, len(str(n_maps - 1)))
    return [f"{label}{i:0{width}d}" for i in range(n_maps)]


def save_map(values: np.ndarray, brain, out_dir: str | Path,
             entities: Mapping[str, Any] | None = None,
             sidecar: Mapping[str, Any] | None = None,
             names: list[str] | None = None, outside_mask_value: float = 0.0) -> Path:
    """Write per-target values as a brain map with a JSON sidecar.

    Parameters
    ----------
    values : ndarray, shape (n_targets,) or (n_maps, n_targets)
        E.g. held-out r per voxel, or one row per pattern.
    brain : BrainData or fitted VolumeMasker / SurfaceMasker / RoiTableMasker
    out_dir : path
        Created if needed.
    entities : mapping, optional
        File-name entities, e.g. ``{"sub": "01", "desc": "atom03", "stat": "r"}``.
        ``space`` defaults to the masker's space, ``res`` to the voxel size in mm
        (volumes), ``hemi`` is set per file for surfaces.
    sidecar : mapping, optional
        Description of the map (model, site, features, delays, cv, alphas, ...). A
        ``config_hash`` of it, package versions and a UTC timestamp are added, and the
        file's ``space``, ``desc`` and ``stat`` entities (unless the description has them).
    names : list of str, optional
        One name per map (e.g. ``["atom00", "atom01", ...]``); default :func:`map_names`.
        GIfTI data arrays carry them as ``Name`` metadata; every sidecar lists them under
        ``map.map_names``.
    outside_mask_value : float
        Written at voxels / vertices outside the mask (volumes and surfaces), and stated in
        the sidecar (``map.outside_mask_value``, NaN as ``"NaN"``). 0 suits effect maps;
        p-value maps take NaN (:data:`P_VALUE_STATS`), since 0 would read as "significant"
        everywhere outside the brain once a viewer thresholds at p < .05.

    Returns
    -------
    Path
        The map file: ``.nii.gz`` (volume), ``.tsv`` (ROI table), or the left-hemisphere
        ``.func.gii`` for surfaces (its right-hemisphere sibling has ``hemi-R``).
        NIfTI maps in an MNI152 space have sform and qform code 4 and mm units
        (:func:`brainalign.brain.volume.label_image`).
    """
    import nibabel as nib

    masker = _resolve_masker(brain)
    values = np.asarray(values, dtype=np.float32)
    values_2d, single = masker._check_values(values)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entities = dict(entities or {})
    entities.setdefault("space", masker.space_)
    description = _jsonable(dict(sidecar or {}))
    description.setdefault("config_hash", config_hash(description))
    for key in ("space", "desc", "stat"):  # after the hash: it describes the content only
        if entities.get(key) is not None:
            description.setdefault(key, str(entities[key]))
    n_maps = None if single else int(values_2d.shape[0])
    names = [str(name) for name in names] if names is not None else map_names(entities, n_maps)
    if len(names) != values_2d.shape[0]:
        raise ValueError(f"names: {len(names)} given for {values_2d.shape[0]} maps")
    map_info = {"n_maps": n_maps, "map_names": names,
                "n_targets": int(masker.n_targets_), "masker": type(masker).__name__,
                "space": masker.space_,
                "outside_mask_value": ("NaN" if np.isnan(outside_mask_value)
                                       else float(outside_mask_value))}

    def write_sidecar(map_path: Path, extension: str, extra: dict) -> None:
        block = provenance_block(**description, map={**map_info, **extra, "file": map_path.name})
        sidecar_path = map_path.with_name(map_path.name[: -len(extension)] + ".json")
        sidecar_path.write_text(json.dumps(_jsonable(block), indent=2, default=str))

    if isinstance(masker, SurfaceMasker):
        images = masker.inverse_transform(values_2d[0] if single else values_2d,
                                          fill_value=outside_mask_value, names=names)
        paths = {}
        for hemi, image in images.items():
            path = out_dir / bids_name({**entities, "hemi": hemi}, "map", ".func.gii")
            nib.save(image, path)
            paths[hemi] = path
        for hemi, path in paths.items():
            write_sidecar(path, ".func.gii", {"hemi": hemi, "hemisphere_files":
                                              {h: p.name for h, p in paths.items()}})
        return paths[masker.hemispheres_[0]]
    if isinstance(masker, VolumeMasker):
        entities.setdefault("res", _resolution_label(masker))
        path = out_dir / bids_name(entities, "map", ".nii.gz")
        image = masker.inverse_transform(values_2d[0] if single else values_2d)
        if outside_mask_value != 0.0:
            data = np.asarray(image.dataobj, dtype=np.float32)
            data[~np.asarray(masker.mask_img_.dataobj, dtype=bool)] = outside_mask_value
            image = nib.Nifti1Image(data, image.affine, image.header)
        nib.save(image, path)
        write_sidecar(path, ".nii.gz", {"resolution_mm": masker.resolution_mm_})
        return path
    if isinstance(masker, RoiTableMasker):
        path = out_dir / bids_name(entities, "map", ".tsv")
        masker.inverse_transform(values_2d).to_csv(path, sep="\t", index=False, float_format="%.8g")
        write_sidecar(path, ".tsv", {"target_names": list(masker.target_names_)})
        return path
    raise ValueError(f"no map writer for masker type {type(masker).__name__}")


def load_map(path: str | Path, brain) -> np.ndarray:
    """Read a map written by :func:`save_map` back onto the masker's targets.

    Parameters
    ----------
    path : path
        NIfTI, TSV, or either hemisphere's GIfTI (the other is found by its ``hemi-`` entity).
    brain : BrainData or the fitted masker the map was written with

    Returns
    -------
    ndarray, shape (n_targets,) for a single map, else (n_maps, n_targets), float32
        The values in the file: a volume masker's ``smoothing_fwhm`` is not applied.
    """
    masker = _resolve_masker(brain)
    path = Path(path)
    if isinstance(masker, VolumeMasker):
        values = _read_volume_map(path, masker)
    elif isinstance(masker, SurfaceMasker):
        match = re.search(r"hemi-([LR])", path.name)
        if match is None:
            raise ValueError(f"surface map name has no hemi-L/hemi-R entity: {path.name}")
        source = {h: path.with_name(path.name.replace(match.group(0), f"hemi-{h}"))
                  for h in masker.hemispheres_}
        values = masker.extract_signals(source)[0]
    else:
        values = _read_roi_map(path, masker)
    values = np.asarray(values, dtype=np.float32)
    return values[0] if values.shape[0] == 1 else values


def _read_volume_map(path: Path, masker: VolumeMasker) -> np.ndarray:
    """The mask's voxels of a NIfTI map, (n_maps, n_voxels), as written: the mask alone is
    applied (the masker's own reading would smooth the map with its ``smoothing_fwhm``)."""
    import nibabel as nib
    from nilearn.masking import apply_mask

    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"a volume masker reads NIfTI maps (.nii, .nii.gz), got {path.name}")
    image = nib.load(str(path))
    mask = masker.mask_img_
    if (tuple(image.shape[:3]) != tuple(mask.shape[:3])
            or not np.allclose(image.affine, mask.affine, atol=1e-3)):
        raise ValueError(f"map {path.name} has grid shape {tuple(image.shape[:3])}, affine "
                         f"{np.round(image.affine[:3], 3).tolist()}; the masker's mask has "
                         f"shape {tuple(mask.shape[:3])}, affine "
                         f"{np.round(mask.affine[:3], 3).tolist()}: read it with the masker "
                         f"it was written with")
    # NaN stays NaN (nilearn's default would read an untested voxel's NaN p-value as 0)
    return np.atleast_2d(apply_mask(image, mask, ensure_finite=False))


def _read_roi_map(path: Path, masker) -> np.ndarray:
    """The ROI table :func:`save_map` wrote, (n_maps, n_rois): its header row is always the
    ROI names (even when they look like numbers). Columns are taken in order when the header
    is the masker's names, else matched by name (which needs unique names)."""
    import pandas as pd

    if not path.name.endswith(".tsv"):
        raise ValueError(f"an ROI table masker reads .tsv maps, got {path.name}")
    rows = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    header, values = list(rows.iloc[0]), rows.iloc[1:].replace("", "nan")
    names = list(masker.target_names_)
    if header == names:
        return values.to_numpy(dtype=np.float64)
    if len(set(names)) != len(names) or len(set(header)) != len(header):
        raise ValueError(f"map {path.name} has columns {header}, the masker's ROIs are "
                         f"{names}: with repeated names they cannot be matched by name")
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(f"map {path.name} has columns {header}; the masker's ROIs "
                         f"{missing} are not among them: read it with the masker it was "
                         f"written with")
    return values.iloc[:, [header.index(name) for name in names]].to_numpy(dtype=np.float64)


#: Statistics whose maps hold NaN outside the mask (no test there), not 0 (see :func:`save_map`).
P_VALUE_STATS = ("p", "pfdr", "pfwe")

#: Per-target arrays of an encoding result written by :func:`save_encoding_maps` (stat label -> attribute).
ENCODING_STATS = {"r": "r", "r2": "r2", "p": "p_values", "pfdr": "p_fdr", "alpha": "alphas",
                  "noiseceiling": "noise_ceiling"}


def save_encoding_maps(result, brain, out_dir: str | Path, entities: Mapping[str, Any] | None = None,
                       sidecar: Mapping[str, Any] | None = None, coef: bool = False) -> dict[str, Path]:
    """Write the per-target maps of an encoding result, one file (set) per statistic.

    Parameters
    ----------
    result : EncodingResult
        From :func:`brainalign.encoding.fit_encoding` (read by attribute: ``r``, ``r2``,
        ``p_values``, ``p_fdr``, ``alphas``, ``noise_ceiling``, ``coef``, ``valid_targets``,
        ``solver``, ``cv``, ``delays``, ``provenance``).
    brain : BrainData or fitted masker
    out_dir : path
    entities : mapping, optional
        Common file-name entities (``stat`` is set per map).
    sidecar : mapping, optional
        Extra description (model, site, features, ...); the result's solver, CV scheme,
        delays and provenance are added.
    coef : bool
        Also write the coefficients, one map per (delay, feature) column (``stat-coef``).

    Returns
    -------
    dict stat label -> Path
        Invalid targets hold NaN in every map.
    """
    description = {**dict(sidecar or {}), "solver": result.solver, "cv": result.cv,
                   "delays": result.delays, "encoding_provenance": result.provenance}
    description = _jsonable(description)
    description["config_hash"] = config_hash(description)  # shared by every statistic's sidecar
    invalid = ~np.asarray(result.valid_targets, dtype=bool)
    stats = {label: getattr(result, name) for label, name in ENCODING_STATS.items()
             if getattr(result, name, None) is not None}
    if coef:
        stats["coef"] = result.coef  # (n_features * n_delays, n_targets): one map per column
    paths = {}
    for label, values in stats.items():
        values = np.array(values, dtype=np.float32)
        values[..., invalid] = np.nan
        paths[label] = save_map(values, brain, out_dir, entities={**dict(entities or {}), "stat": label},
                                sidecar={**description, "statistic": label},
                                outside_mask_value=np.nan if label in P_VALUE_STATS else 0.0)
    return paths
