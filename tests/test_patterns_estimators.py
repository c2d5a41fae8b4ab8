"""Torch k-means, dictionary learning, FastICA and group ICA against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from scipy.optimize import linear_sum_assignment
from sklearn import cluster, decomposition
from sklearn.base import clone

from brainalign.patterns import DictionaryLearning, FastICA, GroupICA, KMeans
from brainalign.patterns.dictionary import dictionary_objective, sparse_codes
from brainalign.patterns.streaming import to_device


pytestmark = pytest.mark.usefixtures("single_thread")


def matched_abs_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|r| of Hungarian-matched columns of a (n, k) and b (n, k)."""
    k = a.shape[1]
    corr = np.abs(np.corrcoef(a.T, b.T)[:k, k:])
    rows, cols = linear_sum_assignment(-corr)
    return corr[rows, cols]


def blobs(seed=0, n=1500, p=24, k=10):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, p))
    labels = rng.integers(k, size=n)
    return (centers[labels] + rng.normal(size=(n, p))).astype(np.float32)


def sparse_dictionary_data(seed=0, n=300, p=40, k=8, noise=0.05):
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((k, p))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = rng.standard_normal((n, k)) * (rng.random((n, k)) < 0.3)
    return (codes @ atoms + noise * rng.standard_normal((n, p))).astype(np.float32)


def objective(X, codes, atoms, alpha):
    return 0.5 * ((X - codes @ atoms) ** 2).sum() + alpha * np.abs(codes).sum()


# -- k-means -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_inertia_matches_sklearn(seed):
    X = blobs(seed)
    ours = KMeans(10, n_init=3, random_state=seed, device="cpu", chunk_size=256).fit(X)
    theirs = cluster.KMeans(10, n_init=3, random_state=seed).fit(X)
    assert ours.inertia_ <= theirs.inertia_ * 1.01
    assert ours.inertia_ >= theirs.inertia_ * 0.99
    # inertia_ is the exact sum of squared distances to the assigned centres
    exact = ((X - ours.cluster_centers_[ours.labels_]) ** 2).sum()
    np.testing.assert_allclose(ours.inertia_, exact, rtol=1e-4)


def test_kmeans_unstructured_data_within_one_percent():
    X = np.random.default_rng(3).standard_normal((2000, 30)).astype(np.float32)
    ours = KMeans(16, n_init=2, random_state=0, device="cpu").fit(X)
    theirs = cluster.KMeans(16, n_init=2, random_state=0).fit(X)
    assert abs(ours.inertia_ - theirs.inertia_) <= 0.01 * theirs.inertia_


def test_kmeans_predict_transform_and_labels_agree():
    X = blobs(2)
    km = KMeans(10, random_state=0, device="cpu").fit(X)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    distances = km.transform(X)
    assert distances.shape == (len(X), 10)
    np.testing.assert_array_equal(distances.argmin(1), km.labels_)
    expected = np.linalg.norm(X[:, None] - km.cluster_centers_[None], axis=2)
    np.testing.assert_allclose(distances, expected, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(-km.score(X), km.inertia_, rtol=1e-5)


def test_kmeans_is_deterministic_with_a_seed_and_varies_without():
    X = np.random.default_rng(4).standard_normal((800, 12)).astype(np.float32)
    a = KMeans(12, random_state=7, device="cpu").fit(X)
    b = clone(a).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    c = KMeans(12, random_state=8, device="cpu").fit(X)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_kmeans_bad_input_says_what_was_given():
    with pytest.raises(ValueError, match="n_clusters must be between 1 and n_samples=5"):
        KMeans(6, device="cpu").fit(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        KMeans(2, device="cpu").fit(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        KMeans(2, device="cpu").fit(np.full((5, 3), np.nan, np.float32))


# -- dictionary learning -----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dictionary_learning_objective_matches_sklearn_full_batch():
    X = sparse_dictionary_data(n=150, p=30, k=6)
    alpha = 0.1
    theirs = decomposition.DictionaryLearning(6, alpha=alpha, max_iter=100, random_state=0,
                                              fit_algorithm="cd", transform_algorithm="lasso_cd",
                                              transform_alpha=alpha)
    codes_sk = theirs.fit_transform(X)
    ours = DictionaryLearning(6, alpha=alpha, random_state=0, device="cpu", chunk_size=64)
    codes = ours.fit_transform(X)
    ref = objective(X, codes_sk, theirs.components_, alpha)
    got = objective(X, codes, ours.components_, alpha)
    assert abs(got - ref) <= 0.01 * ref
    np.testing.assert_allclose(ours.objective_, got, rtol=1e-4)
    assert np.all(np.linalg.norm(ours.components_, axis=1) <= 1 + 1e-5)
    assert (codes == 0).mean() > 0.3  # the L1 penalty makes codes sparse


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dictionary_learning_minibatch_objective_not_worse_than_sklearn():
    X = sparse_dictionary_data(seed=1, n=300)
    alpha = 0.1
    theirs = decomposition.MiniBatchDictionaryLearning(
        8, alpha=alpha, batch_size=64, max_iter=10, random_state=0,
        transform_algorithm="lasso_lars", transform_alpha=alpha).fit(X)
    ref = objective(X, theirs.transform(X), theirs.components_, alpha)
    ours = DictionaryLearning(8, alpha=alpha, batch_size=64, max_iter=10, random_state=0,
                              device="cpu")
    codes = ours.fit_transform(X)
    got = objective(X, codes, ours.components_, alpha)
    assert got <= 1.01 * ref


def test_sparse_codes_solve_the_lasso_like_sklearn():
    X = sparse_dictionary_data(seed=2, n=50)
    atoms = np.linalg.qr(np.random.default_rng(0).standard_normal((40, 8)))[0].T.astype(np.float32)
    atoms[3] = 0.7 * atoms[3] + 0.3 * atoms[4]  # not orthogonal
    ours = sparse_codes(torch.from_numpy(X), torch.from_numpy(atoms), 0.2, max_iter=5000,
                        tol=1e-9).numpy()
    theirs = decomposition.sparse_encode(X.astype(np.float64), atoms.astype(np.float64),
                                         algorithm="lasso_lars", alpha=0.2)
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_dictionary_transform_matches_fit_transform_and_is_deterministic():
    X = sparse_dictionary_data(seed=3)
    a = DictionaryLearning(8, alpha=0.1, init="random", random_state=5, device="cpu")
    codes = a.fit_transform(X)
    np.testing.assert_allclose(a.transform(X), codes, atol=1e-3)
    b = clone(a).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    X_t = torch.from_numpy(X)
    np.testing.assert_allclose(
        a.objective_, dictionary_objective(X_t, torch.from_numpy(codes),
                                           torch.from_numpy(a.components_), 0.1), rtol=1e-3)


# -- FastICA -----------------------------------------------------------------------------

def ica_data(seed=0, n=4000, k=5, p=15):
    rng = np.random.default_rng(seed)
    sources = rng.laplace(size=(n, k))
    mixing = rng.standard_normal((p, k))
    return sources, (sources @ mixing.T + 0.05 * rng.standard_normal((n, p))).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_fastica_components_match_sklearn(seed):
    sources, X = ica_data(seed)
    theirs = decomposition.FastICA(5, random_state=seed, whiten="unit-variance",
                                   max_iter=400).fit_transform(X)
    ours_model = FastICA(5, random_state=seed, max_iter=400, device="cpu", chunk_size=500)
    ours = ours_model.fit_transform(X)
    assert matched_abs_correlation(theirs, ours).min() > 0.99
    assert matched_abs_correlation(sources, ours).min() > 0.99  # and the planted truth
    np.testing.assert_allclose(ours.std(0), 1, atol=1e-3)
    np.testing.assert_allclose(ours_model.transform(X), ours, atol=1e-3)


def test_fastica_is_deterministic_with_a_seed():
    _, X = ica_data(2)
    a = FastICA(5, random_state=3, device="cpu").fit(X)
    b = FastICA(5, random_state=3, device="cpu").fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)


def test_group_ica_recovers_planted_spatial_maps():
    rng = np.random.default_rng(0)
    k, n_space = 4, 2000
    maps = rng.laplace(size=(k, n_space)) * (rng.random((k, n_space)) < 0.1)
    inputs = [(rng.standard_normal((60, k)) @ maps
               + 0.1 * rng.standard_normal((60, n_space))).astype(np.float32) for _ in range(4)]
    group = GroupICA(k, random_state=0, device="cpu").fit(inputs)
    assert group.components_.shape == (k, n_space)
    assert matched_abs_correlation(maps.T, group.components_.T).min() > 0.99
    skew = ((group.components_ - group.components_.mean(1, keepdims=True)) ** 3).mean(1)
    assert np.all(skew > 0)
    with pytest.raises(ValueError, match="expected 2000"):
        GroupICA(k, device="cpu").fit([inputs[0], inputs[1][:, :10]])


# -- streaming ---------------------------------------------------------------------------

def test_to_device_streams_memmaps_without_transposing(tmp_path):
    data = np.random.default_rng(0).standard_normal((50, 333)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    out = to_device(mapped.T, torch.device("cpu"), chunk_size=7)
    assert out.shape == (333, 50)
    assert out.T.is_contiguous()  # kept the memmap's memory order
    np.testing.assert_array_equal(out.numpy(), data.T)
    km_map = KMeans(4, random_state=0, device="cpu", chunk_size=40).fit(mapped.T)
    km_mem = KMeans(4, random_state=0, device="cpu").fit(np.ascontiguousarray(data.T))
    np.testing.assert_allclose(km_map.inertia_, km_mem.inertia_, rtol=1e-5)


@requires_cuda
def test_estimators_agree_between_cpu_and_cuda():
    X = blobs(5)
    cpu = KMeans(10, random_state=0, device="cpu").fit(X)
    gpu = KMeans(10, random_state=0, device="cuda").fit(X)
    np.testing.assert_allclose(gpu.inertia_, cpu.inertia_, rtol=1e-3)
    _, Y = ica_data(3)
    a = FastICA(5, random_state=0, device="cpu").fit_transform(Y)
    b = FastICA(5, random_state=0, device="cuda").fit_transform(Y)
    assert matched_abs_correlation(a, b).min() > 0.99
    Z = sparse_dictionary_data()
    d_cpu = DictionaryLearning(8, alpha=0.1, random_state=0, device="cpu").fit(Z)
    d_gpu = DictionaryLearning(8, alpha=0.1, random_state=0, device="cuda").fit(Z)
    np.testing.assert_allclose(d_gpu.objective_, d_cpu.objective_, rtol=1e-2)


@pytest.mark.parametrize("init", ["svd", "random"])
def test_overcomplete_dictionary_fits_and_reconstructs(init):
    """More atoms than features: the SVD start pads with random atoms instead of failing."""
    X = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    model = DictionaryLearning(6, alpha=1e-3, init=init, device="cpu", random_state=0,
                               max_iter=50).fit(X)
    assert model.components_.shape == (6, 4)
    np.testing.assert_allclose(np.linalg.norm(model.components_, axis=1), 1, atol=1e-5)
    residual = X - model.transform(X) @ model.components_
    assert np.linalg.norm(residual) < 0.01 * np.linalg.norm(X)
