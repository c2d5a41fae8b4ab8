"""Calibration of the network mapping on null data: false-positive rates at alpha .05.

Each null simulation draws ``n_atoms`` independent AR(1) pattern time courses (phi 0.6,
two runs of 140 TRs) and ``n_subjects`` BOLD data sets on an fsaverage mesh that contain
no trace of them, then runs the mapping exactly as a study does: a ridge encoding model
per subject (:func:`brainalign.encoding.fit_encoding`), one map per pattern
(:func:`brainalign.encoding.pattern_maps`, subject mean), the correlation of each map
with each Yeo-17 network against the maps of time-reversed, shifted patterns
(:func:`brainalign.networks.spatial_shift_test`, the study pipeline's default spatial
null; the spin test of the same maps is run beside it for comparison), and the temporal
test of each pattern's unique held-out r on the network signals
(:func:`brainalign.networks.temporal_network_test`), all at the package defaults
(1,000 draws, tail p-values, FDR over each pattern's networks). Two backgrounds:

- ``rest``: brainspace's real resting-state run (fsaverage5 subject, random segments),
  spatially and temporally autocorrelated and organised into networks;
- ``smooth``: AR(1) time courses of random Gaussian bumps on the sphere (FWHM 20 mm)
  plus a little white noise: smooth in space and time, but not network-shaped.

Reported per background: the share of spatial p-values < .05 (shift null; ``spin_p_fpr``
for the spin test), of temporal p-values < .05 (patterns x networks), and of patterns
assigned a network (the rule; ``assigned_fpr_spin`` with the spin test), together with
the same at .01, the share of p-values below .05 / 1,088 (what BH over all pairs of 64
atoms x Yeo-17 would need for a lone pass), and the assignment rate of two alternative
rules (spatial test alone; BH over all pairs of a simulation). Headline
(``mapping_fpr["headline"]``): the share of signal-free patterns assigned a network on
resting-state noise. Targets: p-value FPR in [0.03, 0.07], assignment FPR <= 0.06.

``mapping_calibration()`` returns the dict (``benchmarks/calibration.py`` collects it);
``python benchmarks/calibration_mapping.py [--quick]`` prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger("benchmarks.calibration_mapping")

N_TR_PER_RUN = 140
TARGETS = {"p_value_fpr": [0.03, 0.07], "assignment_fpr": "<= 0.06"}


def smooth_surface_noise(mesh: str, n_tr: int, runs: np.ndarray, rng: np.random.Generator,
                         fwhm_mm: float = 20.0, n_centres: int = 400, phi: float = 0.5,
                         white: float = 0.3) -> np.ndarray:
    """Smooth AR(1) noise on an fsaverage mesh, unit variance, (n_tr, n_vertices) float32.

    Each hemisphere gets ``n_centres`` Gaussian bumps at random vertices of its sphere
    (radius 100 mm) whose amplitudes are AR(1) series inside runs; ``white`` is the
    standard deviation of independent noise added per vertex before z-scoring.
    """
    from brainalign.networks.nulls import fsaverage_sphere
    from brainalign.simulate.noise import ar1_filter, zscore_columns

    sigma = fwhm_mm / np.sqrt(8 * np.log(2))
    parts = []
    for sphere in fsaverage_sphere(mesh):
        centres = sphere[rng.choice(len(sphere), n_centres, replace=False)]
        squared = ((sphere[:, None, :] - centres[None]) ** 2).sum(-1)
        kernel = np.exp(-squared / (2 * sigma ** 2))                  # (n_vertices, n_centres)
        amplitude = ar1_filter(rng.standard_normal((n_tr, n_centres)), runs, phi)
        parts.append(amplitude.astype(np.float64) @ kernel.T)
    noise = np.concatenate(parts, axis=1)
    noise /= noise.std(axis=0, keepdims=True)
    noise += white * rng.standard_normal(noise.shape)
    return zscore_columns(noise.astype(np.float32))


def null_bold(noise: str, space, runs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One subject's signal-free BOLD (n_tr, n_targets), mean 0 in every run."""
    from brainalign.simulate.noise import resting_state_noise

    if noise == "rest":
        bold = resting_state_noise(space, len(runs), runs, rng)
    elif noise == "smooth":
        bold = smooth_surface_noise(space.name, len(runs), runs, rng)
    else:
        raise ValueError(f"noise must be 'rest' or 'smooth', got {noise!r}")
    for run in np.unique(runs):
        bold[runs == run] -= bold[runs == run].mean(axis=0)
    return bold


def null_simulation(seed: int, noise: str, mesh: str, atlas_name: str, n_atoms: int,
                    n_subjects: int, n_perm: int, n_shifts: int, alpha: float) -> dict:
    """Map ``n_atoms`` random patterns on signal-free BOLD; p-values and assignments."""
    from threadpoolctl import threadpool_limits

    from brainalign.encoding import fit_encoding, mean_over_subjects, pattern_maps
    from brainalign.networks import (load_atlas, map_patterns, spatial_shift_test,
                                     temporal_network_test)
    from brainalign.simulate import space_from_atlas
    from brainalign.simulate.noise import ar1_filter

    started = time.perf_counter()
    with threadpool_limits(limits=1):
        atlas = load_atlas(atlas_name, mesh)
        space = space_from_atlas(atlas)
        rng = np.random.default_rng(seed)
        runs = np.repeat([0, 1], N_TR_PER_RUN)
        atoms = ar1_filter(rng.standard_normal((len(runs), n_atoms)), runs, 0.6)
        bold = [null_bold(noise, space, runs, rng) for _ in range(n_subjects)]
        maps = mean_over_subjects([pattern_maps(fit_encoding(atoms, subject, runs, n_perm=0,
                                                             random_state=seed))
                                   for subject in bold])
        temporal = temporal_network_test(atoms, bold, runs, atlas, n_shifts=n_shifts,
                                         random_state=seed)
        spatial = spatial_shift_test(atoms, bold, runs, atlas, n_shifts=n_perm,
                                     random_state=seed)
        mapping = map_patterns(maps, atlas, null="shift", spatial=spatial, alpha=alpha,
                               temporal=temporal)
        spin = map_patterns(maps, atlas, n_perm=n_perm, alpha=alpha, temporal=temporal,
                            random_state=seed)
    return {"seed": seed, "spatial_p": mapping.p_values["correlation"],
            "spin_p": spin.p_values["correlation"], "spin_assigned": np.array(spin.assigned),
            "temporal_p": mapping.p_values["unique_r"],
            "spatial_positive": mapping.statistics["correlation"] > 0,
            "temporal_positive": mapping.statistics["unique_r"] > 0,
            "passes": mapping.passes, "assigned": np.array(mapping.assigned),
            "methods": mapping.inference["p_values"]["n_tests_by_method"]["correlation"],
            "temporal_methods": temporal.p_value_method["n_tests_by_method"],
            "seconds": time.perf_counter() - started}


def _global_bh_assigned(run: dict, alpha: float) -> np.ndarray:
    """Patterns assigned when both tests are BH-corrected over all pairs of a simulation."""
    from mne.stats import fdr_correction

    passing = np.ones_like(run["spatial_positive"])
    for test in ("spatial", "temporal"):
        p = run[f"{test}_p"]
        passing &= (fdr_correction(p.ravel(), alpha)[1].reshape(p.shape) < alpha)
        passing &= run[f"{test}_positive"]
    return passing.any(axis=1)


def summarise(runs: list[dict], alpha: float) -> dict[str, Any]:
    """False-positive rates over all simulations of one background."""
    spatial = np.concatenate([run["spatial_p"].ravel() for run in runs])
    spin = np.concatenate([run["spin_p"].ravel() for run in runs])
    spin_assigned = np.concatenate([run["spin_assigned"] != "none" for run in runs])
    temporal = np.concatenate([run["temporal_p"].ravel() for run in runs])
    assigned = np.concatenate([run["assigned"] != "none" for run in runs])
    spatial_only = np.concatenate([run["passes"]["spatial"].any(axis=1) for run in runs])
    global_bh = np.concatenate([_global_bh_assigned(run, alpha) for run in runs])
    lone_threshold = alpha / (64 * 17)

    def counts(key: str) -> dict[str, int]:
        names = sorted({name for run in runs for name in run[key]})
        return {name: int(sum(run[key].get(name, 0) for run in runs)) for name in names}

    return {
        "spatial_p_fpr": float(np.mean(spatial < alpha)),
        "temporal_p_fpr": float(np.mean(temporal < alpha)),
        "assigned_fpr": float(np.mean(assigned)),
        "spin_p_fpr": float(np.mean(spin < alpha)),
        "assigned_fpr_spin": float(np.mean(spin_assigned)),
        "spatial_p_fpr_01": float(np.mean(spatial < 0.01)),
        "temporal_p_fpr_01": float(np.mean(temporal < 0.01)),
        "spatial_p_below_lone_bh_threshold": float(np.mean(spatial < lone_threshold)),
        "temporal_p_below_lone_bh_threshold": float(np.mean(temporal < lone_threshold)),
        "lone_bh_threshold": lone_threshold,
        "assigned_fpr_spatial_only": float(np.mean(spatial_only)),
        "assigned_fpr_bh_over_all_pairs": float(np.mean(global_bh)),
        "n_p_values": int(spatial.size), "n_patterns": int(assigned.size),
        "n_simulations": len(runs),
        "spatial_p_methods": counts("methods"), "temporal_p_methods": counts("temporal_methods"),
        "seconds_per_simulation": float(np.mean([run["seconds"] for run in runs])),
    }


def mapping_calibration(*, noises: Sequence[str] = ("rest", "smooth"), n_simulations: int = 32,
                        n_atoms: int = 16, n_subjects: int = 2, n_perm: int = 1000,
                        n_shifts: int = 1000, mesh: str = "fsaverage4", atlas: str = "yeo17",
                        alpha: float = 0.05, workers: int = 2, seed: int = 0,
                        quick: bool = False) -> dict[str, Any]:
    """False-positive rates of the network mapping on null simulations.

    Parameters
    ----------
    noises : sequence of {"rest", "smooth"}
        Backgrounds (see the module docstring); the first gives the headline.
    n_simulations : int
        Null simulations per background (each ``n_atoms`` patterns x the atlas's networks).
    n_atoms, n_subjects : int
    n_perm, n_shifts : int
        Draws of the spatial nulls (shift and spin) and of the temporal test (the package
        defaults).
    mesh, atlas : str
        fsaverage mesh and network atlas.
    alpha : float
    workers : int
        Processes (simulations run in parallel, one BLAS thread each).
    seed : int
    quick : bool
        Smoke run: 2 simulations per background and 200 draws (rates not meaningful).

    Returns
    -------
    dict
        ``mapping_fpr`` (headline and per-background rates), ``by_noise`` (every rate,
        p-value methods, timings), ``targets``, ``config``, ``seconds``, ``provenance``.
    """
    from brainalign.provenance import provenance_block

    if quick:
        n_simulations, n_perm, n_shifts = 2, 200, 200
    started = time.perf_counter()
    by_noise = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for offset, noise in enumerate(noises):
            seeds = [seed + 10_000 * offset + k for k in range(n_simulations)]
            runs = list(pool.map(null_simulation, seeds, [noise] * n_simulations,
                                 [mesh] * n_simulations, [atlas] * n_simulations,
                                 [n_atoms] * n_simulations, [n_subjects] * n_simulations,
                                 [n_perm] * n_simulations, [n_shifts] * n_simulations,
                                 [alpha] * n_simulations))
            by_noise[noise] = summarise(runs, alpha)
            logger.info("%s: spatial p FPR %.3f, temporal p FPR %.3f, assigned %.3f (%d "
                        "patterns)", noise, by_noise[noise]["spatial_p_fpr"],
                        by_noise[noise]["temporal_p_fpr"], by_noise[noise]["assigned_fpr"],
                        by_noise[noise]["n_patterns"])
    first = by_noise[noises[0]]
    mapping_fpr = {
        "headline": first["assigned_fpr"],
        "headline_is": f"share of signal-free patterns assigned a network (spatial shift "
                       f"and temporal tests, FDR over each pattern's networks) on "
                       f"{noises[0]} background, alpha {alpha}",
        **{f"{key}_{noise}": value[key] for noise, value in by_noise.items()
           for key in ("spatial_p_fpr", "temporal_p_fpr", "assigned_fpr", "spin_p_fpr")}}
    return {"mapping_fpr": mapping_fpr, "by_noise": by_noise, "targets": TARGETS,
            "config": dict(noises=list(noises), n_simulations=n_simulations, n_atoms=n_atoms,
                           n_subjects=n_subjects, n_perm=n_perm, n_shifts=n_shifts, mesh=mesh,
                           atlas=atlas, alpha=alpha, n_tr=2 * N_TR_PER_RUN, runs=2,
                           atoms="independent AR(1), phi 0.6", seed=seed, workers=workers,
                           quick=quick),
            "seconds": time.perf_counter() - started,
            "machine": "2-core CPU dev machine (shared)",
            "provenance": provenance_block(stage="benchmark.calibration_mapping")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 simulations per background, 200 draws")
    parser.add_argument("--n-simulations", type=int, default=32)
    parser.add_argument("--noise", default="rest,smooth")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "calibration_mapping.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = mapping_calibration(noises=args.noise.split(","), n_simulations=args.n_simulations,
                                 workers=args.workers, quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
