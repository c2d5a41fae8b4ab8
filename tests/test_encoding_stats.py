"""Scores, permutation null calibration, FDR against MNE, noise ceilings on planted data."""

from __future__ import annotations

import numpy as np
import pytest
from mne.stats import fdr_correction
from scipy.signal import lfilter
from scipy.stats import pearsonr
from sklearn.metrics import r2_score as sklearn_r2

from sklearn.preprocessing import StandardScaler

from brainalign.encoding import EncodingModel, outer_splits
from brainalign.encoding.null import FoldOperator, refit_null_test
from brainalign.encoding import (fdr, fit_encoding, fold_mean_r, null_indices, pearson_r,
                                 permutation_test, r2_score)
from brainalign.encoding.ceiling import explainable_variance, intersubject_ceiling


pytestmark = pytest.mark.usefixtures("single_thread")


def smooth_noise(rng, shape, coefficient=0.6):
    """AR(1) noise along time (axis 0), like fMRI's autocorrelation."""
    return lfilter([1.0], [1.0, -coefficient], rng.standard_normal(shape), axis=0)


def test_scores_match_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((50, 4))
    P = Y + rng.standard_normal((50, 4))
    np.testing.assert_allclose(pearson_r(Y, P), [pearsonr(Y[:, i], P[:, i])[0] for i in range(4)])
    np.testing.assert_allclose(r2_score(Y, P), sklearn_r2(Y, P, multioutput="raw_values"))
    assert np.isnan(pearson_r(np.ones((5, 1)), np.arange(5.0)[:, None]))[0]


@pytest.mark.parametrize("method", ["block", "circular", "mirror"])
def test_null_indices_permute_within_groups(method):
    groups = np.repeat([0, 1, 2], [40, 35, 50])
    order = null_indices(groups, 30, method=method, block_tr=7, random_state=0)
    for row in order:
        assert sorted(row) == list(range(len(groups)))
        np.testing.assert_array_equal(groups[row], groups)
    assert (order != np.arange(len(groups))).any(axis=1).all()
    if method == "circular":  # a roll keeps neighbours together
        assert np.all(np.diff(order[0, :40]) % 40 == 1)
    if method == "mirror":    # reversed, then rolled: neighbours together, time backwards
        assert np.all(np.diff(order[:, :40], axis=1) % 40 == 39)
        assert np.all(np.diff(order[:, 40:75], axis=1) % 35 == 34)


def test_mirror_null_reaches_every_shift_uniformly():
    """No shift is left out (a reversed run never lines up with the original), and each
    is drawn about equally often."""
    groups = np.repeat([0, 1], [20, 30])
    order = null_indices(groups, 6000, method="mirror", random_state=0)
    first = order[:, 0]                    # the roll is where the reversed run starts
    counts = np.bincount(first, minlength=20)
    assert counts.min() > 0 and set(first) == set(range(20))
    assert counts.max() / counts.min() < 1.6
    np.testing.assert_array_equal(order[:, 0], (order[:, 19] + 19) % 20)


@pytest.mark.parametrize("method", ["block", "circular"])
def test_permutation_null_is_calibrated_on_noise(method):
    """Independent autocorrelated predictions and data: about 5% of p-values under .05."""
    rng = np.random.default_rng(42)
    n_targets = 400
    Y = smooth_noise(rng, (300, n_targets))
    P = smooth_noise(rng, (300, n_targets))
    groups = np.repeat(np.arange(3), 100)
    p = permutation_test(Y, P, groups, n_perm=500, method=method, block_tr=10, random_state=1)
    assert 0.02 <= np.mean(p < 0.05) <= 0.09
    assert p.min() >= 1 / 501


@pytest.mark.parametrize("smooth", [False, True])
def test_fit_encoding_null_is_calibrated_end_to_end(smooth):
    """Cross-validated scores of pure-noise targets: the refit null gives ~5% under .05."""
    rng = np.random.default_rng(7)
    draw = (lambda shape: smooth_noise(rng, shape)) if smooth else rng.standard_normal
    X, Y = draw((240, 5)), draw((240, 300))
    runs = np.repeat(np.arange(4), 60)
    result = fit_encoding(X, Y, runs, n_perm=300, block_tr=8)
    assert result.cv["null_scope"] == "refit"
    assert 0.02 <= np.mean(result.p_values < 0.05) <= 0.09
    assert result.significant(0.05).sum() <= 3


def test_default_null_is_calibrated_on_strongly_autocorrelated_noise():
    """Smooth features and AR(1) 0.9 targets unrelated to them, cleaned inside the folds:
    the default (mirrored) null keeps ~5 % of p < .05; 10-TR blocks, the former default,
    lose the autocorrelation across their edges and gave about twice that."""
    from brainalign.simulate.noise import ar1_filter

    runs = np.repeat([0, 1], [130, 150])
    p_values = {"mirror": [], "block": []}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X = ar1_filter(rng.standard_normal((280, 8)), runs, 0.9)
        Y = ar1_filter(rng.standard_normal((280, 300)), runs, 0.9)
        for null in p_values:
            result = fit_encoding(X, Y, runs, tr_s=2.0, n_perm=200, random_state=seed,
                                  **({} if null == "mirror" else {"null": null}))
            p_values[null].append(result.p_values)
            assert result.cv["null"] == null
            assert result.cv["block_tr"] == (None if null == "mirror" else 10)
    mirror, block = (np.mean(np.concatenate(p_values[null]) < 0.05) for null in ("mirror", "block"))
    assert 0.025 <= mirror <= 0.075                  # 900 tests: binomial SE about 0.8 %
    assert block >= 0.09
    with pytest.raises(ValueError, match="null must be one of"):
        fit_encoding(X, Y[:, :2], runs, null="blocks")


def test_refit_null_reproduces_the_fitted_scores():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 8))
    Y = X[:, :3] @ rng.standard_normal((3, 6)) + 2 * rng.standard_normal((200, 6))
    runs = np.repeat(np.arange(4), 50)
    result = fit_encoding(X, Y, runs, delays=None, clean=False, n_perm=0, dtype="float64")
    folds = []
    for split in outer_splits(runs)[0]:
        model = EncodingModel(dtype="float64").fit(StandardScaler().fit(X[split.train]).transform(X[split.train]),
                                                   Y[split.train], runs[split.train])
        design = StandardScaler().fit(X[split.train]).transform(X)
        folds.append(FoldOperator.from_design(design, split.train, split.test, model.alphas_))
    tested, observed = refit_null_test(Y, folds, runs, n_perm=100)
    np.testing.assert_allclose(observed, result.r, atol=1e-5)
    assert np.all(tested.p_values[result.r > 0.3] < 0.02)


def test_fold_mean_r_is_the_mean_of_within_fold_r():
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((90, 4))
    offsets = np.repeat([0.0, 5.0, -5.0], 30)[:, None]
    P = Y + rng.standard_normal((90, 4)) + offsets
    groups = np.repeat([0, 1, 2], 30)
    expected = np.mean([pearson_r(Y[groups == g], P[groups == g]) for g in range(3)], axis=0)
    np.testing.assert_allclose(fold_mean_r(Y, P, groups), expected)
    np.testing.assert_allclose(fold_mean_r(Y, P), pearson_r(Y, P))
    # fold offsets change neither the statistic nor its null
    null = permutation_test(Y, P, groups, n_perm=50, return_null=True)[1]
    null_without = permutation_test(Y, P - offsets, groups, n_perm=50, return_null=True)[1]
    assert null.shape == (50, 4)
    np.testing.assert_allclose(null, null_without, atol=1e-5)


def test_permutation_detects_signal_and_returns_null():
    rng = np.random.default_rng(0)
    Y = smooth_noise(rng, (200, 3))
    P = Y + np.array([0.5, 3.0, 30.0]) * smooth_noise(rng, (200, 3))
    p, null = permutation_test(Y, P, n_perm=200, return_null=True)
    assert null.shape == (200, 3)
    assert p[0] < 0.01 and p[2] > 0.01
    observed = pearson_r(Y, P)
    np.testing.assert_allclose(p, (1 + (null >= observed - 1e-6).sum(0)) / 201)


def test_fdr_matches_mne_and_skips_nan():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=80), rng.uniform(0, 1e-3, size=20)])
    reject, p_fdr = fdr(p, alpha=0.05)
    ref_reject, ref_p = fdr_correction(p, alpha=0.05)
    np.testing.assert_array_equal(reject, ref_reject)
    np.testing.assert_allclose(p_fdr, ref_p)
    with_nan = np.r_[p, np.nan]
    reject_nan, p_fdr_nan = fdr(with_nan)
    np.testing.assert_allclose(p_fdr_nan[:-1], ref_p)
    assert np.isnan(p_fdr_nan[-1]) and not reject_nan[-1]


def test_intersubject_ceiling_recovers_shared_signal():
    """Shared signal (variance 1) + subject noise (variance s2): LOSO ISC is known."""
    rng = np.random.default_rng(0)
    n_subjects, n_tr = 10, 4000
    noise_sd = np.array([0.5, 1.0, 2.0])
    shared = rng.standard_normal((n_tr, 3))
    data = shared[None] + noise_sd * rng.standard_normal((n_subjects, n_tr, 3))
    isc = intersubject_ceiling(data)
    assert isc.shape == (n_subjects, 3)
    s2 = noise_sd ** 2
    expected = 1 / np.sqrt((1 + s2) * (1 + s2 / (n_subjects - 1)))
    np.testing.assert_allclose(isc.mean(0), expected, atol=0.03)


def test_explainable_variance_recovers_planted_fraction():
    rng = np.random.default_rng(1)
    n_repeats, n_tr = 4, 5000
    noise_sd = np.array([0.0, 1.0, 3.0, np.inf])
    shared = rng.standard_normal((n_tr, 4))
    shared[:, 3] = 0.0
    noise = rng.standard_normal((n_repeats, n_tr, 4)) * np.where(np.isinf(noise_sd), 1, noise_sd)
    data = shared[None] + noise
    ev = explainable_variance(data)
    expected = np.r_[1 / (1 + noise_sd[:3] ** 2), 0.0]
    np.testing.assert_allclose(ev, expected, atol=0.03)
    assert explainable_variance(data, bias_correction=False)[3] > 0.2  # the bias it removes
    with pytest.raises(ValueError, match="at least 2"):
        explainable_variance(data[:1])
