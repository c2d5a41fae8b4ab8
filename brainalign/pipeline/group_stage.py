"""The study's group stage: FWE-controlled group maps per model and space, cached.

After the encoding stage, each model/space with at least two subjects gets a
:class:`~brainalign.group.GroupMap` (:func:`brainalign.group.group_map`) of

- ``"r"``: the subjects' held-out r (Fisher z, invalid targets left out of the family);
- ``"unique_r:<band>"``: each feature band's unique held-out r, when every subject's
  encoding result carries a band partition (``EncodingResult.partition`` with
  ``"bands"`` names and ``"r_unique"`` of shape (n_bands, n_targets)); tested as is, without
  Fisher z, since a unique r is a difference of two correlations.

The test follows ``[group]`` (method, n_perm, tail, cluster_p; seeded with
``study.seed``). Maps live in the stage cache as ``<model>/<space>/<measure>/``
(:meth:`GroupMap.save`); :func:`export_group_maps` writes them next to the study's other
maps (t, FWE p, group mean), :func:`group_summary` counts significant targets for
``summary.json``, and the report draws them
(:mod:`brainalign.pipeline.study_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from brainalign.group import GroupMap, group_map, save_group_map
from brainalign.group.export import group_desc
from brainalign.group.inference import smallest_attainable_p


def subject_measures(results: list) -> dict[str, np.ndarray]:
    """Per-subject maps to test, one (n_subjects, n_targets) array per measure.

    Parameters
    ----------
    results : list of EncodingResult
        One per subject, in subject order.

    Returns
    -------
    dict measure -> ndarray, shape (n_subjects, n_targets)
        ``"r"`` (NaN at each subject's invalid targets) and, when every result has a
        partition with the same bands, ``"unique_r:<band>"`` per band.
    """
    measures = {"r": np.stack([np.where(np.asarray(r.valid_targets, bool), r.r, np.nan)
                               for r in results]).astype(np.float64)}
    partitions = [getattr(r, "partition", None) for r in results]
    if any(p is None or "r_unique" not in p or "bands" not in p for p in partitions):
        return measures
    bands = [list(map(str, p["bands"])) for p in partitions]
    if any(b != bands[0] for b in bands):
        return measures
    unique = np.stack([np.asarray(p["r_unique"], dtype=np.float64) for p in partitions])
    invalid = np.stack([~np.asarray(r.valid_targets, bool) for r in results])
    for index, band in enumerate(bands[0]):
        measures[f"unique_r:{band}"] = np.where(invalid, np.nan, unique[:, index])
    return measures


def _subject_labels(results: list) -> list[str]:
    return [str(r.provenance.get("subject", f"sub-{i + 1:02d}")) for i, r in enumerate(results)]


def n_subjects(study: Any) -> int:
    """Subjects of the study's encodings (those of the first model and space)."""
    slug = study.models[0][0]
    return len(study.encodings(slug, study.spaces[0]))


def run_group_stage(study: Any) -> None:
    """Compute (or load from the cache) the group stage, or skip it with a note.

    Skipped when ``group.n_perm`` is 0 or the study has fewer than 2 subjects.
    """
    options = study.config["group"]
    if options["n_perm"] == 0:
        study.skip("group")
        return
    count = n_subjects(study)
    if count < 2:
        study.notes.append(f"group maps skipped: they need at least 2 subjects, the study has "
                           f"{count}")
        study.skip("group")
        return
    floor = smallest_attainable_p(count, options["n_perm"], options["tail"])
    if floor >= options["alpha"]:
        study.notes.append(f"group maps: with {count} subjects a sign-flip test cannot reach "
                           f"p_FWE < {options['alpha']} (smallest p {floor:.3g})")
    study.stage("group", lambda folder: build_group(study, folder))


def build_group(study: Any, folder: Path) -> None:
    """Write every model/space's group maps into the stage folder."""
    options = study.config["group"]
    for slug, name in study.models:
        for space in study.spaces:
            results = study.encodings(slug, space)
            masker = study.brain(slug, space).masker
            for measure, maps in subject_measures(results).items():
                group = group_map(
                    maps, masker, method=options["method"], n_perm=options["n_perm"],
                    tail=options["tail"], fisher_z=measure == "r",
                    cluster_p=options["cluster_p"], nan_policy="omit",
                    subjects=_subject_labels(results), measure=measure,
                    random_state=study.config["study"]["seed"],
                    provenance={"model": name, "space": space})
                group.save(folder / slug / space / group_desc(measure))


def group_maps(study: Any, slug: str, space: str) -> dict[str, GroupMap]:
    """The cached group maps of one model/space, measure -> GroupMap (empty when skipped)."""
    if not study.cache.is_complete("group", study.config):
        return {}
    root = study.cache.path("group", study.config) / slug / space
    maps = [GroupMap.load(path) for path in sorted(root.iterdir()) if path.is_dir()]
    return {group.measure: group for group in sorted(maps, key=lambda g: g.measure != "r")}


def export_group_maps(study: Any, slug: str, space: str, masker: Any, maps_dir: Path,
                      entities: dict, sidecar: dict) -> dict[str, str]:
    """Write a model/space's group maps into ``maps_dir``.

    Returns
    -------
    dict name -> path
        ``"<desc>_<stat>"`` (e.g. ``"group_t"``, ``"group_pfwe"``,
        ``"groupuniqueatoms_mean"``) -> the written file.
    """
    written = {}
    for measure, group in group_maps(study, slug, space).items():
        paths = save_group_map(group, masker, maps_dir, entities, sidecar)
        written.update({f"{group_desc(measure)}_{stat}": str(path)
                        for stat, path in paths.items()})
    return written


def group_summary(study: Any) -> dict[str, dict]:
    """``"<model>/<space>"`` -> measure -> method, permutations, subjects and the number of
    targets with p_FWE below ``group.alpha`` (empty when the stage was skipped)."""
    alpha = study.config["group"]["alpha"]
    summary: dict[str, dict] = {}
    for slug, _ in study.models:
        for space in study.spaces:
            for measure, group in group_maps(study, slug, space).items():
                summary.setdefault(f"{slug}/{space}", {})[measure] = {
                    "method": group.method, "n_perm": group.n_perm, "tail": group.tail,
                    "n_subjects": group.n_subjects, "n_tested": int(group.tested.sum()),
                    "alpha": alpha, "n_significant": int(group.significant(alpha).sum()),
                    "min_p_fwe": float(np.nanmin(group.p_fwe))}
    return summary
