"""Atoms fitted with the neuron time courses left on disk (NeuronBlocks) equal in-memory fits."""

from pathlib import Path

import numpy as np
import pytest
import torch

from brainalign.patterns import DictionaryLearning, KMeans, fit_atoms
from brainalign.patterns.dictionary import randomized_right_singular_vectors
from brainalign.patterns.streaming import NeuronBlocks
from brainalign.record.neurons import NeuronTable


def planted(n_tr=240, n_neurons=900, k=6, noise=0.5, seed=0):
    """Neurons that each follow one of ``k`` random time courses, plus noise."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_tr, k))
    loadings = np.zeros((k, n_neurons))
    loadings[rng.integers(0, k, n_neurons), np.arange(n_neurons)] = rng.uniform(0.5, 2, n_neurons)
    data = atoms @ loadings + noise * rng.standard_normal((n_tr, n_neurons)) + 3.0
    return data.astype(np.float32)


@pytest.fixture
def on_disk(tmp_path: Path):
    data = planted()
    np.save(tmp_path / "tc.npy", data)
    neurons = NeuronTable(np.repeat(np.arange(3), 300), np.full(900, "mlp.out"),
                          np.tile(np.arange(300), 3))
    return data, np.load(tmp_path / "tc.npy", mmap_mode="r"), neurons


def test_blocks_are_the_standardised_matrix(on_disk):
    data, memmap, _ = on_disk
    rows = np.r_[3:50, 80:200]  # not contiguous: a training set that skips a block
    blocks = NeuronBlocks.standardized(memmap, rows, torch.device("cpu"))
    reference = data[rows].astype(np.float64)
    reference = reference - reference.mean(0)
    reference = (reference / np.linalg.norm(reference, axis=0)).T  # (n_neurons, n_rows)
    assert blocks.shape == (900, len(rows))
    np.testing.assert_allclose(blocks[100:400].numpy(), reference[100:400], atol=1e-6)
    np.testing.assert_allclose(blocks[7].numpy(), reference[7], atol=1e-6)
    index = torch.tensor([850, 2, 400, 2])  # unsorted, repeated
    np.testing.assert_allclose(blocks[index].numpy(), reference[[850, 2, 400, 2]], atol=1e-6)
    contiguous = NeuronBlocks.standardized(memmap, np.arange(10, 200), torch.device("cpu"),
                                           standardize=False)
    np.testing.assert_array_equal(contiguous[5:9].numpy(), data[10:200, 5:9].T)


@pytest.mark.parametrize("method, params", [("dictionary", {}), ("kmeans", {}),
                                            ("dictionary", {"init": "random"})])
def test_out_of_core_fit_equals_in_memory(on_disk, method, params):
    data, memmap, neurons = on_disk
    runs = np.repeat([1, 2], 120)
    kwargs = dict(train_runs=[1], neurons=neurons, runs=runs, method=method, device="cpu",
                  chunk_size=250, **params)  # several blocks per pass
    in_memory = fit_atoms(data, 6, **kwargs)
    on_file = fit_atoms(memmap, 6, in_memory=False, **kwargs)
    tolerance = 1e-5 if params.get("init") != "random" else 5e-3
    np.testing.assert_allclose(on_file.atoms, in_memory.atoms, atol=tolerance)
    np.testing.assert_allclose(on_file.loadings, in_memory.loadings, atol=tolerance)
    np.testing.assert_array_equal(on_file.subgroup, in_memory.subgroup)
    np.testing.assert_allclose(on_file.neuron_scale, in_memory.neuron_scale, rtol=1e-6)
    assert on_file.provenance["in_memory"] is False
    # the planted one-of-six structure is found either way
    story = planted()[120:]
    np.testing.assert_allclose(on_file.transform(story), in_memory.transform(story), atol=1e-3)


def test_randomized_svd_spans_the_top_singular_subspace():
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((500, 5)) @ (np.diag([40, 30, 20, 15, 10.0]) @
                                             rng.standard_normal((5, 5000)))
    X = torch.as_tensor(signal + rng.standard_normal((500, 5000)), dtype=torch.float32)
    vectors = randomized_right_singular_vectors(X, 5, np.random.RandomState(0), 128)
    exact = np.linalg.svd(X.double().numpy(), full_matrices=False)[2][:5]
    # cosines of the principal angles between the two 5-dimensional subspaces
    cosines = np.linalg.svd(vectors.double().numpy() @ exact.T, compute_uv=False)
    assert cosines.min() > 0.9999


def test_large_svd_init_uses_the_randomized_path():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 5000)).astype(np.float32)  # 5,000 TRs > 4,096
    model = DictionaryLearning(4, alpha=0.5, max_iter=3, random_state=0, device="cpu").fit(X)
    assert model.components_.shape == (4, 5000)
    assert np.allclose(np.linalg.norm(model.components_, axis=1), 1, atol=1e-4)


def test_refusals(on_disk):
    _, memmap, neurons = on_disk
    with pytest.raises(ValueError, match="ICA"):
        fit_atoms(memmap, 4, train_runs="all", neurons=neurons, method="ica", in_memory=False)
    blocks = NeuronBlocks.standardized(memmap, np.arange(240), torch.device("cpu"))
    with pytest.raises(ValueError, match="batch_size=None"):
        DictionaryLearning(4, batch_size=32, device="cpu").fit(blocks)
    bad = np.array(memmap)
    bad[17, 123] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        NeuronBlocks.standardized(bad, np.arange(240), torch.device("cpu"))


def test_kmeans_on_blocks_equals_kmeans_on_tensor(on_disk):
    _, memmap, _ = on_disk
    blocks = NeuronBlocks.standardized(memmap, np.arange(240), torch.device("cpu"))
    tensor = blocks[0:900]
    on_file = KMeans(6, random_state=3, device="cpu", chunk_size=200).fit(blocks)
    in_memory = KMeans(6, random_state=3, device="cpu", chunk_size=200).fit(tensor)
    np.testing.assert_array_equal(on_file.labels_, in_memory.labels_)
    np.testing.assert_allclose(on_file.inertia_, in_memory.inertia_, rtol=1e-6)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_every_block_does_not_keep_the_file_resident(tmp_path):
    def resident_file_kib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        pytest.skip("no RssFile in /proc/self/status")

    data = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                     shape=(4000, 8000))  # 128 MB
    data[:] = np.random.default_rng(0).standard_normal((4000, 8000), dtype=np.float32)
    data.flush()
    del data
    memmap = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = resident_file_kib()
    blocks = NeuronBlocks.standardized(memmap, np.arange(4000), torch.device("cpu"))
    total = sum(float(blocks[cols].sum()) for cols in (slice(a, a + 1000) for a in range(0, 8000, 1000)))
    assert abs(total) < 1e-2 * 8000  # standardised neurons sum to ~0
    assert resident_file_kib() - before < 16 * 1024  # far below the 125,000 KiB file


def test_scratch_file_is_removed_with_the_blocks(on_disk, tmp_path):
    _, memmap, _ = on_disk
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    blocks = NeuronBlocks.standardized(memmap, np.arange(240), torch.device("cpu"),
                                       directory=scratch)
    assert [p.name for p in scratch.glob("*/*.f32")] == ["neurons.f32"]
    del blocks
    assert not list(scratch.iterdir())


def test_projected_atoms_standardise_on_the_training_rows_only(on_disk):
    from brainalign.patterns import ProjectedAtoms

    data, _, neurons = on_disk
    patterns = fit_atoms(data[:120], 6, train_runs="all", neurons=neurons, device="cpu")
    story = planted(seed=5)[:100].astype(np.float64) * 3 + 7  # other data, other units
    projector = ProjectedAtoms(patterns).fit(story[:60])
    expected_mean, expected_scale = story[:60].mean(0), story[:60].std(0)
    standardised = (story - expected_mean) / expected_scale
    # least squares of the standardised rows on the fixed loadings
    L = patterns.loadings.astype(np.float64)
    expected = np.linalg.lstsq(L @ L.T, L @ standardised.T, rcond=None)[0].T
    np.testing.assert_allclose(projector.transform(story), expected, rtol=1e-4, atol=1e-4)
    # held-out rows do not change the fit
    again = ProjectedAtoms(patterns).fit(story[:60])
    np.testing.assert_array_equal(again.mean_, projector.mean_)
    with pytest.raises(ValueError, match="neurons of the patterns"):
        ProjectedAtoms(patterns).fit(story[:, :10])


@pytest.mark.parametrize("rows", [[0, 2, 1, 3], [0, 0, 2, 3], [1, 2, 3], [4, 2, 5]])
def test_training_rows_are_read_as_given_in_any_order_and_with_repeats(rows):
    """Rows that span a range without being it (reordered, repeated) are not read as one."""
    from brainalign.patterns.study_a import _standardized_neurons

    data = np.arange(24, dtype=np.float32).reshape(6, 4) ** 1.5
    rows = np.array(rows)
    blocks = NeuronBlocks.standardized(data, rows, torch.device("cpu"), standardize=False)
    in_memory, _, _ = _standardized_neurons(data, rows, torch.device("cpu"), False, None)
    for got in (blocks[0:4], in_memory):
        np.testing.assert_allclose(np.asarray(got), data[rows].T, rtol=1e-6)
