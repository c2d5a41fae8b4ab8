"""Do study A's atoms reproduce? Corpus atoms against story atoms, and on the Alice ROIs.

Usage::

    python analysis/pattern_stability.py [--corpus-recording DIR] [--words 100000]
        [--data PATH] [--out PATH] [--cache DIR] [--quick]

What is compared (SmolLM2-135M-Instruct, ``mlp.out`` of all 30 layers, 17,280 neurons,
K = 64 dictionary atoms, alpha 0.1, full batch with ``max_iter`` 30 for every corpus and
story stability fit; the per-fold Alice atoms keep the pre-registered protocol's
:class:`~brainalign.patterns.AtomTransformer`, whose dictionary learning runs up to its
default 100 iterations):

1. **Corpus atoms.** The first ``--words`` words of Moby-Dick (``make corpora``), timed by
   the speech-rate model in runs of about ten minutes on a 2 s grid, recorded straight to
   TR time courses (:func:`brainalign.record.record_corpus`, or an existing recording
   given with ``--corpus-recording``), cleaned run by run as a study cleans its stories
   (run mean, linear trend, cosine drifts below 1/128 Hz, z-scoring; kept on disk), fitted
   with the standardised TRs in memory (1.5 GB here; ``fit_atoms(in_memory=False)`` gives
   the same atoms out of core, ``benchmarks/corpus_patterns.py`` measures it).
2. **Story atoms, the baseline.** The bundled story (two runs), recorded, resampled to
   its TRs (Lanczos), z-scored per run and cleaned the same way, fitted in memory.

For each: ``seed_atom_r`` (a second seed; Hungarian-matched |r| of atom time courses on
the fitting TRs), split halves (corpus: alternate runs, about half the words each;
story: its two runs): ``split_half_loading_r`` (matched |r| of the 17,280 neuron loadings),
``split_half_atom_r`` (matched atoms' time courses computed by each half's
``Patterns.transform`` on the union of both halves' TRs) and ``subgroup_ari`` (adjusted
Rand index of the neurons' subgroups between halves). Targets (issue 16): corpus
split-half loading r >= 0.8 and atom r >= 0.9.

Three further measurements on the corpus say where the instability comes from:

- **Consensus atoms** (``--consensus-fits``, default 6): each half fitted with that many
  seeds and the fits averaged (:mod:`brainalign.patterns.consensus`), then compared as
  above. (The story's halves, 132 and 147 TRs, start from the exact SVD, which does not
  depend on the seed, so a consensus there is the single fit.)
- **Principal subspaces**: the canonical correlations of the two halves' leading
  64-dimensional principal subspaces over neurons
  (:func:`brainalign.patterns.stability.subspace_agreement`). Their mean bounds the matched
  loading r of any orthonormal loadings in those subspaces; it is how much of the
  64-dimensional structure itself comes back in the other half.
- **Stability against K** (``--k-curve``, default 4, 8, 16, 32): split halves of single
  fits at smaller K, same settings.

3. **Alice ROIs** (Brennan et al. 2016, the pre-registered protocol of
   ``analysis/alice_encoding.py``: SmolLM2 ``mlp.out`` word values convolved with the HRF,
   one run, 5 contiguous outer blocks, cleaning inside the folds): held-out group r per ROI
   and per-subject FDR-significant counts (1,000 block permutations) of the 64 atoms fitted
   on each fold's training rows against the 64 corpus atoms, single fit and consensus,
   applied with :class:`~brainalign.patterns.ProjectedAtoms` (each neuron standardised on
   the fold's training rows, loadings fixed). Target: corpus atoms reach at least the
   per-fold story atoms' group r in >= 4 of 6 ROIs.

Writes ``analysis/results/pattern_stability.json`` with a ``summary`` (the four keys, each
``{"corpus": ..., "story": ..., "target": ...}``, and the Alice comparison) and details.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alice_encoding import AliceConfig, _sig_counts, fit, llm_words, rounded  # noqa: E402

from brainalign.brain.alice import load_alice  # noqa: E402
from brainalign.encoding import Band, fold_features  # noqa: E402
from brainalign.patterns import AtomTransformer, ProjectedAtoms, fit_atoms  # noqa: E402
from brainalign.patterns.stability import seed_stability, split_half_stability  # noqa: E402
from brainalign.pipeline.bands import cleaned_runs_on_disk, cleaned_timecourses  # noqa: E402
from brainalign.pipeline.config import validate  # noqa: E402
from brainalign.provenance import provenance_block  # noqa: E402
from brainalign.timecourse import words_to_tr  # noqa: E402

logger = logging.getLogger("pattern_stability")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "analysis" / "results" / "pattern_stability.json"
MODEL = "smollm2-135m-instruct-q4"
SETTINGS = dict(alpha=0.1, max_iter=30, random_state=0, device="cpu")


def write_document(document: dict, out: Path) -> None:
    """Write the result JSON (creating its folder) and print its summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str))
    print(json.dumps(document["summary"], indent=1))


def stability(timecourses, n_atoms: int) -> dict:
    """Seed and split-half stability of K atoms fitted on every TR of ``timecourses``."""
    started = time.perf_counter()
    seed = seed_stability(timecourses, n_atoms, seeds=(1,), train_runs="all", **SETTINGS)
    halves = split_half_stability(timecourses, n_atoms, train_runs="all", **SETTINGS)
    return {"n_tr": int(timecourses.n_tr), "n_runs": int(len(np.unique(timecourses.runs))),
            "seed": seed, "split_half": halves, "seconds": round(time.perf_counter() - started, 1)}


def consensus_split_half(timecourses, n_atoms: int, consensus_fits: int) -> dict:
    """Split halves of consensus atoms (``consensus_fits`` seeds per half, averaged)."""
    started = time.perf_counter()
    halves = split_half_stability(timecourses, n_atoms, train_runs="all", subspace=False,
                                  consensus_fits=consensus_fits, **SETTINGS)
    return {"consensus_fits": consensus_fits, "split_half": halves,
            "seconds": round(time.perf_counter() - started, 1)}


def k_curve(timecourses, candidates: list[int]) -> dict:
    """Split-half stability of single fits at each K of ``candidates`` (summary numbers)."""
    out = {}
    for k in candidates:
        started = time.perf_counter()
        half = split_half_stability(timecourses, k, train_runs="all", **SETTINGS)
        out[str(k)] = {key: half[key] for key in ("loading_r_mean", "atom_r_mean",
                                                  "subgroup_ari", "subgroup_iou_mean")}
        out[str(k)]["subspace_canonical_r_mean"] = half["subspace"]["canonical_r_mean"]
        out[str(k)]["seconds"] = round(time.perf_counter() - started, 1)
        logger.info("K=%d: %s", k, out[str(k)])
    return out


def corpus_timecourses(args, config: dict):
    """The corpus recording (made when absent) and its cleaned copy on disk."""
    from brainalign.record import load_corpus_timecourses, record_corpus

    if args.corpus_recording:
        recording = load_corpus_timecourses(args.corpus_recording)
    else:  # recorded once; again when the settings or the resampling kernels changed
        recording = record_corpus(MODEL, "moby-dick", args.words, Path(args.cache) / "corpus",
                                  device="cpu", overwrite=True)
    clean = Path(args.cache) / "corpus-cleaned.npy"
    return recording, cleaned_runs_on_disk(recording, config, clean)


def story_timecourses(args, config: dict):
    """The bundled story's mlp.out time courses, z-scored per run and cleaned."""
    from brainalign.models.registry import load_model
    from brainalign.record import Recording, record_story
    from brainalign.stimuli import bundled_story
    from brainalign.timecourse import recording_to_tr

    story = bundled_story()
    # reused only when its settings match and its checksums verify (else recorded again)
    path = record_story(load_model(MODEL, device="cpu"), story, ["mlp.out"],
                        Path(args.cache) / "story", progress=False, overwrite=True)
    return cleaned_timecourses(recording_to_tr(Recording.open(path), story=story), config)


def alice(args, corpus_patterns, consensus_patterns, n_atoms: int) -> dict:
    """Group r and per-subject significance counts: per-fold story atoms vs corpus atoms."""
    config = AliceConfig(n_atoms=n_atoms)
    if args.quick:
        config = AliceConfig(spheres_mm=(6,), n_perm=50, n_atoms=n_atoms, n_subjects=4)
    data = load_alice(args.data, sphere_mm=config.spheres_mm[0])
    words, info = llm_words(data, config.site, None, config, Path(args.cache) / "alice")
    llm = words_to_tr(words, data.story, method="hrf")
    per_fold = fold_features(llm, None, AtomTransformer(n_atoms, alpha=config.atom_alpha,
                                                        random_state=config.random_state),
                             n_blocks=config.n_outer_blocks, tr_s=config.tr_s)
    bands = {"story_atoms_per_fold": Band(per_fold, hrf_convolved=True),
             "corpus_atoms": Band(llm, hrf_convolved=True,
                                  preprocessing=ProjectedAtoms(corpus_patterns)),
             "corpus_consensus_atoms": Band(llm, hrf_convolved=True,
                                            preprocessing=ProjectedAtoms(consensus_patterns))}
    out = {"llm_band": {k: v for k, v in info.items() if k != "recording_provenance"}}
    for mm in config.spheres_mm:
        sphere = load_alice(args.data, sphere_mm=mm)
        n_subjects = min(config.n_subjects or sphere.n_subjects, sphere.n_subjects)
        rois = list(sphere.roi_names)
        raw = sphere.timecourses[:n_subjects]
        group = raw.mean(0)
        stacked = raw.transpose(1, 0, 2).reshape(raw.shape[1], -1)
        result = {"n_subjects": n_subjects, "r_group": {}, "n_sig_subjects": {}}
        for name, band in bands.items():
            logger.info("Alice %d mm: %s", mm, name)
            result["r_group"][name] = rounded(fit({name: band}, group, config, n_perm=0).r, rois)
            subjects = fit({name: band}, stacked, config)
            result["n_sig_subjects"][name] = _sig_counts(subjects.p_values, n_subjects, rois,
                                                         config.fdr_q)
        r = result["r_group"]
        for name in ("corpus_atoms", "corpus_consensus_atoms"):
            result[f"{name.removesuffix('_atoms')}_at_least_story"] = int(sum(
                r[name][roi] >= r["story_atoms_per_fold"][roi] for roi in rois))
        out[f"{mm}mm"] = result
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus-recording", default=None,
                        help="a record_corpus output folder (default: record into --cache)")
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--data", default=None, help="alice_brennan2016 folder")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "brainalign" /
                                               "pattern_stability"))
    parser.add_argument("--consensus-fits", type=int, default=6,
                        help="seeds averaged into each half's consensus atoms")
    parser.add_argument("--k-curve", default="4,8,16,32",
                        help="K values (comma-separated) of the corpus stability curve")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: K = 8, 4 Alice subjects, 50 permutations (not the "
                             "analysis; for checking the script)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    n_atoms = 8 if args.quick else 64
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    config = validate({})  # the study defaults: cleaning as the pipeline cleans
    recording, corpus = corpus_timecourses(args, config)
    logger.info("corpus: %d TRs x %d neurons", corpus.n_tr, corpus.n_neurons)
    corpus_result = stability(corpus, n_atoms)
    consensus_result = consensus_split_half(corpus, n_atoms, args.consensus_fits)
    candidates = [int(k) for k in args.k_curve.split(",") if k] if not args.quick else [4]
    curve = k_curve(corpus, candidates)
    story = story_timecourses(args, config)
    story_result = stability(story, n_atoms)
    corpus_patterns = fit_atoms(corpus, n_atoms, train_runs="all", **SETTINGS)
    consensus_patterns = fit_atoms(corpus, n_atoms, train_runs="all",
                                   consensus_fits=args.consensus_fits, **SETTINGS)
    alice_result = alice(args, corpus_patterns, consensus_patterns, n_atoms)

    def pair(get, target=None, consensus=False):
        out = {"corpus": get(corpus_result), "story": get(story_result), "target": target}
        if consensus:
            out["corpus_consensus"] = get(consensus_result)
        return out

    summary = {
        "split_half_loading_r": pair(lambda r: r["split_half"]["loading_r_mean"], 0.8, True),
        "split_half_atom_r": pair(lambda r: r["split_half"]["atom_r_mean"], 0.9, True),
        "seed_atom_r": pair(lambda r: r["seed"]["atom_r_mean"]),
        "subgroup_ari": pair(lambda r: r["split_half"]["subgroup_ari"], consensus=True),
        "seed_subgroup_ari": pair(lambda r: r["seed"]["subgroup_ari_mean"]),
        "split_half_subspace_canonical_r": pair(
            lambda r: r["split_half"]["subspace"]["canonical_r_mean"]),
        "consensus_fits": args.consensus_fits,
        "corpus_stability_vs_k": {k: {key: v[key] for key in ("loading_r_mean", "atom_r_mean",
                                                              "subspace_canonical_r_mean")}
                                  for k, v in curve.items()},
        "alice_rois_corpus_at_least_story": {
            sphere: result["corpus_at_least_story"] for sphere, result in alice_result.items()
            if sphere.endswith("mm")},
        "alice_rois_corpus_consensus_at_least_story": {
            sphere: result["corpus_consensus_at_least_story"]
            for sphere, result in alice_result.items() if sphere.endswith("mm")},
        "alice_target": "corpus atoms >= per-fold story atoms in >= 4 of 6 ROIs",
        "n_atoms": n_atoms, "corpus_words": int(recording.provenance["corpus"]["n_words"]),
        "machine": f"{os.cpu_count()}-core CPU",
    }
    document = {"summary": summary, "corpus": corpus_result,
                "corpus_consensus": consensus_result, "corpus_stability_vs_k": curve,
                "story": story_result, "alice": alice_result,
                "provenance": provenance_block(
                    script="analysis/pattern_stability.py", model=MODEL, site="mlp.out",
                    settings=SETTINGS, corpus=recording.provenance["corpus"],
                    quick=bool(args.quick), seconds=round(time.perf_counter() - started, 1))}
    write_document(document, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
