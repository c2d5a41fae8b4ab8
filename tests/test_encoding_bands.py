"""Feature bands, banded ridge, variance partitioning and its shift null, against himalaya
and direct solves; planted truth and null data for the statistics."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from brainalign.encoding import (Band, BandedEncodingModel, EncodingModel, fit_encoding,
                                 fold_features, load, mean_over_subjects, outer_splits, pattern_maps,
                                 pearson_r)
from brainalign.encoding.bands import band_design, fold_band_values, resolve_bands
from brainalign.encoding.cv import inner_splits
from brainalign.encoding.partition import band_shift_null
from brainalign.encoding.stats import null_indices
from brainalign.timecourse import delay_features

pytestmark = pytest.mark.usefixtures("single_thread")


def two_band_problem(seed=0, n_per_run=80, n_runs=3, n_targets=12):
    """Band "rate" (1 column, no delays) drives targets 0-3; band "llm" (6 columns at delay
    2) drives targets 4-7; targets 8-11 are noise."""
    rng = np.random.default_rng(seed)
    runs = np.repeat(np.arange(n_runs), n_per_run)
    n = len(runs)
    rate, llm = rng.standard_normal((n, 1)), rng.standard_normal((n, 6))
    lagged = delay_features(llm, [2], runs)
    Y = rng.standard_normal((n, n_targets))
    Y[:, :4] += rate @ rng.uniform(0.8, 1.2, (1, 4))
    Y[:, 4:8] += lagged @ rng.standard_normal((6, 4)) * 0.5
    return rate, llm, Y, runs


def test_banded_model_equals_himalaya_in_both_forms():
    from himalaya.kernel_ridge import MultipleKernelRidgeCV
    from himalaya.ridge import BandedRidgeCV

    rng = np.random.default_rng(1)
    runs = np.repeat(np.arange(3), 60)
    X = np.hstack([rng.standard_normal((180, 2)), rng.standard_normal((180, 30))])
    Y = X[:, :2] @ rng.standard_normal((2, 5)) + 0.3 * X[:, 2:] @ rng.standard_normal((30, 5)) \
        + rng.standard_normal((180, 5))
    grid = np.logspace(-1, 5, 13)
    options = dict(band_sizes=[2, 30], alphas=grid, n_iter=10, dtype="float64",
                   extend_grid=False, random_state=3)
    primal = BandedEncodingModel(solver="primal", **options).fit(X, Y, runs)
    kernel = BandedEncodingModel(solver="kernel", **options).fit(X, Y, runs)
    splits, _ = inner_splits(runs, 5)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    params = dict(n_iter=10, alphas=grid, concentration=(0.1, 1.0), progress_bar=False)
    reference = BandedRidgeCV(groups="input", solver_params=dict(params, warn=False),
                              fit_intercept=False, cv=splits, random_state=3
                              ).fit([Xc[:, :2], Xc[:, 2:]], Yc)
    np.testing.assert_allclose(primal.coef_, reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(primal.deltas_, reference.deltas_)
    kernels = np.stack([Xc[:, :2] @ Xc[:, :2].T, Xc[:, 2:] @ Xc[:, 2:].T])
    dual = MultipleKernelRidgeCV(kernels="precomputed", solver_params=params, fit_intercept=False,
                                 cv=splits, random_state=3).fit(kernels, Yc)
    np.testing.assert_allclose(kernel.deltas_, dual.deltas_)
    np.testing.assert_allclose(kernel.coef_, primal.coef_, rtol=1e-6, atol=1e-9)
    X_new = rng.standard_normal((7, 32))
    np.testing.assert_allclose(primal.predict(X_new), (X_new - X.mean(0)) @ reference.coef_ + Y.mean(0))
    np.testing.assert_allclose(primal.predict(X_new, split=True).sum(0) + primal.y_mean_,
                               primal.predict(X_new))
    np.testing.assert_allclose(primal.band_weights_.sum(0), 1.0)


def test_fit_encoding_with_bands_matches_its_parts_fold_by_fold():
    rate, llm, Y, runs = two_band_problem()
    X = {"rate": Band(rate, hrf_convolved=True), "llm": llm}
    result = fit_encoding(X, Y, runs, n_perm=0, n_band_shifts=0, dtype="float64", clean=False,
                          random_state=0)
    assert [b["name"] for b in result.bands] == ["rate", "llm"]
    assert result.bands[0]["delays"] == [] and result.bands[1]["delays"] == [1, 2, 3, 4]
    assert result.coef.shape == (1 + 6 * 4, 12) and result.deltas.shape == (2, 12)
    bands = resolve_bands(X, len(runs))
    sizes, r_alone_llm = [1, 24], []
    for i, split in enumerate(outer_splits(runs)[0]):
        values = [fold_band_values(b, i, split.train, None) for b in bands]
        design, _ = band_design(values, bands, runs)
        model = BandedEncodingModel(band_sizes=sizes, dtype="float64", random_state=0).fit(
            design[split.train], Y[split.train], runs[split.train])
        held_out = model.predict(design[split.test])
        np.testing.assert_allclose(result.r_folds[i], pearson_r(Y[split.test], held_out), atol=1e-9)
        np.testing.assert_allclose(result.predictions[split.test], held_out, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result.alphas_folds[i], model.alphas_)
        alone = EncodingModel(dtype="float64").fit(design[split.train][:, 1:], Y[split.train],
                                                   runs[split.train])
        r_alone_llm.append(pearson_r(Y[split.test], alone.predict(design[split.test][:, 1:])))
    partition = result.partition
    np.testing.assert_allclose(partition["r_alone"][1], np.mean(r_alone_llm, axis=0), atol=1e-9)
    np.testing.assert_allclose(partition["r_unique"], result.r[None] - partition["r_without"],
                               atol=1e-12)
    # with two bands, "without rate" is "llm alone"
    np.testing.assert_allclose(partition["r_without"][0], partition["r_alone"][1])
    # himalaya's split R^2 adds up to the full model's R^2 on test-centred data
    centred_r2 = []
    for split in outer_splits(runs)[0]:
        data = Y[split.test] - Y[split.test].mean(0)
        prediction = result.predictions[split.test] - result.predictions[split.test].mean(0)
        centred_r2.append(1 - ((data - prediction) ** 2).sum(0) / (data ** 2).sum(0))
    np.testing.assert_allclose(partition["r2_split"].sum(0), np.mean(centred_r2, axis=0), atol=1e-4)
    # planted truth: each band's unique r is large where it drives the target
    assert np.all(partition["r_unique"][0, :4] > 0.3) and np.all(partition["r_unique"][1, 4:8] > 0.1)
    assert np.all(np.abs(partition["r_unique"][0, 4:8]) < 0.1)


@pytest.mark.parametrize("shifted_band", [0, 1])
def test_band_shift_null_equals_direct_refits(shifted_band):
    """Both Woodbury routes (a small shifted band, small other bands) against solving the
    ridge system of every shifted design directly."""
    rate, llm, Y, runs = two_band_problem(seed=2)
    train, test = np.flatnonzero(runs != 1), np.flatnonzero(runs == 1)
    values = [rate - rate[train].mean(0), llm - llm[train].mean(0)]
    delays = [[], [1, 2]]
    weights = np.exp(np.random.default_rng(0).normal(0, 1, (2, Y.shape[1])))
    weights[:, 6:] = weights[:, [5]]      # a group of targets sharing weights
    orders = np.vstack([np.arange(len(runs)), null_indices(runs, 3, "circular", 10, 1)])
    r = band_shift_null(values, delays, runs, train, test, Y, weights, shifted_band, orders)
    for row, order in enumerate(orders):
        moved = [v[order] if b == shifted_band else v for b, v in enumerate(values)]
        blocks = [delay_features(v, d, runs) if d else v for v, d in zip(moved, delays)]
        blocks = [b - b[train].mean(0) for b in blocks]
        for t in range(Y.shape[1]):
            Z = np.hstack([np.sqrt(w) * b for w, b in zip(weights[:, t], blocks)])
            y = Y[train, t] - Y[train, t].mean()
            coef = np.linalg.solve(Z[train].T @ Z[train] + np.eye(Z.shape[1]), Z[train].T @ y)
            expected = pearson_r(Y[test, t], Z[test] @ coef)[0]
            assert r[row, t] == pytest.approx(expected, abs=1e-9)


def test_unique_r_null_finds_planted_bands_and_is_calibrated_on_noise():
    rate, llm, Y, runs = two_band_problem(seed=4, n_targets=60)
    X = {"rate": Band(rate, hrf_convolved=True), "llm": llm}
    result = fit_encoding(X, Y, runs, n_perm=0, n_band_shifts=200, random_state=1)
    p = result.partition["p_unique"]
    assert np.all(p[0, :4] < 0.01) and np.all(p[1, 4:8] < 0.01)
    assert np.all(result.partition["p_unique_fdr"][0, :4] < 0.05)
    noise = p[:, 8:].ravel()                                 # 104 tests without an effect
    assert 0.0 <= np.mean(noise < 0.05) <= 0.12
    assert result.cv["partition"]["null"].startswith("200 circular shifts")


def test_cleaning_removes_a_drift_shared_by_features_and_targets():
    """A slow drift in both features and targets makes unfiltered features 'predict' the
    data; the in-fold cleaning (same for both) removes it."""
    rng = np.random.default_rng(5)
    runs = np.repeat(np.arange(3), 100)
    time = np.tile(np.linspace(0, 1, 100), 3)[:, None]
    drift = np.sin(np.pi * time) * 3
    X = drift + rng.standard_normal((300, 3))
    Y = drift + rng.standard_normal((300, 20))
    raw = fit_encoding(X, Y, runs, delays=None, n_perm=0, clean=False)
    cleaned = fit_encoding(X, Y, runs, delays=None, n_perm=0, tr_s=2.0)
    assert raw.r.mean() > 0.4
    assert abs(cleaned.r.mean()) < 0.1
    assert cleaned.cv["cleaning"]["high_pass_hz"] == pytest.approx(1 / 128)
    assert cleaned.cv["cleaning"]["tr_s"] == 2.0


def test_cleaning_is_fitted_on_training_rows_only():
    """Cleaning the training rows of a fold does not look at its test rows."""
    from brainalign.encoding.cleaning import Cleaning, FoldCleaner

    rng = np.random.default_rng(6)
    runs = np.zeros(120, dtype=int)
    train = np.arange(80)
    values = rng.standard_normal((120, 4)) + np.linspace(0, 5, 120)[:, None]
    changed = values.copy()
    changed[80:] += rng.standard_normal((40, 4)) * 10
    cleaner = FoldCleaner(Cleaning(), runs, train, tr_s=2.0)
    np.testing.assert_allclose(cleaner.apply(values)[train], cleaner.apply(changed)[train])
    assert cleaner.own_fit_runs == []
    # the held-out block is cleaned on its own rows (mean and trend removed there), with
    # nothing taken from the training rows
    moved_train = values.copy()
    moved_train[:80] += 100 * np.linspace(0, 1, 80)[:, None]
    held_out = cleaner.remove_nuisance(values)[80:]
    np.testing.assert_allclose(cleaner.remove_nuisance(moved_train)[80:], held_out, atol=1e-9)
    np.testing.assert_allclose(held_out.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(np.polyfit(np.arange(40), held_out, 1)[0], 0, atol=1e-9)
    np.testing.assert_allclose(cleaner.remove_nuisance(values), cleaner.matrix() @ values,
                               atol=1e-10)


def test_cleaning_a_whole_run_equals_nilearn():
    from nilearn.signal import clean

    from brainalign.encoding.cleaning import Cleaning, FoldCleaner

    rng = np.random.default_rng(7)
    runs = np.repeat([0, 1], [90, 110])
    values = rng.standard_normal((200, 3)).cumsum(0)
    cleaner = FoldCleaner(Cleaning(standardize=False), runs, np.arange(90), tr_s=2.0)
    held_out = cleaner.remove_nuisance(values)[90:]          # run 1 holds no training row
    reference = clean(values[90:], detrend=True, standardize=None, filter="cosine",
                      high_pass=1 / 128, t_r=2.0)
    np.testing.assert_allclose(held_out, reference, atol=1e-10)
    assert cleaner.own_fit_runs == [1]


def test_alpha_grid_is_extended_when_its_edge_is_crowded(caplog):
    rng = np.random.default_rng(8)
    X, Y = rng.standard_normal((150, 10)), rng.standard_normal((150, 40))  # noise: huge alphas
    with caplog.at_level(logging.INFO, logger="brainalign.encoding.ridge"):
        model = EncodingModel(alphas=np.logspace(-2, 2, 9)).fit(X, Y)
    assert model.alphas_grid_.max() > 100 and model.grid_extensions_[0]["edge"] == "upper"
    assert "extending the grid" in caplog.text
    assert np.mean(np.isclose(model.alphas_, model.alphas_grid_.max())) <= 0.05 or \
        len(model.grid_extensions_) == 3
    fixed = EncodingModel(alphas=[1.0]).fit(X, Y)
    assert fixed.grid_extensions_ == [] and np.all(fixed.alphas_ == 1.0)


def test_atoms_fitted_per_fold_once_equal_atoms_fitted_inside_the_fit():
    from brainalign.patterns import AtomTransformer

    rng = np.random.default_rng(9)
    runs = np.repeat([0, 1, 2], 50)
    neurons = rng.standard_normal((150, 120)).astype(np.float32)
    Y = neurons[:, :4] @ rng.standard_normal((4, 3)) + rng.standard_normal((150, 3))
    atoms = AtomTransformer(n_atoms=5, random_state=0)
    inside = fit_encoding({"atoms": Band(neurons, preprocessing=atoms)}, Y, runs, delays=None,
                          n_perm=0)
    made = fold_features(neurons, runs, atoms)
    assert len(made.features) == 3 and made.features[0].shape == (150, 5)
    outside = fit_encoding({"atoms": Band(made)}, Y, runs, delays=None, n_perm=0)
    np.testing.assert_allclose(inside.r, outside.r, atol=1e-5)
    with pytest.raises(ValueError, match="other cross-validation folds"):
        fit_encoding({"atoms": Band(made)}, Y, None, delays=None, n_perm=0, n_blocks=5)


def test_fit_atoms_on_the_training_rows_of_a_single_run():
    from brainalign.patterns import fit_atoms
    from brainalign.record.neurons import NeuronTable

    rng = np.random.default_rng(10)
    data = rng.standard_normal((100, 60)).astype(np.float32)
    table = NeuronTable(np.zeros(60, int), np.full(60, "mlp.out"), np.arange(60))
    train = np.arange(70)
    first = fit_atoms(data, 4, train_rows=train, neurons=table)
    changed = data.copy()
    changed[70:] = rng.standard_normal((30, 60))
    second = fit_atoms(changed, 4, train_rows=train, neurons=table)
    np.testing.assert_allclose(first.atoms, second.atoms)
    assert first.fit_runs == [0] and np.array_equal(first.fit_rows, train)
    with pytest.raises(ValueError, match="exactly one of train_runs"):
        fit_atoms(data, 4, neurons=table)
    with pytest.raises(ValueError, match="held-out runs"):
        fit_atoms(data, 4, train_rows=train, held_out_runs=[0], neurons=table)


def test_pattern_maps_sum_each_bands_delays_and_results_round_trip(tmp_path):
    rate, llm, Y, runs = two_band_problem(seed=11)
    result = fit_encoding({"rate": Band(rate, hrf_convolved=True), "llm": llm}, Y, runs,
                          n_perm=20, n_band_shifts=20)
    maps = pattern_maps(result, band="llm")
    np.testing.assert_allclose(maps, np.asarray(result.coef)[1:].reshape(4, 6, 12).sum(0))
    np.testing.assert_allclose(pattern_maps(result, band="rate"), np.asarray(result.coef)[:1])
    with pytest.raises(ValueError, match="name one with band="):
        pattern_maps(result)
    loaded = load(result.save(tmp_path / "result"))
    assert loaded.bands == result.bands and loaded.partition["bands"] == ["rate", "llm"]
    for key in ("r_unique", "p_unique", "r2_split"):
        np.testing.assert_array_equal(loaded.partition[key], result.partition[key])
    np.testing.assert_array_equal(pattern_maps(loaded, band="llm"), maps)


def test_bad_bands_give_clear_errors():
    rate, llm, Y, runs = two_band_problem()
    with pytest.raises(ValueError, match="delays must be whole numbers of TRs >= 0"):
        fit_encoding(llm, Y, runs, delays=[-1, 1], n_perm=0)
    with pytest.raises(ValueError, match="band 'llm' has 239 rows"):
        fit_encoding({"rate": rate, "llm": llm[:-1]}, Y, runs, n_perm=0)
    with pytest.raises(ValueError, match="n_perm must be an integer >= 0"):
        fit_encoding(llm, Y, runs, n_perm=-5)
    with pytest.raises(ValueError, match="give each band its own preprocessing"):
        from sklearn.decomposition import PCA

        fit_encoding({"llm": llm}, Y, runs, preprocessing=PCA(2))


def test_pattern_maps_are_nan_at_unfitted_targets_and_left_out_of_the_subject_mean():
    """A subject's constant target has no coefficient: NaN, not 0, so that the mean over
    subjects is the other subjects' value (a 0 would halve it)."""
    rng = np.random.default_rng(4)
    runs = np.repeat([0, 1, 2], 40)
    X = rng.standard_normal((120, 3))
    maps = []
    for subject in range(2):
        Y = X @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((120, 4))
        if subject == 0:
            Y[:, 2] = 1.0                                  # constant: not fitted
        result = fit_encoding(X, Y, runs, delays=[1, 2], n_perm=0)
        maps.append(pattern_maps(result))
    assert np.isnan(maps[0][:, 2]).all() and np.isfinite(maps[1]).all()
    mean = mean_over_subjects(maps)
    np.testing.assert_allclose(mean[:, 2], maps[1][:, 2])
    np.testing.assert_allclose(mean[:, [0, 1, 3]], (maps[0] + maps[1])[:, [0, 1, 3]] / 2)
    assert np.isnan(mean_over_subjects([maps[0]])[:, 2]).all()
