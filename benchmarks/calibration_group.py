"""Calibration of the group maps' family-wise error rate on null data (a check, not a timing).

For each way :func:`brainalign.group.group_map` controls the FWE rate, many group studies
are simulated in which no target carries an effect: every subject's held-out r map is a
smooth, zero-mean random field (sd 0.05 in r, as held-out r of an uninformative model),
and the group test runs exactly as the study's group stage runs it (Fisher z, one-sided,
``tail=1``). The FWE rate is the share of simulations in which any target reaches
p_FWE < alpha; a calibrated test gives alpha (0.05), within Monte Carlo error.

Spaces and null maps (sized for a 2-core CPU):

- ``roi_maxt``: the 160 Dosenbach ROIs (coordinates bundled with nilearn), Gaussian
  values correlated between ROIs as exp(-distance / 30 mm); max-t (nilearn).
- ``surface_cluster``: fsaverage4, both hemispheres (5,124 vertices), white noise smoothed
  by 6 rounds of neighbour averaging on the mesh (a smoothness of about 2 vertex spacings,
  ~10 mm); cluster mass above p < .001 (brainalign.group.surface, sign flips).
- ``surface_tfce``: the same on fsaverage3 (1,284 vertices, 3 rounds), TFCE with steps
  of 0.2 t; fewer permutations, TFCE being the slowest test.
- ``volume_maxt``, ``volume_cluster``: nilearn's MNI152 brain mask resampled to 8 mm
  voxels, Gaussian noise smoothed on the grid (sigma 1 voxel, FWHM ~19 mm); voxel max-t
  and cluster mass above p < .001 (nilearn's ``non_parametric_inference``).

:func:`group_calibration` returns ``{"group_fwe": {method: {...}}, ...}`` (FWE rate, errors,
simulations, a 95% Wilson interval, sizes, wall time); run alone, the script prints it
and writes ``benchmarks/results/calibration_group.json``.

Run: ``python benchmarks/calibration_group.py`` (``--scale 0.2`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from brainalign.group import group_map
from brainalign.provenance import provenance_block

RESULTS = Path(__file__).resolve().parent / "results"

#: Accepted FWE rates at alpha = 0.05.
TARGET = (0.03, 0.07)

#: method -> (space label, group_map method, simulations, permutations).
DEFAULT_RUNS = {
    "roi_maxt": ("roi", "maxt", 1000, 500),
    "surface_cluster": ("fsaverage4", "cluster", 400, 500),
    "surface_tfce": ("fsaverage3", "tfce", 200, 200),
    "volume_maxt": ("volume8mm", "maxt", 500, 500),
    "volume_cluster": ("volume8mm", "cluster", 300, 500),
}

#: Rounds of neighbour averaging of the surface null maps.
SURFACE_SMOOTHING = {"fsaverage4": 6, "fsaverage3": 3}


@lru_cache(maxsize=None)
def roi_cholesky(length_mm: float = 30.0) -> np.ndarray:
    """Cholesky factor of exp(-distance / length) between the Dosenbach ROIs."""
    from nilearn.datasets import fetch_coords_dosenbach_2010
    from scipy.spatial.distance import cdist

    coords = np.asarray(fetch_coords_dosenbach_2010().rois[["x", "y", "z"]], dtype=float)
    return np.linalg.cholesky(np.exp(-cdist(coords, coords) / length_mm))


@lru_cache(maxsize=None)
def surface_graph(space: str):
    """Masker of every vertex of ``space`` and its adjacency as a float matrix."""
    from brainalign.group.inputs import resolve_masker
    from brainalign.group.mesh import MESH_VERTICES, surface_adjacency

    masker = resolve_masker(space, 2 * MESH_VERTICES[space])
    return masker, surface_adjacency(masker).astype(float)


@lru_cache(maxsize=None)
def volume_masker(resolution_mm: float = 8.0):
    """nilearn's MNI152 brain mask resampled to ``resolution_mm`` voxels, as a fitted masker."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    from brainalign.brain import VolumeMasker

    mask = load_mni152_brain_mask(resolution=2)
    coarse = resample_img(mask, target_affine=np.diag([resolution_mm] * 3),
                          interpolation="nearest", copy_header=True, force_resample=True)
    return VolumeMasker(mask_img=coarse, space="MNI152NLin2009cAsym").fit()


def null_maps(space: str, n_subjects: int, rng: np.random.Generator) -> tuple[np.ndarray, object]:
    """Smooth zero-mean null r maps (n_subjects, n_targets), sd 0.05, and their masker."""
    if space == "roi":
        factor = roi_cholesky()
        fields = rng.standard_normal((n_subjects, len(factor))) @ factor.T
        masker = "roi"
    elif space in SURFACE_SMOOTHING:
        masker, graph = surface_graph(space)
        degree = np.asarray(graph.sum(axis=1)).ravel()
        fields = rng.standard_normal((n_subjects, graph.shape[0]))
        for _ in range(SURFACE_SMOOTHING[space]):
            fields = (graph @ fields.T).T / degree
    else:
        from scipy import ndimage

        masker = volume_masker()
        inside = np.asarray(masker.mask_img_.dataobj).astype(bool)
        fields = np.stack([ndimage.gaussian_filter(rng.standard_normal(inside.shape), 1.0)[inside]
                           for _ in range(n_subjects)])
    fields /= fields.std(axis=1, keepdims=True)
    return np.tanh(0.05 * fields), masker


def wilson_interval(errors: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a binomial proportion."""
    share = errors / n
    centre = (share + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
    half = z * np.sqrt(share * (1 - share) / n + z ** 2 / (4 * n ** 2)) / (1 + z ** 2 / n)
    return [float(centre - half), float(centre + half)]


def calibrate(name: str, space: str, method: str, n_sims: int, n_perm: int, n_subjects: int,
              alpha: float, seed: int) -> dict:
    """FWE rate of one method over ``n_sims`` null group studies."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    errors, n_targets = 0, None
    for simulation in range(n_sims):
        maps, masker = null_maps(space, n_subjects, rng)
        group = group_map(maps, masker, method=method, n_perm=n_perm,
                          random_state=seed * 100_003 + simulation)
        errors += bool(group.significant(alpha).any())
        n_targets = group.n_targets
    fwe = errors / n_sims
    return {"method": method, "space": space, "fwe": fwe, "n_errors": errors,
            "n_sims": n_sims, "ci95": wilson_interval(errors, n_sims), "alpha": alpha,
            "within_target": TARGET[0] <= fwe <= TARGET[1], "n_subjects": n_subjects,
            "n_perm": n_perm, "n_targets": n_targets, "tail": 1, "fisher_z": True,
            "wall_s": round(time.perf_counter() - started, 1)}


def group_calibration(methods: tuple[str, ...] | None = None, scale: float = 1.0,
                      n_subjects: int = 12, alpha: float = 0.05, seed: int = 0) -> dict:
    """Family-wise error rate of each group test on null data.

    Parameters
    ----------
    methods : tuple of str, optional
        Keys of :data:`DEFAULT_RUNS` (default: all).
    scale : float
        Multiplies the number of simulations of every method (0.2 for a quick look).
    n_subjects : int
        Subjects per simulated group study.
    alpha : float
    seed : int

    Returns
    -------
    dict
        ``group_fwe``: method -> FWE rate and details; ``target``, ``alpha``, ``wall_s``.
    """
    started = time.perf_counter()
    results = {}
    for index, name in enumerate(methods or tuple(DEFAULT_RUNS)):
        space, method, n_sims, n_perm = DEFAULT_RUNS[name]
        results[name] = calibrate(name, space, method, max(1, int(round(n_sims * scale))),
                                  n_perm, n_subjects, alpha, seed + index)
    return {"group_fwe": results, "target": list(TARGET), "alpha": alpha,
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", choices=sorted(DEFAULT_RUNS), default=None)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every method's number of simulations")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration_group.json")
    args = parser.parse_args()
    document = group_calibration(tuple(args.methods) if args.methods else None, args.scale)
    print(json.dumps(document, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**document, "provenance": provenance_block(
        benchmark="calibration_group", scale=args.scale)}, indent=2))


if __name__ == "__main__":
    main()
