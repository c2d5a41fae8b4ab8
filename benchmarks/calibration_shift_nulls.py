"""Which surrogates make the spatial shift test calibrated? Three nulls on the same null data.

The spatial test of :func:`brainalign.networks.spatial_shift_test` compares the
correlation of each pattern's encoding map with each network against the maps of moved
copies of the patterns. Here the same signal-free simulations as
``benchmarks/calibration_mapping.py`` (16 AR(1) patterns, phi 0.6, two runs of 140 TRs,
2 subjects of real resting-state background on fsaverage4, Yeo-17) are tested against
three kinds of surrogate, each drawn ``n_surrogates`` times:

- ``circular_min10``: circular shifts inside runs of at least 10 TRs from either end
  (the test's former default);
- ``circular_all``: circular shifts by any number of TRs, 1 to n - 1;
- ``mirror``: the pattern reversed in time inside runs, then shifted by any number of TRs
  (the default).

Each null is :func:`~brainalign.networks.spatial_shift_test` itself (its maps, penalties
and statistic), with the empirical p-value ``(1 + #null >= observed) / (1 + n)``.
Reported per null: the share of pattern x network p-values below .05 and .01, and the
standard error of the first over simulations (the pairs of one simulation share data).

``python benchmarks/calibration_shift_nulls.py [--n-simulations 40] [--quick]`` writes
``benchmarks/results/calibration_shift_nulls.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_mapping import N_TR_PER_RUN, null_bold  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NULLS = {"circular_min10": ("circular", 10), "circular_all": ("circular", 1),
         "mirror": ("mirror", 1)}


def simulation(seed: int, n_surrogates: int, n_atoms: int = 16, n_subjects: int = 2) -> dict:
    """Empirical p-values of one null simulation under each kind of surrogate."""
    from threadpoolctl import threadpool_limits

    from brainalign.networks import load_atlas, spatial_shift_test
    from brainalign.simulate import space_from_atlas
    from brainalign.simulate.noise import ar1_filter

    with threadpool_limits(limits=1):
        atlas = load_atlas("yeo17", "fsaverage4")
        rng = np.random.default_rng(seed)
        runs = np.repeat([0, 1], N_TR_PER_RUN)
        patterns = ar1_filter(rng.standard_normal((len(runs), n_atoms)), runs, 0.6)
        bold = [null_bold("rest", space_from_atlas(atlas), runs, rng)
                for _ in range(n_subjects)]
        return {name: spatial_shift_test(patterns, bold, runs, atlas, n_shifts=n_surrogates,
                                         null=method, min_shift_tr=min_shift, tail="empirical",
                                         random_state=seed).p_values
                for name, (method, min_shift) in NULLS.items()}


def shift_null_calibration(n_simulations: int = 40, n_surrogates: int = 500,
                           workers: int = 2, seed: int = 200) -> dict:
    """False-positive rates of the three nulls over ``n_simulations`` null simulations."""
    from brainalign.provenance import provenance_block

    started = time.perf_counter()
    seeds = list(range(seed, seed + n_simulations))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(simulation, seeds, [n_surrogates] * n_simulations))
    rates = {}
    for name in NULLS:
        p = np.array([run[name] for run in runs])          # (n_simulations, atoms, networks)
        per_simulation = (p < 0.05).mean(axis=(1, 2))
        rates[name] = {"fpr_05": float((p < 0.05).mean()), "fpr_01": float((p < 0.01).mean()),
                       "se_05_over_simulations": float(per_simulation.std(ddof=1)
                                                       / np.sqrt(len(runs))),
                       "n_p_values": int(p.size)}
    return {"rates": rates, "nulls": {name: {"method": method, "min_shift_tr": shift}
                                      for name, (method, shift) in NULLS.items()},
            "config": dict(n_simulations=n_simulations, n_surrogates=n_surrogates,
                           n_atoms=16, n_subjects=2, n_tr=2 * N_TR_PER_RUN, runs=2,
                           background="rest", mesh="fsaverage4", atlas="yeo17",
                           seeds=[seeds[0], seeds[-1]], workers=workers),
            "target": "fpr_05 in [0.03, 0.07]",
            "seconds": round(time.perf_counter() - started, 1),
            "machine": "2-core CPU dev machine (shared)",
            "provenance": provenance_block(stage="benchmark.calibration_shift_nulls")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-simulations", type=int, default=40)
    parser.add_argument("--n-surrogates", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 simulations, 50 surrogates")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration_shift_nulls.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.n_simulations, args.n_surrogates = 2, 50
    result = shift_null_calibration(args.n_simulations, args.n_surrogates, args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["rates"], indent=1))
    return result


if __name__ == "__main__":
    main()
