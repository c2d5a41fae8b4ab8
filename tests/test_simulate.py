"""Simulator: planted signal against a direct HRF convolution, noise statistics, boundary
jitter, seeds and the save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
from nilearn.glm.first_level import glover_hrf

from brainalign.simulate import (Simulation, fsaverage_space, roi_space, simulate_fmri,
                                 volume_space)
from brainalign.simulate.bold import planted_signal
from brainalign.simulate.noise import ar1_noise, load_brainspace_rest, make_noise
from brainalign.simulate.space import FSAVERAGE5_HEMI_VERTICES
from brainalign.simulate.truth import jitter_labels

NETWORKS = [f"net{k}" for k in range(1, 5)]


def roi_table(n_per_network: int = 12, seed: int = 0):
    """Four networks of ROIs plus unlabelled ROIs, with coordinates on four blobs."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(5), n_per_network)
    centres = np.array([[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, 40], [40, 40, 40]])
    coordinates = centres[labels] + rng.normal(0, 8, size=(len(labels), 3))
    return roi_space(labels, NETWORKS, coordinates)


def neuron_timecourses(n_tr: int = 240, n_groups: int = 6, per_group: int = 20, seed: int = 0):
    """Neurons in groups that share a latent time course, plus private noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_tr, n_groups))
    data = np.repeat(latent, per_group, axis=1) + 0.5 * rng.standard_normal((n_tr, n_groups * per_group))
    return data, latent


def zscore(x):
    return (x - x.mean(axis=0)) / x.std(axis=0)


def test_planted_signal_matches_direct_convolution_with_shifted_glover_hrf():
    rng = np.random.default_rng(1)
    tr_s, n_tr = 2.0, 120
    atoms = rng.standard_normal((n_tr, 2))
    runs = np.repeat([0, 1], n_tr // 2)
    target_pattern = np.array([0, 1, -1, 0])
    delay_s = np.array([0.0, 0.0, 0.0, 1.0])
    signal = planted_signal(atoms, runs, tr_s, target_pattern, delay_s)
    for target, (pattern, delay) in enumerate(zip(target_pattern, delay_s)):
        if pattern < 0:
            assert np.all(signal[:, target] == 0)
            continue
        kernel = glover_hrf(tr_s, 50, 32.0, onset=delay)[::50]
        expected = np.concatenate([zscore(np.convolve(atoms[runs == run, pattern], kernel)[:60])
                                   for run in (0, 1)])
        np.testing.assert_allclose(signal[:, target], expected, atol=1e-5)
    # a 1 s later response is not the canonical one
    assert np.corrcoef(signal[:, 0], signal[:, 3])[0, 1] < 0.999


def test_ar1_noise_has_unit_variance_lag_one_correlation_phi_and_restarts_per_run():
    rng = np.random.default_rng(2)
    runs = np.repeat([0, 1], 2000)
    noise = ar1_noise(4000, 200, runs, 0.6, rng).astype(np.float64)
    assert abs(noise.var() - 1) < 0.03
    lag1 = np.mean([np.corrcoef(noise[:1999, j], noise[1:2000, j])[0, 1] for j in range(200)])
    assert abs(lag1 - 0.6) < 0.02
    across = np.corrcoef(noise[1999], noise[2000])[0, 1]  # last of run 0 vs first of run 1
    assert abs(across) < 0.25


def test_simulation_snr_sets_signal_to_noise_variance_ratio():
    data, _ = neuron_timecourses(n_tr=600)
    space = roi_table(n_per_network=30)
    snr = 0.5
    noisy = simulate_fmri(data, space, tr_s=2.0, snr=snr, noise="white", n_subjects=1,
                          amplitude_jitter=0.0, subject_amplitude_jitter=0.0, n_patterns=4,
                          n_clusters=6, random_state=3)
    clean = simulate_fmri(data, space, tr_s=2.0, snr=snr, noise="white", n_subjects=1,
                          amplitude_jitter=0.0, subject_amplitude_jitter=0.0, n_patterns=4,
                          n_clusters=6, random_state=3)
    np.testing.assert_array_equal(noisy.bold[0], clean.bold[0])
    responsive = noisy.truth.responsive[0]
    assert responsive.sum() == 4 * 30  # every network is driven, unlabelled ROIs are not
    variance = noisy.bold[0].var(axis=0)
    assert abs(variance[~responsive].mean() - 1.0) < 0.05
    assert abs(variance[responsive].mean() - (1.0 + snr)) < 0.05


def test_subgroups_are_the_shared_latent_groups_and_atoms_their_means():
    data, latent = neuron_timecourses()
    sim = simulate_fmri(data, roi_table(), tr_s=2.0, n_patterns=4, n_clusters=6, snr=1.0,
                        random_state=0)
    subgroup = sim.truth.subgroup
    group_of_neuron = np.repeat(np.arange(6), 20)
    for pattern in range(4):
        members = np.unique(group_of_neuron[subgroup == pattern])
        assert len(members) == 1 and (subgroup == pattern).sum() == 20
        corr = np.corrcoef(sim.truth.atoms[:, pattern], latent[:, members[0]])[0, 1]
        assert corr > 0.95
    assert (subgroup == -1).sum() == 40
    # every network answers a different pattern
    assert sorted(sim.truth.network_pattern.tolist()) == [0, 1, 2, 3]
    assert sorted(sim.truth.pattern_network()) == sorted(NETWORKS)


def test_silent_networks_have_no_signal_and_label_zero_never_responds():
    data, _ = neuron_timecourses()
    space = roi_table()
    sim = simulate_fmri(data, space, tr_s=2.0, n_patterns=4, n_clusters=6, n_silent_networks=2,
                        n_subjects=2, random_state=1)
    assert (sim.truth.network_pattern == -1).sum() == 2
    for subject in range(2):
        labels = sim.truth.target_labels[subject]
        silent = np.isin(labels, np.flatnonzero(sim.truth.network_pattern == -1) + 1)
        assert not sim.truth.responsive[subject][silent | (labels == 0)].any()
        assert sim.truth.responsive[subject][~silent & (labels > 0)].all()


def test_boundary_jitter_moves_only_border_targets():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(30), np.arange(30), [0], indexing="ij"), -1).reshape(-1, 3)
    labels = np.where(grid[:, 0] < 15, 1, 2)
    labels[(grid[:, 0] == 0)] = 0
    jittered = jitter_labels(labels, grid.astype(float), n_neighbors=5, n_steps=2, rng=rng)
    changed = jittered != labels
    assert changed.any()
    assert np.all(np.abs(grid[changed, 0] - 14.5) <= 2.5)  # only near the 1|2 border
    np.testing.assert_array_equal(jittered == 0, labels == 0)
    np.testing.assert_array_equal(jitter_labels(labels, None, 5, 2, rng), labels)


def test_same_seed_same_simulation_other_seed_differs():
    data, _ = neuron_timecourses()
    kwargs = dict(tr_s=2.0, n_patterns=4, n_clusters=6, snr=0.3, noise="ar1", n_subjects=2,
                  n_runs=3)
    first = simulate_fmri(data, roi_table(), random_state=7, **kwargs)
    second = simulate_fmri(data, roi_table(), random_state=7, **kwargs)
    other = simulate_fmri(data, roi_table(), random_state=8, **kwargs)
    for a, b in zip(first.bold, second.bold):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.truth.amplitude, second.truth.amplitude)
    assert not np.allclose(first.bold[0], other.bold[0])
    assert np.array_equal(np.unique(first.runs), [0, 1, 2])
    # subjects differ in noise and in per-target amplitudes
    assert not np.allclose(first.bold[0], first.bold[1])
    assert not np.allclose(first.truth.amplitude[0], first.truth.amplitude[1])


def test_given_atoms_are_planted_as_they_are():
    rng = np.random.default_rng(4)
    atoms = rng.standard_normal((200, 4))
    sim = simulate_fmri(space=roi_table(), atoms=atoms, tr_s=1.5, snr=2.0, random_state=0)
    np.testing.assert_allclose(sim.truth.atoms, zscore(atoms), atol=1e-10)
    assert sim.truth.subgroup is None


def test_save_load_round_trip_volume_space(tmp_path):
    import nibabel as nib

    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[2:10, 2:10, 2:10] = 1
    atlas = np.zeros((12, 12, 12), dtype=np.int16)
    atlas[2:6, 2:10, 2:10] = 1
    atlas[6:10, 2:10, 2:7] = 2
    space = volume_space(nib.Nifti1Image(atlas, affine), ["A", "B"],
                         mask_img=nib.Nifti1Image(mask, affine))
    assert space.n_targets == 512 and space.name == "MNI152NLin2009aSym_3mm"
    rng = np.random.default_rng(0)
    sim = simulate_fmri(space=space, atoms=rng.standard_normal((80, 2)), tr_s=2.0, snr=1.0,
                        noise="smooth_ar", n_subjects=2, n_runs=2, random_state=5)
    # smooth noise: neighbouring voxels correlate, far ones do not
    bold = sim.bold[0]
    near = np.corrcoef(bold[:, 0], bold[:, 1])[0, 1]
    assert near > 0.3
    sim.save(tmp_path / "sim")
    back = Simulation.load(tmp_path / "sim")
    for a, b in zip(sim.bold, back.bold):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.runs, sim.runs)
    np.testing.assert_array_equal(back.space.labels, space.labels)
    np.testing.assert_array_equal(np.asarray(back.space.mask_img.dataobj), mask)
    for name in ("atoms", "network_pattern", "target_labels", "amplitude", "delay_s"):
        np.testing.assert_array_equal(getattr(back.truth, name), getattr(sim.truth, name))
    assert back.truth.pattern_network() == sim.truth.pattern_network()
    assert back.truth.params == sim.truth.params and back.tr_s == 2.0
    assert back.provenance["stage"] == "simulate"


def test_resting_state_background_is_brainspace_data_in_fsaverage5_order():
    rest = load_brainspace_rest()
    assert rest.shape == (652, 2 * FSAVERAGE5_HEMI_VERTICES)
    labels = np.zeros(2 * FSAVERAGE5_HEMI_VERTICES, dtype=np.int64)
    labels[:100] = 1
    space = fsaverage_space(labels, ["A"])
    runs = np.zeros(50, dtype=np.int64)
    noise = make_noise("rest", space, 50, runs, np.random.default_rng(0))
    vertex = int(np.flatnonzero(rest.std(axis=0) > 0)[0])
    # the segment is a contiguous window of the real recording (re-z-scored)
    window = np.lib.stride_tricks.sliding_window_view(np.concatenate([rest[:, vertex],
                                                                      rest[:49, vertex]]), 50)
    best = max(np.corrcoef(w, noise[:, vertex])[0, 1] for w in window)
    assert best > 0.9999
    assert np.allclose(noise.std(axis=0), 1, atol=1e-3)
    # real data: the nearest vertex on the mesh shares the signal, a far one much less
    distance = np.linalg.norm(space.coordinates - space.coordinates[vertex], axis=1)
    distance[vertex] = np.inf
    near = np.corrcoef(noise[:, vertex], noise[:, int(np.argmin(distance))])[0, 1]
    assert near > 0.3


def test_bad_inputs_say_what_was_expected():
    data, _ = neuron_timecourses()
    with pytest.raises(ValueError, match="noise kind"):
        simulate_fmri(data, roi_table(), tr_s=2.0, noise="pink")
    with pytest.raises(ValueError, match="tr_s"):
        simulate_fmri(data, roi_table())
    with pytest.raises(ValueError, match="fsaverage5"):
        fsaverage_space(np.zeros(100, dtype=int), ["A"])
    with pytest.raises(ValueError, match="resting-state"):
        simulate_fmri(data, roi_table(), tr_s=2.0, noise="rest")
    with pytest.raises(ValueError, match="patterns"):
        simulate_fmri(data, roi_table(), tr_s=2.0, n_patterns=2, n_clusters=6)


def test_volume_space_from_the_yeo_mni_atlas_through_load_atlas():
    from conftest import shared_data

    from brainalign.networks import load_atlas
    from brainalign.simulate import space_from_atlas

    folder = shared_data("yeo2011_mni")
    atlas = load_atlas("yeo7", "MNI152NLin6Asym_2mm", path=folder)
    space = space_from_atlas(atlas, resolution_mm=3)
    assert space.name == "MNI152NLin2009aSym_3mm" and space.kind == "volume"
    assert space.network_names == list(atlas.labels)
    counts = np.bincount(space.labels, minlength=8)
    assert np.all(counts[1:] > 500)  # every network keeps hundreds of 3 mm voxels
    assert counts[0] > counts[1:].sum() / 2  # white matter, subcortex: brain but no network
    assert len(space.labels) == int((np.asarray(space.mask_img.dataobj) > 0).sum())
