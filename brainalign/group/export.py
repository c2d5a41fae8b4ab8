"""A GroupMap as brain files: t, FWE-corrected p and group mean maps with JSON sidecars.

Written through :func:`brainalign.export.save_map` (NIfTI for volumes, one GIfTI per
hemisphere for surfaces, TSV for ROI tables), one file (set) per statistic, with
BIDS-derivative-like names::

    model-X_space-fsaverage5_hemi-L_desc-group_stat-t_map.func.gii
    model-X_space-fsaverage5_hemi-L_desc-group_stat-pfwe_map.func.gii
    model-X_space-roi_desc-groupuniqueatoms_stat-mean_map.tsv

Untested targets hold NaN. Each sidecar carries the test (method, permutations, tail,
subjects, parameters) and what the statistic is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .inputs import resolve_masker
from .result import GroupMap

#: File label (``stat-``) -> GroupMap attribute.
GROUP_STATS = {"t": "t", "pfwe": "p_fwe", "mean": "mean"}


def group_desc(measure: str) -> str:
    """The ``desc-`` label of a measure: ``"r"`` -> ``group``, ``"unique_r:atoms"`` ->
    ``groupuniqueatoms``, anything else -> ``group`` + its letters and digits."""
    if measure == "r":
        return "group"
    label = "unique" + measure[len("unique_r:"):] if measure.startswith("unique_r:") else measure
    return "group" + "".join(c for c in label if c.isalnum())


def _describe(group: GroupMap, stat: str) -> str:
    of = f"Fisher z of {group.measure}" if group.fisher_z else group.measure
    if stat == "t":
        return f"one-sample t across {group.n_subjects} subjects of {of}"
    if stat == "pfwe":
        n_draws = group.parameters.get("n_draws", group.n_perm)
        every = " (every possible flip)" if group.parameters.get("exact") else ""
        return (f"family-wise error corrected p ({group.method}, {n_draws} sign flips{every}, "
                f"tail {group.tail}) over {group.parameters.get('n_tested')} tested targets")
    back = " (tanh of the mean Fisher z)" if group.fisher_z else ""
    return f"group mean of {group.measure}{back}"


def save_group_map(group: GroupMap, masker_or_space, out_dir: str | Path,
                   entities: Mapping[str, Any] | None = None,
                   sidecar: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the t, FWE-corrected p and group-mean maps of a group map.

    Parameters
    ----------
    group : GroupMap
    masker_or_space : fitted masker, BrainData or space name
        The masker the subject maps were on (see :func:`brainalign.group.group_map`).
    out_dir : path
    entities : mapping, optional
        File-name entities (``model``, ...); ``desc`` defaults to :func:`group_desc` of the
        measure, ``stat`` is set per map.
    sidecar : mapping, optional
        Extra description; the test's settings are added.

    Returns
    -------
    dict stat label -> Path
        ``"t"``, ``"pfwe"``, ``"mean"``; the left-hemisphere file for surfaces (see
        :func:`brainalign.export.save_map`).
    """
    from brainalign.export import save_map
    from brainalign.export.maps import P_VALUE_STATS

    masker = resolve_masker(masker_or_space, group.n_targets)
    entities = {"desc": group_desc(group.measure), **dict(entities or {})}
    description = {**dict(sidecar or {}), "group": {
        "method": group.method, "n_perm": group.n_perm, "tail": group.tail,
        "subjects": group.subjects, "n_subjects": group.n_subjects, "measure": group.measure,
        "fisher_z": group.fisher_z, "parameters": group.parameters,
        "provenance": group.provenance}}
    return {stat: save_map(np.asarray(getattr(group, name), dtype=np.float32), masker, out_dir,
                           {**entities, "stat": stat},
                           {**description, "statistic": stat,
                            "description": _describe(group, stat)},
                           outside_mask_value=np.nan if stat in P_VALUE_STATS else 0.0)
            for stat, name in GROUP_STATS.items()}
