"""4D NIfTI time series inside a brain mask, through nilearn's NiftiMasker.

:class:`VolumeMasker` lets nilearn's :class:`~nilearn.maskers.NiftiMasker` do the
masking (and optional smoothing) and mapping values back to images, and adds the
per-run cleaning shared by all brainalign maskers (:mod:`brainalign.brain.base`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from brainalign.brain.base import CLEANING_PARAMETERS, BrainMasker

#: BIDS / TemplateFlow name of the template behind nilearn's bundled MNI152 images
#: (``load_mni152_template``, ``load_mni152_brain_mask``): the ICBM 2009a nonlinear
#: symmetric template (nilearn's files are ``mni_icbm152_*_tal_nlin_sym_09a``).
NILEARN_MNI_SPACE = "MNI152NLin2009aSym"

logger = logging.getLogger(__name__)

#: NIfTI ``sform_code`` / ``qform_code`` of images in an MNI152 template space.
NIFTI_XFORM_MNI = 4


def xform_code(space: str | None) -> int | None:
    """The NIfTI xform code a space name implies: 4 (MNI152) for ``MNI152...`` names (and
    plain ``"MNI"``), 3 for ``Talairach``, else None (unknown)."""
    label = (space or "").lower()
    if label == "mni" or label.startswith("mni152"):
        return NIFTI_XFORM_MNI
    if label.startswith("talairach"):
        return 3
    return None


def label_image(img, space: str | None):
    """The image with its sform and qform both set to its affine, coded for ``space``
    (4 for MNI152, else the image's own sform code, or 2 "aligned"), and mm units.

    Viewers (FSLeyes, Mango, MRIcroGL, nilearn) then place it in the template's
    coordinates; the 4th axis of map images holds maps, not time, so its unit stays unset.
    """
    header = img.header
    _, own_code = header.get_sform(coded=True)
    code = xform_code(space) or int(own_code) or 2
    img.set_sform(img.affine, code=code)
    img.set_qform(img.affine, code=code)
    header.set_xyzt_units(xyz="mm")
    return img


def _describe(img) -> str:
    """A file name for messages: the path, or the in-memory image's own file name."""
    if isinstance(img, (str, os.PathLike)):
        return repr(str(img))
    name = getattr(img, "get_filename", lambda: None)()
    return repr(str(name)) if name else f"(in-memory {type(img).__name__})"


def _grid(img) -> str:
    """Shape, voxel size and origin of an image's first three axes, on one line."""
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    origin = np.asarray(img.affine)[:3, 3]
    return (f"shape {tuple(int(n) for n in img.shape[:3])}, voxels {np.round(zooms, 3).tolist()} "
            f"mm, affine {np.round(np.asarray(img.affine)[:3], 3).tolist()}"
            if not np.allclose(np.asarray(img.affine)[:3, :3], np.diag(zooms) * np.sign(
                np.diag(np.asarray(img.affine)[:3, :3])))
            else f"shape {tuple(int(n) for n in img.shape[:3])}, voxels "
                 f"{np.round(zooms, 3).tolist()} mm, origin {np.round(origin, 3).tolist()} mm")


class VolumeMasker(BrainMasker):
    __doc__ = """Masker for 4D NIfTI images (one per run, or one holding all runs).

    Parameters
    ----------
    mask_img : Niimg-like or path, optional
        Binary brain mask; computed from the first image at fit time when None.
    space : str, optional
        Template space of the images (e.g. ``"MNI152NLin2009cAsym"`` for fMRIPrep output,
        :data:`NILEARN_MNI_SPACE` for nilearn's bundled MNI152 mask), used in file names
        and in the NIfTI xform codes of the maps written back.
    smoothing_fwhm : float, optional
        Spatial smoothing in mm (nilearn).
    mask_strategy : str, default "epi"
        nilearn's strategy when the mask is computed.
    resample_to_mask : bool, default False
        When an image's grid (shape or affine) differs from the mask's: False refuses it
        (naming both grids), True lets nilearn resample the image onto the mask's grid
        (continuous interpolation) and logs a warning naming both grids.
    """ + CLEANING_PARAMETERS + """
    Attributes
    ----------
    nifti_masker_ : nilearn.maskers.NiftiMasker
        The fitted nilearn masker (no cleaning of its own).
    mask_img_ : nibabel.Nifti1Image
    n_targets_ : int
        Voxels in the mask.
    target_names_ : None
    space_ : str or None
    resolution_mm_ : float or None
        Voxel edge in mm when voxels are isotropic.
    """

    def __init__(self, mask_img=None, space: str | None = None,
                 smoothing_fwhm: float | None = None, mask_strategy: str = "epi",
                 detrend: bool = False, standardize: Any = False, high_pass: float | None = None,
                 low_pass: float | None = None, t_r: float | None = None,
                 standardize_confounds: bool = True, run_lengths: Sequence[int] | None = None,
                 resample_to_mask: bool = False):
        super().__init__(detrend=detrend, standardize=standardize, high_pass=high_pass,
                         low_pass=low_pass, t_r=t_r, standardize_confounds=standardize_confounds,
                         run_lengths=run_lengths)
        self.mask_img = mask_img
        self.space = space
        self.smoothing_fwhm = smoothing_fwhm
        self.mask_strategy = mask_strategy
        self.resample_to_mask = resample_to_mask

    def _is_run_list(self, imgs) -> bool:
        return isinstance(imgs, (list, tuple))

    def _load_4d(self, img):
        """The image (a proxy: only the header is read), refused unless it is 4-D."""
        from nilearn.image import load_img

        try:
            loaded = load_img(img)
        except Exception as err:
            raise ValueError(f"fMRI {_describe(img)}: cannot be read as a NIfTI image ({err})") from None
        if len(loaded.shape) != 4:
            raise ValueError(
                f"fMRI {_describe(img)} has shape {tuple(loaded.shape)} ({len(loaded.shape)}-D); "
                "allowed: a 4-D image (x, y, z, time) per run, or a list of 4-D runs: a single "
                "3-D volume is not a time series")
        return loaded

    def _check_grid(self, img, loaded) -> None:
        """Refuse (or, with ``resample_to_mask``, log) an image off the mask's grid."""
        mask = self.mask_img_
        same = (tuple(loaded.shape[:3]) == tuple(mask.shape[:3])
                and np.allclose(loaded.affine, mask.affine, atol=1e-3))
        if same:
            return
        detail = (f"fMRI {_describe(img)} grid {_grid(loaded)} differs from the mask's "
                  f"{_grid(mask)}")
        if not self.resample_to_mask:
            raise ValueError(
                f"{detail}; brainalign does not resample silently: put data and mask on one "
                "grid, or opt in with VolumeMasker(resample_to_mask=True) (study config: "
                "fmri.resample_mask = true) to resample each image onto the mask's grid")
        logger.warning("%s: resampling the image onto the mask's grid (nilearn, continuous "
                       "interpolation), as resample_to_mask=True asks", detail)

    def _read_one(self, img) -> np.ndarray:
        loaded = self._load_4d(img)
        self._check_grid(img, loaded)
        return np.atleast_2d(self.nifti_masker_.transform(loaded))

    def _count_one(self, img) -> int:
        return self._load_4d(img).shape[3]

    def fit(self, imgs=None, y=None) -> "VolumeMasker":
        """Fit the nilearn masker (computing a mask from ``imgs`` when none was given)."""
        from nilearn.maskers import NiftiMasker

        if self.mask_img is None and imgs is None:
            raise ValueError("VolumeMasker.fit needs mask_img or images to compute a mask from")
        first = imgs[0] if self._is_run_list(imgs) else imgs
        if self.mask_img is None:
            first = self._load_4d(first)
        self.nifti_masker_ = NiftiMasker(mask_img=self.mask_img, smoothing_fwhm=self.smoothing_fwhm,
                                         mask_strategy=self.mask_strategy, standardize=None,
                                         detrend=False)
        self.nifti_masker_.fit(first if self.mask_img is None else None)
        self.mask_img_ = self.nifti_masker_.mask_img_
        self.n_targets_ = int(np.asarray(self.mask_img_.dataobj).astype(bool).sum())
        self.target_names_ = None
        self.space_ = self.space
        zooms = np.asarray(self.mask_img_.header.get_zooms()[:3], dtype=float)
        self.resolution_mm_ = float(zooms[0]) if np.allclose(zooms, zooms[0]) else None
        return self

    def inverse_transform(self, values):
        """Per-voxel values as an image.

        Parameters
        ----------
        values : array, shape (n_voxels,) or (n_maps, n_voxels)

        Returns
        -------
        nibabel.Nifti1Image
            3D for 1-D input, else 4D with one volume per map; zero outside the mask.
            Its sform and qform carry code 4 (MNI152) when ``space`` names an MNI152
            template, and its units are mm (:func:`label_image`).
        """
        values, single = self._check_values(values)
        img = self.nifti_masker_.inverse_transform(values.astype(np.float32))
        if single and img.ndim == 4:
            from nilearn.image import index_img

            img = index_img(img, 0)
        return label_image(img, self.space_)
