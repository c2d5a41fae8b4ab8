"""Temporal evidence in the network mapping: network signals, and a correlated bystander
pattern that the spatial null assigns but the temporal test does not."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.encoding import fit_encoding, pattern_maps
from brainalign.networks.atlases import Atlas
from brainalign.networks.mapping import NetworkMapping, map_patterns
from brainalign.networks.temporal import TemporalTest, network_signals, temporal_network_test
from brainalign.simulate import roi_space, simulate_fmri
from brainalign.simulate.noise import ar1_filter
from brainalign.simulate.recovery import simulation_atlas


def test_network_signals_average_the_targets_with_data():
    rng = np.random.default_rng(0)
    labels = np.array([1, 1, 2, 2, 2, 0, 1])
    atlas = Atlas("toy", "roi", ["a", "b"], labels)
    bold = rng.standard_normal((30, 7))
    bold[3, 1] = np.nan                        # target 1 has no usable data
    bold[:, 4] = 2.0                           # a constant target
    signals = network_signals(bold, atlas)
    np.testing.assert_allclose(signals[:, 0], bold[:, [0, 6]].mean(axis=1))
    np.testing.assert_allclose(signals[:, 1], bold[:, [2, 3]].mean(axis=1))
    with pytest.raises(ValueError, match="over the atlas's targets"):
        network_signals(bold[:, :5], atlas)
    bold[:, [2, 3]] = np.nan
    with pytest.raises(ValueError, match=r"\['b'\] have no target"):
        network_signals(bold, atlas)


def planted_simulation(seed: int):
    """Three atoms (two correlated at r ~ 0.7), each driving one of four ROI networks."""
    rng = np.random.default_rng(seed)
    runs = np.repeat([0, 1], 120)
    driver = ar1_filter(rng.standard_normal((240, 1)), runs, 0.5)[:, 0]
    atoms = np.column_stack([driver, 0.7 * driver + 0.7 * rng.standard_normal(240),
                             rng.standard_normal(240)])
    space = roi_space(np.repeat(np.arange(5), 12), ["n1", "n2", "n3", "n4"])
    simulation = simulate_fmri(space=space, atoms=atoms, runs=runs, tr_s=2.0, snr=1.0,
                               n_silent_networks=1, n_subjects=2, noise="ar1",
                               random_state=seed)
    return atoms, simulation


def test_spatial_and_temporal_tests_together_recover_every_planted_network():
    atoms, simulation = planted_simulation(seed=3)
    planted = simulation.truth.pattern_network()
    assert "none" not in planted                  # three driven networks, one silent
    atlas = simulation_atlas(simulation)
    maps = np.mean([pattern_maps(fit_encoding(atoms, bold, simulation.runs, delays=[1, 2, 3],
                                              n_perm=0)) for bold in simulation.bold], axis=0)
    spatial = map_patterns(maps, atlas, n_perm=500, random_state=0)
    temporal = temporal_network_test(atoms, simulation.bold, simulation.runs, atlas,
                                     delays=[1, 2, 3], n_shifts=500, random_state=0)
    both = map_patterns(maps, atlas, n_perm=500, temporal=temporal, random_state=0)
    assert spatial.assigned == planted
    assert both.assigned == planted
    # every planted link lies beyond all 500 shifts: tail p-values below the 1/501 floor
    planted_pairs = (np.arange(3), [atlas.labels.index(n) for n in planted])
    assert np.all(temporal.p_values[planted_pairs] < 1 / 501)
    assert np.all(temporal.p_method[planted_pairs] == "gpd")
    assert both.passes["temporal"][planted_pairs].all()
    np.testing.assert_array_equal(both.passes["assigned"],
                                  both.passes["spatial"] & both.passes["temporal"])
    assert both.temporal["n_shifts"] == 500
    assert both.p_fdr["unique_r"].shape == (3, 4)


def test_correlated_bystander_is_assigned_by_space_alone_and_not_with_time():
    """One atom drives one network; a bystander correlated with it drives nothing."""
    rng = np.random.default_rng(11)
    runs = np.repeat([0, 1], 120)
    driver = ar1_filter(rng.standard_normal((240, 1)), runs, 0.5)[:, 0]
    bystander = 0.8 * driver + 0.6 * rng.standard_normal(240)
    atoms = np.column_stack([driver, bystander])
    labels = np.repeat([1, 2, 3], 20)
    atlas = Atlas("toy", "roi", ["n1", "n2", "n3"], labels)
    subjects = []
    for _ in range(2):
        bold = rng.standard_normal((240, 60))
        bold[2:, labels == 1] += 0.8 * driver[:-2, None]
        subjects.append(bold)
    maps = np.mean([pattern_maps(fit_encoding(atoms, bold, runs, delays=[1, 2, 3], n_perm=0))
                    for bold in subjects], axis=0)
    spatial = map_patterns(maps, atlas, n_perm=500, random_state=0)
    assert spatial.assigned == ["n1", "n1"]       # the bystander borrows the driver's map
    temporal = temporal_network_test(atoms, subjects, runs, atlas, delays=[1, 2, 3],
                                     n_shifts=500, random_state=0)
    both = map_patterns(maps, atlas, n_perm=500, temporal=temporal, random_state=0)
    assert both.assigned == ["n1", "none"]
    assert temporal.p_values[0, 0] < 1 / 501 and temporal.p_method[0, 0] == "gpd"
    assert temporal.p_values[1, 0] > 0.05
    assert both.passes["spatial"][1, 0] and not both.passes["temporal"][1, 0]


def test_mapping_with_temporal_evidence_round_trips_and_checks_shapes(tmp_path):
    rng = np.random.default_rng(5)
    atlas = Atlas("toy", "roi", ["a", "b"], np.repeat([1, 2], 10))
    maps = rng.standard_normal((3, 20))
    method = np.full((3, 2), "empirical")
    temporal = TemporalTest(rng.standard_normal((3, 2)), rng.random((3, 2)), 99, 10, 2, [1, 2],
                            method, {"tail": "gpd"})
    mapping = map_patterns(maps, atlas, null="permutation", n_perm=50, temporal=temporal)
    assert set(mapping.table().columns) >= {"unique_r", "p_unique_r", "p_fdr_unique_r",
                                            "p_method_unique_r", "passes_temporal"}
    assert "p_fdr_unique_r" in mapping.assignments().columns
    loaded = NetworkMapping.load(mapping.to_json(tmp_path / "mapping.json"))
    np.testing.assert_allclose(loaded.p_values["unique_r"], temporal.p_values)
    np.testing.assert_array_equal(loaded.p_method["unique_r"], method)
    np.testing.assert_array_equal(loaded.passes["temporal"], mapping.passes["temporal"])
    assert loaded.temporal == temporal.describe()
    wrong = TemporalTest(np.zeros((2, 2)), np.ones((2, 2)), 99, 10, 2, [1, 2],
                         np.full((2, 2), "empirical"), {})
    with pytest.raises(ValueError, match="patterns x networks"):
        map_patterns(maps, atlas, null="permutation", n_perm=50, temporal=wrong)
