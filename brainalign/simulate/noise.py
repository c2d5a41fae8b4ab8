"""Background noise for simulated BOLD: white, AR(1), real resting state, smooth volume AR.

Every generator returns float32 noise of shape (n_tr, n_targets) with unit variance per
target, so a signal of variance ``snr`` added to it has exactly that signal-to-noise
ratio. Real resting-state background comes from the one fsaverage5 subject that the
brainspace package ships (``datasets/preprocessing/*.fsa5.{lh,rh}.mgz``, 10,242
vertices x 652 volumes per hemisphere, read with nibabel); volume noise is AR(1) in
time and Gaussian-smoothed in space with scipy.ndimage.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import lfilter

from brainalign.simulate.space import (FSAVERAGE5_HEMI_VERTICES, FSAVERAGE_HEMI_VERTICES,
                                       TargetSpace, fsaverage_vertices)

#: Noise kinds understood by :func:`make_noise`.
NOISE_KINDS = ("white", "ar1", "rest", "smooth_ar")


def white_noise(n_tr: int, n_targets: int, rng: np.random.Generator) -> np.ndarray:
    """Independent standard normal noise, shape (n_tr, n_targets), float32."""
    return rng.standard_normal((n_tr, n_targets), dtype=np.float32)


def ar1_filter(innovations: np.ndarray, runs: np.ndarray, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1) series from standard normal innovations, per run.

    ``x[t] = phi * x[t-1] + sqrt(1 - phi**2) * e[t]``, started from its stationary
    distribution at the first TR of every run.
    """
    if not 0 <= phi < 1:
        raise ValueError(f"AR(1) coefficient phi must be in [0, 1), got {phi}")
    out = np.empty_like(innovations, dtype=np.float32)
    scale = np.sqrt(1.0 - phi**2)
    for run in np.unique(runs):
        rows = np.flatnonzero(runs == run)
        block = innovations[rows].astype(np.float64)
        drive = scale * block
        drive[0] = block[0]  # x[0] ~ N(0, 1): the stationary distribution
        out[rows] = lfilter([1.0], [1.0, -phi], drive, axis=0)
    return out


def ar1_noise(n_tr: int, n_targets: int, runs: np.ndarray, phi: float,
              rng: np.random.Generator) -> np.ndarray:
    """Independent AR(1) noise per target, unit variance, shape (n_tr, n_targets)."""
    return ar1_filter(white_noise(n_tr, n_targets, rng), runs, phi)


def smooth_ar_noise(space: TargetSpace, n_tr: int, runs: np.ndarray, phi: float, fwhm_mm: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Volume noise: Gaussian-smoothed white volumes, AR(1) in time, unit variance per voxel.

    Parameters
    ----------
    space : TargetSpace
        A volume space (``mask_img`` set); targets are the mask voxels in C order.
    n_tr : int
    runs : ndarray of int, shape (n_tr,)
    phi : float
        AR(1) coefficient.
    fwhm_mm : float
        Full width at half maximum of the spatial Gaussian kernel, in millimetres.
    rng : numpy Generator
    """
    if space.mask_img is None:
        raise ValueError(f"smooth_ar noise needs a volume space with a mask image; space "
                         f"{space.name!r} has none (use 'ar1' or 'white' for ROI tables)")
    mask = np.asarray(space.mask_img.dataobj) > 0
    lo = np.argwhere(mask).min(axis=0)
    hi = np.argwhere(mask).max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    inner = mask[box]
    voxel_mm = np.abs(np.diag(space.mask_img.affine)[:3])
    sigma = fwhm_mm / np.sqrt(8 * np.log(2)) / voxel_mm
    noise = np.empty((n_tr, int(inner.sum())), dtype=np.float32)
    for tr in range(n_tr):
        volume = gaussian_filter(rng.standard_normal(inner.shape), sigma, mode="constant")
        noise[tr] = volume[inner]
    noise /= noise.std(axis=0, keepdims=True)
    return ar1_filter(noise, runs, phi)


def brainspace_rest_files() -> tuple[Path, Path]:
    """The left and right hemisphere resting-state files shipped with brainspace."""
    spec = importlib.util.find_spec("brainspace")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "resting-state background needs the brainspace package (pip install brainspace)"
        )
    folder = Path(spec.origin).parent / "datasets" / "preprocessing"
    left = sorted(folder.glob("*.lh.mgz"))
    right = sorted(folder.glob("*.rh.mgz"))
    if not left or not right:
        raise FileNotFoundError(f"no fsaverage5 *.lh.mgz / *.rh.mgz resting-state files in "
                                f"{folder}")
    return left[0], right[0]


@functools.lru_cache(maxsize=1)
def load_brainspace_rest() -> np.ndarray:
    """brainspace's resting-state run on both fsaverage5 hemispheres, z-scored per vertex.

    Returns
    -------
    rest : ndarray, float32, shape (652, 20484), read-only
        Left hemisphere first. Vertices without signal (the medial wall) are all 0.
    """
    import nibabel as nib

    hemis = []
    for path in brainspace_rest_files():
        data = np.asarray(nib.load(path).dataobj, dtype=np.float64)
        data = data.reshape(data.shape[0], -1)
        if data.shape[0] != FSAVERAGE5_HEMI_VERTICES:
            raise ValueError(f"{path} has {data.shape[0]} vertices, expected "
                             f"{FSAVERAGE5_HEMI_VERTICES} (fsaverage5)")
        hemis.append(data)
    series = np.concatenate(hemis).T
    std = series.std(axis=0)
    rest = np.divide(series - series.mean(axis=0), std, out=np.zeros_like(series),
                     where=std > 0).astype(np.float32)
    rest.setflags(write=False)
    return rest


def resting_state_noise(space: TargetSpace, n_tr: int, runs: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
    """Real resting-state background on an fsaverage mesh, one random segment per run.

    Each run takes a contiguous window of the 652-volume recording starting at a random
    volume (wrapping around when the run is longer); the same recording serves every
    subject, at different offsets. Vertices without signal get white noise. fsaverage4/3
    use the recording's values at their vertices (the first ones of fsaverage5).
    """
    if space.name not in FSAVERAGE_HEMI_VERTICES:
        raise ValueError(f"resting-state background exists on fsaverage5/4/3 meshes only; "
                         f"space {space.name!r} has {space.n_targets} targets")
    rest = load_brainspace_rest()[:, fsaverage_vertices(space.name)]
    n_volumes = rest.shape[0]
    noise = np.empty((n_tr, rest.shape[1]), dtype=np.float32)
    for run in np.unique(runs):
        rows = np.flatnonzero(runs == run)
        start = int(rng.integers(n_volumes))
        noise[rows] = rest[(start + np.arange(len(rows))) % n_volumes]
    silent = rest.std(axis=0) == 0
    noise[:, silent] = rng.standard_normal((n_tr, int(silent.sum())), dtype=np.float32)
    return zscore_columns(noise)


def zscore_columns(noise: np.ndarray) -> np.ndarray:
    """Mean 0, variance 1 per column (in place on a float32 copy)."""
    noise = noise - noise.mean(axis=0, keepdims=True)
    std = noise.std(axis=0, keepdims=True)
    return noise / np.where(std > 0, std, 1.0)


def make_noise(kind: str, space: TargetSpace, n_tr: int, runs: np.ndarray,
               rng: np.random.Generator, ar_phi: float = 0.3, fwhm_mm: float = 6.0,
               **_: Any) -> np.ndarray:
    """Unit-variance background noise of one subject, shape (n_tr, n_targets), float32.

    Parameters
    ----------
    kind : {"white", "ar1", "rest", "smooth_ar"}
        ``rest`` = brainspace resting state (fsaverage meshes only); ``smooth_ar`` = spatially
        smooth AR(1) (volume spaces only).
    space : TargetSpace
    n_tr : int
    runs : ndarray of int, shape (n_tr,)
    rng : numpy Generator
    ar_phi : float
        AR(1) coefficient for ``ar1`` and ``smooth_ar``.
    fwhm_mm : float
        Spatial smoothness of ``smooth_ar``.
    """
    if kind == "white":
        return white_noise(n_tr, space.n_targets, rng)
    if kind == "ar1":
        return ar1_noise(n_tr, space.n_targets, runs, ar_phi, rng)
    if kind == "rest":
        return resting_state_noise(space, n_tr, runs, rng)
    if kind == "smooth_ar":
        return smooth_ar_noise(space, n_tr, runs, ar_phi, fwhm_mm, rng)
    raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
