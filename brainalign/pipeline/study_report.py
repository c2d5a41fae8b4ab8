"""The study's report.html, assembled from the cached stage outputs of :mod:`.study`.

Sections: stimulus and model; atom time courses; pattern stability (seed and split-half
tables per model, stability against K when ``patterns.stability_k`` is set); subgroup x
layer heat map (with each
subgroup's network); encoding score maps (nilearn static images on fsaverage5 and in MNI
space, tables for ROIs; optional interactive ``view_surf``); group maps with family-wise
error control (t where p_FWE < ``group.alpha``, one figure per map; bars for ROIs); the
pattern x network matrix with significance marks; recovery against the planted truth; the
study-B lesion check; output files; provenance. The page is built with :class:`brainalign.report.html.Report`
and the figures with :mod:`brainalign.report.figures`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.provenance import provenance_block
from brainalign.report import figures
from brainalign.report.html import Report


def _stimulus_section(report: Report, study: Any, summary: Any) -> None:
    sizes = summary.sizes
    config = study.config
    section = report.section("Stimulus and model")
    simulated = ({"planted patterns": sizes["n_planted"], "SNR": float(sizes["snr"])}
                 if "n_planted" in sizes else {})        # simulated fMRI only
    section.key_values({
        "models": ", ".join(sizes["models"]), "sites": ", ".join(config["model"]["sites"]),
        "layers": str(config["model"]["layers"]), "neurons recorded": sizes["n_neurons"],
        "stories": ", ".join(sizes["stories"]), "words": sizes["n_words"],
        "TR (s)": float(config["stories"]["tr_s"]), "TRs (all runs)": sizes["n_tr"],
        "time course method": config["timecourse"]["method"],
        "atoms (K)": sizes["n_atoms"], "pattern method": config["patterns"]["method"],
        "fMRI": config["fmri"]["source"],
        "spaces (targets)": ", ".join(f"{k} ({v:,})" for k, v in sizes["spaces"].items()),
        "subjects": sizes["n_subjects"], **simulated, "FIR delays (TR)": "; ".join(
            f"{band} {delays if delays else 'none (HRF-convolved)'}"
            for band, delays in sizes["delays_tr"].items()),
        "encoding permutations": sizes["encoding_permutations"],
        "spatial null maps": sizes["null_maps"]})
    for note in summary.notes:
        section.text(note, note=True)


#: What the atoms' values are, for the time-course figure's axis and caption.
ATOM_UNITS = "a.u.: time courses of neurons centred and scaled to unit norm"


def _atoms_section(report: Report, study: Any, slug: str) -> Any:
    import itertools

    patterns = study.patterns(slug)
    atoms = np.asarray(patterns.atoms)
    # run label of each fitted TR, from the time courses the atoms were fitted on
    source = study.timecourses(slug) if study.corpus is None else study.corpus_timecourses(slug)
    runs = np.asarray(source.runs)
    if patterns.fit_rows is not None:
        runs = runs[np.asarray(patterns.fit_rows)]
    run_lengths = ([len(list(group)) for _, group in itertools.groupby(runs)]
                   if len(runs) == len(atoms) else None)
    boundaries = (f"runs one after another, dashed lines where one run ends and the next "
                  f"begins ({len(run_lengths)} runs)" if run_lengths and len(run_lengths) > 1
                  else "one run")
    report.section("Atom time courses").figure(
        figures.atom_timecourses(atoms, float(study.config["stories"]["tr_s"]), run_lengths,
                                 units="a.u."),
        f"{slug}: all {atoms.shape[1]} atoms ({patterns.method}) on the TR grid of the TRs they "
        f"were fitted on, {_fitted_on(study, patterns)}; {boundaries}. Units: {ATOM_UNITS}; "
        "each trace is scaled to its own peak |value|, given beside its name.")
    return patterns


#: What each number of the pattern-stability tables is (brainalign.patterns.stability).
STABILITY_METRICS = (
    "Atoms are paired one-to-one by Hungarian matching on the |Pearson r| of their neuron "
    "loadings. Matched atom r: mean |Pearson r| of the matched atoms' time courses on common "
    "TRs (seed: the fitted atoms, which share their TRs; split half: both halves' atoms "
    "projected onto all the training TRs). Matched loading r: mean |Pearson r| of the matched "
    "atoms' neuron loadings. Subgroup ARI: adjusted Rand index of the two partitions of the "
    "neurons into subgroups (0: chance, 1: identical). Subgroup IoU: mean intersection over "
    "union of the neuron sets of matched subgroups.")


def _stability_value(values: dict, key: str) -> Any:
    value = values.get(key)
    return "n/a" if value is None else float(value)


def _fitted_on(study: Any, patterns: Any) -> str:
    """Where the atoms were fitted, for captions: the stories or the reference corpus."""
    if study.corpus is not None:
        return (f"the reference corpus {study.corpus} (its first "
                f"{study.config['patterns']['corpus_words']:,} words), never the stories")
    stories = list(map(str, patterns.fit_stories))
    noun = "story" if len(stories) == 1 else "stories"
    return f"the cleaned time courses of every run of the {noun} " + ", ".join(stories)


def _stability_section(report: Report, study: Any, summary: Any) -> None:
    curves = {slug: study.stability_curve_path(slug) for slug, _ in study.models}
    if not summary.patterns_stability and not any(p.exists() for p in curves.values()):
        return
    section = report.section("Pattern stability")
    section.text("How much of each model's decomposition comes back in another fit: the "
                 "atoms are refitted with another seed on the same TRs (seed stability) and "
                 "fitted separately on two halves of the TRs (split-half stability), and the "
                 "fits are compared. " + STABILITY_METRICS)
    for slug, _ in study.models:
        patterns = study.patterns(slug)
        where = _fitted_on(study, patterns)
        entry = summary.patterns_stability.get(slug, {})
        rows = []
        if "seed" in entry:
            seed = entry["seed"]
            rows.append(["seed", _stability_value(seed, "atom_r_mean"),
                         _stability_value(seed, "loading_r_mean"),
                         _stability_value(seed, "subgroup_ari_mean"),
                         _stability_value(seed, "subgroup_iou_mean"),
                         f"seed {seed.get('reference_seed')} vs "
                         f"{', '.join(map(str, seed.get('seeds') or []))}"])
        if "split_half" in entry:
            half = entry["split_half"]
            rows.append(["split half", _stability_value(half, "atom_r_mean"),
                         _stability_value(half, "loading_r_mean"),
                         _stability_value(half, "subgroup_ari"),
                         _stability_value(half, "subgroup_iou_mean"),
                         f"{half.get('scheme')} ({half.get('n_tr')} TRs)"])
        if rows:
            section.table(["test", "matched atom r", "matched loading r", "subgroup ARI",
                           "subgroup IoU", "compared"], rows,
                          caption=f"{slug}: stability of the {patterns.n_atoms} atoms fitted on "
                                  f"{where}. Matched atom r and loading r: Hungarian-matched "
                                  "|Pearson r| of the atoms' time courses on common TRs and of "
                                  "their neuron loadings; subgroup ARI: adjusted Rand index of "
                                  "the neurons' subgroups; subgroup IoU: intersection over "
                                  "union of matched subgroups")
        else:
            section.text(f"{slug}: patterns.stability = false, no seed or split-half "
                         "stability was computed.", note=True)
        subspace = entry.get("split_half", {}).get("subspace_canonical_r_mean")
        if subspace is not None:
            section.text(f"{slug}: the two halves' leading {patterns.n_atoms}-dimensional "
                         "principal subspaces over neurons have a mean canonical correlation "
                         f"of {subspace:.2f} (1: the halves share the same "
                         f"{patterns.n_atoms}-dimensional structure). Orthonormal loadings "
                         "chosen inside those subspaces cannot match better than this on "
                         "average (for sparse dictionary codes, which lie near the subspaces, "
                         "it is a guide rather than a bound): a split-half loading r far below "
                         "it comes mostly from the fit, not from the data.")
        if "consensus" in entry:
            consensus = entry["consensus"]
            section.text(f"{slug}: consensus atoms of {consensus['n_fits']} fits (seeds "
                         "matched, sign-aligned and averaged); mean reliability (|r| of each "
                         "fit's loadings with the consensus) "
                         f"{consensus['reliability_mean']:.2f}, lowest "
                         f"{consensus['reliability_min']:.2f}.")
        if curves[slug].exists():
            _stability_curve_figure(section, slug, json.loads(curves[slug].read_text()),
                                    patterns.n_atoms, where)


def _stability_curve_figure(section: Any, slug: str, curve: dict, n_atoms: int,
                            where: str) -> None:
    candidates = curve["candidates"]
    halves = [d.get("split_half", {}).get("scheme") for d in curve["details"]]
    scheme = next((h for h in halves if h), "two halves of the TRs")
    left_out = sorted(set(curve.get("requested", candidates)) - set(candidates))
    series = {"split-half loading r": curve["split_half_loading_r"],
              "split-half atom r": curve["split_half_atom_r"],
              "seed atom r": curve["seed_atom_r"],
              "split-half subgroup ARI": curve["split_half_subgroup_ari"]}
    caption = (f"{slug}: stability of the atoms against the number of atoms K "
               f"({', '.join(map(str, candidates))}), each K fitted on {where}. Split-half "
               f"loading r and atom r: mean Hungarian-matched |Pearson r| of the neuron "
               f"loadings and of the atom time courses (on the training TRs) of fits to "
               f"the two halves ({scheme}); seed atom r: the same for the fitted atoms of a "
               f"refit with seed {', '.join(map(str, curve['params'].get('seeds', [])))} on "
               f"the same TRs; split-half subgroup ARI: adjusted Rand index of the two halves' "
               f"neuron subgroups.")
    chosen = n_atoms if n_atoms in candidates else None
    if chosen is not None:
        caption += f" Dotted line: the study's K = {n_atoms}."
    if left_out:
        caption += f" K = {left_out} left out: more atoms than a split half has TRs."
    section.figure(figures.stability_vs_k(candidates, series, chosen), caption)


def _subgroup_section(report: Report, study: Any, slug: str, patterns: Any) -> None:
    space = study.spaces[0]
    mapping = study.mapping(slug, space)
    subgroup = np.asarray(patterns.subgroup)
    layer = np.asarray(patterns.neurons.layer)
    layers = np.unique(layer)
    n_atoms = np.asarray(patterns.atoms).shape[1]
    counts = np.zeros((n_atoms, len(layers)))
    for row in range(n_atoms):
        counts[row] = [np.sum((subgroup == row) & (layer == value)) for value in layers]
    share = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    rows = [f"atom{k:02d} ({mapping.assigned[k]})" for k in range(n_atoms)]
    section = report.section("Subgroups x layers")
    section.figure(figures.heatmap(share, rows, [f"L{int(v)}" for v in layers],
                                   "Share of each layer's neurons in each subgroup",
                                   "share of layer"),
                   f"{slug}: neuron subgroups (rows, with the network their atom maps to in "
                   f"{space}) by layer")
    composition = study.networks_file(slug, space, "layer_networks.tsv")
    if composition.exists():
        import pandas as pd

        table = pd.read_csv(composition, sep="\t", index_col=0)
        section.table(["layer", *table.columns], [[int(i), *map(int, r)] for i, r in
                                                  zip(table.index, table.values)],
                      caption=f"Neurons per layer inheriting each network ({space})")


def _encoding_section(report: Report, study: Any, slug: str, interactive: bool) -> None:
    section = report.section("Encoding score maps")
    encoding = study.config["encoding"]
    section.text("Held-out Pearson r between each target's measured time course and the "
                 "encoding model's prediction (FIR delays, himalaya ridge, bands: "
                 f"{', '.join(encoding['bands'])}), cross-validated over runs or stories, mean "
                 "over subjects. r is unitless, between -1 and 1.")
    for space in study.spaces:
        results = study.encodings(slug, space)
        r = np.nanmean([np.where(x.valid_targets, x.r, np.nan) for x in results], axis=0)
        # over the targets with an r (a target no subject could score is not an r of 0)
        scored = r[np.isfinite(r)]
        section.key_values({f"{space}: max r": float(scored.max()) if scored.size else None,
                            f"{space}: 99th percentile r":
                                float(np.percentile(scored, 99)) if scored.size else None,
                            f"{space}: targets with an r": f"{scored.size} of {len(r)}"})
        masker = study.brain(slug, space).masker
        drawn = _brain_figure(section, masker, np.nan_to_num(r), f"{slug} {space}: held-out r",
                              "held-out Pearson r", f"{space}: held-out r, mean over "
                              f"{len(results)} subject(s)")
        if drawn and interactive and _is_fsaverage5(masker, len(r)):
            _interactive_view(section, np.nan_to_num(r))
        if not drawn:
            names = masker.target_names_ or [f"target{i:03d}" for i in range(len(r))]
            top = [i for i in np.argsort(-np.nan_to_num(r, nan=-np.inf))[:10]
                   if np.isfinite(r[i])]
            section.table(["target", "r"], [[names[i], float(r[i])] for i in top],
                          caption=f"{space}: the ten best-predicted targets")
        if encoding["n_permutations"] > 0:
            q = encoding["fdr_q"]
            share = np.mean([x.significant(q) for x in results], axis=0).astype(float)
            _brain_figure(section, masker, share, f"{slug} {space}: FDR-significant r",
                          "share of subjects", f"{space}: significance mask, the share of "
                          f"subjects whose held-out r is significant ({encoding['null']} permutation "
                          f"null of r, {encoding['n_permutations']} permutations, "
                          f"Benjamini-Hochberg FDR "
                          f"q < {q} over the targets); uncoloured: significant in no subject",
                          positive=True)


def _is_fsaverage5(masker: Any, n_targets: int) -> bool:
    return (type(masker).__name__ == "SurfaceMasker" and masker.space_ == "fsaverage5"
            and n_targets == 20484)


def _brain_figure(section: Any, masker: Any, values: np.ndarray, title: str, units: str,
                  caption: str, positive: bool = False,
                  label_names: list[str] | None = None) -> bool:
    """One map of per-target ``values`` in the masker's space, with views, underlay and a
    colour bar; False (nothing drawn) for spaces without a brain figure (ROI tables, other
    meshes). ``positive``: a map of shares or counts (a sequential colour scale, zeros left
    uncoloured). ``label_names``: ``values`` are labels 0 (none) or 1..len(label_names),
    drawn in one colour per name."""
    kind = type(masker).__name__
    if _is_fsaverage5(masker, len(values)):
        figure = (figures.surface_labels(values, label_names, title, units) if label_names
                  else figures.surface_map(values, title, threshold=1e-6 if positive else None,
                                           units=units, positive=positive))
        section.figure(figure, f"{caption}. fsaverage5 inflated mesh (nilearn), lateral and "
                               "medial views of both hemispheres, sulcal depth beneath.")
        return True
    if kind == "VolumeMasker":
        image = masker.inverse_transform(values)
        figure = (figures.volume_labels(image, label_names, title, units) if label_names
                  else figures.volume_map(image, title, units=units, positive=positive))
        section.figure(figure, f"{caption}. Orthogonal slices over {figures.MNI_TEMPLATE_NAME}; "
                               "targets outside the mask (and exact zeros) are not coloured.")
        return True
    return False


#: What the per-atom maps hold (Study.pattern_maps), for captions and colour bars.
ATOM_MAP_UNITS = "coefficient (per SD of the atom)"


def _atom_maps_section(report: Report, study: Any, slug: str) -> None:
    """Each atom's encoding map with its assigned network, and the assignment on the brain."""
    section = report.section("Atom maps and network assignment")
    section.text("Each atom's map is its encoding coefficients summed over the FIR delays, "
                 "mean over subjects (the exported desc-patterns maps): how strongly, and "
                 "with which sign, a target's time course follows the atom. The atom's "
                 "network (after its name; 'none' when no network passed) comes from the "
                 "pattern x network tests below.")
    for space in study.spaces:
        maps = np.asarray(study.pattern_maps(slug, space), dtype=float)
        mapping = study.mapping(slug, space)
        data = study.brain(slug, space)
        masker = data.masker
        titles = [f"atom{k:02d} \u2192 {network}" for k, network in enumerate(mapping.assigned)]
        caption = (f"{space}: the {len(maps)} atoms' maps ({ATOM_MAP_UNITS}; one colour scale "
                   "for all)")
        if _is_fsaverage5(masker, maps.shape[1]):
            section.figure(figures.surface_maps_lateral(maps, titles, units=ATOM_MAP_UNITS),
                           caption + ", lateral views of the left and right "
                           "hemispheres of fsaverage5")
        elif type(masker).__name__ == "VolumeMasker":
            section.figure(figures.glass_brains([masker.inverse_transform(m) for m in maps],
                                                titles, units=ATOM_MAP_UNITS),
                           caption + ", glass-brain projections (sagittal, coronal, axial)")
        else:
            names = masker.target_names_ or [f"target{i:03d}" for i in range(maps.shape[1])]
            section.figure(figures.heatmap(maps, titles, names, f"{space}: atom maps",
                                           ATOM_MAP_UNITS, cmap=figures.SIGNED_CMAP),
                           caption + ", one column per ROI")
        labels, names = _assigned_network_labels(study.mapping_atlas(space, data).atlas,
                                                 mapping)
        if names:
            _brain_figure(section, masker, labels, f"{slug} {space}: networks with an atom",
                          "network (atoms assigned)",
                          f"{space}: the network assignment on the brain; the targets of each "
                          f"network (atlas {mapping.atlas.get('name', '')}) that was assigned "
                          "at least one atom, one colour per network, with its number of atoms; "
                          "networks without an atom are not coloured", label_names=names)


def _assigned_network_labels(atlas: Any, mapping: Any) -> tuple[np.ndarray, list[str]]:
    """Per target, 1..n for the n networks that were assigned an atom (in atlas order) and 0
    elsewhere, with each such network's name and atom count (e.g. "Somatomotor (2 atoms)");
    a probabilistic atlas gives each target the network of largest weight. No labels
    (empty names) when the atlas holds other networks than the mapping."""
    if list(atlas.labels) != list(mapping.networks):
        return np.zeros(0, dtype=int), []
    if atlas.probabilistic:
        network = np.where(atlas.data.max(axis=0) > 0, atlas.data.argmax(axis=0), -1)
    else:
        network = np.asarray(atlas.data, dtype=int) - 1
    per_network = np.bincount(mapping.assigned_index[mapping.assigned_index >= 0],
                              minlength=len(mapping.networks))
    assigned = np.flatnonzero(per_network)
    label_of_network = np.zeros(len(mapping.networks) + 1, dtype=int)  # index -1: no network
    label_of_network[assigned] = np.arange(1, len(assigned) + 1)
    names = [f"{mapping.networks[i]} ({per_network[i]} atom{'s' if per_network[i] > 1 else ''})"
             for i in assigned]
    return label_of_network[network], names


def _interactive_view(section: Any, r: np.ndarray) -> None:
    """nilearn's interactive ``view_surf`` of the left hemisphere (needs plotly)."""
    from nilearn import datasets, plotting

    mesh = datasets.load_fsaverage("fsaverage5")
    try:
        view = plotting.view_surf(mesh["inflated"].parts["left"], r[:len(r) // 2],
                                  title="left hemisphere r")
    except ImportError as err:
        section.text(f"No interactive view: {err}", note=True)
        return
    section.raw_html(view.get_iframe(width=900, height=500))


def _group_section(report: Report, study: Any, slug: str) -> None:
    from brainalign.pipeline.group_stage import group_maps

    alpha = study.config["group"]["alpha"]
    section = report.section("Group maps")
    section.text("Each subject's map is tested against zero across subjects by sign flipping, "
                 "with the family-wise error rate controlled over the space's targets "
                 "(brainalign.group.group_map): cluster mass or TFCE on the fsaverage mesh "
                 "(MNE), nilearn's non-parametric inference in volumes, max-t over ROIs. "
                 "Held-out r is Fisher z transformed; a band's unique r (held-out r of all "
                 "bands minus held-out r without the band: a difference of two correlations, "
                 "not itself one) is tested as is. The "
                 f"figures show the group t where p_FWE < {alpha} (ROIs: every ROI's t, "
                 "significant ones starred).")
    rows = []
    for space in study.spaces:
        groups = group_maps(study, slug, space)
        if not groups:
            continue
        masker = study.brain(slug, space).masker
        for measure, group in groups.items():
            significant = group.significant(alpha)
            rows.append([space, measure, group.method, group.n_perm, group.n_subjects,
                         int(group.tested.sum()), int(significant.sum()),
                         float(np.nanmax(group.t)), float(np.nanmin(group.p_fwe))])
            title = f"{slug} {space}: group t of {measure}"
            caption = (f"{space}, {measure}: {int(significant.sum())} of "
                       f"{int(group.tested.sum())} tested targets at p_FWE < {alpha} "
                       f"({group.method}, {group.n_perm} sign flips, {group.n_subjects} "
                       "subjects)")
            if not significant.any():  # an empty map would show only the underlay
                section.text(f"{caption}: no map to show.")
                continue
            figure = _group_figure(group.t, significant, masker, title)
            if figure is not None:
                section.figure(figure, caption)
    section.table(["space", "measure", "method", "permutations", "subjects", "tested targets",
                   f"p_FWE < {alpha}", "max t", "min p_FWE"], rows)


def _group_figure(t: np.ndarray, significant: np.ndarray, masker: Any, title: str) -> Any:
    """The group t drawn in the masker's space: only where significant on surfaces and in
    volumes, every ROI's bar (significant ones marked) in ROI tables; None for surfaces
    other than fsaverage5."""
    kind = type(masker).__name__
    values = np.where(significant, t, 0.0)
    if kind == "SurfaceMasker":
        if masker.space_ != "fsaverage5" or masker.hemispheres_ != ["L", "R"]:
            return None
        images = masker.inverse_transform(values)
        full = np.concatenate([images[h].darrays[0].data for h in masker.hemispheres_])
        return figures.surface_map(full, title, threshold=1e-6, units="group t")
    if kind == "VolumeMasker":
        return figures.volume_map(masker.inverse_transform(values), title, units="group t")
    names = masker.target_names_ or [f"target{i:03d}" for i in range(len(t))]
    return figures.roi_bars(t, names, title, "group t", marks=significant)


def _spatial_null(mapping) -> str:
    """The spatial null in words: the shift test's own description where there is one."""
    spatial = (mapping.provenance or {}).get("spatial")
    if mapping.null == "shift" and spatial:
        return f"against {spatial['null']}"
    return f"{mapping.null} null"


def _mapping_section(report: Report, study: Any, slug: str) -> None:
    section = report.section("Patterns x networks")
    for space in study.spaces:
        mapping = study.mapping(slug, space)
        statistic = mapping.statistic
        values = mapping.statistics[statistic]
        marks = mapping.passes["spatial"]
        section.figure(figures.heatmap(values, mapping.patterns, mapping.networks,
                                       f"{space}: {statistic} (* spatial test passes, FDR per pattern "
                                       f"< {mapping.alpha})",
                                       statistic, marks=marks, cmap=figures.SIGNED_CMAP),
                       f"{space}: pattern x network {statistic}, {_spatial_null(mapping)} "
                       f"with {mapping.n_perm} draws")
        if "unique_r" in mapping.statistics:
            section.figure(figures.heatmap(
                mapping.statistics["unique_r"], mapping.patterns, mapping.networks,
                f"{space}: unique held-out r (* temporal test passes, FDR per pattern "
                f"< {mapping.alpha})",
                "unique r", marks=mapping.passes["temporal"], cmap=figures.SIGNED_CMAP),
                f"{space}: what each pattern adds to the held-out prediction of each "
                f"network's mean signal: unique r = held-out r of all patterns minus held-out "
                f"r without this pattern, a difference of two correlations (between -2 and 2, "
                f"not itself a correlation), tested against "
                f"{mapping.temporal.get('n_shifts')} circular "
                f"shifts of the pattern; a pattern is assigned a network only where both this "
                f"and the {statistic} test pass")
        frame = mapping.assignments()
        section.table(list(frame.columns), [[v if not isinstance(v, np.floating) else float(v)
                                             for v in row] for row in frame.values],
                      caption=f"{space}: each pattern's network")


def _recovery_section(report: Report, study: Any, summary: Any) -> None:
    section = report.section("Recovery of the planted truth")
    section.text(f"The simulation planted {study.config['fmri']['n_planted']} of the study's "
                 "own atoms, each in one network of the space's planting atlas (the planted "
                 "networks are listed in summary.json); each planted pattern is paired with "
                 "its best-correlated atom (Hungarian matching) and counted as recovered when "
                 "that atom maps to the planted network.")
    rows = []
    for key, value in summary.recovery.items():
        if isinstance(value, dict):
            rows.append([key, float(value["accuracy"]), float(value["auc"]),
                         float(value["atom_correlation_mean"]),
                         float(value["false_positive_share"]), float(value["best_r"])])
    section.table(["model/space", "assignment accuracy", "significance AUC",
                   "matched atom |r|", "false-positive share", "best r"], rows)
    for key, value in summary.recovery.items():
        if isinstance(value, dict):
            section.table(["planted network", "assigned to its atom"],
                          list(zip(value["planted_network"], value["assigned_network"])),
                          caption=f"{key}: planted vs recovered")


def _study_b_section(report: Report, summary: Any) -> None:
    result = summary.study_b
    section = report.section("Study B: lesion check")
    section.text(result.get("verdict", ""))
    if "baseline" in result:
        rows = [["baseline", result["baseline"]["perplexity"], result["baseline"]["accuracy"], ""],
                ["FN union lesioned", result["lesion"]["perplexity"],
                 result["lesion"]["accuracy"], ""]]
        rows += [[f"layer-matched control {i}", c["perplexity"], c["accuracy"],
                  c.get("from_other_layers", "n/a")] for i, c in enumerate(result["controls"])]
        section.table(["condition", "perplexity", "top-1 accuracy",
                       "control neurons from other layers"], rows,
                      caption=f"{result['union_size']} of {result['n_neurons']} neurons in "
                              f"{len(result['network_sizes'])} functional networks; each "
                              "control lesions as many random non-network neurons per (site, "
                              "layer) as the networks hold")
        borrowed = result.get("controls_from_other_layers", 0)
        if borrowed:
            section.text(f"Layer matching was incomplete: where a layer held fewer non-network "
                         f"neurons than the networks take from it, the control took all of "
                         f"them and drew the rest from the nearest layers (up to {borrowed} "
                         "neurons per control). Those controls are matched in count, not "
                         "exactly in layer.", note=True)


def write_report(study: Any, summary: Any, path: str | Path) -> Path:
    """Write the study's self-contained HTML report to ``path``."""
    slug = study.models[0][0]
    report = Report(f"brainalign study: {study.config['study']['name']}")
    _stimulus_section(report, study, summary)
    patterns = _atoms_section(report, study, slug)
    _stability_section(report, study, summary)
    _subgroup_section(report, study, slug, patterns)
    _encoding_section(report, study, slug, study.config["outputs"]["interactive"])
    _atom_maps_section(report, study, slug)
    if summary.group:
        _group_section(report, study, slug)
    _mapping_section(report, study, slug)
    if summary.recovery:
        _recovery_section(report, study, summary)
    if summary.study_b:
        _study_b_section(report, summary)
    outputs = report.section("Output files")
    outputs.table(["output", "path"], [[f"{key} {name}", path] for key, files in
                                       summary.maps.items() for name, path in files.items()]
                  + [[name, path] for name, path in summary.tables.items()])
    report.section("Provenance").key_values(
        {run.stage: f"{run.status}, {run.wall_s:.1f} s" for run in summary.stages}
    ).provenance(provenance_block(stage="report", config=study.config,
                                  config_hash=summary.config_hash))
    return report.write(path)
