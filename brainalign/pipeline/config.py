"""Study configuration: a TOML file describing every stage, validated against one schema.

A study file has one table per stage (``[study]``, ``[model]``, ``[stories]``, ``[fmri]``,
``[timecourse]``, ``[patterns]``, ``[encoding]``, ``[networks]``, ``[group]``,
``[interventions]``, ``[outputs]``, ``[compute]``). Every key has a type, a default and,
where it is a choice, the allowed values; an unknown table or key, a wrong type or a value
outside the allowed set raises :class:`ConfigError` naming the key (``patterns.method``)
and what is allowed. :func:`stage_config` gives the part of the configuration each stage depends
on, which is what the stage cache hashes (changing ``patterns.n_atoms`` re-runs the
patterns stage and everything after it, but reuses the recordings).

Paths in ``stories.paths``, ``fmri.paths`` and ``fmri.mask`` may name environment
variables, ``${NAME}`` or ``${NAME:-fallback}`` (the fallback is used when ``NAME`` is
unset or empty); :func:`load_config` expands them and resolves relative paths against the
config file's folder, as it does ``study.out``. A file can so point at data that each user
keeps elsewhere, e.g. ``"${BRAINALIGN_SHARED_DATA:-../data}/alice_brennan2016/..."``.

Time: for real fMRI the file must state when each run's first kept volume was acquired on
the words' clock, ``fmri.first_volume_s`` (seconds) or ``fmri.discarded_volumes`` (with
``stories.tr_s``); there is no default, since a wrong value shifts every feature.

Parsing uses the standard library's ``tomllib`` (Python >= 3.11) or ``tomli``.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(ValueError):
    """An invalid study configuration; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Key:
    """Schema of one configuration key."""

    types: tuple[type, ...]
    default: Any
    choices: tuple | None = None
    doc: str = ""


_STR, _INT, _FLOAT, _BOOL, _LIST = (str,), (int,), (int, float), (bool,), (list,)

SCHEMA: dict[str, dict[str, Key]] = {
    "study": {
        "name": Key(_STR, "study", doc="Name used in output file names."),
        "out": Key(_STR, "brainalign-study", doc="Output directory (relative to the config file)."),
        "seed": Key(_INT, 0, doc="Seed for every random step."),
    },
    "model": {
        "names": Key(_LIST, ["smollm2-135m-instruct-q4"],
                     doc="Registry names or aliases (`brainalign models`), paths or hub ids."),
        "sites": Key(_LIST, ["mlp.out"], doc="Neuron sites to record."),
        "layers": Key((str, list), "all", doc='"all" or a list of layer indices.'),
        "context_tokens": Key(_INT, 256, doc="Tokens of context each word is read with."),
        "pooling": Key(_STR, "mean", ("mean", "last", "first"), "How tokens pool into a word."),
        "device": Key(_STR, "auto", doc='"auto" (CUDA when available), "cpu", "cuda:0"...'),
    },
    "stories": {
        "bundled": Key(_BOOL, True, doc="Include the bundled story."),
        "paths": Key(_LIST, [], doc="Timing files (TextGrid, Gentle JSON, TSV/CSV)."),
        "tr_s": Key(_FLOAT, 2.0, doc="Repetition time of the fMRI, seconds."),
    },
    "fmri": {
        "source": Key(_STR, "simulated", ("simulated", "nifti", "gifti", "roi", "bids"),
                      "Where the brain data come from (bids: an fMRIPrep dataset, see the "
                      "bids_* keys; the stories and their onsets come from its timing files)."),
        "bids": Key(_STR, "", doc="source bids: the raw BIDS dataset (events files, sidecars, "
                    "stimuli)."),
        "bids_derivatives": Key(_STR, "derivatives/fmriprep", doc="source bids: fMRIPrep's "
                                "output, absolute or relative to fmri.bids."),
        "bids_space": Key(_STR, "fsaverage5", doc="source bids: fsaverage5 / fsaverage6 "
                          "(GIfTI) or a volume space such as MNI152NLin2009cAsym."),
        "bids_res": Key(_STR, "", doc="source bids: the volume resolution label (res-), needed "
                        "when the space has several."),
        "bids_tasks": Key(_LIST, [], doc="source bids: tasks to use (default all)."),
        "bids_subjects": Key(_LIST, [], doc="source bids: subjects to use, labels without "
                             "sub- (default all)."),
        "bids_entities": Key(_LIST, [], doc="source bids: only runs whose file names carry "
                             "these entities, as [\"acq-lo\", \"echo-2\"...] (to choose one of "
                             "two acquisitions of each run)."),
        "timing_layout": Key(_STR, "narratives", ("narratives", "lebel2023", "lepetitprince"),
                             "source bids: where the word timings and onsets are "
                             "(brainalign.stimuli.timing)."),
        "stimulus_onset_s": Key(_LIST, [], doc="source bids, layouts lebel2023 and "
                                "lepetitprince: [seconds from each run's first volume to the "
                                "story's start] for runs without an events file."),
        "bids_slice_time_ref": Key(_LIST, [], doc="source bids: [fraction of the TR] at "
                                   "which each volume's data stand for, for runs whose "
                                   "sidecar has no StartTime (fMRIPrep writes it when it "
                                   "corrects slice timing; 0.5 is its default reference). "
                                   "Unset: StartTime, else 0 (acquisition start) with a "
                                   "warning."),
        "spaces": Key(_LIST, ["fsaverage5"], doc="Target spaces of a simulation: "
                      "fsaverage5, MNI152_3mm, roi."),
        "paths": Key(_LIST, [], doc="Data files for nifti/gifti/roi sources: one entry per "
                     "subject, a file holding every run or a list of one file per run (in "
                     "the stories' run order). The stories' volume counts are read from the "
                     "first subject's files."),
        "first_volume_s": Key(_LIST, [], doc="Real fMRI (this or discarded_volumes is "
                              "required): stimulus time (s, on each run's word clock) of the "
                              "first volume in the data, one per run of the stories in order. "
                              "Simulated fMRI: for stories without their own scan (default "
                              "0 s, the simulated scan starts with the words)."),
        "discarded_volumes": Key(_LIST, [], doc="Instead of first_volume_s, when the words are "
                                 "timed from the start of the acquisition: volumes discarded "
                                 "before the data begin, one per run; the first kept volume "
                                 "is at discarded_volumes x stories.tr_s."),
        "allow_words_outside_scan": Key(_BOOL, False, doc="Accept words before the first or "
                                        "after the last volume (e.g. speech during discarded "
                                        "volumes); otherwise they stop the study."),
        "mask": Key(_STR, "", doc="Brain mask (nifti source); source bids, volume space: "
                    "the targets are the voxels inside it and inside every run's brain mask."),
        "resample_mask": Key(_BOOL, False, doc="nifti source: resample images whose grid "
                             "(shape or affine) differs from fmri.mask onto the mask's grid, "
                             "with a warning; false refuses them."),
        "snr": Key(_FLOAT, 1.0, doc="Simulation: signal-to-noise ratio (signal sd / noise sd)."),
        "noise": Key(_STR, "ar1", ("white", "ar1", "rest"), "Simulation: noise model."),
        "n_subjects": Key(_INT, 2, doc="Simulation: number of subjects."),
        "n_planted": Key(_INT, 4, doc="Simulation: networks that respond to a pattern."),
    },
    "confounds": {
        "strategy": Key(_LIST, ["motion", "high_pass", "wm_csf"], doc="source bids: "
                        "nilearn load_confounds strategies (motion, high_pass, wm_csf, "
                        "global_signal, compcor, scrub, non_steady_state); [] for none. The "
                        "columns are regressed out of features and targets alike inside the "
                        "encoding folds; scrubbed volumes leave every fit and score."),
        "motion": Key(_STR, "full", ("basic", "power2", "derivatives", "full"),
                      "Motion parameters: 6, squared, derivatives, or all 24."),
        "wm_csf": Key(_STR, "basic", ("basic", "power2", "derivatives", "full"),
                      "White matter and CSF signals."),
        "global_signal": Key(_STR, "basic", ("basic", "power2", "derivatives", "full"),
                             "Global signal (strategy global_signal only)."),
        "scrub": Key(_INT, 5, doc="Strategy scrub: segments shorter than this many volumes "
                     "left between scrubbed volumes are scrubbed too."),
        "fd_threshold": Key(_FLOAT, 0.5, doc="Strategy scrub: framewise displacement (mm) "
                            "above which a volume is scrubbed."),
        "std_dvars_threshold": Key(_FLOAT, 1.5, doc="Strategy scrub: standardised DVARS above "
                                   "which a volume is scrubbed."),
    },
    "timecourse": {
        "method": Key(_STR, "lanczos", ("lanczos", "hrf"), "Word -> TR resampling."),
        "zscore": Key(_BOOL, True, doc="z-score each run."),
        "trim": Key(_LIST, [0, 0], doc="TRs dropped at the start and end of each run."),
    },
    "patterns": {
        "method": Key(_STR, "dictionary", ("dictionary", "kmeans", "ica"),
                      "Decomposition giving the atoms."),
        "n_atoms": Key(_INT, 64, doc="Number of atoms (K)."),
        "alpha": Key(_FLOAT, 0.1, doc="L1 penalty of the codes (dictionary learning), in "
                     "correlation units: codes below it are zero."),
        "fit_on": Key(_STR, "story", doc='Time courses the atoms are fitted on: "story" (the '
                      'study\'s stories; refitted inside each encoding fold) or "corpus:NAME" '
                      '(a reference text, "corpus:moby-dick" or "corpus:sotu", recorded once '
                      "per model with the same sites, timed by the speech-rate model on a 2 s "
                      "grid, cleaned like the stories, fitted out of core; the atoms are then "
                      "applied to the stories and never see them). Install the corpora with "
                      "make corpora."),
        "corpus_words": Key(_INT, 100000, doc='Words of the corpus used with fit_on = "corpus:'
                            'NAME" (its first words, in order).'),
        "consensus_fits": Key(_INT, 1, doc="Fits (seeds) whose matched, sign-aligned atoms and "
                              "loadings are averaged into consensus atoms (ICASSO-like; each "
                              "atom's reliability is recorded); 1 for a single fit. Costs that "
                              "many fits, also in every refit for stability and in each fold."),
        "stability": Key(_BOOL, True, doc="Also refit with a second seed and on two halves "
                         "(alternate runs, or the two halves of one run): matched atom and "
                         "loading r, subgroup ARI and IoU go to the patterns' stability and the "
                         "report."),
        "stability_k": Key(_LIST, [], doc="Numbers of atoms K (integers >= 2) at which to "
                           "also tabulate seed and split-half stability (stability_curve.json "
                           "beside the patterns, a figure in the report); [] for none. Fitted "
                           'on the cleaned story time courses; skipped with fit_on = "corpus:'
                           'NAME" (each corpus fit takes minutes).'),
    },
    "cleaning": {
        "enabled": Key(_BOOL, True, doc="Clean features and targets alike inside each encoding "
                       "fold, fitted on its training rows: each run's mean, a linear trend, "
                       "cosine drifts below high_pass_hz, z-scoring (atoms are fitted on "
                       "time courses cleaned the same way)."),
        "high_pass_hz": Key(_FLOAT, 1.0 / 128.0, doc="Cut-off of the cosine drift basis, Hz "
                            "(1/128 Hz, the SPM default); 0 turns the high-pass filter off."),
    },
    "encoding": {
        "bands": Key(_LIST, ["atoms", "word_rate"], doc='Feature bands: "atoms" (the study\'s '
                     'patterns, FIR delays), "word_rate" (word onsets convolved with the SPM '
                     "HRF, no delays: the low-level control), and the names of extra_bands. "
                     "Several bands are fitted with banded ridge and partitioned (each band "
                     "alone, without it, its unique r with a shift null)."),
        "extra_bands": Key(_LIST, [], doc="Your own bands, as [[encoding.extra_bands]] tables: "
                           "name, path (a table with one row per volume of the stories' runs "
                           "in order, before timecourse.trim), hrf_convolved (bool, default "
                           "false: such bands get no delays) and optionally delays."),
        "delays": Key(_LIST, [1, 2, 3, 4], doc="FIR delays in TRs of bands that are not "
                      "HRF-convolved (brainalign.timecourse.DEFAULT_DELAYS)."),
        "atoms_per_fold": Key(_BOOL, True, doc="Fit the atoms regressors on the training runs "
                              "of each outer fold only (the maps and the network mapping use "
                              "the atoms of all runs); the summary reports the held-out r with "
                              "atoms fitted on the whole story beside it."),
        "n_permutations": Key(_INT, 200, doc="Permutations of the significance null of r."),
        "null": Key(_STR, "mirror", ("mirror", "circular", "block"),
                    "How the null of r reorders the data inside each run: mirror = reversed "
                    "and circularly shifted (calibrated on autocorrelated and resting-state "
                    "noise); circular = shifted by at least 10 TRs; block = 10-TR blocks "
                    "shuffled (up to 12 % of p < .05 on pure noise: benchmarks/calibration.py)."),
        "n_band_shifts": Key(_INT, 1000, doc="Circular shifts of a band in the null of its "
                             "unique r (several bands only; 0 skips the test)."),
        "fdr_q": Key(_FLOAT, 0.05, doc="Benjamini-Hochberg level."),
    },
    "networks": {
        "atlas": Key(_STR, "yeo7", doc="yeo7, yeo17, seitzman, dosenbach, cole-anticevic, a "
                     'path, or "none": skip the network mapping (e.g. a few ROIs that are not '
                     "a network atlas; needs outputs.report = false)."),
        "null": Key(_STR, "shift", ("shift", "auto", "spin", "volume", "permutation"),
                    "Spatial null. shift: maps of the atoms reversed and shifted in time (the "
                    "only one calibrated on network-organised background activity); auto: "
                    "spin on surfaces, smooth surrogates in volumes, permutation for ROIs."),
        "n_null": Key(_INT, 1000, doc="Null maps per pattern (p-values below 1/(n+1) come "
                      "from a Pareto fit to the null's tail)."),
        "n_shifts": Key(_INT, 1000, doc="Circular shifts per pattern of the temporal test "
                        "(unique held-out r on network signals); 0: spatial null only."),
        "alpha": Key(_FLOAT, 0.05, doc="Level at which a pattern is assigned a network."),
    },
    "group": {
        "method": Key(_STR, "auto", ("auto", "maxt", "cluster", "tfce"),
                      "Group maps' family-wise error control (brainalign.group.group_map): "
                      "auto = cluster on surfaces and volumes, max-t on ROI tables; maxt = "
                      "one p-value per target; cluster = cluster mass above cluster_p; tfce = "
                      "threshold-free cluster enhancement (slowest)."),
        "n_perm": Key(_INT, 1000, doc="Sign-flip permutations of each group map; 0 skips the "
                      "group stage (it also needs at least 2 subjects)."),
        "tail": Key(_INT, 1, (1, 0, -1), "1: group mean above zero (held-out r is informative "
                    "only when positive); 0: two-sided; -1: below zero."),
        "cluster_p": Key(_FLOAT, 0.001, doc="Cluster-forming threshold of method cluster: an "
                         "uncorrected one-sample t-test p-value."),
        "alpha": Key(_FLOAT, 0.05, doc="FWE level at which the report and summary count "
                     "targets as significant."),
    },
    "interventions": {
        "study_b": Key(_BOOL, False, doc="Run a study-B lesion check."),
        "n_components": Key(_INT, 10, doc="ICA components for functional networks."),
        "z_threshold": Key(_FLOAT, 3.6, doc="z threshold of network membership."),
        "n_controls": Key(_INT, 3, doc="Random control sets per condition."),
    },
    "outputs": {
        "report": Key(_BOOL, True, doc="Write report.html."),
        "maps": Key(_BOOL, True, doc="Write NIfTI/GIfTI/TSV maps with sidecars."),
        "interactive": Key(_BOOL, False, doc="Add interactive surface views to the report."),
    },
    "compute": {
        "scheduler": Key(_STR, "serial", doc='"serial", "local" (a Dask LocalCluster) or '
                         'a scheduler address such as "tcp://host:8786".'),
        "n_workers": Key(_INT, 2, doc="Workers of the local Dask cluster."),
    },
}

#: Longest ``stories.tr_s`` accepted, seconds (sparse designs reach about 10 s; a larger
#: value is most likely a TR in milliseconds).
MAX_TR_S = 30.0

#: Target spaces of a simulated study (``fmri.spaces``).
SPACES = ("fsaverage5", "MNI152_3mm", "MNI152_2mm", "roi")

#: Not a table of the file: the stories' resolved scans (``tr_s``, ``n_volumes``,
#: ``first_volume_s`` per story), which come partly from files (story directories, brain
#: data). :class:`brainalign.pipeline.study.Study` adds it, so that every stage on the TR
#: grid is keyed on the scan it was computed for.
SCAN_TABLE = "scan"

#: Not a table of the file either: fingerprints of what the study read (the stories'
#: words, the model, fMRI, band and atlas files), added by the study
#: (:mod:`brainalign.pipeline.inputs`), so that an input rewritten at the same path is
#: not served from the cache.
INPUTS_TABLE = "inputs"

_READS = (f"{INPUTS_TABLE}.stories", f"{INPUTS_TABLE}.model")
_READS_FMRI = _READS + (f"{INPUTS_TABLE}.fmri", f"{INPUTS_TABLE}.bands")

#: Which tables each stage's output depends on (its own and everything upstream).
STAGE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "record": ("model", "stories") + _READS,
    "timecourse": ("model", "stories", "timecourse", SCAN_TABLE) + _READS,
    # a simulation plants the time courses of the study's own neuron subgroups
    "fmri": ("model", "stories", "timecourse", "cleaning", "patterns", "fmri", "confounds",
             "study", SCAN_TABLE) + _READS_FMRI,
    # a reference corpus is recorded once per model: it does not depend on the stories
    "corpus": ("model", "timecourse", "patterns.fit_on", "patterns.corpus_words",
               "stories.tr_s", f"{INPUTS_TABLE}.model"),
    "patterns": ("model", "stories", "timecourse", "cleaning", "patterns", "study",
                 SCAN_TABLE) + _READS,
    "encoding": ("model", "stories", "timecourse", "cleaning", "patterns", "fmri", "confounds",
                 "encoding", "study", SCAN_TABLE) + _READS_FMRI,
    "networks": ("model", "stories", "timecourse", "cleaning", "patterns", "fmri", "confounds",
                 "encoding", "networks", "study", SCAN_TABLE) + _READS_FMRI
                + (f"{INPUTS_TABLE}.atlas",),
    "interventions": ("model", "stories", "interventions", "study") + _READS,
    "group": ("model", "stories", "timecourse", "cleaning", "patterns", "fmri", "confounds",
              "encoding", "group", "study", SCAN_TABLE) + _READS_FMRI,
}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({str: "string", int: "integer", float: "number", bool: "boolean",
                        list: "list"}[t] for t in types)


def validate(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a parsed configuration against :data:`SCHEMA` and fill in defaults.

    Raises
    ------
    ConfigError
        Naming the offending table or key, and the allowed tables, keys, types or values.
    """
    config, errors = _validate_collect(raw)
    raise_errors(errors)
    return config


def raise_errors(errors: list[str]) -> None:
    """Raise one :class:`ConfigError` holding every message (one line, ``; ``-separated)."""
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError(f"{len(errors)} errors in the study configuration: " + "; ".join(
            f"({i}) {message}" for i, message in enumerate(errors, 1)))


def _validate_collect(raw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The configuration with defaults filled in (a key of the wrong type or value takes its
    default, so that the other checks still run) and every error found."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        return {}, [f"a study configuration must be a table of tables, got {type(raw).__name__}"]
    unknown_tables = sorted(set(raw) - set(SCHEMA))
    if unknown_tables:
        errors.append(f"unknown table(s) {unknown_tables}; allowed tables: {sorted(SCHEMA)}")
    config: dict[str, dict[str, Any]] = {}
    for table, keys in SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            errors.append(f"[{table}] must be a table of keys, got {type(given).__name__}")
            given = {}
        unknown = sorted(set(given) - set(keys))
        if unknown:
            errors.append(f"unknown key(s) {[f'{table}.{k}' for k in unknown]}; allowed keys "
                          f"in [{table}]: {sorted(keys)}")
        section = {}
        for name, key in keys.items():
            value = given.get(name, copy.deepcopy(key.default))
            ok = isinstance(value, key.types) and not (
                isinstance(value, bool) and bool not in key.types)
            if not ok:
                errors.append(f"{table}.{name} must be of type {_type_name(key.types)}, got "
                              f"{value!r} ({type(value).__name__})")
                value = copy.deepcopy(key.default)
            elif key.choices is not None and value not in key.choices:
                errors.append(f"{table}.{name} = {value!r} is not allowed; allowed values: "
                              f"{list(key.choices)}")
                value = copy.deepcopy(key.default)
            section[name] = value
        config[table] = section
    errors.extend(_check_values(config))
    return config, errors


def _check_values(config: dict[str, dict[str, Any]]) -> list[str]:
    """Every error of the values (types already checked), as messages."""
    from brainalign.models.sites import SITE_NAMES
    from brainalign.timecourse.delays import check_fir_delays

    errors: list[str] = []
    bad_sites = [s for s in config["model"]["sites"] if s not in SITE_NAMES]
    if bad_sites:
        errors.append(f"model.sites contains {bad_sites}; allowed values: {list(SITE_NAMES)}")
    layers = config["model"]["layers"]
    if isinstance(layers, str) and layers != "all":
        errors.append(f'model.layers = {layers!r}; allowed: "all" or a list of integers')
    if isinstance(layers, list) and not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
        errors.append(f"model.layers = {layers!r}; allowed: a list of integers >= 0")
    if not config["model"]["names"]:
        errors.append("model.names is empty; give at least one model "
                      "(e.g. 'smollm2-135m-instruct-q4')")
    elif not all(isinstance(n, str) and n for n in config["model"]["names"]):
        errors.append(f"model.names = {config['model']['names']!r}; allowed: a list of model "
                      "names or paths (strings)")
    bad_spaces = [s for s in config["fmri"]["spaces"] if s not in SPACES]
    if bad_spaces:
        errors.append(f"fmri.spaces contains {bad_spaces}; allowed values: {list(SPACES)}")
    for table, name, low in (("patterns", "n_atoms", 2), ("patterns", "consensus_fits", 1),
                             ("encoding", "n_permutations", 0),
                             ("networks", "n_null", 1), ("networks", "n_shifts", 0),
                             ("fmri", "n_subjects", 1), ("group", "n_perm", 0),
                             ("study", "seed", 0), ("compute", "n_workers", 1),
                             ("model", "context_tokens", 1), ("encoding", "n_band_shifts", 0)):
        if config[table][name] < low:
            errors.append(f"{table}.{name} = {config[table][name]} must be >= {low}")
    if (config["fmri"]["source"] == "simulated"
            and config["fmri"]["n_planted"] > config["patterns"]["n_atoms"]):
        errors.append(f"fmri.n_planted = {config['fmri']['n_planted']} exceeds "
                      f"patterns.n_atoms = {config['patterns']['n_atoms']}: the planted "
                      "patterns are the study's atoms")
    errors.extend(_check_fit_on(config["patterns"]))
    stability_k = config["patterns"]["stability_k"]
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in stability_k):
        errors.append(f"patterns.stability_k = {stability_k!r}; allowed: a list of integers "
                      ">= 2 (numbers of atoms), or [] for none")
    bids = config["fmri"]["source"] == "bids"
    if bids:
        errors.extend(_check_bids(config))
    elif not config["stories"]["bundled"] and not config["stories"]["paths"]:
        errors.append("stories: set bundled = true or give stories.paths")
    if config["fmri"]["source"] not in ("simulated", "bids") and not config["fmri"]["paths"]:
        errors.append(f"fmri.paths is empty but fmri.source = {config['fmri']['source']!r} "
                      "needs data files")
    for check, part in ((_check_first_volumes, config["fmri"]), (_check_bands, config["encoding"])):
        try:
            check(part)
        except ConfigError as err:
            errors.append(str(err))
    if config["networks"]["atlas"] == "none" and config["outputs"]["report"]:
        errors.append('networks.atlas = "none" skips the network mapping, which the report '
                      "shows; set outputs.report = false (maps and tables are still written)")
    try:
        check_fir_delays(config["encoding"]["delays"], "encoding.delays", allow_empty=False)
    except ValueError as err:
        errors.append(str(err))
    high_pass, tr_s = config["cleaning"]["high_pass_hz"], config["stories"]["tr_s"]
    if high_pass < 0:
        errors.append(f"cleaning.high_pass_hz = {high_pass} must be >= 0 (0: no high-pass "
                      "filter)")
    if not 0 < tr_s <= MAX_TR_S:
        errors.append(f"stories.tr_s = {tr_s} must lie in (0, {MAX_TR_S}] seconds (a TR in "
                      "milliseconds? 2000 ms is tr_s = 2.0)")
    elif high_pass >= 0.5 / tr_s:
        errors.append(f"cleaning.high_pass_hz = {high_pass} is at or above the Nyquist "
                      f"frequency of a {tr_s} s TR ({0.5 / tr_s:g} Hz): it is a frequency in Hz "
                      f"(a 128 s cut-off period is {1 / 128:g} Hz)")
    trim = config["timecourse"]["trim"]
    if len(trim) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                 for n in trim):
        errors.append(f"timecourse.trim = {trim!r}; allowed: two integers >= 0 (TRs dropped at "
                      "the start and at the end of each run)")
    for table, name in (("encoding", "fdr_q"), ("networks", "alpha"), ("group", "cluster_p"),
                        ("group", "alpha")):
        if not 0 < config[table][name] < 1:
            errors.append(f"{table}.{name} = {config[table][name]} must lie in (0, 1)")
    return errors


def _check_bids(config: dict[str, dict[str, Any]]) -> list[str]:
    """A BIDS study: the dataset path, and no stories or timing given another way."""
    fmri, errors = config["fmri"], []
    if not fmri["bids"]:
        errors.append('fmri.source = "bids" needs fmri.bids = "PATH" (the raw BIDS dataset)')
    if config["stories"]["bundled"] or config["stories"]["paths"]:
        errors.append('fmri.source = "bids" takes its stories from the dataset\'s timing files '
                      "(fmri.timing_layout); set stories.bundled = false and leave "
                      "stories.paths empty")
    for key in ("paths", "first_volume_s", "discarded_volumes"):
        if fmri[key]:
            errors.append(f'fmri.{key} is not used with fmri.source = "bids" (runs, onsets and '
                          "volumes come from the dataset); remove it")
    onsets = fmri["stimulus_onset_s"]
    if len(onsets) > 1 or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                  and math.isfinite(t) for t in onsets):
        errors.append(f"fmri.stimulus_onset_s = {onsets!r}; allowed: [] or [seconds] (one "
                      "number for every run without an events file)")
    ref = fmri["bids_slice_time_ref"]
    if len(ref) > 1 or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                               and 0 <= t < 1 for t in ref):
        errors.append(f"fmri.bids_slice_time_ref = {ref!r}; allowed: [] or [fraction of the "
                      "TR, 0 <= f < 1] (e.g. [0.5] for data slice-time corrected to the "
                      "middle of each volume)")
    strategies = ("motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma",
                  "scrub", "non_steady_state")
    unknown = [v for v in config["confounds"]["strategy"] if v not in strategies]
    if unknown:
        errors.append(f"confounds.strategy contains {unknown}; allowed values: {list(strategies)}")
    if config["confounds"]["scrub"] < 0 or not config["confounds"]["fd_threshold"] > 0 \
            or not config["confounds"]["std_dvars_threshold"] > 0:
        errors.append("confounds.scrub must be >= 0 and confounds.fd_threshold (mm) and "
                      "confounds.std_dvars_threshold must be > 0")
    for value in fmri["bids_entities"]:
        if not (isinstance(value, str) and re.fullmatch(r"[a-zA-Z]+-[a-zA-Z0-9]+", value)) \
                or value.split("-")[0] in ("sub", "task", "space", "res", "hemi", "desc"):
            errors.append(f"fmri.bids_entities contains {value!r}; allowed: \"key-label\" "
                          "strings such as \"acq-lo\" or \"echo-2\" (sub, task, space and res "
                          "have keys of their own)")
    for key in ("bids_tasks", "bids_subjects"):
        if not all(isinstance(v, str) and v for v in fmri[key]):
            errors.append(f"fmri.{key} = {fmri[key]!r}; allowed: a list of labels (strings)")
    return errors


def _check_first_volumes(fmri: dict[str, Any]) -> None:
    """fmri.first_volume_s / fmri.discarded_volumes: at most one, required for real data."""
    first, discarded = fmri["first_volume_s"], fmri["discarded_volumes"]
    if first and discarded:
        raise ConfigError(f"fmri.first_volume_s = {first} and fmri.discarded_volumes = "
                          f"{discarded} both given; give one of them")
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
               for t in first):
        raise ConfigError(f"fmri.first_volume_s = {first!r}; allowed: a list of numbers "
                          "(seconds, one per run)")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in discarded):
        raise ConfigError(f"fmri.discarded_volumes = {discarded!r}; allowed: a list of integers "
                          ">= 0 (one per run)")
    if fmri["source"] not in ("simulated", "bids") and not (first or discarded):
        raise ConfigError(
            f"fmri.source = {fmri['source']!r} needs the time of each run's first volume on the "
            "words' clock: set fmri.first_volume_s = [...] (seconds, one per run) or "
            "fmri.discarded_volumes = [...] (volumes dropped before the data begin, one per "
            "run, when the words are timed from the start of the acquisition); e.g. "
            "discarded_volumes = [10] for a 2 s TR puts the first kept volume at 20 s")


#: Keys holding paths that :func:`load_config` expands and resolves (lists may nest).
PATH_KEYS = (("stories", "paths"), ("fmri", "paths"), ("fmri", "mask"), ("fmri", "bids"))

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_path(value: str, base: Path, key: str) -> str:
    """A path from a config file: ``${NAME}`` / ``${NAME:-fallback}`` expanded from the
    environment, then made absolute against ``base`` (the config file's folder).

    Raises
    ------
    ConfigError
        When a variable without fallback is unset, naming the key and the variable.
    """
    def substitute(match: re.Match) -> str:
        name, fallback = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found:
            return found
        if fallback is None:
            raise ConfigError(f"{key} = {value!r} uses ${{{name}}}, which is not set; set the "
                              f"environment variable or write ${{{name}:-fallback}}")
        return fallback

    expanded = Path(_VARIABLE.sub(substitute, value))
    return str(expanded if expanded.is_absolute() else (base / expanded).resolve())


def _resolve_paths(value: Any, base: Path, key: str) -> Any:
    if isinstance(value, list):
        return [_resolve_paths(item, base, key) for item in value]
    if isinstance(value, str) and value:
        return expand_path(value, base, key)
    return value


#: Bands the study makes itself (``encoding.bands``).
BUILT_IN_BANDS = ("atoms", "word_rate")


def _check_bands(encoding: dict[str, Any]) -> None:
    """``encoding.bands`` and ``encoding.extra_bands``: names, files, delays."""
    extra = encoding["extra_bands"]
    names = []
    for index, entry in enumerate(extra):
        where = f"encoding.extra_bands[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table (name, path, hrf_convolved, delays), "
                              f"got {entry!r}")
        unknown = sorted(set(entry) - {"name", "path", "hrf_convolved", "delays"})
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: name, path, "
                              "hrf_convolved, delays")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"{where}.name must be a non-empty string")
        if entry["name"] in BUILT_IN_BANDS:
            raise ConfigError(f"{where}.name = {entry['name']!r} is a built-in band; choose "
                              "another name")
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise ConfigError(f"{where}.path must be a file path (a table, one row per volume)")
        if not isinstance(entry.get("hrf_convolved", False), bool):
            raise ConfigError(f"{where}.hrf_convolved must be true or false")
        band_delays = entry.get("delays")
        if band_delays is not None and not (isinstance(band_delays, list) and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in band_delays)):
            raise ConfigError(f"{where}.delays = {band_delays!r}; allowed: a list of integers >= 0")
        names.append(entry["name"])
    if len(set(names)) != len(names):
        raise ConfigError(f"encoding.extra_bands repeat names: {names}")
    labels = {}  # map file names keep a band's letters and digits only
    for name in (*BUILT_IN_BANDS, *names):
        label = "".join(c for c in name if c.isalnum()).lower()
        if label in labels:
            raise ConfigError(f"encoding.extra_bands: {name!r} and {labels[label]!r} name the "
                              f"same map files (desc-...{label}); give names that differ in "
                              "their letters or digits")
        labels[label] = name
    bands = encoding["bands"]
    allowed = list(BUILT_IN_BANDS) + names
    bad = [b for b in bands if b not in allowed]
    if bad or "atoms" not in bands or len(set(bands)) != len(bands):
        raise ConfigError(f"encoding.bands = {bands!r}; it must hold \"atoms\" once and may add "
                          f"any of {allowed[1:]} (extra_bands by their names)")


def load_config(path: str | Path, check_files: bool = False) -> dict[str, dict[str, Any]]:
    """Read and validate a study TOML file.

    ``study.out`` and the paths of :data:`PATH_KEYS` are resolved against the file's
    folder, after ``${NAME}`` / ``${NAME:-fallback}`` environment variables are expanded
    in the paths (see the module docstring).

    Every error is reported at once, in one :class:`ConfigError`. With ``check_files``,
    the checks of :func:`check_resources` (files exist, atlas, layers against each
    model's own configuration, device, output folder) are added to them.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the study file: {err}") from err
    config, errors = _validate_collect(raw)
    base = path.parent
    out = Path(config["study"]["out"])
    config["study"]["out"] = str(out if out.is_absolute() else (base / out).resolve())
    for table, name in PATH_KEYS:
        try:
            config[table][name] = _resolve_paths(config[table][name], base, f"{table}.{name}")
        except ConfigError as err:
            errors.append(str(err))
    atlas = config["networks"]["atlas"]
    if isinstance(atlas, str) and not _is_atlas_name(atlas) and (
            "/" in atlas or os.sep in atlas or Path(atlas).suffix):
        try:  # an atlas file, next to the study file like every other path (a bare word
            # is a name, perhaps misspelled: the error quotes it as written)
            config["networks"]["atlas"] = _resolve_paths(atlas, base, "networks.atlas")
        except ConfigError as err:
            errors.append(str(err))
    for index, entry in enumerate(config["encoding"]["extra_bands"]):
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            try:
                entry["path"] = _resolve_paths(entry["path"], base,
                                               f"encoding.extra_bands[{index}].path")
            except ConfigError as err:
                errors.append(str(err))
    if check_files:
        errors.extend(check_resources(config))
    if errors:
        try:
            raise_errors(errors)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return config


def _is_atlas_name(atlas: str) -> bool:
    """Whether ``networks.atlas`` names a bundled atlas or ``"none"`` (else it is a path)."""
    from brainalign.networks.atlases import ATLAS_NAMES

    return atlas == "none" or atlas.lower() in ATLAS_NAMES


def _flat_paths(value: Any) -> list[str]:
    if isinstance(value, list):
        return [p for item in value for p in _flat_paths(item)]
    return [value] if isinstance(value, str) and value else []


def check_resources(config: dict[str, dict[str, Any]]) -> list[str]:
    """What the schema cannot see, checked before any stage runs, as a list of messages.

    - every path of ``stories.paths``, ``fmri.paths``, ``fmri.mask`` and the extra bands
      exists;
    - ``networks.atlas`` is a known atlas name, ``"none"`` or an existing file;
    - each model name names something loadable (registry, local path, hub id), and
      ``model.layers`` lie inside each model's layer count, read from its ``config.json``
      or GGUF header without loading weights;
    - ``model.device`` is usable here;
    - ``study.out`` can be created and written.
    """
    import os

    errors: list[str] = []
    for table, name in PATH_KEYS:
        missing = [p for p in _flat_paths(config[table][name]) if not Path(p).exists()]
        if missing:
            errors.append(f"{table}.{name}: no such file or folder: {missing}")
    for index, entry in enumerate(config["encoding"]["extra_bands"]):
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"] \
                and not Path(entry["path"]).exists():
            errors.append(f"encoding.extra_bands[{index}].path: no such file: {entry['path']!r}")
    atlas = config["networks"]["atlas"]
    if not _is_atlas_name(atlas) and not Path(atlas).exists():
        from brainalign.networks.atlases import ATLAS_NAMES

        errors.append(f"networks.atlas = {atlas!r} is neither a known atlas nor an existing "
                      f"file; allowed: {list(ATLAS_NAMES)}, \"none\" or a path")
    errors.extend(_check_models(config["model"]))
    out = Path(config["study"]["out"])
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if out.exists() and not out.is_dir():
        errors.append(f"study.out = {str(out)!r} exists and is not a folder")
    elif not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        errors.append(f"study.out = {str(out)!r}: folder {str(existing)!r} is not writable")
    return errors


def _check_models(model: dict[str, Any]) -> list[str]:
    from brainalign.models.registry import (ModelNotInstalledError, UnknownModelError,
                                            check_device, layer_count, registry_spec,
                                            resolve_source)

    errors: list[str] = []
    if model["device"] != "auto":
        try:
            check_device(model["device"], "model.device")
        except ValueError as err:
            errors.append(str(err))
    layers = model["layers"]
    wanted = [i for i in layers if isinstance(i, int)] if isinstance(layers, list) else []
    for index, name in enumerate(model["names"]):
        if not isinstance(name, str):
            continue
        try:
            if registry_spec(name) is None:
                resolve_source(name)
            n_layers = layer_count(name)
        except (UnknownModelError, ModelNotInstalledError) as err:
            errors.append(f"model.names[{index}]: {err}")
            continue
        bad = [i for i in wanted if n_layers is not None and not 0 <= i < n_layers]
        if bad:
            errors.append(f"model.layers = {layers}: layer(s) {bad} out of range for "
                          f"{name!r}, which has {n_layers} layers (0..{n_layers - 1})")
    return errors


def preflight(config: dict[str, dict[str, Any]]) -> None:
    """Raise one :class:`ConfigError` with every problem of :func:`check_resources`."""
    raise_errors(check_resources(config))


def corpus_name(patterns: dict) -> str | None:
    """The reference corpus of ``patterns.fit_on = "corpus:NAME"``, or None for the story."""
    fit_on = patterns["fit_on"]
    return fit_on.partition(":")[2] if fit_on.startswith("corpus:") else None


def _check_fit_on(patterns: dict) -> list[str]:
    from brainalign.stimuli.corpus import CORPORA

    fit_on = patterns["fit_on"]
    allowed = ", ".join(['"story"'] + [f'"corpus:{name}"' for name in CORPORA])
    if fit_on != "story" and corpus_name(patterns) not in CORPORA:
        return [f"patterns.fit_on = {fit_on!r}; allowed: {allowed}"]
    errors = []
    if corpus_name(patterns) and patterns["corpus_words"] < 10 * patterns["n_atoms"]:
        errors.append(f"patterns.corpus_words = {patterns['corpus_words']} is too few for "
                      f"patterns.n_atoms = {patterns['n_atoms']}; give at least 10 words per "
                      "atom (100000, the default, for stable atoms)")
    if corpus_name(patterns) and patterns["method"] == "ica":
        errors.append('patterns.method = "ica" cannot be fitted on a corpus (ICA whitens with '
                      'the TR x TR covariance); use "dictionary" or "kmeans"')
    return errors


def stage_config(config: dict[str, dict[str, Any]], stage: str) -> dict[str, Any]:
    """The tables a stage depends on (what its cache key hashes); ``study.out`` excluded.

    :data:`SCAN_TABLE` and :data:`INPUTS_TABLE` are included when the configuration holds
    them (a study adds them).
    """
    if stage not in STAGE_DEPENDENCIES:
        raise KeyError(f"unknown stage {stage!r}; stages: {sorted(STAGE_DEPENDENCIES)}")
    part: dict[str, Any] = {}
    for entry in STAGE_DEPENDENCIES[stage]:  # a table, or one key of it ("table.key")
        table, _, key = entry.partition(".")
        if table in config:
            part.setdefault(table, {}).update({key: config[table][key]} if key
                                              else dict(config[table]))
    if "study" in part:
        part["study"].pop("out", None)
        part["study"].pop("name", None)
    if "timecourse" in part:  # a stage cached with older resampling kernels is rebuilt
        from brainalign.timecourse.resample import KERNEL_REVISION

        part["timecourse"]["kernel_revision"] = KERNEL_REVISION
    if "patterns" in STAGE_DEPENDENCIES[stage] and "patterns" in part:
        # a stage cached with atoms of another sign convention is rebuilt
        from brainalign.patterns.study_a import PATTERNS_REVISION

        part["patterns"]["revision"] = PATTERNS_REVISION
    return part


def example_toml() -> str:
    """A complete study file with every key at its default, each documented."""
    lines = ["# brainalign study configuration: every key with its default."]
    for table, keys in SCHEMA.items():
        lines.append(f"\n[{table}]")
        for name, key in keys.items():
            allowed = f" Allowed: {', '.join(map(str, key.choices))}." if key.choices else ""
            lines.append(f"# {key.doc}{allowed}")
            lines.append(f"{name} = {_toml_value(key.default)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
