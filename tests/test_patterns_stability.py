"""Stability of study A's atoms (brainalign.patterns.stability) on planted structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainalign.patterns import (StabilityCurve, compare_patterns, consensus_decomposition,
                                 consensus_seeds, match_components, principal_neuron_subspace,
                                 seed_stability, split_half_stability, stability_curve,
                                 subspace_agreement)
from brainalign.patterns.study_a import (AtomCountSelection, Patterns, choose_n_atoms,
                                         fit_atoms)
from brainalign.record.neurons import NeuronTable


pytestmark = pytest.mark.usefixtures("single_thread")

K = 5


def planted(noise=0.3, seed=0, n_neurons=150, n_runs=2, tr_per_run=120, signed=True):
    """Neurons = gain * sign * (one planted smooth atom) + noise, one-hot assignment.

    Returns data (n_tr, n_neurons), runs (n_tr,), neurons, atoms (n_tr, K) z-scored,
    subgroup (n_neurons,) and sign (n_neurons,). ``noise`` is the noise standard
    deviation relative to each neuron's signal (per-neuron SNR = 1 / noise**2). With
    ``signed`` a neuron may follow an atom's negative (k-means cannot group those).
    """
    rng = np.random.default_rng(seed)
    n_tr = n_runs * tr_per_run
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    white = rng.standard_normal((n_tr + 24, K))
    atoms = np.stack([np.convolve(white[:, k], kernel, mode="same") for k in range(K)], 1)[12:-12]
    atoms = (atoms - atoms.mean(0)) / atoms.std(0)
    subgroup = rng.permutation(np.arange(n_neurons) % K)
    sign = rng.choice([-1.0, 1.0], size=n_neurons) if signed else np.ones(n_neurons)
    gain = rng.uniform(0.5, 2.0, size=n_neurons)
    data = gain * (sign * atoms[:, subgroup] + noise * rng.standard_normal((n_tr, n_neurons)))
    data += rng.normal(size=n_neurons)
    neurons = NeuronTable.from_sites([(layer, "mlp.out", n_neurons // 3) for layer in range(3)])
    runs = np.repeat(np.arange(n_runs), tr_per_run)
    return data.astype(np.float32), runs, neurons, atoms, subgroup, sign


def truth_patterns(fit: Patterns, atoms, subgroup, sign) -> Patterns:
    """The planted decomposition as a Patterns on the TRs (and standardisation) of ``fit``."""
    loadings = np.zeros((atoms.shape[1], len(subgroup)), dtype=np.float32)
    loadings[subgroup, np.arange(len(subgroup))] = sign
    return Patterns(atoms=atoms[fit.fit_rows].astype(np.float32), loadings=loadings,
                    subgroup=subgroup.copy(), neurons=fit.neurons, fit_stories=fit.fit_stories,
                    fit_runs=fit.fit_runs, method="truth", times_s=fit.times_s,
                    neuron_mean=fit.neuron_mean, neuron_scale=fit.neuron_scale,
                    fit_rows=fit.fit_rows)


def permuted_copy(p: Patterns, seed=0) -> tuple[Patterns, np.ndarray]:
    """``p`` with its atoms reordered and sign-flipped; returns the copy and old -> new index."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(p.n_atoms)            # new atom j is old atom perm[j]
    signs = rng.choice([-1.0, 1.0], size=p.n_atoms).astype(np.float32)
    new_index = np.argsort(perm)                 # old atom i is new atom new_index[i]
    subgroup = np.where(p.subgroup >= 0, new_index[np.maximum(p.subgroup, 0)], -1)
    copy = Patterns(atoms=p.atoms[:, perm] * signs, loadings=p.loadings[perm] * signs[:, None],
                    subgroup=subgroup, neurons=p.neurons, fit_stories=p.fit_stories,
                    fit_runs=p.fit_runs, method=p.method, times_s=p.times_s,
                    neuron_mean=p.neuron_mean, neuron_scale=p.neuron_scale, fit_rows=p.fit_rows)
    return copy, new_index


def fit(data, runs, neurons, n_atoms=K, **kwargs):
    return fit_atoms(data, n_atoms, train_runs="all", neurons=neurons, runs=runs, device="cpu",
                     **kwargs)


def test_a_fit_matches_the_planted_patterns_at_high_snr():
    data, runs, neurons, atoms, subgroup, sign = planted(noise=0.3)
    patterns = fit(data, runs, neurons)
    truth = truth_patterns(patterns, atoms, subgroup, sign)
    result = compare_patterns(patterns, truth)
    assert result["subgroup_ari"] > 0.95
    assert result["loading_r_mean"] > 0.95 and result["loading_r_min"] > 0.9
    assert result["atom_r_mean"] > 0.95 and result["atom_r_on"].startswith("fitted atoms")
    assert result["subgroup_iou_mean"] > 0.95 and result["subgroup_iou_set_matched_mean"] > 0.95
    assert result["atom_matching"]["agreement"] == 1.0
    assert result["n_atoms"] == [K, K] and len(result["loading_r"]) == K
    # on common TRs through Patterns.transform: the same answer
    on_common = compare_patterns(patterns, truth, common=data)
    assert on_common["atom_r_mean"] > 0.95
    assert on_common["atom_r_on"].startswith("Patterns.transform")
    json.dumps(result), json.dumps(on_common)


def test_a_permuted_sign_flipped_copy_agrees_exactly():
    data, runs, neurons, *_ = planted(noise=0.5, seed=1)
    patterns = fit(data, runs, neurons)
    copy, new_index = permuted_copy(patterns)
    for common in (None, data):
        result = compare_patterns(patterns, copy, common=common)
        for key in ("loading_r", "atom_r", "subgroup_iou"):
            np.testing.assert_allclose(result[key], 1.0, atol=1e-5)
        assert result["subgroup_ari"] == 1.0
        assert result["subgroup_iou_set_matched_mean"] == pytest.approx(1.0)
        np.testing.assert_array_equal(np.asarray(result["matching"]["b"]),
                                      new_index[np.asarray(result["matching"]["a"])])
        assert result["atom_matching"]["agreement"] == 1.0


def test_unrelated_patterns_agree_little():
    rng = np.random.default_rng(3)
    n, n_tr = 300, 200
    neurons = NeuronTable.from_sites([(0, "mlp.out", n)])

    def random_patterns():
        subgroup = rng.integers(K, size=n)
        loadings = np.zeros((K, n), dtype=np.float32)
        loadings[subgroup, np.arange(n)] = rng.uniform(0.5, 1.0, size=n)
        return Patterns(atoms=rng.standard_normal((n_tr, K)).astype(np.float32),
                        loadings=loadings, subgroup=subgroup, neurons=neurons, fit_stories=[],
                        fit_runs=[0], method="random", times_s=np.arange(n_tr, dtype=float),
                        neuron_mean=np.zeros(n), neuron_scale=np.ones(n),
                        fit_rows=np.arange(n_tr))

    result = compare_patterns(random_patterns(), random_patterns())
    assert abs(result["subgroup_ari"]) < 0.05
    assert result["loading_r_mean"] < 0.3
    assert result["atom_r_mean"] < 0.3
    assert result["subgroup_iou_mean"] < 0.3


def test_compare_patterns_handles_different_k_and_refuses_different_neurons():
    data, runs, neurons, *_ = planted(noise=0.3, seed=2)
    small, large = fit(data, runs, neurons, 3), fit(data, runs, neurons, 7)
    result = compare_patterns(small, large, common=data)
    assert result["n_atoms"] == [3, 7] and len(result["loading_r"]) == 3
    # fitted on other TRs and no common data: no atom r
    half = fit_atoms(data, K, train_runs=[0], neurons=neurons, runs=runs, device="cpu")
    assert compare_patterns(small, half)["atom_r"] is None
    other = fit(data[:, :60], runs, NeuronTable.from_sites([(0, "mlp.out", 60)]))
    with pytest.raises(ValueError, match="same neurons"):
        compare_patterns(small, other)


def test_stability_drops_as_noise_rises():
    """Median over three planted data sets: one fit at low noise can settle in a local
    optimum that merges two atoms (seen on one CPU for one of them: loading r 0.88), which
    a single data set would mistake for instability."""
    loading, ari, atom = [], [], []
    for noise in (0.3, 3.0, 6.0):
        halves = []
        for seed in (4, 5, 6):
            data, runs, neurons, *_ = planted(noise=noise, seed=seed)
            halves.append(split_half_stability(data, K, train_runs="all", neurons=neurons,
                                               runs=runs, device="cpu"))
        assert {half["scheme"] for half in halves} == {"runs [0] vs [1]"}
        loading.append(np.median([half["loading_r_mean"] for half in halves]))
        ari.append(np.median([half["subgroup_ari"] for half in halves]))
        atom.append(np.median([half["atom_r_mean"] for half in halves]))
    assert loading[0] > 0.95 and ari[0] > 0.95 and atom[0] > 0.95
    assert loading[0] > loading[1] > loading[2]
    assert ari[0] > ari[1] > ari[2]
    assert ari[2] < 0.1 and loading[2] < 0.3


def test_split_half_of_one_run_cuts_its_trs_and_compares_atoms_on_them():
    data, runs, neurons, *_ = planted(noise=0.3, seed=5, n_runs=1, tr_per_run=200)
    half = split_half_stability(data, K, train_runs=[0], neurons=neurons, runs=runs,
                                device="cpu")
    assert half["scheme"].startswith("first vs second half")
    assert half["n_tr"] == [100, 100]
    assert half["atom_r_on"] == "Patterns.transform on 200 common TRs"
    assert half["atom_r_mean"] > 0.95 and half["loading_r_mean"] > 0.95
    with pytest.raises(ValueError, match="fewer than"):
        split_half_stability(data, 150, train_runs=[0], neurons=neurons, runs=runs, device="cpu")


def test_seed_stability_compares_refits_with_the_reference():
    data, runs, neurons, *_ = planted(noise=0.5, seed=6, signed=False)
    result = seed_stability(data, K, seeds=(1, 2), train_runs="all", neurons=neurons, runs=runs,
                            method="kmeans", n_init=3, device="cpu")
    assert result["reference_seed"] == 0 and set(result["pairs"]) == {"1", "2"}
    assert result["atom_r_mean"] > 0.99 and result["subgroup_ari_mean"] > 0.95
    assert result["subgroup_iou_mean"] > 0.95
    json.dumps(result)


def test_fit_atoms_still_records_stability_keys(tmp_path):
    data, runs, neurons, *_ = planted(noise=0.5, seed=7, n_runs=4, tr_per_run=60)
    patterns = fit_atoms(data, K, train_runs=[0, 1, 2, 3], neurons=neurons, runs=runs,
                         device="cpu", stability_seeds=[1], split_half=True)
    seed = patterns.stability["seed"]
    assert {"reference_seed", "seeds", "pairs", "atom_r_mean", "loading_r_mean",
            "subgroup_ari_mean", "subgroup_iou_mean", "matching"} <= set(seed)
    assert {"atom_r_mean", "atom_r_min", "atom_r", "loading_r_mean", "loading_r_min",
            "loading_r", "subgroup_ari", "subgroup_iou"} <= set(seed["pairs"]["1"])
    half = patterns.stability["split_half"]
    assert {"scheme", "compared", "loading_r_mean", "loading_r_min", "loading_r",
            "subgroup_ari", "atom_r_mean", "subgroup_iou_mean"} <= set(half)
    assert half["scheme"] == "runs [0, 2] vs [1, 3]"
    assert half["atom_r_mean"] > 0.9
    loaded = Patterns.load(patterns.save(tmp_path / "patterns"))
    assert loaded.stability == patterns.stability


def test_stability_curve_is_highest_at_the_planted_k():
    data, runs, neurons, *_ = planted(noise=0.5, seed=8)
    curve = stability_curve(data, candidates=(K, 25), seeds=(1,), train_runs="all",
                            neurons=neurons, runs=runs, device="cpu")
    assert isinstance(curve, StabilityCurve) and curve.candidates == [K, 25]
    assert curve.split_half_loading_r[0] > curve.split_half_loading_r[1] + 0.1
    assert curve.split_half_subgroup_ari[0] > curve.split_half_subgroup_ari[1]
    assert curve.split_half_subgroup_iou[0] > curve.split_half_subgroup_iou[1]
    assert curve.best() == K and curve.best("split_half_atom_r") == K
    document = json.loads(json.dumps(curve.to_dict()))
    assert document["candidates"] == [K, 25] and len(document["details"]) == 2
    assert all(v is not None for v in document["seed_loading_r"])
    # no seeds: seed metrics are missing (None in the dict), split-half ones are there
    no_seeds = stability_curve(data, candidates=(K,), seeds=(), train_runs="all",
                               neurons=neurons, runs=runs, device="cpu").to_dict()
    assert no_seeds["seed_atom_r"] == [None] and no_seeds["split_half_loading_r"][0] > 0.9
    json.dumps(no_seeds)
    with pytest.raises(ValueError, match="nothing to compute"):
        stability_curve(data, candidates=(K,), seeds=(), split_half=False, train_runs="all",
                        neurons=neurons, runs=runs)


def test_choose_n_atoms_by_stability_and_encoding():
    data, runs, neurons, atoms, *_ = planted(noise=0.5, seed=9, n_runs=3, tr_per_run=60)
    rng = np.random.default_rng(1)
    brain = atoms @ rng.standard_normal((K, 8)) + 0.5 * rng.standard_normal((len(runs), 8))
    common = dict(delays=[0], neurons=neurons, runs=runs, device="cpu",
                  encoding_params={"alphas": np.logspace(-2, 3, 4)})
    candidates = [K, 20]
    plain = AtomCountSelection(candidates, np.array([[0.3, 0.2], [0.4, 0.5]]), [0, 1], 20)
    document = json.loads(json.dumps(plain.to_dict()))
    assert document["stability"] is None and document["min_stability"] is None
    assert document["best_by_score"] == 20 and document["eligible"] == candidates

    selection = choose_n_atoms(data, brain, train_runs=[0, 1, 2], candidates=candidates,
                               min_stability=0.9, **common)
    assert selection.stability.shape == (2,)
    assert selection.eligible == [k for k, s in zip(candidates, selection.stability) if s >= 0.9]
    assert selection.eligible == [K]
    assert selection.best == K
    assert selection.best_by_score == candidates[int(np.argmax(selection.scores.mean(1)))]
    document = json.loads(json.dumps(selection.to_dict()))
    assert document["min_stability"] == 0.9 and document["eligible"] == [K]
    assert document["stability"] == selection.stability.tolist() and "0.9" in document["rule"]

    # nobody is that stable: the most stable candidate, said so
    strict = choose_n_atoms(data, brain, train_runs=[0, 1], candidates=(2, K),
                            min_stability=1.01, **common)
    assert strict.eligible == []
    assert strict.best == [2, K][int(np.argmax(strict.stability))]
    assert "no candidate" in strict.rule


# -- consensus atoms ---------------------------------------------------------------------

def test_consensus_of_permuted_sign_flipped_copies_is_the_first_fit():
    data, runs, neurons, *_ = planted(noise=0.5, seed=10)
    patterns = fit(data, runs, neurons)
    copies = [permuted_copy(patterns, seed)[0] for seed in (1, 2)]
    fits = [(p.atoms, p.loadings) for p in [patterns, *copies]]
    atoms, loadings, info = consensus_decomposition(fits)
    np.testing.assert_allclose(loadings, patterns.loadings, atol=1e-6)
    np.testing.assert_allclose(atoms, patterns.atoms, atol=1e-6)
    np.testing.assert_allclose(info["reliability"], 1.0, atol=1e-6)
    # each copy's pairing points at the copy's atom that holds the first fit's atom
    for copy_seed, pairing in zip((1, 2), info["pairing"][1:]):
        np.testing.assert_array_equal(pairing, permuted_copy(patterns, copy_seed)[1])
    assert info["converged"] and info["n_fits"] == 3
    json.dumps(info)


def test_consensus_averages_out_independent_fit_noise():
    """Fits = planted loadings + independent noise, each permuted and sign-flipped: the
    consensus is closer to the planted loadings than any single fit, and the reliability is
    each fit's r with the consensus."""
    rng = np.random.default_rng(11)
    k, n_neurons, n_tr, n_fits = 6, 400, 80, 8
    truth = rng.standard_normal((k, n_neurons))
    truth_atoms = rng.standard_normal((n_tr, k))
    fits, single_r = [], []
    for _ in range(n_fits):
        loadings = truth + 1.0 * rng.standard_normal((k, n_neurons))
        single_r.append(np.mean([abs(np.corrcoef(loadings[i], truth[i])[0, 1]) for i in range(k)]))
        perm, signs = rng.permutation(k), rng.choice([-1.0, 1.0], size=k)
        fits.append((truth_atoms[:, perm] * signs, loadings[perm] * signs[:, None]))
    atoms, loadings, info = consensus_decomposition(fits)
    rows, cols, r = match_components(truth, loadings)
    # noise variance 1 per fit -> 1/8 in the mean of 8: r = 1 / sqrt(1 + 1/8) = 0.94
    assert r.mean() > 0.92 and r.mean() > max(single_r) + 0.15
    assert info["reliability_mean"] == pytest.approx(
        np.mean([match_components(loadings, fit_loadings)[2].mean() for _, fit_loadings in fits]),
        abs=1e-6)
    # atoms average the same pairing: the planted time courses come back exactly
    np.testing.assert_allclose(np.abs(np.corrcoef(atoms.T, truth_atoms.T)[:k, k:])[cols, rows],
                               1.0, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 fits"):
        consensus_decomposition(fits[:1])
    with pytest.raises(ValueError, match="same atoms and loadings shapes"):
        consensus_decomposition([fits[0], (fits[1][0][:, :3], fits[1][1][:3])])


def test_consensus_seeds_are_reproducible_and_disjoint_across_random_states():
    assert consensus_seeds(7, 1) == [7]
    seeds = consensus_seeds(0, 5)
    assert seeds == consensus_seeds(0, 5) and len(set(seeds)) == 5
    assert not set(seeds) & set(consensus_seeds(1, 5))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="integer >= 1"):
            consensus_seeds(0, bad)


def low_rank_dense(seed=1, n_neurons=300, n_tr=200, rank=10, noise=1.0):
    """Time courses of neurons with dense Gaussian loadings on ``rank`` latent time courses
    (variances 1/i) plus noise: no sparse structure pins down the atoms, as in a real model."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_tr, rank)) / np.sqrt(np.arange(1, rank + 1))
    data = latent @ rng.standard_normal((rank, n_neurons))
    data += noise * rng.standard_normal((n_tr, n_neurons))
    return data.astype(np.float32), NeuronTable.from_sites([(0, "mlp.out", n_neurons)])


def test_fit_atoms_consensus_records_reliability_and_is_more_stable_across_seeds():
    """Where the sparse atoms are not identified, fits from random initial atoms differ
    between seeds; consensus fits of disjoint seed sets agree more with each other."""
    data, neurons = low_rank_dense()

    def fit_k16(seed, consensus_fits=1, **kwargs):
        return fit_atoms(data, 16, train_runs="all", neurons=neurons, device="cpu",
                         random_state=seed, consensus_fits=consensus_fits, **kwargs)

    single = [fit_k16(seed, init="random") for seed in range(4)]
    pooled = [fit_k16(seed, 6, init="random") for seed in (0, 1)]
    info = pooled[0].stability["consensus"]
    assert info["n_fits"] == 6 and info["seeds"] == consensus_seeds(0, 6)
    assert 0.5 < info["reliability_min"] <= info["reliability_mean"] < 0.95
    assert pooled[0].params["consensus_fits"] == 6 and "consensus_fits" not in single[0].params
    seed_r_single = np.mean([compare_patterns(single[0], other)["loading_r_mean"]
                             for other in single[1:]])
    seed_r_pooled = compare_patterns(*pooled)["loading_r_mean"]
    assert seed_r_pooled > seed_r_single + 0.05, (seed_r_single, seed_r_pooled)
    # one consensus fit is the plain fit
    np.testing.assert_array_equal(fit_k16(0, 1, init="random").loadings, single[0].loadings)
    # the exact SVD start (few TRs) does not depend on the seed: every fit is the same
    exact = fit_k16(0, 3)
    assert exact.stability["consensus"]["reliability_min"] == pytest.approx(1.0)
    np.testing.assert_allclose(exact.loadings, fit_k16(0).loadings, atol=1e-6)
    with pytest.raises(ValueError, match="integer >= 1"):
        fit_k16(0, 0)


# -- principal subspaces of split halves -------------------------------------------------

def test_subspace_agreement_bounds_matched_loading_r_of_orthonormal_loadings():
    rng = np.random.default_rng(13)
    n, k = 500, 6
    basis = np.linalg.qr(rng.standard_normal((n, k)))[0]
    rotation = np.linalg.qr(rng.standard_normal((k, k)))[0]
    same = subspace_agreement(basis, basis @ rotation)
    np.testing.assert_allclose(same["canonical_r"], 1.0, atol=1e-10)
    orthogonal = np.linalg.qr(np.hstack([basis, rng.standard_normal((n, k))]))[0][:, k:]
    assert subspace_agreement(basis, orthogonal)["canonical_r_mean"] < 1e-10
    # two noisy subspaces: no rotation inside them gives loadings matching better than the mean
    def noisy():  # centred over neurons, as principal_neuron_subspace returns them
        noisy_basis = basis + 0.04 * rng.standard_normal((n, k))
        return np.linalg.qr(noisy_basis - noisy_basis.mean(0))[0]

    a, b = noisy(), noisy()
    bound = subspace_agreement(a, b)
    assert 0.3 < bound["canonical_r_mean"] < 0.95
    for _ in range(20):
        ra, rb = (np.linalg.qr(rng.standard_normal((k, k)))[0] for _ in range(2))
        la, lb = (a @ ra).T, (b @ rb).T
        la, lb = la - la.mean(1, keepdims=True), lb - lb.mean(1, keepdims=True)
        assert match_components(la, lb)[2].mean() <= bound["canonical_r_mean"] + 1e-9


def test_split_half_reports_the_principal_subspace_agreement():
    data, runs, neurons, *_ = planted(noise=0.3, seed=14)
    clean = split_half_stability(data, K, train_runs="all", neurons=neurons, runs=runs,
                                 device="cpu")["subspace"]
    assert clean["canonical_r_min"] > 0.95 and len(clean["canonical_r"]) == K
    noisy = split_half_stability(data + np.random.default_rng(0).normal(
        0, 8 * data.std(0), data.shape).astype(np.float32), K, train_runs="all",
        neurons=neurons, runs=runs, device="cpu")["subspace"]
    assert noisy["canonical_r_mean"] < clean["canonical_r_mean"] - 0.2
    # the leading subspace of the K planted atoms at K: the planted loadings span it
    X = fit(data, runs, neurons)
    basis = principal_neuron_subspace(data, np.arange(len(runs)), K, neurons=neurons,
                                      device="cpu")
    np.testing.assert_allclose(basis.T @ basis, np.eye(K), atol=1e-8)
    on_disk = principal_neuron_subspace(data, np.arange(len(runs)), K, neurons=neurons,
                                        device="cpu", in_memory=False)
    np.testing.assert_allclose(subspace_agreement(basis, on_disk)["canonical_r"], 1.0, atol=1e-5)
    assert subspace_agreement(basis, np.linalg.qr(X.loadings.T - X.loadings.T.mean(0))[0]
                              )["canonical_r_min"] > 0.95
    without = split_half_stability(data, K, train_runs="all", neurons=neurons, runs=runs,
                                   device="cpu", subspace=False)
    assert "subspace" not in without


def test_stability_refits_read_the_data_as_the_fit_does(monkeypatch):
    """fit_atoms(in_memory=False) keeps its seed, split-half and subspace refits out of
    core too (a long corpus would not fit on the device otherwise)."""
    import brainalign.patterns.stability as stability
    import brainalign.patterns.study_a as study_a

    read_in_memory = []
    original = study_a._training_matrix

    def spy(inputs, rows, *args, **kwargs):
        read_in_memory.append(inputs.in_memory)
        return original(inputs, rows, *args, **kwargs)

    monkeypatch.setattr(study_a, "_training_matrix", spy)
    monkeypatch.setattr(stability, "_training_matrix", spy)
    data = np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32)
    fit_atoms(data, 3, train_runs="all", neurons=NeuronTable.from_sites([(0, "mlp.out", 50)]),
              runs=np.repeat([0, 1], 20), device="cpu", in_memory=False, stability_seeds=[1],
              split_half=True, max_iter=3)
    assert len(read_in_memory) >= 4 and not any(read_in_memory)


def test_correlation_of_identical_rows_is_exactly_one():
    """Rounding can put r of a row with itself at 1 + 2e-16; stability means must stay in
    [-1, 1] (a summary reading 1.0000000000000002 fails any range check downstream)."""
    from brainalign.patterns.matching import abs_correlation, correlation

    rows = np.random.default_rng(0).standard_normal((200, 57)) * 1e3 + 7.0
    r = correlation(rows, rows)
    assert r.max() <= 1.0 and r.min() >= -1.0
    np.testing.assert_allclose(np.diag(r), 1.0, atol=1e-12)
    assert abs_correlation(rows, -rows).max() <= 1.0
