"""Recovery scores on constructed study outputs: Hungarian atom matching, assignment
accuracy, significance AUC and false-positive share."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from brainalign.simulate import roi_space, simulate_fmri
from brainalign.simulate.recovery import (AtomMatch, assignment_accuracy, false_positive_share,
                                          match_atoms, score_mapping, significance_auc)


def test_match_atoms_recovers_a_permutation_with_sign_flips_and_noise():
    rng = np.random.default_rng(0)
    planted = rng.standard_normal((300, 5))
    order = np.array([3, 0, 4, 1, 2, 5, 6])  # estimated has 2 extra unrelated atoms
    extra = rng.standard_normal((300, 2))
    estimated = np.column_stack([planted, extra])[:, order] * np.array([1, -1, 1, -1, 1, 1, 1])
    estimated = estimated + 0.1 * rng.standard_normal(estimated.shape)
    match = match_atoms(planted, estimated)
    # planted k sits in column where order == k
    np.testing.assert_array_equal(match.estimated_index, [1, 3, 4, 0, 2])
    assert np.all(match.correlation > 0.99)


def test_match_atoms_leaves_planted_unpaired_when_fewer_estimates():
    rng = np.random.default_rng(1)
    planted = rng.standard_normal((200, 3))
    match = match_atoms(planted, planted[:, [2]])
    np.testing.assert_array_equal(match.estimated_index, [-1, -1, 0])
    np.testing.assert_allclose(match.correlation, [0, 0, 1])
    with pytest.raises(ValueError, match="same TR grid"):
        match_atoms(planted, planted[:100])


def test_assignment_accuracy_counts_matched_networks_and_none():
    match = AtomMatch(np.array([2, 0, 1, -1]), np.ones(4))
    assigned = ["Visual", "none", "Default", "Limbic"]
    # planted 0 -> est 2 (Default, right); 1 -> est 0 (Visual vs DorsAttn, wrong);
    # 2 -> est 1 (none, right); 3 unpaired counts as none (right)
    planted = ["Default", "DorsAttn", "none", "none"]
    assert assignment_accuracy(planted, assigned, match) == pytest.approx(0.75)


def test_significance_auc_uses_p_then_r_and_matches_sklearn():
    rng = np.random.default_rng(2)
    responsive = np.zeros(200, dtype=bool)
    responsive[:50] = True
    r = rng.normal(0, 0.1, 200) + 0.2 * responsive
    assert significance_auc(None, r, responsive) == pytest.approx(roc_auc_score(responsive, r))
    # p-values separate perfectly even though r does not
    p = np.where(responsive, 0.001, 0.5)
    assert significance_auc(p, r, responsive) == pytest.approx(1.0)
    # all p at the floor: r decides
    assert significance_auc(np.full(200, 0.001), r, responsive) == pytest.approx(
        roc_auc_score(responsive, r))
    # pure noise is at chance; NaN targets rank last
    noise = rng.standard_normal(20000)
    labels = rng.random(20000) < 0.3
    assert abs(significance_auc(None, noise, labels) - 0.5) < 0.02
    r_nan = r.copy()
    r_nan[:5] = np.nan
    assert significance_auc(None, r_nan, responsive) < significance_auc(None, r, responsive)
    assert np.isnan(significance_auc(None, r, np.ones(200, dtype=bool)))


def test_false_positive_share():
    assert false_positive_share(["none", "Visual", "none", "none"]) == 0.25
    assert false_positive_share(["None"] * 3) == 0.0
    with pytest.raises(ValueError):
        false_positive_share([])


def small_simulation(snr: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 15)
    space = roi_space(labels, ["A", "B", "C"])
    return simulate_fmri(space=space, atoms=rng.standard_normal((150, 4)), tr_s=2.0, snr=snr,
                         n_subjects=2, n_silent_networks=0, random_state=seed)


def test_score_mapping_perfect_study_outputs_score_perfectly():
    sim = small_simulation(snr=1.0)
    truth = sim.truth
    order = np.array([2, 0, 3, 1])
    estimated = truth.atoms[:, order]
    planted_network = truth.pattern_network()
    assigned = [planted_network[k] for k in order]
    r = [np.where(truth.responsive[s], 0.5, 0.0) for s in range(2)]
    scores = score_mapping(sim, estimated, assigned, r, [None, None])
    assert scores.accuracy == 1.0 and scores.auc == 1.0
    assert scores.false_positive_share == 0.0  # the one undriven pattern maps to none
    np.testing.assert_allclose(scores.atom_correlation, 1.0)
    assert scores.assigned_network == planted_network
    # a shuffled mapping of the driven patterns is scored as wrong
    wrong = list(np.roll(assigned, 1))
    assert score_mapping(sim, estimated, wrong, r, [None, None]).accuracy < 0.5
    # the undriven pattern mapped to a network is a false positive, accuracy unchanged
    undriven = planted_network.index("none")
    spurious = list(assigned)
    spurious[int(np.flatnonzero(order == undriven)[0])] = "A"
    scores = score_mapping(sim, estimated, spurious, r, [None, None])
    assert scores.accuracy == 1.0 and scores.false_positive_share == 1.0


def test_score_mapping_null_counts_every_mapped_pattern():
    sim = small_simulation(snr=0.0)
    assigned = ["A", "none", "none", "none"]
    scores = score_mapping(sim, sim.truth.atoms, assigned, [np.zeros(60)] * 2, [None, None])
    assert scores.false_positive_share == 0.25
    assert np.isnan(scores.auc)
    # accuracy still counts the planted links the (signal-free) assignment happens to hit
    planted = sim.truth.pattern_network()
    hits = [assigned[k] == name for k, name in enumerate(planted) if name != "none"]
    assert scores.accuracy == pytest.approx(np.mean(hits))
