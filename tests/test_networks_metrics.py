"""Study A organisation metrics on constructed cases with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.networks.mapping import NetworkMapping
from brainalign.networks.metrics import (assignment_consistency, compactness,
                                         organisation_metrics, significance_matrix,
                                         spectral_diversity, subgroup_diversity)


def test_subgroup_diversity_hand_computed():
    # sizes 2, 2, 4 -> shares 1/4, 1/4, 1/2 -> H = 1.5 ln 2 -> exp(H) = 2 ** 1.5
    subgroup = np.array([0, 0, 1, 1, 2, 2, 2, 2, -1, -1])     # -1: no subgroup, ignored
    assert subgroup_diversity(subgroup) == pytest.approx(2 ** 1.5)
    assert subgroup_diversity(np.repeat(np.arange(5), 3)) == pytest.approx(5.0)
    assert subgroup_diversity(np.zeros(7, int)) == pytest.approx(1.0)


def test_spectral_diversity_hand_computed():
    t = np.arange(200)
    a, b = np.sin(2 * np.pi * t / 50), np.cos(2 * np.pi * t / 50)   # orthogonal, mean 0
    # correlation [[1,1,0],[1,1,0],[0,0,1]] -> eigenvalues 2, 1, 0 -> shares 2/3, 1/3
    # exp(H) = (3/2) ** (2/3) * 3 ** (1/3) = 3 / 2 ** (2/3)
    assert spectral_diversity(np.stack([a, a, b], axis=1)) == pytest.approx(3 / 2 ** (2 / 3))
    rng = np.random.default_rng(0)
    assert spectral_diversity(rng.standard_normal((5000, 4))) == pytest.approx(4.0, abs=0.01)


def test_assignment_consistency_hand_computed():
    first = ["Visual", "Visual", "Default", "Default"]
    second = ["Visual", "Default", "Default", "Default"]
    # agreement 3/4; chance .5*.25 + .5*.75 = .5 -> kappa (.75 - .5) / (1 - .5) = .5
    # ARI: sum C(n_ij,2) = 1, rows 2, cols 3, C(4,2) = 6 -> expected 1 -> (1-1)/(2.5-1) = 0
    result = assignment_consistency([first, second])
    assert result["kappa"] == pytest.approx(0.5)
    assert result["adjusted_rand"] == pytest.approx(0.0)
    assert result["agreement"] == pytest.approx(0.75) and result["n_pairs"] == 1
    three = assignment_consistency([first, second, first])     # pairs: .5, 1, .5
    assert three["kappa"] == pytest.approx(2 / 3) and three["n_pairs"] == 3
    # nothing assigned anywhere is not "perfect consistency": kappa is undefined
    nothing = assignment_consistency([["none"] * 4, ["none"] * 4])
    assert np.isnan(nothing["kappa"]) and np.isnan(nothing["adjusted_rand"])
    assert nothing["agreement"] == 1.0
    with pytest.raises(ValueError, match="same atoms"):
        assignment_consistency([first, second[:3]])


def test_compactness_hand_computed():
    significant = np.array([[True, True, False],
                            [False, True, False],
                            [False, False, False]])
    result = compactness(significant)
    assert result["networks_per_atom"] == pytest.approx(1.5)   # (2 + 1) / 2 atoms
    assert result["atoms_per_network"] == pytest.approx(1.5)   # (1 + 2) / 2 networks
    assert result["networks_covered"] == 2
    assert result["share_assigned"] == pytest.approx(2 / 3)


def _mapping(assigned, p_fdr, correlation):
    shape = np.shape(p_fdr)
    return NetworkMapping([f"atom{k}" for k in range(shape[0])], ["Visual", "Default", "Limbic"],
                          {"correlation": np.asarray(correlation, float)},
                          {"correlation": np.asarray(p_fdr, float)},
                          {"correlation": np.asarray(p_fdr, float)}, "correlation",
                          list(assigned), np.ones(shape[0]), "spin", 100, 0.05)


def test_organisation_metrics_gathers_everything():
    p_fdr = [[0.01, 0.02, 0.9], [0.5, 0.01, 0.9], [0.5, 0.5, 0.5]]
    correlation = [[0.5, 0.2, 0.0], [0.1, 0.4, 0.0], [0.0, 0.0, -0.3]]
    split_a = _mapping(["Visual", "Default", "none"], p_fdr, correlation)
    split_b = _mapping(["Visual", "Default", "Default"], p_fdr, correlation)
    # a negative correlation is never "significant" for compactness
    negative = _mapping(["none"] * 3, [[0.01] * 3] * 3, [[-0.5] * 3] * 3)
    assert not significance_matrix(negative).any()
    metrics = organisation_metrics(np.array([0, 0, 1, 1, 2, 2, 2, 2]), [split_a, split_b])
    assert metrics.diversity == pytest.approx(2 ** 1.5)
    assert metrics.networks_per_atom == pytest.approx(1.5)
    assert metrics.agreement == pytest.approx(2 / 3)
    # kappa by hand: labels {Visual, Default, none}; a = (1,1,1)/3, b = (1,2,0)/3
    # chance = (1*1 + 1*2 + 1*0) / 9 = 1/3 -> (2/3 - 1/3) / (2/3) = 1/2
    assert metrics.kappa == pytest.approx(0.5)
    assert metrics.spectral_diversity is None and metrics.n_atoms == 3
    assert set(metrics.to_dict()) >= {"diversity", "kappa", "atoms_per_network"}


def test_significance_follows_the_mappings_own_rule():
    """Compactness counts what the mapping passes: the temporal test when it was run (a
    failed one was ignored: share_assigned 1.0 with nothing assigned), and |r| for a
    two-sided mapping (networks passing with a negative r were dropped)."""
    from brainalign.networks.atlases import Atlas
    from brainalign.networks.mapping import map_patterns
    from brainalign.networks.temporal import TemporalTest

    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 3], 100)
    atlas = Atlas("toy", "roi", ["A", "B", "C"], labels)
    maps = np.stack([np.where(labels == 1, 3.0, 0.0), np.where(labels == 2, 3.0, 0.0)])
    maps = maps + 0.3 * rng.standard_normal(maps.shape)
    failed = TemporalTest(np.full((2, 3), 0.001), np.full((2, 3), 0.9), 100, 10, 1, [1],
                          np.full((2, 3), "empirical"), {})
    mapping = map_patterns(maps, atlas, null="permutation", n_perm=200, temporal=failed,
                           tail="empirical")
    assert mapping.assigned == ["none", "none"] and mapping.passes["spatial"].any()
    assert not significance_matrix(mapping).any()
    assert organisation_metrics(np.array([0, 1]), [mapping]).share_assigned == 0.0
    flipped = map_patterns(-maps, atlas, null="permutation", n_perm=200,
                           alternative="two-sided", tail="empirical")
    assert flipped.assigned == ["A", "B"]
    np.testing.assert_array_equal(significance_matrix(flipped), flipped.passes["spatial"])
    assert significance_matrix(flipped)[[0, 1], [0, 1]].all()
