"""Surface time series in GIfTI files (one per hemisphere), e.g. fsaverage5.

:class:`SurfaceMasker` reads per-hemisphere GIfTI time series with nibabel (one data
array per time point, or one 2-D array), keeps the vertices of an optional mask (e.g.
without the medial wall), stacks left then right, and maps values back to one GIfTI image
per hemisphere. No mesh is needed: vertex order is the only geometry a time series
carries. Cleaning is shared with the other maskers (:mod:`brainalign.brain.base`,
nilearn.signal).

A single 2-D data array is (n_vertices, n_tr) as nilearn writes it; the transposed
(n_tr, n_vertices) layout is read when the vertex count shows it (see
:func:`read_gifti_series`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brainalign.brain.base import CLEANING_PARAMETERS, BrainMasker

HEMISPHERES = ("L", "R")
_STRUCTURES = {"L": "CortexLeft", "R": "CortexRight"}  # GIfTI AnatomicalStructurePrimary
_HEMI_ALIASES = {"l": "L", "left": "L", "lh": "L", "r": "R", "right": "R", "rh": "R"}

#: Vertices per hemisphere of the FreeSurfer fsaverage family.
FSAVERAGE_SPACES = {642: "fsaverage3", 2562: "fsaverage4", 10242: "fsaverage5",
                    40962: "fsaverage6", 163842: "fsaverage"}


def _hemi_key(name: str) -> str:
    key = _HEMI_ALIASES.get(str(name).lower(), str(name))
    if key not in HEMISPHERES:
        raise ValueError(f"hemisphere must be one of L/R (or left/right, lh/rh), got {name!r}")
    return key


def as_hemispheres(run) -> dict[str, Any]:
    """One run's inputs as ``{"L": ..., "R": ...}`` (a mapping, or a (left, right) pair)."""
    if isinstance(run, Mapping):
        return {_hemi_key(k): v for k, v in run.items()}
    if isinstance(run, (tuple, list)) and len(run) == 2:
        return {"L": run[0], "R": run[1]}
    raise ValueError("surface input must be a mapping {'L': ..., 'R': ...} or a (left, right) "
                     f"pair of GIfTI files/images/arrays; got {type(run).__name__}")


def read_gifti_series(source, n_vertices: int | None = None) -> np.ndarray:
    """Time series of one hemisphere as (n_tr, n_vertices).

    A single 2-D data array is oriented by the vertex count: the axis of length
    ``n_vertices`` holds the vertices. When both axes have that length, or neither does,
    the array is read as (n_vertices, n_tr), the layout nilearn writes (a caller that
    knows the count then checks it). Without ``n_vertices``, the fsaverage vertex counts
    (:data:`FSAVERAGE_SPACES`) tell: an array is read as (n_tr, n_vertices) when its second
    axis has such a count and its first, shorter axis has none (e.g. 20 x 10242); as
    (n_vertices, n_tr) when its second axis has no such count, when both axes are equal,
    or when both have such counts and the first is the longer (10242 x 642).

    Parameters
    ----------
    source : path, nibabel.gifti.GiftiImage, or array (n_tr, n_vertices)
    n_vertices : int, optional
        Expected vertex count, used to orient a single 2-D data array.

    Raises
    ------
    ValueError
        ``source`` is not a GIfTI image; or, without ``n_vertices``, a single 2-D array
        whose shape fits both orientations: its second axis has an fsaverage vertex count
        and its first is either a shorter fsaverage count (642 x 10242) or a longer
        count of another mesh (32492 x 642).
    """
    import nibabel as nib

    if isinstance(source, np.ndarray):
        return np.atleast_2d(source)
    img = nib.load(str(source)) if isinstance(source, (str, Path)) else source
    if not isinstance(img, nib.gifti.GiftiImage):
        raise ValueError(f"expected a GIfTI image, got {type(img).__name__} from {source!r}")
    if len(img.darrays) != 1:
        return np.stack([np.asarray(d.data) for d in img.darrays], axis=0)
    data = np.asarray(img.darrays[0].data)
    if data.ndim == 1:
        return data[None, :]
    rows, columns = data.shape
    if n_vertices is not None:
        return data if columns == n_vertices and rows != n_vertices else data.T
    fsaverage_rows = rows in FSAVERAGE_SPACES
    if columns not in FSAVERAGE_SPACES or rows == columns or (fsaverage_rows and rows > columns):
        return data.T
    if rows < columns and not fsaverage_rows:
        return data
    name = str(source) if isinstance(source, (str, Path)) else "GIfTI image"
    raise ValueError(
        f"{name}: cannot tell which axis of its {rows} x {columns} data array holds the "
        f"vertices: it fits both (n_vertices, n_tr) and (n_tr, n_vertices), {columns} being "
        f"the vertex count of {FSAVERAGE_SPACES[columns]}; give the vertex count "
        "(SurfaceMasker: space= or mask=; read_gifti_series: n_vertices=)")


class SurfaceMasker(BrainMasker):
    __doc__ = """Masker for GIfTI surface time series, one file (or image) per hemisphere.

    An input for one run is ``{"L": left, "R": right}`` or a ``(left, right)`` pair, where
    each entry is a GIfTI path, a :class:`nibabel.gifti.GiftiImage` or an array
    (n_tr, n_vertices); a list of such inputs holds one per run. A single hemisphere
    (``{"L": left}``) works too.

    Parameters
    ----------
    mask : mapping hemisphere -> bool array (n_vertices,), optional
        Vertices to keep (e.g. cortex without the medial wall); all when None. Its length
        is the vertex count that orients a single 2-D GIfTI data array at fit
        (:func:`read_gifti_series`).
    space : str, optional
        Surface space; default inferred from the vertex count (10,242 -> fsaverage5). An
        fsaverage space gives the vertex count for hemispheres without a mask.
    """ + CLEANING_PARAMETERS + """
    Attributes
    ----------
    hemispheres_ : list of str
        Hemispheres present, in column order (left first).
    n_vertices_ : dict hemisphere -> int
    mask_ : dict hemisphere -> bool array (n_vertices,)
    hemi_slices_ : dict hemisphere -> slice
        Columns of each hemisphere in the transformed matrix.
    n_targets_ : int
    target_names_ : None
    space_ : str or None
    """

    def __init__(self, mask: Mapping[str, np.ndarray] | None = None, space: str | None = None,
                 detrend: bool = False, standardize: Any = False, high_pass: float | None = None,
                 low_pass: float | None = None, t_r: float | None = None,
                 standardize_confounds: bool = True, run_lengths: Sequence[int] | None = None):
        super().__init__(detrend=detrend, standardize=standardize, high_pass=high_pass,
                         low_pass=low_pass, t_r=t_r, standardize_confounds=standardize_confounds,
                         run_lengths=run_lengths)
        self.mask = mask
        self.space = space

    def _is_run_list(self, imgs) -> bool:
        return isinstance(imgs, list) and all(isinstance(x, (Mapping, tuple, list)) for x in imgs)

    def fit(self, imgs=None, y=None) -> "SurfaceMasker":
        """Learn hemispheres, vertex counts and the kept vertices.

        Parameters
        ----------
        imgs : one run's input or a list of them, optional when ``mask`` is given
        """
        mask = {} if self.mask is None else {_hemi_key(h): np.asarray(m, dtype=bool)
                                             for h, m in self.mask.items()}
        if imgs is not None:
            first = as_hemispheres(imgs[0] if self._is_run_list(imgs) else imgs)
            # a single 2-D data array is oriented by the vertex count of the mask or space
            space_count = {name: n for n, name in FSAVERAGE_SPACES.items()}.get(self.space)
            n_vertices = {h: read_gifti_series(src, len(mask[h]) if h in mask
                                               else space_count).shape[1]
                          for h, src in first.items()}
        elif self.mask is not None:
            n_vertices = {h: len(m) for h, m in mask.items()}
        else:
            raise ValueError("SurfaceMasker.fit needs surface images or a vertex mask")
        self.hemispheres_ = [h for h in HEMISPHERES if h in n_vertices]
        self.n_vertices_ = {h: int(n_vertices[h]) for h in self.hemispheres_}
        self.mask_ = {}
        for hemi in self.hemispheres_:
            keep = mask.get(hemi, np.ones(self.n_vertices_[hemi], dtype=bool))
            if keep.shape != (self.n_vertices_[hemi],):
                raise ValueError(f"mask for hemisphere {hemi} has shape {keep.shape}; the surface "
                                 f"has {self.n_vertices_[hemi]} vertices")
            self.mask_[hemi] = keep
        start, self.hemi_slices_ = 0, {}
        for hemi in self.hemispheres_:
            stop = start + int(self.mask_[hemi].sum())
            self.hemi_slices_[hemi] = slice(start, stop)
            start = stop
        self.n_targets_ = start
        self.target_names_ = None
        counts = set(self.n_vertices_.values())
        inferred = FSAVERAGE_SPACES.get(counts.pop()) if len(counts) == 1 else None
        self.space_ = self.space or inferred
        return self

    def _read_one(self, img) -> np.ndarray:
        hemis = as_hemispheres(img)
        if sorted(hemis) != sorted(self.hemispheres_):
            raise ValueError(f"input has hemispheres {sorted(hemis)}; fitted on {self.hemispheres_}")
        blocks = []
        for hemi in self.hemispheres_:
            series = read_gifti_series(hemis[hemi], self.n_vertices_[hemi])
            if series.shape[1] != self.n_vertices_[hemi]:
                raise ValueError(f"hemisphere {hemi} has {series.shape[1]} vertices; fitted on "
                                 f"{self.n_vertices_[hemi]}")
            blocks.append(series[:, self.mask_[hemi]])
        lengths = {len(b) for b in blocks}
        if len(lengths) != 1:
            raise ValueError(f"hemispheres have different numbers of time points: {sorted(lengths)}")
        return np.hstack(blocks)

    def _count_one(self, img) -> int:
        hemis = as_hemispheres(img)
        fitted = getattr(self, "n_vertices_", {})  # orients a single 2-D data array
        counts = {hemi: read_gifti_series(source, fitted.get(hemi)).shape[0]
                  for hemi, source in hemis.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"hemispheres have different numbers of time points: {counts}")
        return next(iter(counts.values()))

    def inverse_transform(self, values, fill_value: float = 0.0,
                          names: Sequence[str] | None = None) -> dict:
        """Per-vertex values as one GIfTI image per hemisphere.

        Parameters
        ----------
        values : array, shape (n_targets,) or (n_maps, n_targets)
        fill_value : float
            Value written at vertices outside the mask.
        names : sequence of str, optional
            One name per map (e.g. ``"r"``, ``"atom03"``), stored as each data array's
            ``Name`` metadata; default ``"map"`` for one map, else ``"map00"``, ``"map01"``...

        Returns
        -------
        dict hemisphere -> nibabel.gifti.GiftiImage
            One named float32 data array (n_vertices,) per map.
        """
        import nibabel as nib

        values, _ = self._check_values(values)
        if names is None:
            width = max(2, len(str(len(values) - 1)))
            names = (["map"] if len(values) == 1
                     else [f"map{i:0{width}d}" for i in range(len(values))])
        names = [str(name) for name in names]
        if len(names) != len(values):
            raise ValueError(f"names: {len(names)} given for {len(values)} maps")
        images = {}
        for hemi in self.hemispheres_:
            full = np.full((len(values), self.n_vertices_[hemi]), fill_value, dtype=np.float32)
            full[:, self.mask_[hemi]] = values[:, self.hemi_slices_[hemi]]
            darrays = [nib.gifti.GiftiDataArray(row, datatype="NIFTI_TYPE_FLOAT32",
                                                meta={"Name": name})
                       for row, name in zip(full, names)]
            meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": _STRUCTURES[hemi]})
            images[hemi] = nib.gifti.GiftiImage(darrays=darrays, meta=meta)
        return images
