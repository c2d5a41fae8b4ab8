"""Recovery scoring: how much of a simulation's planted truth a brainalign study gets back.

The scores compare the study's outputs with the :class:`~brainalign.simulate.GroundTruth`:

- atoms: planted vs estimated patterns, paired one-to-one by the Hungarian algorithm
  (scipy's ``linear_sum_assignment``) on absolute Pearson correlation;
- assignment accuracy: the share of network-driving planted patterns whose matched
  estimated pattern is mapped to the planted network;
- ROC AUC (scikit-learn) of each subject's target-wise significance map against the
  targets that truly carry signal;
- false-positive share: the share of estimated patterns that answer no network but are
  declared mapped to one (on a null simulation: of all patterns).

:func:`score_recovery` runs the study on a simulation (patterns -> encoding -> network
mapping, using :mod:`brainalign.patterns`, :mod:`brainalign.encoding` and
:mod:`brainalign.networks`) and returns every score in a :class:`RecoveryScores`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from brainalign.timecourse.delays import DEFAULT_DELAYS

logger = logging.getLogger(__name__)

NONE_NETWORK = "none"


@dataclass
class AtomMatch:
    """One-to-one pairing of planted and estimated patterns.

    Attributes
    ----------
    estimated_index : ndarray of int, shape (n_planted,)
        Estimated pattern paired with each planted pattern (-1 when there are fewer
        estimated patterns than planted ones and this one was left unpaired).
    correlation : ndarray, shape (n_planted,)
        Absolute Pearson correlation of each pair (0 when unpaired).
    """

    estimated_index: np.ndarray
    correlation: np.ndarray


def match_atoms(planted: np.ndarray, estimated: np.ndarray) -> AtomMatch:
    """Pair planted and estimated patterns to maximise the summed absolute correlation.

    Parameters
    ----------
    planted : ndarray, shape (n_tr, n_planted)
    estimated : ndarray, shape (n_tr, n_estimated)
        Same TR grid. Signs are ignored (decompositions fix no sign).

    Returns
    -------
    AtomMatch
    """
    planted = np.asarray(planted, dtype=np.float64)
    estimated = np.asarray(estimated, dtype=np.float64)
    if planted.ndim != 2 or estimated.ndim != 2 or planted.shape[0] != estimated.shape[0]:
        raise ValueError(f"planted and estimated atoms must be (n_tr, n_patterns) on the same TR "
                         f"grid, got {planted.shape} and {estimated.shape}")
    similarity = np.abs(column_correlation(planted, estimated))
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    estimated_index = np.full(planted.shape[1], -1, dtype=np.int64)
    correlation = np.zeros(planted.shape[1])
    estimated_index[rows] = cols
    correlation[rows] = similarity[rows, cols]
    return AtomMatch(estimated_index, correlation)


def column_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``a`` with every column of ``b`` (0 if constant)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    norm = np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))
    return np.divide(a.T @ b, norm, out=np.zeros_like(norm), where=norm > 0)


def assignment_accuracy(planted_network: Sequence[str], assigned_network: Sequence[str],
                        match: AtomMatch) -> float:
    """Share of planted patterns whose matched estimated pattern maps to the right network.

    Parameters
    ----------
    planted_network : sequence of str, length n_planted
        Network each planted pattern drives (``"none"`` if it drives none).
    assigned_network : sequence of str, length n_estimated
        Network the study assigned to each estimated pattern (``"none"`` if none).
    match : AtomMatch
        From :func:`match_atoms`; an unpaired planted pattern counts as assigned ``"none"``.
    """
    if len(planted_network) != len(match.estimated_index):
        raise ValueError(f"{len(planted_network)} planted networks for "
                         f"{len(match.estimated_index)} matched patterns")
    hits = []
    for planted, index in zip(planted_network, match.estimated_index):
        assigned = assigned_network[index] if index >= 0 else NONE_NETWORK
        hits.append(str(assigned).lower() == str(planted).lower())
    return float(np.mean(hits))


def significance_auc(p_values: np.ndarray | None, r: np.ndarray, responsive: np.ndarray) -> float:
    """ROC AUC of a target-wise significance map against the planted responsive targets.

    Targets are ranked by p-value (smaller = more significant), ties (e.g. at the
    permutation floor) broken by ``r``; without p-values by ``r`` alone. NaN entries
    (invalid targets) rank last.

    Parameters
    ----------
    p_values : ndarray, shape (n_targets,), or None
    r : ndarray, shape (n_targets,)
        Held-out correlation of each target.
    responsive : ndarray of bool, shape (n_targets,)
        True where signal was planted.

    Returns
    -------
    float
        NaN when all or none of the targets are responsive.
    """
    from sklearn.metrics import roc_auc_score

    responsive = np.asarray(responsive, dtype=bool)
    if responsive.all() or not responsive.any():
        return float("nan")
    r = np.nan_to_num(np.asarray(r, dtype=np.float64), nan=-np.inf)
    if p_values is None or np.all(np.isnan(p_values)):
        keys = (r,)
    else:
        keys = (r, -np.nan_to_num(np.asarray(p_values, dtype=np.float64), nan=np.inf))
    order = np.lexsort(keys)  # last key is primary: significance first, then r
    rank = np.empty(len(order))
    rank[order] = np.arange(len(order))
    return float(roc_auc_score(responsive, rank))


def false_positive_share(assigned_network: Sequence[str]) -> float:
    """Share of patterns declared mapped to some network (anything but ``"none"``)."""
    if len(assigned_network) == 0:
        raise ValueError("no patterns to score")
    return float(np.mean([str(name).lower() != NONE_NETWORK for name in assigned_network]))


@dataclass
class RecoveryScores:
    """Scores of one study run on one simulation.

    Attributes
    ----------
    snr : float
        The simulation's signal-to-noise variance ratio.
    atom_correlation : list of float
        Matched |r| between each planted pattern and its estimated partner.
    accuracy : float
        Network assignment accuracy over the planted patterns that drive a network (at
        SNR 0 this measures chance: the planted links carry no signal).
    auc : float
        Mean over subjects of the significance-map ROC AUC (NaN on null simulations).
    false_positive_share : float
        Share of the estimated patterns not matched to a network-driving planted pattern
        that are mapped to a network anyway (on a null simulation: of all patterns).
    best_r : float
        Median over subjects of the 99th percentile of held-out r across targets.
    max_r : float
        Median over subjects of the maximum held-out r.
    planted_network, assigned_network : list of str
        Per planted pattern: planted network and the network its match was assigned.
    estimated_assigned : list of str
        Network assigned to every estimated pattern.
    """

    snr: float
    atom_correlation: list[float]
    accuracy: float
    auc: float
    false_positive_share: float
    best_r: float
    max_r: float
    planted_network: list[str]
    assigned_network: list[str]
    estimated_assigned: list[str]
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_mapping(simulation: Any, estimated_atoms: np.ndarray, estimated_assigned: Sequence[str],
                  subject_r: Sequence[np.ndarray], subject_p: Sequence[np.ndarray | None]
                  ) -> RecoveryScores:
    """Score a study's outputs (given as arrays) against a simulation's ground truth.

    Parameters
    ----------
    simulation : Simulation
    estimated_atoms : ndarray, shape (n_tr, n_estimated)
    estimated_assigned : sequence of str, length n_estimated
        Network assigned to each estimated pattern (``"none"`` if none).
    subject_r : sequence of ndarray, shape (n_targets,)
        Held-out r of each subject's encoding model.
    subject_p : sequence of ndarray or None, shape (n_targets,)
        Permutation p-values of each subject's encoding model.
    """
    truth = simulation.truth
    estimated_assigned = [str(name) for name in estimated_assigned]
    match = match_atoms(truth.atoms, estimated_atoms)
    planted_network = truth.pattern_network()
    assigned = [estimated_assigned[i] if i >= 0 else NONE_NETWORK for i in match.estimated_index]
    driven = np.array([name != NONE_NETWORK for name in planted_network])
    accuracy = float("nan")
    if driven.any():
        accuracy = assignment_accuracy(np.asarray(planted_network)[driven], estimated_assigned,
                                       AtomMatch(match.estimated_index[driven],
                                                 match.correlation[driven]))
    if truth.snr > 0 and driven.any():
        matched = set(match.estimated_index[driven].tolist())
        spurious = [name for i, name in enumerate(estimated_assigned) if i not in matched]
    else:
        spurious = estimated_assigned
    aucs = [significance_auc(p, r, truth.responsive[subject])
            for subject, (r, p) in enumerate(zip(subject_r, subject_p))]
    valid_r = [np.asarray(r)[np.isfinite(r)] for r in subject_r]
    return RecoveryScores(
        snr=float(truth.snr),
        atom_correlation=match.correlation.tolist(),
        accuracy=accuracy,
        auc=float(np.nanmean(aucs)) if truth.snr > 0 and not np.all(np.isnan(aucs))
        else float("nan"),
        false_positive_share=false_positive_share(spurious) if spurious else 0.0,
        best_r=float(np.median([np.percentile(r, 99) for r in valid_r])),
        max_r=float(np.median([r.max() for r in valid_r])),
        planted_network=list(planted_network), assigned_network=assigned,
        estimated_assigned=estimated_assigned,
        details={"subject_auc": [float(a) for a in aucs],
                 "matched_estimated_index": match.estimated_index.tolist()},
    )


def planted_link_tests(mapping: Any, scores: RecoveryScores) -> list[dict[str, Any]]:
    """Each planted link's statistics in a mapping: the planted network, the estimated
    pattern matched to the planted one, and at that pair every statistic of the mapping
    with its p-value, p_fdr and p-value method (JSON-ready dicts)."""
    links = []
    for planted, estimated in zip(scores.planted_network,
                                  scores.details["matched_estimated_index"]):
        if planted == NONE_NETWORK or estimated < 0 or planted not in mapping.networks:
            continue
        network = mapping.networks.index(planted)
        link: dict[str, Any] = {"network": planted, "estimated_index": int(estimated),
                                "assigned": mapping.assigned[estimated]}
        for name, values in mapping.statistics.items():
            link[name] = float(values[estimated, network])
            link[f"p_{name}"] = float(mapping.p_values[name][estimated, network])
            link[f"p_fdr_{name}"] = float(mapping.p_fdr[name][estimated, network])
            link[f"p_method_{name}"] = str(mapping.p_method[name][estimated, network])
        links.append(link)
    return links


def simulation_atlas(simulation: Any):
    """The simulation's group network labels as a ``brainalign.networks.Atlas``."""
    from brainalign.networks import Atlas

    space = simulation.space
    return Atlas(name="simulation", space=space.name, labels=list(space.network_names),
                 data=space.labels, source="brainalign.simulate",
                 coordinates_mm=space.coordinates if space.kind == "roi" else None)


def score_recovery(simulation: Any, patterns: Any = None, *, timecourses: Any = None,
                   n_atoms: int = 16, atlas: Any = None,
                   delays: Sequence[int] = DEFAULT_DELAYS,
                   n_perm_encoding: int = 200, n_perm_mapping: int = 1000, n_shifts: int = 1000,
                   spatial_null: str = "shift", alpha: float = 0.05,
                   fit_atoms_kwargs: dict | None = None, encoding_kwargs: dict | None = None,
                   mapping_kwargs: dict | None = None, random_state: int = 0) -> RecoveryScores:
    """Run the study (patterns -> encoding -> network mapping) on a simulation and score it.

    Parameters
    ----------
    simulation : Simulation
    patterns : Patterns or ndarray, shape (n_tr, n_estimated), optional
        Estimated patterns (``Patterns.atoms`` is used). None: fitted here with
        ``brainalign.patterns.fit_atoms(timecourses, n_atoms=n_atoms, train_runs="all")``
        (the atoms see no brain data, so fitting them on every run leaks nothing into the
        encoding's held-out runs).
    timecourses : NeuronTimecourses, optional
        The neuron time courses the simulation was planted from (when ``patterns`` is None).
    n_atoms : int
        Number of patterns to estimate.
    atlas : Atlas, optional
        Atlas over the simulation's targets for the mapping (default: the simulation's own
        group labels; pass ``load_atlas("yeo7", "fsaverage5")`` or a volume atlas with
        its grid mask to get the spin / volume nulls).
    delays : sequence of int
        FIR delays in TRs of the encoding model (default
        :data:`brainalign.timecourse.DEFAULT_DELAYS`).
    n_perm_encoding, n_perm_mapping : int
        Null draws of the encoding significance and of the network mapping's spatial null.
    spatial_null : str
        ``"shift"`` (the study's default): maps of circularly shifted atoms
        (:func:`~brainalign.networks.spatial.spatial_shift_test`, with the encoding's
        ``clean`` and ``tr_s``); otherwise a ``null`` of :func:`map_patterns` (``"auto"``,
        ``"spin"``, ...).
    n_shifts : int
        Circular shifts per pattern of the mapping's temporal test
        (:func:`~brainalign.networks.temporal.temporal_network_test`); 0 maps on the
        spatial null alone.
    alpha : float
        FDR level of the network assignment.
    fit_atoms_kwargs, encoding_kwargs, mapping_kwargs : dict, optional
        Extra arguments of ``fit_atoms``, ``fit_encoding`` and ``map_patterns``.
    random_state : int

    Returns
    -------
    RecoveryScores
        Pattern maps are the subject-mean of :func:`brainalign.encoding.pattern_maps`
        (coefficients summed over delays); the AUC is computed per subject on its own
        encoding p-values and planted targets.
    """
    from brainalign.encoding import fit_encoding, mean_over_subjects, pattern_maps
    from brainalign.networks.mapping import map_patterns

    if patterns is None:
        if timecourses is None:
            raise ValueError("give estimated patterns (patterns=...) or the neuron time "
                             "courses to estimate them from (timecourses=...)")
        from brainalign.patterns import fit_atoms

        kwargs = {"train_runs": "all", **(fit_atoms_kwargs or {})}
        patterns = fit_atoms(timecourses, n_atoms=n_atoms, random_state=random_state, **kwargs)
    atoms = np.asarray(getattr(patterns, "atoms", patterns), dtype=np.float64)
    if atoms.shape[0] != len(simulation.runs):
        raise ValueError(f"estimated atoms have {atoms.shape[0]} TRs, the simulation "
                         f"{len(simulation.runs)}")
    maps, subject_r, subject_p = [], [], []
    for subject, bold in enumerate(simulation.bold):
        logger.info("encoding subject %d/%d", subject + 1, simulation.n_subjects)
        result = fit_encoding(atoms, bold, simulation.runs, delays=list(delays),
                              n_perm=n_perm_encoding, random_state=random_state,
                              **(encoding_kwargs or {}))
        maps.append(pattern_maps(result))
        subject_r.append(result.r)
        subject_p.append(result.p_values if n_perm_encoding > 0 else None)
    atlas = atlas if atlas is not None else simulation_atlas(simulation)
    encoding = encoding_kwargs or {}  # the tests clean as the encoding model does
    temporal = None
    if n_shifts > 0:
        from brainalign.networks.temporal import temporal_network_test

        temporal = temporal_network_test(atoms, simulation.bold, simulation.runs, atlas,
                                         delays=list(delays), n_shifts=n_shifts,
                                         clean=encoding.get("clean", True),
                                         tr_s=encoding.get("tr_s"), random_state=random_state)
    spatial = None
    if spatial_null == "shift":
        from brainalign.networks.spatial import spatial_shift_test

        spatial = spatial_shift_test(atoms, simulation.bold, simulation.runs, atlas,
                                     delays=list(delays), n_shifts=n_perm_mapping,
                                     clean=encoding.get("clean", True), tr_s=encoding.get("tr_s"),
                                     random_state=random_state)
    mapping = map_patterns(mean_over_subjects(maps), atlas, null=spatial_null, n_perm=n_perm_mapping,
                           alpha=alpha, temporal=temporal, spatial=spatial,
                           random_state=random_state, **(mapping_kwargs or {}))
    scores = score_mapping(simulation, atoms, mapping.assigned, subject_r, subject_p)
    scores.details.update(planted_links=planted_link_tests(mapping, scores))
    scores.details.update(null=mapping.null, n_perm_mapping=n_perm_mapping,
                          n_perm_encoding=n_perm_encoding, n_shifts=n_shifts,
                          delays=list(delays), alpha=alpha,
                          mapping_statistic=mapping.statistic,
                          confidence=mapping.confidence.tolist())
    return scores
