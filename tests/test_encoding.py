"""EncodingModel and fit_encoding against scikit-learn, CV hygiene, save/load."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainalign.encoding import (EncodingModel, EncodingResult, choose_solver, fit_encoding,
                                 inner_splits, load, outer_splits, pearson_r, r2_score,
                                 target_batch_size, valid_target_mask)
from brainalign.encoding.backend import bytes_per_target
from brainalign.timecourse import Delayer


pytestmark = pytest.mark.usefixtures("single_thread")


def make_problem(n_tr=240, n_features=8, n_targets=12, n_runs=4, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_tr, n_features))
    W = rng.standard_normal((n_features, n_targets))
    Y = X @ W * 0.5 + 3.0 + noise * rng.standard_normal((n_tr, n_targets))
    runs = np.repeat(np.arange(n_runs), n_tr // n_runs)
    return X, Y, runs


@pytest.mark.parametrize("solver,n_features", [("primal", 8), ("kernel", 8), ("primal", 300), ("kernel", 300)])
def test_single_alpha_equals_sklearn_ridge(solver, n_features):
    X, Y, runs = make_problem(n_tr=120, n_features=n_features, n_runs=3)
    model = EncodingModel(alphas=[7.0], solver=solver, dtype="float64").fit(X, Y, runs)
    reference = Ridge(alpha=7.0).fit(X, Y)
    np.testing.assert_allclose(model.coef_, reference.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-6, atol=1e-9)
    X_new = np.random.default_rng(9).standard_normal((5, n_features))
    np.testing.assert_allclose(model.predict(X_new), reference.predict(X_new), rtol=1e-6, atol=1e-8)
    assert model.solver_ == solver
    assert np.all(model.alphas_ == 7.0)


def test_alpha_per_target_equals_sklearn_ridgecv():
    """Each target gets the alpha sklearn's RidgeCV picks with the same run-wise folds."""
    rng = np.random.default_rng(1)
    X, Y, runs = make_problem(n_tr=200, n_features=20, n_targets=6, n_runs=4)
    Y = Y * np.array([0.05, 0.3, 1, 3, 10, 30])  # different noise levels -> different alphas
    Y += rng.standard_normal(Y.shape) * np.array([20, 5, 2, 1, 0.3, 0.1])
    alphas = np.logspace(-2, 4, 13)
    model = EncodingModel(alphas=alphas, dtype="float64", n_inner_splits=4).fit(X, Y, runs)
    splits, _ = inner_splits(runs, 4)
    for target in range(Y.shape[1]):
        reference = RidgeCV(alphas=alphas, cv=splits, scoring="neg_mean_squared_error").fit(X, Y[:, target])
        assert model.alphas_[target] == pytest.approx(reference.alpha_)
        np.testing.assert_allclose(model.coef_[:, target], reference.coef_, rtol=1e-6, atol=1e-9)
    assert len(np.unique(model.alphas_)) > 1


def test_primal_and_kernel_give_same_predictions():
    X, Y, runs = make_problem(n_tr=90, n_features=40, n_runs=3)
    alphas = np.logspace(-1, 4, 8)
    primal = EncodingModel(alphas=alphas, solver="primal", dtype="float64").fit(X, Y, runs)
    kernel = EncodingModel(alphas=alphas, solver="kernel", dtype="float64").fit(X, Y, runs)
    np.testing.assert_array_equal(primal.alphas_, kernel.alphas_)
    np.testing.assert_allclose(primal.predict(X), kernel.predict(X), rtol=1e-6, atol=1e-8)


def test_solver_choice_follows_shapes():
    assert choose_solver(n_samples=300, n_features=50) == "primal"
    assert choose_solver(n_samples=300, n_features=3000) == "kernel"
    X, Y, runs = make_problem(n_tr=60, n_features=100, n_runs=3)
    assert EncodingModel(alphas=[1.0]).fit(X, Y, runs).solver_ == "kernel"


def test_target_batches_give_the_same_fit():
    X, Y, runs = make_problem(n_targets=10)
    whole = EncodingModel(dtype="float64").fit(X, Y, runs)
    batched = EncodingModel(dtype="float64", n_targets_batch=3).fit(X, Y, runs)
    np.testing.assert_allclose(whole.coef_, batched.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(whole.alphas_, batched.alphas_)


def test_target_batch_size_respects_memory_budget():
    per_target = bytes_per_target(3000, 256, 20, "primal", itemsize=4)
    free = 8 * 2**30
    batch = target_batch_size(200_000, 3000, 256, 20, "primal", "torch_cuda", 4, free_bytes=free)
    assert batch * per_target <= free / 2 < (batch + 1) * per_target
    assert target_batch_size(10, 3000, 256, 20, "primal", "torch_cuda", 4, free_bytes=free) == 10
    assert target_batch_size(10**9, 3000, 256, 20, "primal", "numpy", 4) * per_target <= 2**30


def test_outer_folds_never_hold_training_runs():
    runs = np.repeat([0, 1, 2, 3, 4], [30, 25, 40, 30, 35])
    splits, scheme = outer_splits(runs)
    assert scheme == "leave-one-run-out" and len(splits) == 5
    for split in splits:
        assert len(np.unique(runs[split.test])) == 1
        assert not set(runs[split.train]) & set(runs[split.test])
        assert len(split.train) + len(split.test) == len(runs)
        for train, valid in inner_splits(runs[split.train], 5)[0]:
            assert not set(runs[split.train][train]) & set(runs[split.train][valid])


def test_single_run_uses_contiguous_blocks():
    splits, scheme = outer_splits(None, n_samples=100, n_blocks=4)
    assert scheme == "contiguous-blocks"
    for split in splits:
        assert np.all(np.diff(split.test) == 1) and len(split.test) == 25
    inner, description = inner_splits(np.zeros(75, dtype=int), 5)
    assert "contiguous" in description
    assert all(np.all(np.diff(valid) == 1) for _, valid in inner)


def test_fit_encoding_scores_match_sklearn_cross_val_predict():
    X, Y, runs = make_problem(n_tr=200, n_features=30, n_targets=5, n_runs=4, noise=3.0)
    result = fit_encoding(X, Y, runs, alphas=[20.0], preprocessing=PCA(5), n_perm=0, dtype="float64",
                          delays=None, clean=False)
    prediction = cross_val_predict(make_pipeline(PCA(5), StandardScaler(), Ridge(alpha=20.0)), X, Y,
                                   groups=runs, cv=LeaveOneGroupOut())
    r_folds = np.stack([pearson_r(Y[runs == g], prediction[runs == g]) for g in range(4)])
    r2_folds = np.stack([r2_score(Y[runs == g], prediction[runs == g]) for g in range(4)])
    np.testing.assert_allclose(result.r_folds, r_folds, rtol=1e-6)
    np.testing.assert_allclose(result.r, r_folds.mean(0), rtol=1e-6)
    np.testing.assert_allclose(result.r2, r2_folds.mean(0), rtol=1e-6)
    assert not np.allclose(result.r2, result.r ** 2)
    assert result.cv["outer"] == "leave-one-run-out" and result.cv["n_outer_folds"] == 4


def test_fit_encoding_with_delays_recovers_planted_lag():
    rng = np.random.default_rng(3)
    n_tr, runs = 300, np.repeat(np.arange(3), 100)
    X = rng.standard_normal((n_tr, 4))
    lagged = Delayer(delays=[2]).fit_transform(X, runs=runs)  # feature at t-2, zero across runs
    Y = lagged[:, [1]] * 2 + 0.5 * rng.standard_normal((n_tr, 1))
    result = fit_encoding(X, Y, runs, delays=[0, 1, 2, 3], n_perm=200)
    assert result.coef.shape == (16, 1) and result.delays == [0, 1, 2, 3]
    assert np.argmax(np.abs(result.coef[:, 0])) == 2 * 4 + 1  # delay-major: delay 2, feature 1
    assert result.r[0] > 0.9 and result.p_values[0] < 0.01
    # without z-scoring (which runs before the delays) pre-delayed X gives the same fit
    delayed_inside = fit_encoding(X, Y, runs, delays=[0, 1, 2, 3], n_perm=0, standardize=False,
                                  clean=False)
    pre_delayed = fit_encoding(Delayer(delays=[0, 1, 2, 3]).fit_transform(X, runs=runs), Y, runs,
                               delays=None, n_perm=0, standardize=False, clean=False)
    np.testing.assert_allclose(pre_delayed.r, delayed_inside.r, rtol=1e-6)


def test_signal_is_significant_and_noise_is_not():
    X, Y, runs = make_problem(n_tr=240, n_features=6, n_targets=40, n_runs=4)
    Y[:, 20:] = np.random.default_rng(5).standard_normal((240, 20))
    result = fit_encoding(X, Y, runs, delays=None, n_perm=500)
    assert np.all(result.r[:20] > 0.3)
    assert result.significant(0.05)[:20].all()
    assert result.significant(0.05)[20:].sum() <= 2


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_invalid_targets_are_excluded_and_reported(caplog, backend):
    X, Y, runs = make_problem(n_targets=6)
    Y[:, 1] = 4.0
    Y[10, 4] = np.nan
    with caplog.at_level(logging.WARNING, logger="brainalign.encoding.fit"):
        result = fit_encoding(X, Y, runs, delays=None, n_perm=50, backend=backend)
    assert result.cv["backend"] == backend
    assert "2 of 6 targets" in caplog.text
    np.testing.assert_array_equal(result.valid_targets, [True, False, True, True, False, True])
    assert np.isnan(result.r[[1, 4]]).all() and np.isnan(result.p_values[[1, 4]]).all()
    assert np.isfinite(result.r[[0, 2, 3, 5]]).all()
    np.testing.assert_array_equal(valid_target_mask(Y), result.valid_targets)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_encoding_model_places_excluded_targets(fit_intercept):
    """Excluded targets get zero weights and NaN alphas; the others match a fit without them."""
    X, Y, runs = make_problem(n_targets=5)
    Y[:, 3] = 2.0
    full = EncodingModel(fit_intercept=fit_intercept).fit(X, Y, runs)
    kept = EncodingModel(fit_intercept=fit_intercept).fit(X, Y[:, [0, 1, 2, 4]], runs)
    assert full.coef_.shape == (X.shape[1], 5) and full.intercept_.shape == (5,)
    np.testing.assert_array_equal(full.coef_[:, 3], 0.0)
    assert full.intercept_[3] == 0.0 and np.isnan(full.alphas_[3])
    assert np.isnan(full.inner_cv_scores_[3])
    np.testing.assert_allclose(full.coef_[:, [0, 1, 2, 4]], kept.coef_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(full.intercept_[[0, 1, 2, 4]], kept.intercept_, atol=1e-6)
    np.testing.assert_array_equal(full.alphas_[[0, 1, 2, 4]], kept.alphas_)
    if not fit_intercept:
        np.testing.assert_array_equal(kept.intercept_, 0.0)


def test_bad_input_gives_clear_errors():
    X, Y, runs = make_problem()
    with pytest.raises(ValueError, match="240 rows but the brain data have 239 TRs"):
        fit_encoding(X, Y[:-1], runs)
    with pytest.raises(ValueError, match="runs must have shape"):
        fit_encoding(X, Y, runs[:-1])
    with pytest.raises(ValueError, match="solver must be one of"):
        EncodingModel(solver="svd").fit(X, Y)


def test_save_load_round_trip(tmp_path):
    X, Y, runs = make_problem(n_targets=5)
    Y[:, 2] = 0.0
    result = fit_encoding(X, Y, runs, n_perm=100, noise_ceiling=np.linspace(0.1, 0.5, 5),
                          provenance={"model": "test"})
    path = result.save(tmp_path / "enc")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "result.json"]
    loaded = load(path)
    assert isinstance(loaded, EncodingResult) and EncodingResult.load(path).solver == result.solver
    for name in EncodingResult._ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert loaded.cv == result.cv and loaded.provenance["model"] == "test"
    assert loaded.provenance["config_hash"] == result.provenance["config_hash"]


def test_cleaning_without_a_repetition_time_says_it_skips_the_high_pass(caplog):
    from brainalign.encoding.cleaning import Cleaning, resolve_cleaning

    with caplog.at_level("WARNING", logger="brainalign.encoding.cleaning"):
        assert resolve_cleaning(True, None) == Cleaning(high_pass_hz=None)
    assert "no high-pass filter" in caplog.text and "pass tr_s" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="brainalign.encoding.cleaning"):
        assert resolve_cleaning(True, 2.0) == Cleaning()
    assert caplog.text == ""
