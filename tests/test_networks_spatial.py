"""The spatial shift test: pattern maps against the maps of time-reversed, shifted patterns.

Checked against the encoding model's own maps, on a planted link, on null patterns over
network-shaped background activity (where a permutation null of the map fails), and
through map_patterns."""

from __future__ import annotations

import numpy as np
import pytest

from sklearn.linear_model import Ridge

from brainalign.encoding import EncodingModel
from brainalign.encoding.cleaning import Cleaning, FoldCleaner
from brainalign.networks.atlases import Atlas
from brainalign.networks.mapping import NetworkMapping, map_patterns
from brainalign.networks.spatial import spatial_shift_test
from brainalign.simulate.noise import ar1_filter

LABELS = np.repeat([1, 2, 3], 20)
ATLAS = Atlas("toy", "roi", ["n1", "n2", "n3"], LABELS)


def network_background(rng, runs, n_subjects=2, shared=1.0):
    """Subjects' BOLD: one AR(1) signal per network shared by its 20 targets, plus noise."""
    subjects = []
    for _ in range(n_subjects):
        signals = ar1_filter(rng.standard_normal((len(runs), 3)), runs, 0.6)
        subjects.append(shared * signals[:, LABELS - 1]
                        + 0.5 * rng.standard_normal((len(runs), len(LABELS))))
    return subjects


def reference_design(atoms, runs, delays):
    """z-scored atoms delayed inside runs (zeros where a delay reaches before a run), centred."""
    z = (atoms - atoms.mean(0)) / atoms.std(0)
    blocks = []
    for d in delays:
        block = np.zeros_like(z)
        for run in np.unique(runs):
            rows = np.flatnonzero(runs == run)
            block[rows[d:]] = z[rows[:len(rows) - d]]
        blocks.append(block)
    design = np.hstack(blocks)
    return design - design.mean(0)


def reference_maps(atoms, bold, runs, alpha, delays):
    """scikit-learn's ridge on the reference design; coefficients summed over delays."""
    coef = Ridge(alpha=alpha).fit(reference_design(atoms, runs, delays), bold).coef_
    return coef.T.reshape(len(delays), atoms.shape[1], -1).sum(0)


def test_maps_are_ridge_maps_at_each_subjects_median_penalty():
    rng = np.random.default_rng(0)
    runs = np.repeat([0, 1], 120)
    atoms = ar1_filter(rng.standard_normal((240, 3)), runs, 0.5)
    subjects = network_background(rng, runs)
    test = spatial_shift_test(atoms, subjects, runs, ATLAS, delays=[1, 2, 3], n_shifts=20,
                              clean=False)
    design = reference_design(atoms, runs, [1, 2, 3])
    for bold, alpha in zip(subjects, test.alphas):      # the median of inner CV's choices
        chosen = EncodingModel().fit(design, bold - bold.mean(0), runs).alphas_
        assert alpha == pytest.approx(float(np.median(chosen)), rel=1e-6)
    expected = np.mean([reference_maps(atoms, bold, runs, alpha, [1, 2, 3])
                        for bold, alpha in zip(subjects, test.alphas)], axis=0)
    np.testing.assert_allclose(test.maps, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    centred = expected - expected.mean(axis=1, keepdims=True)
    indicators = ATLAS.indicators() - ATLAS.indicators().mean(axis=1, keepdims=True)
    r = (centred @ indicators.T) / np.outer(np.linalg.norm(centred, axis=1),
                                            np.linalg.norm(indicators, axis=1))
    np.testing.assert_allclose(test.statistic, r, atol=1e-6)


def test_cleaning_is_applied_to_patterns_and_data_alike():
    rng = np.random.default_rng(4)
    runs = np.repeat([0, 1], 120)
    atoms = ar1_filter(rng.standard_normal((240, 2)), runs, 0.5) + np.linspace(0, 3, 240)[:, None]
    subjects = [bold + np.linspace(0, 5, 240)[:, None] for bold in network_background(rng, runs)]
    cleaner = FoldCleaner(Cleaning(), runs, np.arange(240), tr_s=2.0)
    cleaned = spatial_shift_test(atoms, subjects, runs, ATLAS, delays=[1, 2], n_shifts=30,
                                 tr_s=2.0)
    by_hand = spatial_shift_test(cleaner.apply(atoms), [cleaner.apply(b) for b in subjects],
                                 runs, ATLAS, delays=[1, 2], n_shifts=30, clean=False)
    # the real patterns' maps agree; the nulls do not, by design: a shifted pattern is
    # cleaned after it is shifted, as a new pattern would be
    np.testing.assert_allclose(cleaned.alphas, by_hand.alphas, rtol=1e-6)
    np.testing.assert_allclose(cleaned.maps, by_hand.maps, rtol=1e-6, atol=1e-12)


def test_planted_link_lies_beyond_every_shift():
    rng = np.random.default_rng(1)
    runs = np.repeat([0, 1], 150)
    atoms = ar1_filter(rng.standard_normal((300, 3)), runs, 0.5)
    subjects = network_background(rng, runs, shared=0.5)
    for bold in subjects:
        bold[2:, LABELS == 2] += 0.6 * atoms[:-2, [0]]     # atom 0 drives n2, two TRs later
    test = spatial_shift_test(atoms, subjects, runs, ATLAS, delays=[1, 2, 3], n_shifts=200,
                              tr_s=2.0)
    assert test.p_values[0, 1] < 1 / 201 and test.p_method[0, 1] == "gpd"
    assert test.p_values[0, [0, 2]].min() > 0.5              # negative correlations there
    mapping = map_patterns(test.maps, ATLAS, null="shift", spatial=test)
    assert mapping.assigned[0] == "n2"
    assert mapping.null == "shift" and mapping.n_perm == 200


def test_null_patterns_on_network_shaped_activity_are_calibrated():
    """Maps of patterns that drive nothing take the background's network shape: a
    permutation null of the map then rejects far too often. Against reversed-and-shifted
    patterns (the default) about 5 % of p-values fall under .05; against circular shifts
    that leave out the shortest ones, too many do where the maps change slowly with the
    shift (smooth patterns, short runs), because each large value's near neighbours are
    left out of its own null only."""
    runs = np.repeat([0, 1], 60)
    p_values = {"mirror": [], "circular": [], "permutation": []}
    for seed in range(96):
        rng = np.random.default_rng(seed)
        atoms = ar1_filter(rng.standard_normal((120, 4)), runs, 0.9)
        background = network_background(rng, runs)
        for null in ("mirror", "circular"):
            test = spatial_shift_test(atoms, background, runs, ATLAS, delays=[1, 2, 3],
                                      n_shifts=200, null=null, random_state=seed)
            p_values[null].append(test.p_values)
        p_values["permutation"].append(map_patterns(
            test.maps, ATLAS, null="permutation", n_perm=200,
            random_state=seed).p_values["correlation"])
    fpr = {null: float(np.mean(np.array(p) < 0.05)) for null, p in p_values.items()}
    assert 0.035 <= fpr["mirror"] <= 0.075, fpr                   # 1,152 p-values, 384 patterns
    assert fpr["circular"] > fpr["mirror"] + 0.02, fpr
    assert fpr["permutation"] > 0.25, fpr


def test_mirror_null_reverses_and_shifts_every_run():
    rng = np.random.default_rng(3)
    runs = np.repeat([0, 1], 40)
    atoms = ar1_filter(rng.standard_normal((80, 2)), runs, 0.5)
    background = network_background(rng, runs)
    test = spatial_shift_test(atoms, background, runs, ATLAS, delays=[1], n_shifts=30,
                              clean=False, random_state=5)
    assert test.null == "mirror" and test.describe()["min_shift_tr"] is None
    assert "reversed" in test.describe()["null"]
    circular = spatial_shift_test(atoms, background, runs, ATLAS, delays=[1], n_shifts=30,
                                  null="circular", min_shift_tr=5, clean=False)
    assert circular.describe()["min_shift_tr"] == 5
    np.testing.assert_allclose(circular.statistic, test.statistic)  # the real maps agree
    with pytest.raises(ValueError, match="null must be 'mirror' or 'circular'"):
        spatial_shift_test(atoms, background, runs, ATLAS, null="spin")


def test_map_patterns_checks_the_shift_null_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    runs = np.repeat([0, 1], 100)
    atoms = ar1_filter(rng.standard_normal((200, 2)), runs, 0.5)
    test = spatial_shift_test(atoms, network_background(rng, runs), runs, ATLAS,
                              delays=[1, 2], n_shifts=50)
    with pytest.raises(ValueError, match="go together"):
        map_patterns(test.maps, ATLAS, null="shift")
    with pytest.raises(ValueError, match="go together"):
        map_patterns(test.maps, ATLAS, null="permutation", spatial=test)
    with pytest.raises(ValueError, match="correlation only"):
        map_patterns(test.maps, ATLAS, null="shift", spatial=test,
                     significant=np.ones_like(test.maps, dtype=bool))
    with pytest.raises(ValueError, match="spatial test is"):
        map_patterns(test.maps[:1], ATLAS, null="shift", spatial=test)
    with pytest.raises(ValueError, match="expected \\(200, 60\\)"):
        spatial_shift_test(atoms, [np.zeros((200, 59))], runs, ATLAS)
    mapping = map_patterns(test.maps, ATLAS, null="shift", spatial=test)
    np.testing.assert_array_equal(mapping.p_values["correlation"], test.p_values)
    mapping.to_json(tmp_path / "mapping.json")
    loaded = NetworkMapping.load(tmp_path / "mapping.json")
    assert loaded.null == "shift" and loaded.assigned == mapping.assigned
    assert loaded.provenance["spatial"]["n_shifts"] == 50


def test_subjects_summed_per_penalty_give_the_subject_mean_of_ridge_maps():
    """The null maps hold one data sum per ridge penalty, not one matrix per subject; the
    maps equal the subject mean of each subject's delay-summed ridge solution (float64)."""
    from brainalign.networks.spatial import _mean_ridge_maps

    rng = np.random.default_rng(0)
    n_tr, n_patterns, n_delays, n_targets = 90, 3, 2, 7
    design = rng.standard_normal((n_tr, n_delays * n_patterns))
    design -= design.mean(0)
    targets = [rng.standard_normal((n_tr, n_targets)) for _ in range(4)]
    alphas = [1.0, 30.0, 1.0, 30.0]
    reference = np.mean([np.linalg.solve(design.T @ design + a * np.eye(design.shape[1]),
                                          design.T @ Y).reshape(n_delays, n_patterns, -1).sum(0)
                         for Y, a in zip(targets, alphas)], axis=0)
    np.testing.assert_allclose(_mean_ridge_maps(design, targets, alphas, n_patterns), reference,
                               atol=1e-12)
    grouped = _mean_ridge_maps(design, [targets[0] + targets[2], targets[1] + targets[3]],
                               [1.0, 30.0], n_patterns, n_subjects=4)
    np.testing.assert_allclose(grouped, reference, atol=1e-12)
