"""The study run on simulations (patterns -> encoding -> network mapping): exact recovery at
high SNR, chance at zero SNR, a calibrated null."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.record.neurons import NeuronTable
from brainalign.simulate import roi_space, simulate_fmri
from brainalign.simulate.recovery import score_recovery
from brainalign.timecourse import NeuronTimecourses

NETWORKS = ["net1", "net2", "net3", "net4"]
STUDY = dict(delays=(1, 2, 3), n_perm_encoding=100, n_perm_mapping=200,
             encoding_kwargs=dict(alphas=np.logspace(-1, 4, 6), n_inner_splits=3))


def roi_table(n_per_network: int = 15):
    return roi_space(np.repeat(np.arange(5), n_per_network), NETWORKS)


def synthetic_timecourses(n_tr: int = 240, n_groups: int = 6, per_group: int = 15, seed: int = 0):
    """Neuron groups sharing a latent time course, in two runs, as NeuronTimecourses."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_tr, n_groups))
    n_neurons = n_groups * per_group
    data = np.repeat(latent, per_group, axis=1) + 0.5 * rng.standard_normal((n_tr, n_neurons))
    runs = np.repeat([0, 1], n_tr // 2)
    times_s = 2.0 * (np.arange(n_tr) % (n_tr // 2))
    neurons = NeuronTable(np.zeros(n_neurons, int), np.full(n_neurons, "mlp.out"),
                          np.arange(n_neurons))
    return NeuronTimecourses(data.astype(np.float32), times_s, runs, neurons)


def test_high_snr_study_recovers_atoms_networks_and_responsive_targets():
    timecourses = synthetic_timecourses()
    sim = simulate_fmri(timecourses, roi_table(), snr=4.0, n_patterns=4, n_clusters=6,
                        n_subjects=2, noise="ar1", random_state=0)
    scores = score_recovery(sim, timecourses=timecourses, n_atoms=6,
                            fit_atoms_kwargs=dict(method="kmeans"), **STUDY)
    assert min(scores.atom_correlation) > 0.95
    assert scores.accuracy == 1.0
    assert scores.assigned_network == sim.truth.pattern_network()
    assert scores.auc > 0.99
    assert scores.best_r > 0.6
    # a permutation null of the maps alone hands both atoms that drive nothing the networks
    # of the atoms they borrow coefficients from; the temporal test takes that away (each
    # pattern is its own FDR family of 4 networks, so one of the two may still pass by
    # chance, as one does here)
    permutation_only = score_recovery(sim, timecourses=timecourses, n_atoms=6, n_shifts=0,
                                      spatial_null="auto", fit_atoms_kwargs=dict(method="kmeans"),
                                      **STUDY)
    assert permutation_only.details["null"] == "permutation"
    assert permutation_only.accuracy == 1.0 and permutation_only.false_positive_share == 1.0
    assert scores.false_positive_share <= 0.5
    # against the maps of time-shifted atoms (the default), the same spatial test alone
    # keeps every planted link and gives neither bystander a network
    shift_only = score_recovery(sim, timecourses=timecourses, n_atoms=6, n_shifts=0,
                                fit_atoms_kwargs=dict(method="kmeans"), **STUDY)
    assert shift_only.details["null"] == "shift"
    assert shift_only.accuracy == 1.0 and shift_only.false_positive_share == 0.0


def test_zero_snr_study_is_at_chance():
    timecourses = synthetic_timecourses(seed=1)
    sim = simulate_fmri(timecourses, roi_table(), snr=0.0, n_patterns=4, n_clusters=6,
                        n_subjects=2, noise="ar1", random_state=1)
    scores = score_recovery(sim, timecourses=timecourses, n_atoms=6,
                            fit_atoms_kwargs=dict(method="kmeans"), **STUDY)
    # the planted responsive targets are not told apart from the others
    responsive = sim.truth.responsive
    aucs = scores.details["subject_auc"]
    for subject, auc in enumerate(aucs):
        # standard error of an AUC with these class sizes under the null
        n1, n0 = responsive[subject].sum(), (~responsive[subject]).sum()
        se = np.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
        assert abs(auc - 0.5) < 3.5 * se
    assert scores.accuracy <= 0.25
    assert scores.best_r < 0.5


def test_null_simulations_map_about_five_percent_of_patterns():
    """Noise only: the raw mapping p-values are uniform and few patterns get a network."""
    from brainalign.encoding import fit_encoding, pattern_maps
    from brainalign.networks.mapping import map_patterns
    from brainalign.simulate.recovery import simulation_atlas

    rng = np.random.default_rng(5)
    atoms = rng.standard_normal((160, 6))
    raw_p, mapped = [], []
    for seed in range(12):
        sim = simulate_fmri(space=roi_table(8), atoms=atoms, tr_s=2.0, snr=0.0, n_subjects=1,
                            n_runs=2, noise="white", random_state=seed)
        result = fit_encoding(atoms, sim.bold[0], sim.runs, delays=[1, 2], n_perm=0,
                              alphas=np.logspace(-1, 4, 6), n_inner_splits=3)
        mapping = map_patterns(pattern_maps(result), simulation_atlas(sim),
                               n_perm=200, random_state=seed)
        raw_p.append(mapping.p_values["correlation"].ravel())
        mapped.extend(name != "none" for name in mapping.assigned)
    raw_p = np.concatenate(raw_p)
    # 288 pattern x network tests: about 5% below .05 (binomial 99.9% range ~ 1%-11%)
    assert 0.01 <= np.mean(raw_p < 0.05) <= 0.11
    assert np.mean(raw_p < 0.5) == pytest.approx(0.5, abs=0.1)
    # FDR over each pattern's networks maps a signal-free pattern with probability <= .05:
    # at most 9 of these 72 (binomial 99% bound; benchmarks/calibration_mapping.py checks
    # the rate on 500+ patterns)
    assert np.mean(mapped) <= 9 / 72
