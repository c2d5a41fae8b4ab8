"""Study A (atoms, subgroups, guard, stability, choice of K) and study B (ICA networks)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from brainalign.patterns import (FunctionalNetworks, find_functional_networks, group_templates,
                                 iou_matrix, match_components, match_networks, networks_from_maps,
                                 recurrence_counts)
from brainalign.patterns.study_a import Patterns, choose_n_atoms, fit_atoms
from brainalign.record.neurons import NeuronTable


pytestmark = pytest.mark.usefixtures("single_thread")


# -- study A -----------------------------------------------------------------------------

N_ATOMS = 5


def planted_timecourses(seed=0, n_layers=4, width=40, tr_per_run=50, n_runs=4, noise=0.3,
                        signed=True):
    """Neurons each follow one planted atom; layer l prefers atom l (60%).

    With ``signed`` a neuron may follow an atom's negative (k-means cannot group those).
    """
    rng = np.random.default_rng(seed)
    n_tr = tr_per_run * n_runs
    atoms = rng.standard_normal((n_tr, N_ATOMS))
    neurons = NeuronTable.from_sites([(layer, "mlp.out", width) for layer in range(n_layers)])
    n = len(neurons)
    subgroup = np.where(rng.random(n) < 0.6, neurons.layer % N_ATOMS, rng.integers(N_ATOMS, size=n))
    gain = rng.uniform(0.5, 2.0, size=n) * (rng.choice([-1, 1], size=n) if signed else 1)
    data = atoms[:, subgroup] * gain + noise * rng.standard_normal((n_tr, n)) + rng.normal(size=n)
    runs = np.repeat(np.arange(n_runs), tr_per_run)
    return data.astype(np.float32), runs, neurons, atoms, subgroup


@pytest.mark.parametrize("method", ["dictionary", "kmeans"])
def test_fit_atoms_recovers_planted_atoms_and_subgroups(method):
    data, runs, neurons, atoms, subgroup = planted_timecourses(signed=method == "dictionary")
    train = runs < 3
    extra = {"n_init": 5} if method == "kmeans" else {}
    patterns = fit_atoms(data, N_ATOMS, train_runs=[0, 1, 2], held_out_runs=[3], neurons=neurons,
                         runs=runs, method=method, device="cpu", **extra)
    assert patterns.atoms.shape == (int(train.sum()), N_ATOMS)
    assert patterns.loadings.shape == (N_ATOMS, len(neurons))
    assert patterns.fit_runs == [0, 1, 2]
    assert adjusted_rand_score(subgroup, patterns.subgroup) > 0.95
    _, _, r = match_components(atoms[train].T, patterns.atoms.T)
    assert r.min() > 0.95
    # held-out run: atom time courses from the loadings alone still follow the truth
    held_out = patterns.transform(data[~train])
    _, _, r_held = match_components(atoms[~train].T, held_out.T)
    assert r_held.min() > 0.9
    # composition: counts per (subgroup, layer) add up, and match the planted table
    table = patterns.composition("layer")
    assert table.values.sum() == len(neurons)
    order = match_components(atoms[train].T, patterns.atoms.T)
    mapping = dict(zip(order[1], order[0]))
    planted = np.array([[np.sum((subgroup == mapping[k]) & (neurons.layer == layer))
                         for layer in range(4)] for k in table.index])
    np.testing.assert_array_equal(table.values, planted)
    assert patterns.composition("site").columns.tolist() == ["mlp.out"]


def test_dictionary_codes_are_sparse_and_support_is_the_nonzero_codes():
    data, runs, neurons, *_ = planted_timecourses(1)
    patterns = fit_atoms(data, N_ATOMS, train_runs="all", neurons=neurons, runs=runs, alpha=0.2,
                         device="cpu")
    assert patterns.fit_runs == [0, 1, 2, 3]
    assert patterns.support.mean() < 0.5
    np.testing.assert_array_equal(patterns.support, patterns.loadings != 0)
    assigned = patterns.subgroup >= 0
    np.testing.assert_array_equal(
        patterns.support[patterns.subgroup[assigned], np.flatnonzero(assigned)], True)


def test_held_out_runs_never_influence_the_atoms_and_the_guard_raises():
    data, runs, neurons, *_ = planted_timecourses(2)
    a = fit_atoms(data, N_ATOMS, train_runs=[0, 1], neurons=neurons, runs=runs, device="cpu")
    scrambled = data.copy()
    scrambled[runs >= 2] = np.random.default_rng(9).standard_normal(scrambled[runs >= 2].shape)
    b = fit_atoms(scrambled, N_ATOMS, train_runs=[0, 1], neurons=neurons, runs=runs, device="cpu")
    np.testing.assert_array_equal(a.atoms, b.atoms)
    np.testing.assert_array_equal(a.loadings, b.loadings)
    with pytest.raises(ValueError, match=r"include held-out runs \[2\]"):
        fit_atoms(data, N_ATOMS, train_runs=[0, 1, 2], held_out_runs=[2, 3], neurons=neurons,
                  runs=runs, device="cpu")
    with pytest.raises(ValueError, match="available runs"):
        fit_atoms(data, N_ATOMS, train_runs=[7], neurons=neurons, runs=runs, device="cpu")
    with pytest.raises(ValueError, match=r"runs \[1\] were used to fit"):
        a.assert_not_fit_on([1, 3])
    a.assert_not_fit_on([2, 3])
    # train_runs="all" minus the held-out runs
    c = fit_atoms(data, N_ATOMS, train_runs="all", held_out_runs=[2, 3], neurons=neurons,
                  runs=runs, device="cpu")
    assert c.fit_runs == [0, 1]
    np.testing.assert_allclose(c.atoms, a.atoms, atol=1e-5)


def test_fit_atoms_reads_neuron_timecourses_and_memmaps(tmp_path):
    from brainalign.timecourse import NeuronTimecourses

    data, runs, neurons, *_ = planted_timecourses(3)
    timecourses = NeuronTimecourses(data, np.arange(len(runs)) * 2.0, runs, neurons,
                                    {"story": "planted"})
    timecourses.save(tmp_path / "tc")
    mapped = NeuronTimecourses.load(tmp_path / "tc", mmap=True)
    assert isinstance(mapped.data, np.memmap)
    a = fit_atoms(timecourses, N_ATOMS, train_runs=[0, 1, 2], device="cpu")
    b = fit_atoms(mapped, N_ATOMS, train_runs=[0, 1, 2], device="cpu", chunk_size=17)
    assert a.fit_stories == ["planted"]
    np.testing.assert_allclose(a.times_s, np.arange(150) * 2.0)
    np.testing.assert_allclose(b.atoms, a.atoms, atol=1e-5)
    np.testing.assert_array_equal(b.subgroup, a.subgroup)


def test_patterns_save_load_round_trip(tmp_path):
    data, runs, neurons, *_ = planted_timecourses(4)
    patterns = fit_atoms(data, N_ATOMS, train_runs=[0, 1, 2], neurons=neurons, runs=runs,
                         device="cpu", split_half=True)
    loaded = Patterns.load(patterns.save(tmp_path / "patterns"))
    for name in ("atoms", "loadings", "subgroup", "times_s", "neuron_mean", "neuron_scale"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(patterns, name))
    np.testing.assert_array_equal(loaded.neurons.layer, neurons.layer)
    assert loaded.fit_runs == [0, 1, 2] and loaded.method == "dictionary"
    assert loaded.stability == patterns.stability
    assert loaded.provenance["config_hash"] == patterns.provenance["config_hash"]


def test_seed_and_split_half_stability_are_high_on_planted_data_and_low_on_noise():
    data, runs, neurons, *_ = planted_timecourses(5, signed=False)
    patterns = fit_atoms(data, N_ATOMS, train_runs=[0, 1, 2, 3], neurons=neurons, runs=runs,
                         method="kmeans", n_init=3, device="cpu", stability_seeds=[1, 2],
                         split_half=True)
    seed = patterns.stability["seed"]
    assert seed["atom_r_mean"] > 0.99 and seed["subgroup_ari_mean"] > 0.95
    assert set(seed["pairs"]) == {"1", "2"}
    half = patterns.stability["split_half"]
    assert half["loading_r_mean"] > 0.9 and half["scheme"] == "runs [0, 2] vs [1, 3]"
    noise = np.random.default_rng(0).standard_normal(data.shape).astype(np.float32)
    noisy = fit_atoms(noise, N_ATOMS, train_runs="all", neurons=neurons, runs=runs,
                      method="kmeans", device="cpu", split_half=True)
    assert noisy.stability["split_half"]["subgroup_ari"] < 0.2


def test_choose_n_atoms_prefers_the_planted_number():
    data, runs, neurons, atoms, _ = planted_timecourses(6)
    rng = np.random.default_rng(1)
    brain = atoms @ rng.standard_normal((N_ATOMS, 12)) + 0.5 * rng.standard_normal((len(runs), 12))
    selection = choose_n_atoms(data, brain, train_runs=[0, 1, 2], held_out_runs=[3],
                               candidates=(2, N_ATOMS), delays=[0], neurons=neurons, runs=runs,
                               device="cpu", encoding_params={"alphas": np.logspace(-2, 3, 6)})
    assert selection.best == N_ATOMS
    assert selection.scores.shape == (2, 3) and selection.held_out == [0, 1, 2]
    assert selection.scores[1].mean() > selection.scores[0].mean() + 0.1
    with pytest.raises(ValueError, match=">= 2 training runs"):
        choose_n_atoms(data, brain, train_runs=[0], neurons=neurons, runs=runs, device="cpu")


def test_fit_atoms_bad_inputs_say_what_was_expected():
    data, runs, neurons, *_ = planted_timecourses(7)
    with pytest.raises(ValueError, match="needs neurons"):
        fit_atoms(data, 3, train_runs="all")
    with pytest.raises(ValueError, match="method must be one of"):
        fit_atoms(data, 3, train_runs="all", neurons=neurons, method="pca")
    with pytest.raises(ValueError, match="n_atoms must be between"):
        fit_atoms(data, 500, train_runs="all", neurons=neurons, device="cpu")


# -- study B -----------------------------------------------------------------------------

def planted_networks(seed=0, n_tokens=300, n_layers=6, width=100, k=4, size=25, noise=0.3,
                     present=None):
    """Activations driven by k sparse neuron networks, all in the last two layers."""
    rng = np.random.default_rng(seed)
    neurons = NeuronTable.from_sites([(layer, "mlp.out", width) for layer in range(n_layers)])
    n = len(neurons)
    late = np.flatnonzero(neurons.layer >= n_layers - 2)
    members = np.random.default_rng(100).permutation(late)[: k * size].reshape(k, size)
    maps = np.zeros((k, n))
    for i, net in enumerate(members):
        maps[i, net] = np.random.default_rng(200 + i).uniform(1.0, 2.0, size)
    drive = rng.laplace(size=(n_tokens, k))
    if present is not None:
        drive[:, [i for i in range(k) if i not in present]] = 0
    acts = drive @ maps + noise * rng.standard_normal((n_tokens, n))
    return acts.astype(np.float32), neurons, [np.sort(m) for m in members]


def test_find_functional_networks_recovers_planted_networks_in_late_layers():
    acts, neurons, truth = planted_networks()
    found = find_functional_networks(acts, neurons, n_components=4, z_threshold=3.6,
                                     random_state=0, device="cpu")
    assert len(found) == 4
    iou = iou_matrix(truth, found.networks, len(neurons))
    assert iou.max(1).min() > 0.8
    dist = found.layer_distribution()
    assert dist.loc["union"].sum() == len(found.union())
    assert dist.loc["union", [0, 1, 2, 3]].sum() == 0  # planted in layers 4 and 5
    # the study's 3.6 keeps a subset of what the 1.96 default keeps; two-sided a superset
    loose = find_functional_networks(acts, neurons, n_components=4, random_state=0, device="cpu")
    two = find_functional_networks(acts, neurons, n_components=4, two_sided=True,
                                   random_state=0, device="cpu")
    for strict_net, loose_net, two_net in zip(found.networks, loose.networks, two.networks):
        assert set(strict_net) <= set(loose_net) <= set(two_net)


def test_networks_from_maps_thresholds_zscored_skew_positive_maps():
    neurons = NeuronTable.from_sites([(0, "mlp.out", 1000)])
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((2, 1000))
    maps[0, :10] += 8.0
    maps[1, :10] -= 8.0  # negative tail: flipped to positive
    nets = networks_from_maps(maps, neurons, z_threshold=3.6)
    for row, net in zip(maps, nets.networks):
        z = (row - row.mean()) / row.std()
        z = z if ((z ** 3).mean() > 0) else -z
        np.testing.assert_array_equal(net, np.flatnonzero(z > 3.6))
        assert set(range(10)) <= set(net)
    two = networks_from_maps(maps, neurons, z_threshold=1.96, two_sided=True)
    z0 = (maps[0] - maps[0].mean()) / maps[0].std()
    np.testing.assert_array_equal(two.networks[0], np.flatnonzero(np.abs(z0) > 1.96))


def test_iou_and_matching():
    sets_a = [np.array([0, 1, 2, 3]), np.array([10, 11])]
    sets_b = [np.array([10, 11, 12]), np.array([2, 3, 4, 5, 6, 7, 8, 9])]
    iou = iou_matrix(sets_a, sets_b, 20)
    np.testing.assert_allclose(iou, [[0, 2 / 10], [2 / 3, 0]])
    neurons = NeuronTable.from_sites([(0, "mlp.out", 20)])
    a = FunctionalNetworks(sets_a, np.zeros((2, 20)), neurons, 1.96, False)
    b = FunctionalNetworks(sets_b, np.zeros((2, 20)), neurons, 1.96, False)
    assert match_networks(a, b) == [(1, 0, pytest.approx(2 / 3))]  # 0.2 is not > 0.2
    assert match_networks(a, b, threshold=0.1) == [(0, 1, pytest.approx(0.2)),
                                                   (1, 0, pytest.approx(2 / 3))]


def test_group_templates_and_recurrence_counts():
    inputs = []
    for seed in range(4):
        acts, neurons, truth = planted_networks(seed, n_tokens=200)
        inputs.append(acts)
    templates = group_templates(inputs, neurons, n_components=4, z_threshold=3.6,
                                random_state=0, device="cpu")
    iou = iou_matrix(truth, templates.networks, len(neurons))
    assert iou.max(1).min() > 0.8
    # individual inputs: networks 0 and 1 on every input, networks 2 and 3 on one of three
    individual = []
    for seed, present in [(10, [0, 1, 2]), (11, [0, 1, 3]), (12, [0, 1])]:
        acts, _, _ = planted_networks(seed, n_tokens=200, present=present)
        individual.append(find_functional_networks(acts, neurons, n_components=4,
                                                    z_threshold=3.6, random_state=0, device="cpu"))
    counts = recurrence_counts(templates, individual)
    template_of_truth = iou.argmax(1)
    np.testing.assert_array_equal(counts[template_of_truth], [3, 3, 1, 1])


def test_functional_networks_save_load(tmp_path):
    acts, neurons, _ = planted_networks(n_tokens=150)
    found = find_functional_networks(acts, neurons, n_components=4, device="cpu")
    loaded = FunctionalNetworks.load(found.save(tmp_path / "nets"))
    assert len(loaded) == len(found)
    for x, y in zip(loaded.networks, found.networks):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(loaded.maps, found.maps)
    assert loaded.z_threshold == 1.96 and loaded.two_sided is False
    with pytest.raises(ValueError, match="n_neurons=600"):
        find_functional_networks(acts[:, :10], neurons, device="cpu")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_dictionary_atoms_have_the_sign_of_their_neurons(seed):
    """Neurons follow their planted atom positively (mostly): every fitted dictionary atom
    correlates positively with its planted atom, whatever the seed (the fit's sign was
    arbitrary, and a flipped atom's encoding map is its network's mirror image); its own
    subgroup's median loading is positive, and the reconstruction is the fit's."""
    from brainalign.patterns.study_a import _oriented, _subgroups

    data, runs, neurons, atoms, subgroup = planted_timecourses(seed, signed=False)
    patterns = fit_atoms(data, N_ATOMS, train_runs="all", neurons=neurons, runs=runs,
                         device="cpu", random_state=seed)
    truth, fitted, _ = match_components(atoms.T, patterns.atoms.T)
    r = [np.corrcoef(atoms[:, t], patterns.atoms[:, f])[0, 1] for t, f in zip(truth, fitted)]
    assert min(r) > 0.95
    own = _subgroups(patterns.loadings)
    assert all(np.median(patterns.loadings[k, own == k]) > 0 for k in range(N_ATOMS))
    # orienting flips atoms with their codes: the reconstruction is the fit's
    rng = np.random.default_rng(seed)
    atoms_in, codes_in = rng.standard_normal((30, 4)), rng.standard_normal((4, 50))
    atoms_out, codes_out = _oriented(atoms_in, codes_in)
    np.testing.assert_allclose(atoms_out @ codes_out, atoms_in @ codes_in)
    np.testing.assert_array_equal(np.abs(atoms_out), np.abs(atoms_in))
    groups = _subgroups(codes_out)
    assert all(np.median(codes_out[k, groups == k]) > 0 for k in range(4) if (groups == k).any())
