"""Study A organisation metrics: diversity, consistency and compactness of atom -> network maps.

Sun et al. (2024) claim that more capable models balance a *diversity* of computational
behaviour (atoms) with a *consistency* of functional specialisation (atom -> brain
network), in a more compact organisation; the exact metric is not public. brainalign
defines the following (each a plain function, gathered by :func:`organisation_metrics`):

Diversity (how many distinct behaviours)
    ``subgroup_diversity``: the effective number of atoms, exp(H) with H the Shannon
    entropy (natural log) of the share of neurons in each atom's subgroup (Hill number of
    order 1). K atoms with equal subgroups give K; one atom holding every neuron gives 1.
    ``spectral_diversity``: the effective rank of the atoms' time courses (Roy & Vetterli
    2007, EUSIPCO), exp(H) of the normalised eigenvalues of the atoms' correlation
    matrix: K uncorrelated atoms give K, K copies of one time course give 1.

Consistency (is the atom -> network map reproducible)
    Each atom's assigned network (or "none") is obtained independently several times:
    from different subjects' encoding maps, or from split halves of the data.
    ``assignment_consistency`` returns the mean over all pairs of Cohen's kappa (chance-
    corrected agreement; scikit-learn ``cohen_kappa_score``) and of the adjusted Rand
    index (agreement of the induced partitions of atoms, invariant to network names;
    ``adjusted_rand_score``), plus the raw share of atoms with equal assignments.

Compactness (how specific the map is)
    From the pattern x network significance matrix (FDR-corrected p < alpha and a
    positive statistic): ``networks_per_atom`` = mean number of significant networks per
    atom, over atoms with at least one; ``atoms_per_network`` = mean number of
    significant atoms per network, over networks with at least one; ``networks_covered``
    = networks with at least one; ``share_assigned`` = share of atoms with at least one.
    A compact, specialised organisation has networks_per_atom near 1.

The functions lean on numpy and scikit-learn; nothing here is fitted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

from brainalign.networks.mapping import NetworkMapping


def _effective_number(weights: np.ndarray) -> float:
    """exp(Shannon entropy) of non-negative weights (normalised to sum 1)."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights[weights > 0]
    if weights.size == 0:
        raise ValueError("effective number of an empty or all-zero distribution")
    share = weights / weights.sum()
    return float(np.exp(-np.sum(share * np.log(share))))


def subgroup_diversity(subgroup: np.ndarray) -> float:
    """Effective number of atoms: exp(entropy) of subgroup sizes.

    Parameters
    ----------
    subgroup : ndarray of int, shape (n_neurons,)
        Atom index of each neuron (``Patterns.subgroup``); negative = no subgroup (ignored).
    """
    subgroup = np.asarray(subgroup, dtype=np.int64)
    return _effective_number(np.bincount(subgroup[subgroup >= 0]))


def spectral_diversity(atoms: np.ndarray) -> float:
    """Effective rank of atom time courses: exp(entropy) of correlation eigenvalues.

    Parameters
    ----------
    atoms : ndarray, shape (n_time, n_atoms)
        Atom time courses (``Patterns.atoms``).
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    if atoms.ndim != 2 or atoms.shape[1] < 1:
        raise ValueError(f"atoms must be (n_time, n_atoms), got shape {atoms.shape}")
    keep = atoms.std(axis=0) > 0
    if not keep.any():
        raise ValueError("every atom time course is constant")
    correlation = np.atleast_2d(np.corrcoef(atoms[:, keep], rowvar=False))
    eigenvalues = np.clip(np.linalg.eigvalsh(correlation), 0.0, None)
    return _effective_number(eigenvalues)


def assignment_consistency(assignments: Sequence[Sequence[str]]) -> dict[str, float]:
    """Agreement of atom -> network assignments between repetitions.

    Parameters
    ----------
    assignments : sequence of n_repeats (>= 2) sequences of n_atoms network names
        ``NetworkMapping.assigned`` from each subject or split half (same atom order).

    Returns
    -------
    dict with ``kappa`` (mean pairwise Cohen's kappa over the pairs where it is defined;
    NaN when both repetitions give one and the same label to every atom, e.g. all
    "none"), ``adjusted_rand`` (mean pairwise ARI, same rule), ``agreement`` (mean
    pairwise share of equal assignments) and ``n_pairs``.
    """
    rows = [list(map(str, row)) for row in assignments]
    if len(rows) < 2:
        raise ValueError(f"consistency needs at least 2 repetitions, got {len(rows)}")
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"every repetition must assign the same atoms; lengths "
                         f"{[len(row) for row in rows]}")
    labels = sorted({label for row in rows for label in row})
    kappas, rands, agreements = [], [], []
    for first, second in combinations(rows, 2):
        same = np.mean(np.asarray(first) == np.asarray(second))
        agreements.append(same)
        if len(set(first) | set(second)) == 1:
            # one label everywhere (e.g. all "none"): chance agreement is 1, so kappa is
            # undefined, and scikit-learn's ARI of 1 would claim a perfect partition
            kappas.append(np.nan)
            rands.append(np.nan)
        else:
            kappas.append(cohen_kappa_score(first, second, labels=labels))
            rands.append(adjusted_rand_score(first, second))
    def defined_mean(values: list[float]) -> float:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {"kappa": defined_mean(kappas), "adjusted_rand": defined_mean(rands),
            "agreement": float(np.mean(agreements)), "n_pairs": len(kappas)}


def significance_matrix(mapping: NetworkMapping, alpha: float | None = None) -> np.ndarray:
    """Bool (n_patterns, n_networks): the networks each pattern passes, by the mapping's own
    rule: FDR p < alpha (one family per pattern, as in ``mapping.p_fdr``) with a positive
    assignment statistic (its absolute value for a two-sided mapping), and, when the
    mapping ran the temporal test, the same for the pattern's unique r."""
    alpha = mapping.alpha if alpha is None else alpha
    two_sided = (mapping.provenance or {}).get("alternative") == "two-sided"
    statistic = np.nan_to_num(mapping.statistics[mapping.statistic], nan=0.0)
    passing = (mapping.p_fdr[mapping.statistic] < alpha) & (
        (np.abs(statistic) if two_sided else statistic) > 0)
    if "unique_r" in mapping.p_fdr:
        unique_r = np.nan_to_num(mapping.statistics["unique_r"], nan=0.0)
        passing &= (mapping.p_fdr["unique_r"] < alpha) & (unique_r > 0)
    return passing


def compactness(significant: np.ndarray) -> dict[str, float]:
    """Networks per atom and atoms per network from a significance matrix.

    Parameters
    ----------
    significant : ndarray of bool, shape (n_atoms, n_networks)

    Returns
    -------
    dict with ``networks_per_atom``, ``atoms_per_network`` (NaN when nothing is
    significant), ``networks_covered`` and ``share_assigned``.
    """
    significant = np.asarray(significant, dtype=bool)
    per_atom = significant.sum(axis=1)
    per_network = significant.sum(axis=0)
    return {
        "networks_per_atom": float(per_atom[per_atom > 0].mean()) if per_atom.any()
        else float("nan"),
        "atoms_per_network": float(per_network[per_network > 0].mean()) if per_network.any()
        else float("nan"),
        "networks_covered": int(np.sum(per_network > 0)),
        "share_assigned": float(np.mean(per_atom > 0))}


@dataclass
class OrganisationMetrics:
    """Study A organisation metrics of one model (see the module docstring)."""

    diversity: float
    spectral_diversity: float | None
    kappa: float | None
    adjusted_rand: float | None
    agreement: float | None
    networks_per_atom: float
    atoms_per_network: float
    networks_covered: int
    share_assigned: float
    n_atoms: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def organisation_metrics(subgroup: np.ndarray, mappings: Sequence[NetworkMapping],
                         atoms: np.ndarray | None = None,
                         alpha: float | None = None) -> OrganisationMetrics:
    """All organisation metrics of one model.

    Parameters
    ----------
    subgroup : ndarray of int, shape (n_neurons,)
        Atom of each neuron.
    mappings : sequence of NetworkMapping
        One mapping of the same atoms per subject / split. Compactness is computed on the
        first (the group-level or full-data mapping); consistency across all of them
        (None when only one is given).
    atoms : ndarray, shape (n_time, n_atoms), optional
        Atom time courses for the spectral diversity.
    alpha : float, optional
        FDR level (default: each mapping's own).
    """
    if not mappings:
        raise ValueError("organisation_metrics needs at least one NetworkMapping")
    consistency = (assignment_consistency([m.assigned for m in mappings])
                   if len(mappings) > 1 else {})
    compact = compactness(significance_matrix(mappings[0], alpha))
    return OrganisationMetrics(
        diversity=subgroup_diversity(subgroup),
        spectral_diversity=None if atoms is None else spectral_diversity(atoms),
        kappa=consistency.get("kappa"), adjusted_rand=consistency.get("adjusted_rand"),
        agreement=consistency.get("agreement"), n_atoms=len(mappings[0].patterns),
        **compact)
