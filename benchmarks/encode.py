"""Benchmark: brainalign's EncodingModel against raw himalaya and scikit-learn, in one run.

Usage::

    python benchmarks/encode.py [--out benchmarks/results/encode.json] [--repeats 3]

Rows (each timed ``--repeats`` times after one warm-up, brainalign and himalaya
alternately, the minimum reported):

* ``gpu``: T=3,000 time points, 256 features, 200,000 targets, 5 inner folds, 20 alphas,
  float32 on the CUDA device: ``EncodingModel.fit`` vs ``himalaya.ridge.RidgeCV.fit`` with
  the same splits, alphas and target batch (torch_cuda backend). Skipped, with the reason
  recorded, when torch sees no CUDA device.
* ``cpu``: T=600, 64 features, 5,000 targets, same settings on the numpy backend.
* ``banded_cpu``: the same T with two feature bands (8 and 64 features), 1,000 targets,
  16 band-weight candidates: ``BandedEncodingModel.fit`` (primal) vs
  ``himalaya.ridge.BandedRidgeCV.fit`` on the same centred bands, splits, alphas and
  candidates (target <= 1.2).
* ``sklearn``: scikit-learn ``RidgeCV(alpha_per_target=True)`` on CPU (efficient
  leave-one-out, the only per-target-alpha mode scikit-learn offers) at 20,000 targets
  for the GPU problem's time points and features when CUDA is there, else on the cpu
  row's problem.

The overhead ratio is brainalign / himalaya on the same problem in the same process
(target <= 1.1 for plain ridge, <= 1.2 for banded ridge). brainalign's alpha-grid extension
is turned off in these rows so that both solve the same grid.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from brainalign.encoding import BandedEncodingModel, EncodingModel, inner_splits
from brainalign.encoding.backend import cuda_available, himalaya_backend, target_batch_size
from brainalign.provenance import provenance_block

REPO = Path(__file__).resolve().parents[1]
GPU_SIZE = dict(n_samples=3000, n_features=256, n_targets=200_000)
CPU_SIZE = dict(n_samples=600, n_features=64, n_targets=5000)
BANDED_SIZE = dict(n_samples=600, n_features=(8, 64), n_targets=1000)
N_ITER = 16
N_ALPHAS, N_SPLITS = 20, 5


def make_problem(n_samples: int, n_features: int, n_targets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    weights = rng.standard_normal((n_features, n_targets), dtype=np.float32) * 0.1
    Y = X @ weights + rng.standard_normal((n_samples, n_targets), dtype=np.float32)
    return X, Y


def best_of(functions: list, repeats: int) -> list[float]:
    """Minimum wall time of each function over ``repeats`` rounds, after one warm-up round.

    The functions are run alternately within each round, so a machine whose load changes
    during the benchmark slows all of them alike.
    """
    for function in functions:
        function()  # warm-up (allocations, kernels, BLAS threads)
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, spent in zip(functions, times):
            start = time.perf_counter()
            function()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def synchronize(backend: str) -> None:
    if backend == "torch_cuda":
        import torch

        torch.cuda.synchronize()


def compare(size: dict, backend: str, repeats: int) -> dict:
    """brainalign vs raw himalaya on one problem size and backend."""
    from himalaya.ridge import RidgeCV

    X, Y = make_problem(**size)
    alphas = np.logspace(-1, 7, N_ALPHAS)
    runs = np.zeros(size["n_samples"], dtype=int)
    splits, _ = inner_splits(runs, N_SPLITS)
    batch = target_batch_size(size["n_targets"], size["n_samples"], size["n_features"], N_ALPHAS,
                              "primal", backend, itemsize=4)

    def run_brainalign():
        EncodingModel(alphas=alphas, n_inner_splits=N_SPLITS, backend=backend,
                      n_targets_batch=batch, dtype="float32", extend_grid=False).fit(X, Y, runs)
        synchronize(backend)

    def run_himalaya():
        with himalaya_backend(backend) as hb:
            model = RidgeCV(alphas=alphas.astype(np.float32), fit_intercept=True, cv=splits,
                            solver_params=dict(n_targets_batch=batch, n_targets_batch_refit=batch,
                                               warn=False))
            model.fit(X, Y)
            hb.to_numpy(model.coef_)  # brainalign returns numpy arrays: count the copy back
        synchronize(backend)

    brainalign_s, himalaya_s = best_of([run_brainalign, run_himalaya], repeats)
    return {**size, "n_alphas": N_ALPHAS, "n_inner_splits": N_SPLITS, "backend": backend,
            "n_targets_batch": batch, "dtype": "float32", "repeats": repeats,
            "brainalign_s": round(brainalign_s, 4), "himalaya_s": round(himalaya_s, 4),
            "overhead_ratio": round(brainalign_s / himalaya_s, 3)}


def compare_banded(repeats: int) -> dict:
    """BandedEncodingModel vs himalaya's BandedRidgeCV on two bands, numpy backend."""
    from himalaya.ridge import BandedRidgeCV

    sizes = BANDED_SIZE["n_features"]
    X, Y = make_problem(BANDED_SIZE["n_samples"], sum(sizes), BANDED_SIZE["n_targets"])
    alphas = np.logspace(-1, 7, N_ALPHAS)
    runs = np.zeros(BANDED_SIZE["n_samples"], dtype=int)
    splits, _ = inner_splits(runs, N_SPLITS)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)

    def run_brainalign():
        BandedEncodingModel(band_sizes=sizes, alphas=alphas, n_iter=N_ITER, n_inner_splits=N_SPLITS,
                            backend="numpy", solver="primal", dtype="float32",
                            extend_grid=False).fit(X, Y, runs)

    def run_himalaya():
        with himalaya_backend("numpy"):
            BandedRidgeCV(groups="input", fit_intercept=False, cv=splits, random_state=0,
                          solver_params=dict(n_iter=N_ITER, alphas=alphas.astype(np.float32),
                                             progress_bar=False, warn=False)
                          ).fit([Xc[:, :sizes[0]], Xc[:, sizes[0]:]], Yc)

    brainalign_s, himalaya_s = best_of([run_brainalign, run_himalaya], repeats)
    return {"n_samples": BANDED_SIZE["n_samples"], "band_sizes": list(sizes),
            "n_targets": BANDED_SIZE["n_targets"], "n_iter": N_ITER, "n_alphas": N_ALPHAS,
            "n_inner_splits": N_SPLITS, "backend": "numpy", "solver": "primal",
            "dtype": "float32", "repeats": repeats, "brainalign_s": round(brainalign_s, 4),
            "himalaya_s": round(himalaya_s, 4),
            "overhead_ratio": round(brainalign_s / himalaya_s, 3)}


def sklearn_row(n_samples: int, n_features: int, n_targets: int, repeats: int) -> dict:
    from sklearn.linear_model import RidgeCV

    X, Y = make_problem(n_samples, n_features, n_targets)
    alphas = np.logspace(-1, 7, N_ALPHAS)
    seconds, = best_of([lambda: RidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y)], repeats)
    return {"n_samples": n_samples, "n_features": n_features, "n_targets": n_targets,
            "n_alphas": N_ALPHAS, "cv": "efficient leave-one-out (alpha_per_target=True)",
            "repeats": repeats, "sklearn_cpu_s": round(seconds, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="brainalign encoding benchmark")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "encode.json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the gpu and sklearn rows (make bench-gpu)")
    args = parser.parse_args(argv)

    has_cuda = cuda_available()
    rows = {}
    if has_cuda:
        import torch

        rows["gpu"] = compare(GPU_SIZE, "torch_cuda", args.repeats)
        rows["gpu"]["device_name"] = torch.cuda.get_device_name()
        rows["sklearn"] = sklearn_row(GPU_SIZE["n_samples"], GPU_SIZE["n_features"], 20_000, 1)
    else:
        rows["gpu"] = {**GPU_SIZE, "brainalign_s": None, "himalaya_s": None, "overhead_ratio": None,
                       "skipped": "torch sees no CUDA device on this machine"}
        rows["sklearn"] = sklearn_row(CPU_SIZE["n_samples"], CPU_SIZE["n_features"],
                                      CPU_SIZE["n_targets"], args.repeats)
    if args.gpu_only:
        if not has_cuda:
            parser.error("--gpu-only needs a CUDA device, and torch sees none")
        skipped = {"skipped": "--gpu-only run (make bench-gpu): CPU rows are measured by "
                              "`python benchmarks/encode.py` on the CPU machine"}
        rows["cpu"] = {**CPU_SIZE, "brainalign_s": None, "himalaya_s": None, "overhead_ratio": None,
                       **skipped}
        rows["banded_cpu"] = {"overhead_ratio": None, **skipped}
    else:
        rows["cpu"] = compare(CPU_SIZE, "numpy", args.repeats)
        rows["banded_cpu"] = compare_banded(args.repeats)

    headline = rows["gpu"] if has_cuda else rows["cpu"]
    cpus = os.cpu_count() or 0
    summary = {
        "device": rows["gpu"]["device_name"] if has_cuda else f"cpu ({cpus}-core {platform.machine()}, numpy backend)",
        "config": "gpu: T=3000, 256 features, 200000 targets" if has_cuda
        else "cpu: T=600, 64 features, 5000 targets (no CUDA device: gpu row null)",
        "brainalign_s": headline["brainalign_s"], "himalaya_s": headline["himalaya_s"],
        "overhead_ratio": headline["overhead_ratio"], "sklearn_cpu_s": rows["sklearn"]["sklearn_cpu_s"],
        "sklearn_config": f"{rows['sklearn']['n_samples']} x {rows['sklearn']['n_features']}, "
                          f"{rows['sklearn']['n_targets']} targets",
        "target": "overhead_ratio <= 1.1",
        "banded_overhead_ratio": rows["banded_cpu"]["overhead_ratio"],
        "banded_config": "cpu: T=600, bands of 8 and 64 features, 1000 targets, 16 weight "
                         "candidates (BandedRidgeCV primal)",
        "banded_target": "banded_overhead_ratio <= 1.2",
    }
    document = {"summary": summary, "rows": rows,
                "provenance": provenance_block(script="benchmarks/encode.py", cpu_count=cpus,
                                               platform=platform.platform())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
