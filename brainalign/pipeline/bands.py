"""The feature bands of a study's encoding models, cleaned like the brain data.

A study fits each subject's fMRI with named bands (``encoding.bands``):

* ``atoms``: the study's patterns. With ``encoding.atoms_per_fold`` (the default) they are
  fitted on the training runs of each outer fold only
  (:func:`brainalign.encoding.fold_features` with an
  :class:`~brainalign.patterns.AtomTransformer`, once per model and reused for every
  subject); the final fit, the maps and the network mapping use the atoms of the patterns
  stage (fitted on every run), whose regressors are :meth:`Patterns.transform` of the
  cleaned time courses. With ``timecourse.method = "hrf"`` the neuron time courses, and
  so the atoms, are already HRF-convolved: the band then gets no FIR delays
  (:func:`atom_band`), as a regressor delayed again would peak seconds too late;
* ``word_rate``: every word's onset convolved with the SPM HRF on the scan (no FIR
  delays), the low-level control a reviewer asks for;
* ``encoding.extra_bands``: tables with one row per volume of the stories' runs.

Neuron time courses are cleaned (``[cleaning]``) with the same per-run nuisance model the
encoding fits inside its folds, so that atoms describe the signal the encoding models see.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.pipeline.config import ConfigError


def study_cleaning(config: dict):
    """The :class:`~brainalign.encoding.Cleaning` of a study, or False when disabled."""
    from brainalign.encoding import Cleaning

    options = config["cleaning"]
    if not options["enabled"]:
        return False
    return Cleaning(high_pass_hz=options["high_pass_hz"] or None)


def cleaned_timecourses(timecourses, config: dict):
    """Neuron time courses cleaned run by run on all their TRs, as the atoms are fitted on."""
    from brainalign.encoding.cleaning import FoldCleaner

    cleaning = study_cleaning(config)
    if not cleaning:
        return timecourses
    cleaner = FoldCleaner(cleaning, timecourses.runs, np.arange(timecourses.n_tr),
                          float(config["stories"]["tr_s"]))
    data = cleaner.apply(np.asarray(timecourses.data)).astype(np.float32)
    provenance = dict(timecourses.provenance, cleaning=dict(cleaning.describe(),
                                                            fitted="each whole run"))
    return dataclasses.replace(timecourses, data=data, provenance=provenance)


def cleaned_runs_on_disk(timecourses, config: dict, path: Path):
    """:func:`cleaned_timecourses` of a recording too long to hold: cleaned one run at a
    time into a float32 ``.npy`` memory map at ``path`` (a reference corpus).

    The nuisance regressors are fitted run by run, as :func:`cleaned_timecourses` fits them
    (per run); the z-scoring scale is each neuron's standard deviation over all TRs, as
    there, accumulated over the runs and applied in a second pass. The two agree on data
    that fit in memory.
    """
    from brainalign.encoding.cleaning import FoldCleaner
    from brainalign.patterns.streaming import release_pages

    cleaning = study_cleaning(config)
    runs = np.asarray(timecourses.runs)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                    shape=timecourses.data.shape)
    parts = [np.flatnonzero(runs == run) for run in np.unique(runs)]
    total, squares = np.zeros(out.shape[1]), np.zeros(out.shape[1])
    for rows in parts:
        part = slice(rows[0], rows[-1] + 1)
        values = np.asarray(timecourses.data[part], dtype=np.float64)
        if cleaning:  # the corpus's own TR (its provenance), which sets the high-pass
            values = FoldCleaner(cleaning, runs[rows], np.arange(len(rows)),
                                 float(timecourses.provenance["tr_s"])).remove_nuisance(values)
        total += values.sum(0)
        squares += (values ** 2).sum(0)
        out[part] = values
        out.flush()
        release_pages(out)
        release_pages(timecourses.data)
    if cleaning and cleaning.standardize:
        scale = np.sqrt(np.maximum(squares / len(runs) - (total / len(runs)) ** 2, 0.0))
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        for rows in parts:
            out[rows[0]:rows[-1] + 1] /= scale
            out.flush()
            release_pages(out)
    del out
    provenance = dict(timecourses.provenance, cleaning=dict(
        cleaning.describe() if cleaning else {}, fitted="each whole run"))
    return dataclasses.replace(timecourses, data=np.load(path, mmap_mode="r"),
                               provenance=provenance)


def study_outer_groups(study, runs) -> np.ndarray | None:
    """The story of each TR when a BIDS study has several stories (leave one story out),
    else None (leave one run out)."""
    design = getattr(study, "design", None)
    if design is None or len(design.stories) < 2:
        return None
    return np.asarray(design.story_of_run)[np.asarray(runs)]


def atom_band(atoms, config: dict):
    """The atoms (an array (n_tr, n_atoms) or per-fold :class:`FoldFeatures`) as a band:
    marked ``hrf_convolved`` (no FIR delays) when the study resamples words to TRs with
    the HRF (``timecourse.method = "hrf"``); delayed by ``encoding.delays`` after Lanczos
    resampling, which leaves the haemodynamic lag to the delays."""
    from brainalign.encoding import Band

    return Band(atoms, hrf_convolved=config["timecourse"]["method"] == "hrf")


def atom_delays(result) -> list[int]:
    """The FIR delays (TRs) of the atoms band in a fitted encoding model, for the network
    tests that must model the atoms as the encoding did: ``[0]`` (no delay) for
    HRF-convolved atoms, which the encoding gives no FIR delays."""
    for band in result.bands:
        if band["name"] == "atoms":
            return [int(d) for d in band["delays"]] or [0]
    raise ValueError(f"the encoding model has no 'atoms' band; its bands are "
                     f"{[band['name'] for band in result.bands]}")


def word_rate(stories: list, trim, allow_words_outside_scan: bool = False) -> np.ndarray:
    """Word onsets convolved with the SPM HRF on every story's scan, trimmed like the time
    courses: shape (n_tr_kept, 1). ``allow_words_outside_scan``: as the time courses
    (``fmri.allow_words_outside_scan``)."""
    from brainalign.timecourse import trim_mask, tr_grid, words_to_tr

    parts = []
    for story in stories:
        rate = words_to_tr(np.ones(len(story.words)), story, method="hrf",
                           allow_words_outside_scan=allow_words_outside_scan)
        parts.append(rate[trim_mask(tr_grid(story)[1], tuple(trim))])
    return np.concatenate(parts)[:, None]


def extra_band(entry: dict, stories: list, trim):
    """A band from a table file with one row per volume of the stories' runs."""
    from brainalign.brain import read_table
    from brainalign.encoding import Band
    from brainalign.encoding.bands import INHERIT
    from brainalign.timecourse import tr_grid, trim_mask

    values, _ = read_table(entry["path"])
    keep = np.concatenate([trim_mask(tr_grid(story)[1], tuple(trim)) for story in stories])
    if len(values) != len(keep):
        raise ConfigError(f"encoding.extra_bands {entry['name']!r}: {entry['path']} has "
                          f"{len(values)} rows but the stories' runs have {len(keep)} volumes "
                          "(one row per volume, runs in order, before timecourse.trim)")
    return Band(values[keep], delays=entry.get("delays", INHERIT),
                hrf_convolved=bool(entry.get("hrf_convolved", False)))


def study_bands(study, slug: str) -> dict[str, Any]:
    """Band name -> :class:`~brainalign.encoding.Band` of one model, in ``encoding.bands`` order."""
    from brainalign.encoding import Band, FoldFeatures, fold_features
    from brainalign.patterns import AtomTransformer

    config = study.config
    options, trim = config["encoding"], config["timecourse"]["trim"]
    timecourses = study.timecourses(slug)
    regressors = study.atom_regressors(slug)
    atoms = regressors
    if options["atoms_per_fold"] and study.corpus is None:  # corpus atoms never see a fold
        patterns = config["patterns"]
        made = fold_features(np.asarray(timecourses.data), timecourses.runs,
                             AtomTransformer(patterns["n_atoms"], method=patterns["method"],
                                             alpha=patterns["alpha"],
                                             consensus_fits=patterns["consensus_fits"],
                                             random_state=config["study"]["seed"]),
                             clean=study_cleaning(config), tr_s=float(config["stories"]["tr_s"]),
                             outer_groups=study_outer_groups(study, timecourses.runs))
        # the final fit uses the patterns stage's atoms, so that maps follow its atom order
        atoms = FoldFeatures(made.train_rows, made.features, regressors, made.description)
    extra = {entry["name"]: entry for entry in options["extra_bands"]}
    bands = {}
    for name in options["bands"]:
        if name == "atoms":
            bands[name] = atom_band(atoms, config)
        elif name == "word_rate":
            bands[name] = Band(word_rate(study.stories, trim,
                                         study.config["fmri"]["allow_words_outside_scan"]),
                               hrf_convolved=True)
        else:
            bands[name] = extra_band(extra[name], study.stories, trim)
    return bands


def encoding_summary(study) -> dict:
    """Per ``"<model>/<space>"``: mean held-out r, each band's mean r alone and unique r and
    its count of FDR-significant targets, and the per-fold vs whole-story atoms comparison."""
    summary = {}
    q = study.config["encoding"]["fdr_q"]
    for slug, _ in study.models:
        for space in study.spaces:
            results = study.encodings(slug, space)
            entry = {"r_mean": _mean(r.r for r in results)}
            partitions = [r.partition for r in results if r.partition is not None]
            if partitions:
                names = partitions[0]["bands"]
                entry["bands"] = {name: {
                    "r_alone_mean": _mean(p["r_alone"][k] for p in partitions),
                    "r_unique_mean": _mean(p["r_unique"][k] for p in partitions),
                    "n_targets_unique_fdr": [int(np.sum(np.nan_to_num(p["p_unique_fdr"][k], nan=1)
                                                        < q)) for p in partitions]}
                    for k, name in enumerate(names)}
            whole = study.encodings(slug, space, whole_story_atoms=True)
            if whole:
                per_fold = _mean(r.partition["r_alone"][r.partition["bands"].index("atoms")]
                                 if r.partition is not None else r.r for r in results)
                entry["atoms"] = {"per_fold_r_mean": per_fold,
                                  "whole_story_r_mean": _mean(r.r for r in whole),
                                  "note": "atoms band alone: fitted per outer fold (headline) "
                                          "vs fitted on the whole story"}
                entry["atoms"]["whole_story_minus_per_fold"] = (
                    entry["atoms"]["whole_story_r_mean"] - per_fold)
            summary[f"{slug}/{space}"] = entry
    return summary


def _mean(arrays) -> float:
    """Mean over subjects and targets, ignoring invalid (NaN) targets."""
    values = [np.asarray(a, dtype=np.float64) for a in arrays]
    return float(np.nanmean(np.concatenate([v.ravel() for v in values]))) if values else float("nan")
