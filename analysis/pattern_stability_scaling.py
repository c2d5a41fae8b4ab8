"""How does the reproducibility of corpus atoms grow with the length of the corpus?

Usage::

    python analysis/pattern_stability_scaling.py [--words N] [--fractions 0.125,0.25,0.5,1]
        [--iteration-check-fraction 0.5] [--iteration-check-max-iter 100] [--cache DIR]
        [--out PATH] [--quick]

``analysis/pattern_stability.py`` measures the split-half stability of 64 dictionary atoms
of SmolLM2 ``mlp.out`` (17,280 neurons) on the first 100,000 words of Moby-Dick. This
script asks what more text would buy. It records the corpus once (all of Moby-Dick,
208,405 words, by default; the speech-rate model's timing, 2 s TRs, runs of about ten
minutes; cleaned run by run as a study cleans its stories) and repeats the same
split-half comparison (:func:`brainalign.patterns.stability.split_half_stability`:
alternate runs, Hungarian-matched loadings; atom time courses through each half's
``Patterns.transform`` on the TRs of both halves) on the first runs holding each
``--fractions`` share of the words, with the settings of ``pattern_stability.py`` (K = 64,
alpha 0.1, 30 full-batch iterations, seed 0).

A convergence check refits the halves at one length with more iterations
(``--iteration-check-max-iter``): if the 30-iteration fits were far from converged, their
stability would say little about the method.

The trend (matched loading r and atom r against log10 of the words) is fitted by least
squares and the number of words at which it would reach the issue's targets (0.8 and 0.9)
is reported as an extrapolation, labelled as such, not as a measurement.

Writes ``analysis/results/pattern_stability_scaling.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pattern_stability import MODEL, SETTINGS, write_document  # noqa: E402

from brainalign.patterns.stability import split_half_stability  # noqa: E402
from brainalign.pipeline.bands import cleaned_runs_on_disk  # noqa: E402
from brainalign.pipeline.config import validate  # noqa: E402
from brainalign.provenance import provenance_block  # noqa: E402

logger = logging.getLogger("pattern_stability_scaling")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "analysis" / "results" / "pattern_stability_scaling.json"
TARGETS = {"loading_r": 0.8, "atom_r": 0.9}


def recorded_corpus(n_words: int | None, cache: Path):
    """The Moby-Dick recording (made once into ``cache``, again when its settings or the
    resampling kernels changed) and its cleaned copy on disk."""
    from brainalign.record import record_corpus

    name = "moby-dick" if n_words is None else f"moby-dick-{n_words}w"
    recording = record_corpus(MODEL, "moby-dick", n_words, cache / "corpus", device="cpu",
                              overwrite=True)
    cleaned = cleaned_runs_on_disk(recording, validate({}), cache / f"{name}-cleaned.npy")
    return recording, cleaned


def words_per_run(n_words: int | None) -> np.ndarray:
    """Words in each run of the corpus story, in run order."""
    from brainalign.stimuli.corpus import corpus_story

    story = corpus_story("moby-dick", n_words)
    return np.bincount([word.run for word in story.words])


def first_runs(counts: np.ndarray, fraction: float) -> int:
    """The smallest even number of runs (at least 2) holding ``fraction`` of the words."""
    needed = fraction * counts.sum()
    n_runs = int(np.searchsorted(np.cumsum(counts), needed - 0.5) + 1)
    n_runs += n_runs % 2
    return int(min(max(n_runs, 2), len(counts) - len(counts) % 2))


def trend(words: list[int], values: list[float], target: float) -> dict:
    """Least-squares line of ``values`` on log10(words) and where it would cross ``target``."""
    slope, intercept = np.polyfit(np.log10(words), values, 1)
    crossing = 10 ** ((target - intercept) / slope) if slope > 0 else None
    return {"slope_per_tenfold_words": float(slope), "intercept": float(intercept),
            "target": target,
            "words_at_target_extrapolated": None if crossing is None else float(crossing),
            "note": "a straight-line extrapolation in log10(words) beyond the measured "
                    "range, not a measurement"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=None,
                        help="words from the start of Moby-Dick (default: all of it)")
    parser.add_argument("--fractions", default="0.125,0.25,0.5,1")
    parser.add_argument("--iteration-check-fraction", type=float, default=0.5)
    parser.add_argument("--iteration-check-max-iter", type=int, default=100)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "brainalign" /
                                               "pattern_stability"))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 6,000 words, K = 8, 10-iteration check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    n_atoms = 8 if args.quick else 64
    if args.quick:
        args.words, args.iteration_check_max_iter = 6000, 10
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    recording, corpus = recorded_corpus(args.words, cache)
    record_s = time.perf_counter() - started
    counts = words_per_run(args.words)
    logger.info("corpus: %d words, %d runs, %d TRs x %d neurons", counts.sum(), len(counts),
                corpus.n_tr, corpus.n_neurons)

    def halves(fraction: float, **settings) -> dict:
        n_runs = first_runs(counts, fraction)
        fit_started = time.perf_counter()
        result = split_half_stability(corpus, n_atoms, train_runs=list(range(n_runs)),
                                      in_memory=True, **{**SETTINGS, **settings})
        logger.info("%d runs: loading r %.3f, atom r %.3f", n_runs, result["loading_r_mean"],
                    result["atom_r_mean"])
        keep = ("loading_r_mean", "loading_r_min", "atom_r_mean", "atom_r_min",
                "subgroup_ari", "subgroup_iou_mean", "n_tr", "scheme")
        return {"n_runs": n_runs, "words": int(counts[:n_runs].sum()),
                **{key: result[key] for key in keep},
                "seconds": round(time.perf_counter() - fit_started, 1)}

    points = [halves(float(f)) for f in args.fractions.split(",")]
    check_at = halves(args.iteration_check_fraction,
                      max_iter=args.iteration_check_max_iter)
    baseline = next((p for p in points if p["n_runs"] == check_at["n_runs"]), None)
    words = [p["words"] for p in points]
    summary = {
        "n_atoms": n_atoms, "corpus_words": int(counts.sum()),
        "points": [{key: p[key] for key in ("words", "n_runs", "loading_r_mean",
                                             "atom_r_mean", "subgroup_ari")} for p in points],
        "loading_r_trend": trend(words, [p["loading_r_mean"] for p in points],
                                 TARGETS["loading_r"]),
        "atom_r_trend": trend(words, [p["atom_r_mean"] for p in points], TARGETS["atom_r"]),
        "iteration_check": {
            "words": check_at["words"], "max_iter": args.iteration_check_max_iter,
            "loading_r_mean": check_at["loading_r_mean"],
            "atom_r_mean": check_at["atom_r_mean"],
            "at_30_iterations": None if baseline is None else {
                "loading_r_mean": baseline["loading_r_mean"],
                "atom_r_mean": baseline["atom_r_mean"]}},
        "targets": TARGETS,
        "machine": f"{os.cpu_count()}-core CPU",
    }
    document = {"summary": summary, "points": points, "iteration_check": check_at,
                "provenance": provenance_block(
                    script="analysis/pattern_stability_scaling.py", model=MODEL,
                    site="mlp.out", settings=SETTINGS, corpus=recording.provenance["corpus"],
                    quick=bool(args.quick), record_s=round(record_s, 1),
                    seconds=round(time.perf_counter() - started, 1))}
    write_document(document, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
