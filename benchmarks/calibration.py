"""Calibration of every p-value of the encoding -> network -> group path, on null data.

A statistic is reported only once its false-positive rate on data without an effect is
known. This script gathers four checks into ``benchmarks/results/calibration.json``:

* ``encoding_fpr`` (here): the p-value of the held-out r of each target
  (:func:`brainalign.encoding.fit_encoding` with its defaults: cleaning inside the folds,
  the refitted null), for each way the null reorders the data (``mirror``, the default
  since 2026-11-28; ``circular``; ``block``, the default before). Null simulations: 8
  slowly varying features (AR(1), phi 0.9, FIR delays 1-4 TRs) that drive nothing,
  against targets of white noise, AR(1) noise (phi 0.6 and 0.9) or real resting-state
  BOLD (brainspace's fsaverage5 run: random vertices, one contiguous segment per run).
  Two layouts: the bundled story's two runs (leave-one-run-out) and one run of the same
  length (5 contiguous blocks).
* ``unique_fpr`` (here): the p-value of a feature band's unique held-out r
  (:func:`brainalign.encoding.fit_encoding` with several bands, circular shifts of the
  band). Null simulations: targets driven by a word-rate band only (an HRF-convolved
  impulse train at the bundled story's real word onsets), plus smooth AR(1) noise
  (phi 0.6); a second band of 16 slowly varying features (AR(1), phi 0.9, FIR delays
  1-4 TRs), drawn afresh in each simulation, drives nothing. Its p-values are the null
  tests. Two layouts: the bundled story's two runs (leave-one-run-out), and one run of
  the same length (5 contiguous blocks).
* ``mapping_fpr``: pattern -> network p-values (spatial and temporal) and the assignment
  rule, from ``benchmarks/calibration_mapping.py`` (its JSON,
  ``results/calibration_mapping.json``).
* ``group_fwe``: family-wise error rates of the group maps, from
  ``benchmarks/calibration_group.py`` (``results/calibration_group.json``).

The target for each: a false-positive rate at alpha .05 in [0.03, 0.07] over >= 500 tests
(or >= 200 null group simulations); for the encoding r, in every noise and layout with the
default null. ``python benchmarks/calibration.py`` runs the encoding and unique-r parts
and gathers the other two from their scripts' JSON (run them first: they take about 40
and 15 minutes here); ``--run mapping group`` runs those here too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from brainalign.provenance import provenance_block

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = (0.03, 0.07)
PARTS = ("encoding", "unique", "mapping", "group")
#: The nulls of the encoding r that ``encoding_calibration`` compares, the default first.
ENCODING_NULLS = ("mirror", "circular", "block")
ENCODING_NOISES = ("white", "ar0.6", "ar0.9", "rest")


def _ar1(rng: np.random.Generator, shape, phi: float) -> np.ndarray:
    """Unit-variance AR(1) noise along axis 0."""
    noise = rng.standard_normal(shape)
    out = np.empty(shape)
    out[0] = noise[0]
    for t in range(1, shape[0]):
        out[t] = phi * out[t - 1] + np.sqrt(1 - phi ** 2) * noise[t]
    return out


def word_rate_band():
    """The bundled story's word onsets convolved with the SPM HRF on its scan: (n_tr, 1), runs."""
    from brainalign.stimuli import bundled_story
    from brainalign.timecourse import tr_grid, words_to_tr

    story = bundled_story()
    rate = words_to_tr(np.ones(len(story.words)), story, method="hrf")
    return rate[:, None], tr_grid(story)[1]


def null_targets(noise: str, runs: np.ndarray, n_targets: int, rng: np.random.Generator) -> np.ndarray:
    """Targets without any stimulus link, shape (n_tr, n_targets): see ``ENCODING_NOISES``."""
    if noise == "white":
        return rng.standard_normal((len(runs), n_targets))
    if noise.startswith("ar"):
        return _ar1(rng, (len(runs), n_targets), float(noise[2:]))
    if noise != "rest":
        raise ValueError(f"noise must be one of {ENCODING_NOISES}, got {noise!r}")
    from brainalign.simulate.noise import load_brainspace_rest

    rest = load_brainspace_rest()
    columns = rng.choice(np.flatnonzero(rest.std(axis=0) > 0), n_targets, replace=False)
    out = np.empty((len(runs), n_targets))
    for run in np.unique(runs):
        rows = np.flatnonzero(runs == run)
        start = int(rng.integers(rest.shape[0] - len(rows) + 1))   # a segment, no wrap
        out[rows] = rest[start:start + len(rows)][:, columns]
    return out


def encoding_calibration(n_sims: int = 20, n_targets: int = 100, n_perm: int = 1000,
                         seed: int = 0) -> dict:
    """False-positive rate of the held-out r's p-value on null data, per null, noise and layout."""
    from brainalign.encoding import fit_encoding

    _, runs = word_rate_band()
    layouts = {"two_runs": runs, "one_run": np.zeros_like(runs)}
    parts: dict = {}
    for layout, layout_runs in layouts.items():
        for noise in ENCODING_NOISES:
            started = time.perf_counter()
            p_values = {null: [] for null in ENCODING_NULLS}
            for sim in range(n_sims):
                rng = np.random.default_rng([seed, sim])
                features = _ar1(rng, (len(runs), 8), 0.9)
                targets = null_targets(noise, layout_runs, n_targets, rng)
                for null in ENCODING_NULLS:   # the same data for every null
                    result = fit_encoding(features, targets, layout_runs, tr_s=2.0, n_perm=n_perm,
                                          null=null, random_state=sim)
                    p_values[null].append(result.p_values)
            for null, chunks in p_values.items():
                p = np.concatenate(chunks)
                parts.setdefault(null, {}).setdefault(layout, {})[noise] = {
                    "fpr_05": float(np.mean(p < 0.05)), "fpr_01": float(np.mean(p < 0.01)),
                    "n_tests": int(p.size)}
            logging.getLogger(__name__).info(
                "encoding %s %s: %s (%.0f s)", layout, noise,
                {null: parts[null][layout][noise]["fpr_05"] for null in ENCODING_NULLS},
                time.perf_counter() - started)
    rates = {null: [cell["fpr_05"] for layout in by_layout.values() for cell in layout.values()]
             for null, by_layout in parts.items()}
    default = ENCODING_NULLS[0]
    return {"encoding_fpr": float(np.mean(rates[default])),
            "encoding_fpr_range": {null: [min(r), max(r)] for null, r in rates.items()},
            "encoding_within_target": {null: bool(TARGET[0] <= min(r) and max(r) <= TARGET[1])
                                       for null, r in rates.items()},
            "encoding_parts": parts,
            "encoding_setup": {"default_null": default, "n_perm": n_perm, "n_simulations": n_sims,
                               "n_targets_per_simulation": n_targets,
                               "features": "8 AR(1) phi 0.9 features, FIR delays 1-4 (default)",
                               "noises": list(ENCODING_NOISES), "tr_s": 2.0,
                               "fit": "fit_encoding defaults (cleaning inside the folds, "
                                      "null_scope refit, GPD tail)",
                               "rest": "brainspace fsaverage5 resting-state run, random "
                                       "vertices, one contiguous segment per run"}}


def unique_calibration(n_sims: int = 10, n_targets: int = 60, n_shifts: int = 1000,
                       seed: int = 0) -> dict:
    """False-positive rate of band-unique p-values on null data, in two run layouts."""
    from brainalign.encoding import Band, fit_encoding

    rate, runs = word_rate_band()
    layouts = {"two_runs": runs, "one_run": np.zeros_like(runs)}
    rng = np.random.default_rng(seed)
    out = {}
    for name, layout_runs in layouts.items():
        started = time.perf_counter()
        p_null, p_driven = [], []
        for _ in range(n_sims):
            llm = _ar1(rng, (len(runs), 16), 0.9)
            weights = rng.uniform(0.2, 0.6, (1, n_targets))
            Y = (rate - rate.mean()) / rate.std() @ weights + _ar1(rng, (len(runs), n_targets), 0.6)
            result = fit_encoding({"word_rate": Band(rate, hrf_convolved=True), "llm": llm}, Y,
                                  layout_runs, tr_s=2.0, n_perm=0, n_band_shifts=n_shifts,
                                  random_state=int(rng.integers(1 << 31)))
            bands = result.partition["bands"]
            p_null.append(result.partition["p_unique"][bands.index("llm")])
            p_driven.append(result.partition["p_unique"][bands.index("word_rate")])
        p_null = np.concatenate(p_null)
        out[name] = {"fpr_05": float(np.mean(p_null < 0.05)), "fpr_01": float(np.mean(p_null < 0.01)),
                     "n_tests": int(p_null.size), "n_simulations": n_sims,
                     "power_word_rate_05": float(np.mean(np.concatenate(p_driven) < 0.05)),
                     "wall_s": round(time.perf_counter() - started, 1)}
        logging.getLogger(__name__).info("unique %s: %s", name, out[name])
    pooled = np.mean([part["fpr_05"] for part in out.values()])
    return {"unique_fpr": float(pooled), "unique_parts": out,
            "unique_setup": {"n_shifts": n_shifts, "n_targets_per_simulation": n_targets,
                             "noise": "AR(1) phi 0.6", "null_band": "16 AR(1) phi 0.9 features, "
                             "delays 1-4", "driver": "word rate (HRF-convolved, bundled story)",
                             "p_values": "GPD tail where < 10 shifts exceed (encoding.tail)"}}


def _read_part(path: Path) -> dict | None:
    """A part's result from its own script's JSON (None when it has not been run)."""
    if not path.exists():
        logging.getLogger(__name__).warning("%s not found: run its script first", path.name)
        return None
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="*", choices=PARTS, default=["encoding", "unique"],
                        help="parts to compute now; the others are read from their JSON")
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    parser.add_argument("--quick", action="store_true", help="small runs (a smoke test)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    document = json.loads(args.out.read_text()) if args.out.exists() else {"summary": {}, "parts": {}}
    started = time.perf_counter()
    if "encoding" in args.run:
        part = encoding_calibration(n_sims=2 if args.quick else 20,
                                    n_perm=200 if args.quick else 1000)
        document["parts"]["encoding"] = part
        document["summary"]["encoding_fpr"] = part["encoding_fpr"]
        document["summary"]["encoding_fpr_range"] = part["encoding_fpr_range"]
    if "unique" in args.run:
        part = unique_calibration(n_sims=2 if args.quick else 10,
                                  n_shifts=200 if args.quick else 1000)
        document["parts"]["unique"] = part
        document["summary"]["unique_fpr"] = part["unique_fpr"]
    if "mapping" in args.run:
        from calibration_mapping import mapping_calibration

        part = mapping_calibration(quick=args.quick)
    else:
        part = _read_part(RESULTS / "calibration_mapping.json")
    if part is not None:
        document["parts"]["mapping"] = part
        document["summary"]["mapping_fpr"] = part["mapping_fpr"]
    if "group" in args.run:
        from calibration_group import group_calibration

        part = group_calibration(scale=0.1 if args.quick else 1.0)
    else:
        part = _read_part(RESULTS / "calibration_group.json")
    if part is not None:
        document["parts"]["group"] = part
        document["summary"]["group_fwe"] = part["group_fwe"]
    document["summary"]["target"] = (f"false-positive rate at alpha .05 in [{TARGET[0]}, "
                                     f"{TARGET[1]}] over >= 500 tests or >= 200 group "
                                     "simulations")
    document["provenance"] = provenance_block(script="benchmarks/calibration.py",
                                              computed=args.run, quick=args.quick,
                                              seconds=round(time.perf_counter() - started, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, default=str))
    print(json.dumps(document["summary"], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
