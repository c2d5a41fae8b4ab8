"""Recovery benchmark: does the study get a planted pattern -> network map back?

Real neuron time courses (SmolLM2-135M reading the bundled story, FFN outputs of every
layer, Lanczos-resampled to the 2 s TR grid) are decomposed into 16 dictionary-learning
atoms (the study's pattern step). ``--plant atoms`` (default) plants 7 of these atoms,
chosen at random, into 6 of the 7 Yeo networks (one atom drives none, one network is
silent); ``--plant subgroups`` plants the mean time courses of neuron subgroups
(k-means clusters chosen by the simulator, independent of the study), which also tests
the pattern step. For a range of SNRs the script simulates several subjects on a coarse
fsaverage mesh (fsaverage4 by default: 5,124 vertices, the first vertices of
fsaverage5) with AR(1) background noise (``--noise rest`` uses brainspace's real resting
state), runs the study (ridge encoding per subject with FIR delays 1-4 TRs -> network
mapping: the subject-mean coefficient maps against those of circularly shifted atoms
(``--spatial-null spin`` for the spin test), and the temporal test of each
atom's unique held-out r on the network signals against circular shifts; ``--n-shifts 0``
leaves the spatial test alone) and scores it with
:func:`brainalign.simulate.recovery.score_recovery`. Null simulations (no planted signal)
give the false-positive share at alpha = .05; in planted simulations the share of the
atoms that drive nothing but are mapped anyway is reported too.

Few links: the same 16 atoms mapped onto Yeo-17 (16 x 17 = 272 pairs) when only
``--few-links`` (3) of them drive a network each, on several seeds (each plants a
different random choice of atoms into random networks), with the package's default
draws (1,000 spatial-null shifts, 1,000 temporal shifts): the share of planted links whose atom is assigned
its network (``few_links_accuracy``, target >= 0.9), and on null simulations of the same
16 atoms the share of patterns assigned a network (``few_links_null_fpr``, target
<= 0.06). Few significant pairs is where a correction over all pairs with permutation
p-values stopped at 1/(N+1) found nothing.

Writes ``benchmarks/results/recovery.json`` (summary: accuracy_at_r03, null_fpr,
few_links_accuracy, few_links_null_fpr, curve) and ``benchmarks/results/recovery.png``.
Chance accuracy (a random network of the atlas for each pattern) is the reference it is
compared with.

Run: ``python benchmarks/recovery.py`` (defaults sized for a 2-core CPU, about half an
hour once the recording is cached in ``--work-dir``); ``--quick`` is a smoke run of every
part (one SNR, one seed, 200 draws) written to ``--work-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from brainalign.provenance import provenance_block
from brainalign.timecourse import DEFAULT_DELAYS

RESULTS = Path(__file__).resolve().parent / "results"
logger = logging.getLogger("benchmarks.recovery")


def neuron_timecourses(model_name: str, work_dir: Path):
    """Record the model on the bundled story (cached in ``work_dir``) and move it to TRs."""
    from brainalign.models.registry import load_model
    from brainalign.record import Recording, record_story
    from brainalign.stimuli import bundled_story
    from brainalign.timecourse import recording_to_tr

    story = bundled_story()
    loaded = load_model(model_name)
    path = record_story(loaded, story, ["mlp.out"], work_dir / "recording", progress=False)
    return recording_to_tr(Recording.open(path))


def accuracy_at(best_r: np.ndarray, accuracy: np.ndarray, r_target: float) -> float:
    """Accuracy linearly interpolated at ``r_target`` along the curve sorted by best_r."""
    order = np.argsort(best_r)
    return float(np.interp(r_target, best_r[order], accuracy[order]))


def plot_curves(by_noise: dict, path: Path) -> Path:
    """Accuracy, AUC and spurious mappings against best r, one panel per noise kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(by_noise), figsize=(5.5 * len(by_noise), 4),
                                squeeze=False)
    for axis, (noise, result) in zip(axes[0], by_noise.items()):
        curve = result["curve"]
        best_r = [point["best_r"] for point in curve]
        axis.plot(best_r, [point["accuracy"] for point in curve], "o-",
                  label="assignment accuracy")
        axis.plot(best_r, [point["auc"] for point in curve], "s-", label="target ROC AUC")
        axis.plot(best_r, [point["false_positive_share"] for point in curve], "^-",
                  label="undriven patterns mapped")
        null = result["summary"]
        axis.axhline(null["null_fpr"], color="grey", linestyle=":",
                     label=f"null FPR = {null['null_fpr']:.3f}")
        axis.axvline(null["null_best_r"], color="grey", linestyle="--", linewidth=0.8,
                     label=f"null best r = {null['null_best_r']:.2f}")
        axis.axvline(0.3, color="k", linewidth=0.5)
        axis.axhline(0.9, color="k", linewidth=0.5)
        for point in curve:
            axis.annotate(f"snr {point['snr']:g}", (point["best_r"], point["accuracy"]),
                          fontsize=7, textcoords="offset points", xytext=(3, -10))
        axis.set_xlabel("best targets' held-out r (99th percentile)")
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(f"{noise} background")
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle("Recovery of planted pattern -> network maps")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def recovery_curve(args, space, source: dict, atoms: np.ndarray, noise: str, study: dict) -> dict:
    """Scores over the SNR grid and on null simulations, for one kind of background noise."""
    from brainalign.simulate import simulate_fmri
    from brainalign.simulate.recovery import score_recovery

    common = dict(n_silent_networks=args.n_silent_networks, noise=noise,
                  n_subjects=args.n_subjects)
    curve, subgroup = [], None
    for snr in [float(value) for value in args.snr.split(",")]:
        t0 = time.perf_counter()
        simulation = simulate_fmri(space=space, snr=snr, subgroup=subgroup,
                                   random_state=args.seed, **source, **common)
        subgroup = simulation.truth.subgroup
        scores = score_recovery(simulation, atoms, **study)
        curve.append(dict(snr=snr, best_r=scores.best_r, max_r=scores.max_r,
                          accuracy=scores.accuracy, auc=scores.auc,
                          false_positive_share=scores.false_positive_share,
                          atom_correlation=scores.atom_correlation,
                          planted_network=scores.planted_network,
                          assigned_network=scores.assigned_network,
                          seconds=time.perf_counter() - t0))
        logger.info("%s snr %g: best r %.3f, accuracy %.2f, AUC %.3f, spurious %.2f (%.0f s)",
                    noise, snr, scores.best_r, scores.accuracy, scores.auc,
                    scores.false_positive_share, curve[-1]["seconds"])
    nulls = []
    for index in range(args.n_null):
        simulation = simulate_fmri(space=space, snr=0.0, subgroup=subgroup,
                                   random_state=args.seed + 1000 + index, **source, **common)
        scores = score_recovery(simulation, atoms, **study)
        nulls.append(dict(seed=args.seed + 1000 + index, best_r=scores.best_r,
                          false_positive_share=scores.false_positive_share,
                          assigned=scores.estimated_assigned))
        logger.info("%s null %d: %d of %d patterns mapped, best r %.3f", noise, index,
                    sum(name != "none" for name in scores.estimated_assigned),
                    atoms.shape[1], scores.best_r)
    best_r = np.array([point["best_r"] for point in curve])
    accuracy = np.array([point["accuracy"] for point in curve])
    nearest = curve[int(np.argmin(np.abs(best_r - 0.3)))]
    null_best_r = float(np.mean([null["best_r"] for null in nulls]))
    within = bool(best_r.min() <= 0.3 <= best_r.max())
    summary = dict(
        # None when the curve never reaches r = 0.3 (e.g. a null r above it)
        accuracy_at_r03=accuracy_at(best_r, accuracy, 0.3) if within else None,
        r03_within_curve=within,
        accuracy_at_nearest_r03=nearest["accuracy"], nearest_r03_snr=nearest["snr"],
        nearest_r03_best_r=nearest["best_r"],
        null_fpr=float(np.mean([null["false_positive_share"] for null in nulls])),
        null_decisions=args.n_null * atoms.shape[1], null_best_r=null_best_r,
        undriven_mapped_at_nearest_r03=nearest["false_positive_share"],
        curve=[{key: point[key] for key in ("snr", "best_r", "accuracy", "auc",
                                            "false_positive_share")}
               for point in curve])
    return dict(summary=summary, curve=curve, nulls=nulls)


def few_links_run(args, space, atlas, atoms: np.ndarray, runs: np.ndarray, study: dict,
                  seed: int, n_links: int, snr: float) -> dict:
    """One simulation of the few-links scenario: ``n_links`` random atoms each drive one
    random network of ``atlas`` (``snr`` 0: a null simulation), mapped with all atoms."""
    from brainalign.simulate import simulate_fmri
    from brainalign.simulate.recovery import score_recovery

    started = time.perf_counter()
    chosen = np.random.default_rng(seed).choice(atoms.shape[1], n_links, replace=False)
    simulation = simulate_fmri(space=space, atoms=atoms[:, chosen], runs=runs, tr_s=2.0,
                               snr=snr, n_silent_networks=atlas.n_networks - n_links,
                               noise=args.noise.split(",")[0], n_subjects=args.n_subjects,
                               random_state=seed)
    scores = score_recovery(simulation, atoms, **dict(study, atlas=atlas))
    found = [assigned == planted for planted, assigned in
             zip(scores.planted_network, scores.assigned_network) if planted != "none"]
    logger.info("few links, seed %d, snr %g: %d of %d links found, %d of %d patterns mapped "
                "(%.0f s)", seed, snr, sum(found), len(found),
                sum(name != "none" for name in scores.estimated_assigned), atoms.shape[1],
                time.perf_counter() - started)
    return dict(seed=seed, snr=snr, planted_atoms=chosen.tolist(),
                planted_network=scores.planted_network, assigned_network=scores.assigned_network,
                links_found=found, estimated_assigned=scores.estimated_assigned,
                false_positive_share=scores.false_positive_share, best_r=scores.best_r,
                planted_links=scores.details["planted_links"],
                seconds=time.perf_counter() - started)


def few_links_summary(planted: list[dict], nulls: list[dict]) -> dict:
    """Link recall over seeds and the null false-positive rates of the few-links runs."""
    found = [hit for run in planted for hit in run["links_found"]]
    return dict(
        few_links_accuracy=float(np.mean(found)),
        few_links_all_found_share=float(np.mean([all(run["links_found"]) for run in planted])),
        few_links_null_fpr=float(np.mean([run["false_positive_share"] for run in nulls])),
        few_links_null_decisions=int(sum(len(run["estimated_assigned"]) for run in nulls)),
        few_links_undriven_mapped=float(np.mean([run["false_positive_share"]
                                                 for run in planted])),
        few_links_n_links=len(found), few_links_n_seeds=len(planted))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--mesh", default="fsaverage4", choices=["fsaverage5", "fsaverage4"])
    parser.add_argument("--noise", default="ar1,rest",
                        help="comma-separated noise kinds; the first gives the summary")
    parser.add_argument("--plant", default="atoms", choices=["atoms", "subgroups"])
    parser.add_argument("--snr", default="0.005,0.01,0.02,0.05,0.2",
                        help="comma-separated signal-to-noise variance ratios")
    parser.add_argument("--n-null", type=int, default=6, help="null simulations")
    parser.add_argument("--n-subjects", type=int, default=3)
    parser.add_argument("--n-patterns", type=int, default=7)
    parser.add_argument("--n-silent-networks", type=int, default=1)
    parser.add_argument("--n-atoms", type=int, default=16)
    parser.add_argument("--n-perm-mapping", type=int, default=1000)
    parser.add_argument("--n-perm-encoding", type=int, default=0)
    parser.add_argument("--spatial-null", default="shift",
                        help="the mapping's spatial null: shift (the study default), auto, spin")
    parser.add_argument("--n-shifts", type=int, default=1000,
                        help="circular shifts per atom of the temporal test (0: spatial only)")
    parser.add_argument("--few-links", type=int, default=3,
                        help="planted links of the few-links scenario (Yeo-17, 16 atoms)")
    parser.add_argument("--few-links-seeds", type=int, default=6)
    parser.add_argument("--few-links-nulls", type=int, default=4,
                        help="null simulations of the few-links scenario")
    parser.add_argument("--few-links-snr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/brainalign-recovery"))
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/recovery.json (--quick: in --work-dir)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: first noise, one SNR, one seed and null each, 200 draws")
    args = parser.parse_args(argv)
    if args.quick:
        args.noise, args.snr = args.noise.split(",")[0], "0.05"
        args.n_null = args.few_links_seeds = args.few_links_nulls = 1
        args.n_perm_mapping = args.n_shifts = 200
    if args.out is None:
        args.out = (args.work_dir / "recovery_quick.json" if args.quick
                    else RESULTS / "recovery.json")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from brainalign.networks import load_atlas
    from brainalign.patterns import fit_atoms
    from brainalign.simulate import space_from_atlas

    started = time.perf_counter()
    timecourses = neuron_timecourses(args.model, args.work_dir)
    recorded_s = time.perf_counter() - started
    logger.info("time courses %s in %.0f s", timecourses.data.shape, recorded_s)
    cached = args.work_dir / f"atoms_dictionary_k{args.n_atoms}_seed{args.seed}.npz"
    if cached.exists():
        with np.load(cached) as stored:
            atoms = stored["atoms"]
    else:
        atoms = fit_atoms(timecourses, n_atoms=args.n_atoms, train_runs="all",
                          random_state=args.seed).atoms
        np.savez(cached, atoms=atoms)
    logger.info("%d dictionary atoms (max |r| between atoms %.2f)", atoms.shape[1],
                np.max(np.abs(np.corrcoef(atoms.T) - np.eye(atoms.shape[1]))))
    atlas = load_atlas("yeo7", args.mesh)
    space = space_from_atlas(atlas)
    noises = args.noise.split(",")
    if args.plant == "atoms":
        chosen = np.random.default_rng(args.seed).choice(args.n_atoms, args.n_patterns,
                                                         replace=False)
        source = dict(atoms=atoms[:, chosen], runs=timecourses.runs, tr_s=2.0)
    else:
        chosen = None
        source = dict(timecourses=timecourses, n_patterns=args.n_patterns,
                      n_clusters=args.n_atoms)
    study = dict(atlas=atlas, n_perm_encoding=args.n_perm_encoding,
                 n_perm_mapping=args.n_perm_mapping, n_shifts=args.n_shifts,
                 spatial_null=args.spatial_null, alpha=0.05,
                 random_state=args.seed)
    atlas17 = load_atlas("yeo17", args.mesh)
    space17 = space_from_atlas(atlas17)
    few_seeds = [args.seed + 100 + k for k in range(args.few_links_seeds)]
    null_seeds = [args.seed + 200 + k for k in range(args.few_links_nulls)]
    # one process per noise kind and per few-links simulation: all independent
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {noise: pool.submit(recovery_curve, args, space, source, atoms, noise, study)
                   for noise in noises}
        few_futures = [pool.submit(few_links_run, args, space17, atlas17, atoms,
                                   timecourses.runs, study, seed, args.few_links, snr)
                       for seeds, snr in ((few_seeds, args.few_links_snr), (null_seeds, 0.0))
                       for seed in seeds]
        by_noise = {noise: future.result() for noise, future in futures.items()}
        few_runs = [future.result() for future in few_futures]
    few_planted, few_nulls = few_runs[:len(few_seeds)], few_runs[len(few_seeds):]
    primary = by_noise[noises[0]]
    summary = dict(primary["summary"], noise=noises[0],
                   chance_accuracy=1.0 / atlas.n_networks,
                   **few_links_summary(few_planted, few_nulls),
                   targets=dict(accuracy_at_r03=">= 0.9", null_fpr="<= 0.06 at alpha .05",
                                few_links_accuracy=">= 0.9",
                                few_links_null_fpr="<= 0.06 at alpha .05"))
    result = dict(
        summary=summary, curve=primary["curve"], nulls=primary["nulls"],
        by_noise={noise: dict(summary=value["summary"], curve=value["curve"],
                              nulls=value["nulls"]) for noise, value in by_noise.items()},
        few_links=dict(planted=few_planted, nulls=few_nulls, atlas="yeo17",
                       n_links=args.few_links, snr=args.few_links_snr,
                       noise=noises[0], n_perm_mapping=args.n_perm_mapping,
                       n_shifts=args.n_shifts),
        config=dict(vars(args), work_dir=str(args.work_dir), out=str(args.out),
                    space=space.name, n_targets=space.n_targets, atlas="yeo7",
                    n_tr=int(timecourses.n_tr), n_neurons=int(timecourses.n_neurons),
                    encoding_delays_tr=list(DEFAULT_DELAYS), pattern_method="dictionary",
                    planted_atoms=None if chosen is None else chosen.tolist(),
                    best_r_definition="median over subjects of the 99th percentile of "
                                      "held-out r across targets",
                    auc_definition="targets ranked by held-out r (n_perm_encoding=0) or "
                                   "encoding p-value, vs planted responsive targets"),
        seconds=dict(recording_and_tr=recorded_s, total=time.perf_counter() - started),
        machine="2-core CPU dev machine (shared)",
        provenance=provenance_block(stage="benchmark.recovery",
                                    timecourses=timecourses.provenance),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    plot_curves(by_noise, args.out.with_suffix(".png"))
    logger.info("wrote %s (accuracy at r~0.3: %s, null FPR %.3f; few links: accuracy %.2f, "
                "null FPR %.3f)", args.out, summary["accuracy_at_r03"], summary["null_fpr"],
                summary["few_links_accuracy"], summary["few_links_null_fpr"])
    return result


if __name__ == "__main__":
    main()
