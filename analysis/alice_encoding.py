"""Pre-registered encoding analysis of the Brennan 2016 Alice ROI data: what SmolLM2 adds
beyond word rate and beyond the study's own predictors.

Usage::

    python analysis/alice_encoding.py [--data PATH] [--out PATH] [--cache DIR] [--quick]

PROTOCOL (written down before the analysis was run; stored verbatim in the JSON)
-------------------------------------------------------------------------------
Data. Brennan et al. (2016) Alice ROI release: 6 mm and 10 mm spheres (LATL RATL LPTL LIPL
LPreM LIFG), every usable subject (a subject with a constant ROI is excluded by the
loader). The scan's timing comes from the data: TR 2 s, 362 volumes, the first kept volume
at stimulus time 20 s (10 discarded volumes); no offset is searched.

Targets. Each subject's raw ROI time courses, and their mean over subjects (the group
time course). Nothing is cleaned beforehand.

Cleaning, the same for targets and every feature, fitted inside each outer fold on its
training rows (brainalign.encoding.fit_encoding defaults): the run mean, a linear trend,
cosine drifts below 1/128 Hz, z-scoring.

Feature bands (all on the scan grid, all already HRF-convolved, so none gets FIR delays):
  word_rate   the study's own word-rate regressor (rate_conv);
  published   the study's 12 published HRF-convolved predictors;
  llm         SmolLM2-135M (registry name smollm2-135m), mlp.out of all 30 layers
              (17,280 neurons, study A's neurons), each word the mean of its tokens read
              with 256 tokens of context, word values convolved with the SPM HRF at the
              word onsets;
  atoms       64 dictionary-learning atoms (alpha 0.1, seed 0) of the llm band, fitted on
              the training rows of each outer fold only (and on all rows for the final fit).
Nothing else is selected: layers, site and dimensions are fixed above; ridge penalties and
band weights are chosen by inner cross-validation inside each training fold.

Cross-validation. One run: 5 contiguous outer blocks, 5 contiguous inner folds, one alpha
(and for banded ridge one set of band weights, 32 random-search candidates) per target,
brainalign's default alpha grid, extended automatically when an edge is crowded.

Models and statistics, per ROI:
  * group r (held-out r on the group time course, mean over outer folds) of each band
    alone (plain ridge) and of the full model (word_rate + published + llm, banded ridge);
  * the unique r of the llm band beyond word rate (model word_rate + llm minus word_rate
    alone) and beyond the published predictors (published + llm minus published alone),
    on the group time course, each tested against 1,000 circular shifts of the llm band
    (at least 10 TRs from either end, other band and hyperparameters fixed), p-values with
    a generalised Pareto tail (Knijnenburg et al. 2009);
  * per-subject significance counts: the held-out r of each band alone and of the full
    model against 1,000 block permutations of the data (10-TR blocks) with every fold's
    ridge map re-applied, and the two unique r's of the llm band against 1,000 shifts;
    Benjamini-Hochberg FDR over subjects x ROIs at q = .05, per statistic;
  * noise ceilings: the leave-one-subject-out inter-subject correlation (mean over
    subjects; the ceiling of a single subject's r) and the split-half reliability of the
    group time course (200 random halves of the subjects, Spearman-Brown corrected to the
    full group; the ceiling of the group r), both on time courses cleaned as above (over
    the whole run);
  * the ratio of the group r of the 64 per-fold atoms to that of the full llm band.
There is no target for the science: the JSON reports what comes out.

An exploratory row keeps the configuration an earlier session chose on these same data
(SmolLM2 resid of layers 9, 12, 15, 18, 21, PCA 20 inside folds), now run with the same
cleaning and CV; it is labelled exploratory and is not part of the protocol.

Disclosure. While writing the package's cleaning, one choice was made after looking at
these data: a held-out block is cleaned on its own rows, because extrapolating the
training rows' drift fit into it gave erratic group r for word rate alone (0.04-0.58
across ROIs). Apart from the earlier session's results for the exploratory configuration,
no language-model result on these data was seen before this protocol was fixed.

Writes JSON with a "summary" (protocol, r_group, unique_r_llm_beyond_word_rate,
unique_r_llm_beyond_published, n_sig_subjects, atoms_per_fold_over_full, noise ceilings,
exploratory) and the details.

Deviation (2026-11-28, after the run; the protocol above is kept as written): the
protocol's block permutations (10-TR blocks) turned out anti-conservative when calibrated
on null data (benchmarks/calibration.py, part encoding: 6-12 % of p < .05 on pure noise
in two runs, 11 % on real resting-state BOLD), and brainalign's default became the
mirrored shift (data reversed in time and circularly shifted: 4.5-5.9 %). ``--null mirror``
reruns the analysis with it; only the per-subject significance counts of r can change.
The protocol run keeps ``null = "block"``.

Erratum (2026-11-27, after the run; the protocol above is kept as written): "SmolLM2-135M
(registry name smollm2-135m)" is that registry name's checkpoint, SmolLM2-135M-Instruct
as a GGUF Q4_1 file dequantised to float32 (``smollm2-135m-instruct-q4``), which is what
the recording's provenance names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from brainalign.brain.alice import AliceData, load_alice
from brainalign.encoding import Band, fdr, fit_encoding, fold_features, intersubject_ceiling
from brainalign.encoding.cleaning import Cleaning, FoldCleaner
from brainalign.provenance import config_hash, provenance_block
from brainalign.timecourse import words_to_tr

logger = logging.getLogger("alice_encoding")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "analysis" / "results" / "alice_encoding.json"
#: The protocol as written in this docstring before the analysis was run (the section
#: under the dashed line, up to "Writes JSON").
PROTOCOL = __doc__.split("-" * 79)[1].split("Writes JSON")[0].strip()


@dataclass
class AliceConfig:
    """Settings of one run (the protocol's numbers; stored in the output's provenance)."""

    spheres_mm: tuple = (6, 10)
    tr_s: float = 2.0
    n_outer_blocks: int = 5
    n_perm: int = 1000
    n_band_shifts: int = 1000
    block_tr: int = 10
    null: str = "block"
    fdr_q: float = 0.05
    model_name: str = "smollm2-135m"
    site: str = "mlp.out"
    context_tokens: int = 256
    n_atoms: int = 64
    atom_alpha: float = 0.1
    n_split_halves: int = 200
    n_subjects: int | None = None
    exploratory_site: str = "resid"
    exploratory_layers: tuple = (9, 12, 15, 18, 21)
    exploratory_components: int = 20
    random_state: int = 0


def llm_words(data: AliceData, site: str, layers, config: AliceConfig, cache_dir: Path):
    """SmolLM2 values per word, shape (n_words, n_neurons), and their provenance."""
    from brainalign.models.registry import load_model
    from brainalign.record import Recording, record_story

    loaded = load_model(config.model_name)
    started = time.perf_counter()
    # one folder per site and layer set: a recording folder holds one set of settings
    layer_label = "all" if layers is None else "-".join(str(i) for i in layers)
    path = record_story(loaded, data.story, [site], cache_dir / config.model_name / f"{site}_{layer_label}",
                        layers=None if layers is None else list(layers),
                        context_tokens=config.context_tokens, progress=False)
    recording = Recording.open(path)
    words = recording.matrix(sites=[site], layers=None if layers is None else list(layers))
    return np.asarray(words, dtype=np.float32), {
        "model": config.model_name, "site": site, "layers": "all" if layers is None else list(layers),
        "n_neurons": int(words.shape[1]), "record_s": round(time.perf_counter() - started, 1),
        "recording_provenance": recording.provenance}


def fit(X, targets, config: AliceConfig, **options):
    """fit_encoding with the protocol's shared settings (one run, 5 outer blocks)."""
    settings = dict(runs=None, n_blocks=config.n_outer_blocks, tr_s=config.tr_s,
                    n_perm=config.n_perm, n_band_shifts=config.n_band_shifts,
                    null=config.null, block_tr=config.block_tr, fdr_alpha=config.fdr_q,
                    random_state=config.random_state)
    settings.update(options)
    runs = settings.pop("runs")
    return fit_encoding(X, targets, runs, **settings)


def rounded(values, rois) -> dict:
    return {roi: round(float(v), 4) for roi, v in zip(rois, values)}


def noise_ceilings(timecourses: np.ndarray, config: AliceConfig) -> dict:
    """Leave-one-subject-out ISC and split-half (Spearman-Brown) reliability of the group mean.

    Parameters
    ----------
    timecourses : ndarray, shape (n_subjects, n_tr, n_rois)
        Raw ROI time courses (cleaned here over the whole run, as the protocol says).
    """
    cleaner = FoldCleaner(Cleaning(), np.zeros(timecourses.shape[1], dtype=int),
                          np.arange(timecourses.shape[1]), config.tr_s)
    cleaned = np.stack([cleaner.apply(subject) for subject in timecourses])
    isc = intersubject_ceiling(cleaned).mean(0)
    rng = np.random.default_rng(config.random_state)
    n_subjects = len(cleaned)
    reliability = []
    for _ in range(config.n_split_halves):
        order = rng.permutation(n_subjects)
        half_a = cleaned[order[: n_subjects // 2]].mean(0)
        half_b = cleaned[order[n_subjects // 2:]].mean(0)
        a, b = half_a - half_a.mean(0), half_b - half_b.mean(0)
        reliability.append((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0)))
    half_r = np.mean(reliability, axis=0)
    return {"isc_loso": isc, "split_half_r": half_r, "split_half_sb": 2 * half_r / (1 + half_r)}


def analyse_sphere(sphere_mm: int, data_path, llm_values: np.ndarray, atoms, config: AliceConfig,
                   exploratory_values: np.ndarray | None) -> dict:
    """Every statistic of the protocol for one sphere size.

    Parameters
    ----------
    sphere_mm : {6, 10}
    data_path : path of the alice_brennan2016 folder (None: the default location)
    llm_values : ndarray, shape (n_tr, n_features)
        The llm band on the scan grid.
    atoms : FoldFeatures
        The atoms band, fitted per outer fold (:func:`brainalign.encoding.fold_features`).
    config : AliceConfig
    exploratory_values : ndarray (n_tr, n_features) or None
        The exploratory row's features (None: no exploratory row).
    """
    data = load_alice(data_path, sphere_mm=sphere_mm)
    n_subjects = min(config.n_subjects or data.n_subjects, data.n_subjects)
    rois = list(data.roi_names)
    raw = data.timecourses[:n_subjects]                                 # (S, T, 6)
    group = raw.mean(0)
    stacked = raw.transpose(1, 0, 2).reshape(raw.shape[1], -1)          # subject-major columns
    predictors = data.predictors_on_scan()
    rate = predictors[:, [data.predictor_names.index("rate_conv")]]
    bands = {"word_rate": Band(rate, hrf_convolved=True),
             "published": Band(predictors, hrf_convolved=True),
             "llm": Band(llm_values, hrf_convolved=True)}
    atom_band = {"atoms": Band(atoms, hrf_convolved=True)}
    out = {"n_subjects": n_subjects, "rois": rois, "excluded_subjects": data.excluded}

    logger.info("%d mm: group time course", sphere_mm)
    full = fit(bands, group, config, partition=False)
    alone = {name: fit({name: band}, group, config, n_perm=0) for name, band in bands.items()}
    beyond_rate = fit({k: bands[k] for k in ("word_rate", "llm")}, group, config)
    beyond_published = fit({k: bands[k] for k in ("published", "llm")}, group, config)
    atoms_fit = fit(atom_band, group, config, n_perm=0)
    out["r_group"] = {**{name: rounded(result.r, rois) for name, result in alone.items()},
                      "atoms_per_fold": rounded(atoms_fit.r, rois), "full": rounded(full.r, rois)}
    out["r_group_concat"] = {"full": rounded(full.r_concat, rois)}
    out["unique_r_llm_beyond_word_rate"] = _unique(beyond_rate, rois)
    out["unique_r_llm_beyond_published"] = _unique(beyond_published, rois)
    out["atoms_per_fold_over_full"] = rounded(atoms_fit.r / alone["llm"].r, rois)
    out["group_details"] = {
        "full_p": full.p_values.tolist(), "full_r2": full.r2.tolist(),
        "full_band_weights": None if full.deltas is None else np.exp(full.deltas).tolist(),
        "r2_split_with_word_rate": dict(zip(beyond_rate.partition["bands"],
                                            beyond_rate.partition["r2_split"].tolist())),
        "alphas_grid_final": full.cv["alphas_grid_final"],
        "grid_extensions": full.cv["grid_extensions"],
        "p_value_methods": {"full": full.cv["p_values"],
                            "unique_beyond_word_rate": beyond_rate.cv["partition"]["p_values"],
                            "unique_beyond_published": beyond_published.cv["partition"]["p_values"]}}

    logger.info("%d mm: %d subjects x %d ROIs", sphere_mm, n_subjects, len(rois))
    counts, subject_r = {}, {}
    for name in ("word_rate", "published", "llm"):
        result = fit({name: bands[name]}, stacked, config)
        counts[name] = _sig_counts(result.p_values, n_subjects, rois, config.fdr_q)
        subject_r[name] = result.r.reshape(n_subjects, -1).mean(0)
    subject_full = fit(bands, stacked, config, partition=False)
    counts["full"] = _sig_counts(subject_full.p_values, n_subjects, rois, config.fdr_q)
    subject_r["full"] = subject_full.r.reshape(n_subjects, -1).mean(0)
    for key, names in (("llm_beyond_word_rate", ("word_rate", "llm")),
                       ("llm_beyond_published", ("published", "llm"))):
        result = fit({k: bands[k] for k in names}, stacked, config, n_perm=0)
        counts[key] = _sig_counts(result.partition["p_unique"][1], n_subjects, rois, config.fdr_q)
        subject_r[key] = result.partition["r_unique"][1].reshape(n_subjects, -1).mean(0)
    out["n_sig_subjects"] = counts
    out["subject_mean_r"] = {name: rounded(r, rois) for name, r in subject_r.items()}
    ceilings = noise_ceilings(raw, config)
    out["noise_ceiling"] = {name: rounded(v, rois) for name, v in ceilings.items()}

    if exploratory_values is not None:
        from sklearn.decomposition import PCA

        explored = fit({"llm_resid": Band(exploratory_values, hrf_convolved=True,
                                          preprocessing=PCA(config.exploratory_components,
                                                            svd_solver="full"))},
                       group, config, n_perm=0)
        out["exploratory"] = {
            "label": "EXPLORATORY, not pre-registered: SmolLM2 resid of layers "
                     f"{list(config.exploratory_layers)}, PCA({config.exploratory_components}) "
                     "inside folds; chosen after trying several settings on these same data in "
                     "an earlier session",
            "r_group": rounded(explored.r, rois)}
    return out


def _unique(result, rois: list) -> dict:
    """The llm band's unique r with its shift-null p (raw and FDR over ROIs) per ROI."""
    index = result.partition["bands"].index("llm")
    return {roi: {"r": round(float(r), 4), "p": float(p), "p_fdr": float(q)}
            for roi, r, p, q in zip(rois, result.partition["r_unique"][index],
                                    result.partition["p_unique"][index],
                                    result.partition["p_unique_fdr"][index])}


def _sig_counts(p_values: np.ndarray, n_subjects: int, rois: list, q: float) -> dict:
    """Subjects per ROI whose p passes BH-FDR over all subjects x ROIs."""
    _, p_fdr = fdr(p_values, alpha=q)
    passed = (np.nan_to_num(p_fdr, nan=1.0) < q).reshape(n_subjects, -1)
    return {roi: int(n) for roi, n in zip(rois, passed.sum(0))}


def run(data_path, config: AliceConfig, cache_dir: Path) -> dict:
    started = time.perf_counter()
    data = load_alice(data_path, sphere_mm=config.spheres_mm[0])
    words, llm_info = llm_words(data, config.site, None, config, cache_dir)
    llm_values = words_to_tr(words, data.story, method="hrf")
    logger.info("llm band: %s", llm_values.shape)
    from brainalign.patterns import AtomTransformer

    atoms = fold_features(llm_values, None, AtomTransformer(config.n_atoms, alpha=config.atom_alpha,
                                                            random_state=config.random_state),
                          n_blocks=config.n_outer_blocks, tr_s=config.tr_s)
    exploratory_values, exploratory_info = None, None
    if config.exploratory_components:
        exploratory_words, exploratory_info = llm_words(data, config.exploratory_site,
                                                        config.exploratory_layers, config, cache_dir)
        exploratory_values = words_to_tr(exploratory_words, data.story, method="hrf")
    spheres = {f"{mm}mm": analyse_sphere(mm, data_path, llm_values, atoms, config,
                                         exploratory_values) for mm in config.spheres_mm}
    summary = {"protocol": PROTOCOL, "null_of_r": config.null}
    if config.null != AliceConfig.null:
        summary["deviation"] = (f"null of r: {config.null} instead of the protocol's block "
                                "permutations (see the script's docstring, Deviation)")
    for key in ("r_group", "unique_r_llm_beyond_word_rate", "unique_r_llm_beyond_published",
                "n_sig_subjects", "atoms_per_fold_over_full", "noise_ceiling", "exploratory"):
        summary[key] = {sphere: result.get(key) for sphere, result in spheres.items()}
    summary["n_subjects"] = {sphere: result["n_subjects"] for sphere, result in spheres.items()}
    summary["machine"] = (f"{os.cpu_count()}-core CPU" if os.cpu_count() else "CPU")
    config_dict = asdict(config)
    return {"summary": summary, "spheres": spheres, "llm_band": llm_info,
            "atoms": atoms.description, "exploratory_band": exploratory_info,
            "provenance": provenance_block(script="analysis/alice_encoding.py",
                                           data=str(data.path), config=config_dict,
                                           config_hash=config_hash(config_dict),
                                           protocol_hash=config_hash({"protocol": PROTOCOL}),
                                           seconds=round(time.perf_counter() - started, 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="alice_brennan2016 folder (default: "
                        "$BRAINALIGN_SHARED_DATA/alice_brennan2016 or ../shared/data/...)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output JSON path")
    parser.add_argument("--cache", default=os.environ.get(
        "BRAINALIGN_CACHE", str(Path.home() / ".cache" / "brainalign" / "alice")),
        help="where the SmolLM2 recordings are kept between runs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4 subjects, 6 mm, 50 permutations and shifts, 8 atoms "
                             "(not the protocol; for checking the script)")
    parser.add_argument("--null", choices=("block", "mirror", "circular"), default=AliceConfig.null,
                        help="null of the held-out r (block: the protocol's; mirror: the "
                             "calibrated deviation, see the docstring)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = AliceConfig(null=args.null)
    if args.quick:
        config = AliceConfig(spheres_mm=(6,), n_perm=50, n_band_shifts=50, n_atoms=8,
                             n_subjects=4, n_split_halves=20, exploratory_components=0,
                             null=args.null)
    document = run(args.data, config, Path(args.cache))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str))
    summary = {k: v for k, v in document["summary"].items() if k != "protocol"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
