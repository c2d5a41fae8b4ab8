"""Scrubbed volumes (sample_mask), folds where a target is flat, and leave-one-story-out
splits in fit_encoding."""

import numpy as np
import pytest

from brainalign.encoding import Cleaning, fit_encoding
from brainalign.encoding.cleaning import FoldCleaner, _nuisance_basis
from brainalign.encoding.cv import outer_splits
from brainalign.encoding.null import FoldOperator, refit_null_test
from brainalign.encoding.stats import null_indices
from brainalign.timecourse.runs import runs_from_lengths

TR_S = 2.0


def planted(seed=0, lengths=(60, 70, 55, 65), n_features=4, n_targets=6):
    rng = np.random.default_rng(seed)
    runs = runs_from_lengths(list(lengths))
    X = rng.standard_normal((len(runs), n_features))
    W = rng.standard_normal((n_features, n_targets))
    Y = X @ W + rng.standard_normal((len(runs), n_targets))
    return X, Y, runs


def test_scrubbed_values_do_not_matter():
    """Whatever a scrubbed volume holds (here a motion spike of 1e4), the scores, the
    coefficients and the other volumes' predictions are the same."""
    X, Y, runs = planted()
    scrubbed = np.array([3, 4, 61, 100, 150, 200, 247])
    keep = np.setdiff1d(np.arange(len(runs)), scrubbed)
    fits = []
    for spike in (0.0, 1e4):
        Ys = Y.copy()
        Ys[scrubbed] = spike
        fits.append(fit_encoding(X, Ys, runs, delays=[0, 1, 2], tr_s=TR_S, n_perm=0,
                                 sample_mask=keep))
    a, b = fits
    np.testing.assert_allclose(a.r, b.r, atol=1e-9)
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-8)
    assert np.isnan(a.predictions[scrubbed]).all()
    np.testing.assert_allclose(a.predictions[keep], b.predictions[keep], atol=1e-5)
    assert a.cv["scrubbed_volumes"] == scrubbed.tolist()
    # without the mask the spikes ruin the fit
    Ys = Y.copy()
    Ys[scrubbed] = 1e4
    unmasked = fit_encoding(X, Ys, runs, delays=[0, 1, 2], tr_s=TR_S, n_perm=0)
    assert np.mean(a.r) > np.mean(unmasked.r) + 0.2


def test_sample_mask_equals_dropping_rows_without_delays_or_cleaning():
    """Reference: no delays, no cleaning: scrubbing equals fitting the kept rows alone."""
    X, Y, runs = planted(seed=1)
    keep = np.flatnonzero(np.random.default_rng(2).random(len(runs)) > 0.15)
    masked = fit_encoding(X, Y, runs, delays=None, clean=False, n_perm=0, sample_mask=keep)
    dropped = fit_encoding(X[keep], Y[keep], runs[keep], delays=None, clean=False, n_perm=0)
    np.testing.assert_allclose(masked.r, dropped.r, atol=1e-10)
    np.testing.assert_allclose(masked.coef, dropped.coef, atol=1e-8)
    boolean = np.zeros(len(runs), dtype=bool)
    boolean[keep] = True
    again = fit_encoding(X, Y, runs, delays=None, clean=False, n_perm=0, sample_mask=boolean)
    np.testing.assert_allclose(again.r, masked.r, atol=1e-12)


@pytest.mark.parametrize("spike", [1e5, np.nan])
def test_censored_rows_leave_the_nuisance_fit(spike):
    """A run's nuisance coefficients come from its uncensored rows (float64 least squares),
    and are applied to every row of the run; a NaN at a censored row stays there."""
    rng = np.random.default_rng(3)
    n = 80
    runs = np.zeros(n, dtype=int)
    cleaning = Cleaning(high_pass_hz=0.01)
    basis = _nuisance_basis(n, cleaning, TR_S, None)
    values = basis @ rng.standard_normal((basis.shape[1], 2)) + rng.standard_normal((n, 2))
    censored = np.array([10, 11, 40, 79])
    values[censored] = spike
    cleaned = FoldCleaner(cleaning, runs, np.arange(n), TR_S, censored=censored) \
        .remove_nuisance(values)
    fit = np.setdiff1d(np.arange(n), censored)
    coef, *_ = np.linalg.lstsq(basis[fit], values[fit], rcond=None)
    np.testing.assert_allclose(cleaned, values - basis @ coef, atol=1e-6)
    assert np.isfinite(cleaned[fit]).all()
    scale = FoldCleaner(cleaning, runs, np.arange(n), TR_S, censored=censored).apply(values)
    np.testing.assert_allclose(scale[fit].std(0), 1.0, atol=1e-12)


def test_bad_sample_masks_are_refused():
    X, Y, runs = planted()
    with pytest.raises(ValueError, match="one entry per TR"):
        fit_encoding(X, Y, runs, n_perm=0, sample_mask=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="indices of kept TRs"):
        fit_encoding(X, Y, runs, n_perm=0, sample_mask=np.array([0, 5000]))


def test_leave_one_story_out():
    """Two stories of two runs: each outer fold holds out both runs of one story."""
    X, Y, runs = planted(seed=4)
    stories = np.where(runs < 2, 0, 1)
    splits, scheme = outer_splits(runs, groups=stories)
    assert scheme == "leave-one-group-out"
    assert [set(np.unique(runs[s.test])) for s in splits] == [{0, 1}, {2, 3}]
    assert all(np.intersect1d(s.train, s.test).size == 0 for s in splits)
    result = fit_encoding(X, Y, runs, delays=[0, 1], tr_s=TR_S, n_perm=0, outer_groups=stories)
    assert result.cv["outer"] == "leave-one-group-out" and result.cv["n_outer_folds"] == 2
    assert result.cv["outer_test_groups"] == [[0], [1]]
    assert np.mean(result.r) > 0.5
    with pytest.raises(ValueError, match="span several outer groups"):
        outer_splits(runs, groups=np.arange(len(runs)) % 2)
    with pytest.raises(ValueError, match="at least 2 outer groups"):
        outer_splits(runs, groups=np.zeros(len(runs), dtype=int))


def _pearson(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _brute_refit_null(Y, Z, kept, folds, alphas, scored, orders):
    """float64 reference of the refit null: the kept rows reordered, every fold's ridge
    (fixed alphas, centred on its training rows) refitted, r averaged over scored folds."""
    stats = np.zeros((len(orders), Y.shape[1]))
    for o, order in enumerate(orders):
        Ys = Y.copy()
        Ys[kept] = Y[kept][order]
        for f, (train, test) in enumerate(folds):
            Zc = Z - Z[train].mean(0)
            yc = Ys[train] - Ys[train].mean(0)
            for j in range(Y.shape[1]):
                coef = np.linalg.solve(Zc[train].T @ Zc[train] + alphas[f, j] * np.eye(Z.shape[1]),
                                       Zc[train].T @ yc[:, j])
                if scored[f, j]:
                    stats[o, j] += _pearson(Ys[test, j], Zc[test] @ coef)
    return stats / scored.sum(0)


def test_refit_null_reorders_kept_rows_only_and_skips_unscored_folds():
    """Against a float64 brute force: surrogates reorder the kept rows only (NaN at the
    scrubbed ones reaches nothing), and a fold that does not score a target is left out of
    that target's mean r, in the observed value and in every surrogate."""
    rng = np.random.default_rng(5)
    runs = np.repeat(np.arange(3), 50)
    X = rng.standard_normal((150, 4))
    Y = X @ rng.standard_normal((4, 3)) + rng.standard_normal((150, 3))
    scrubbed = np.array([7, 8, 60, 149])
    kept = np.setdiff1d(np.arange(150), scrubbed)
    Y[scrubbed] = np.nan
    folds = [(kept[runs[kept] != g], kept[runs[kept] == g]) for g in range(3)]
    alphas = rng.uniform(1, 50, size=(3, 3))
    scored = np.ones((3, 3), dtype=bool)
    scored[1, 2] = False
    operators = [FoldOperator.from_design(X, train, test, alphas[f], scored=scored[f])
                 for f, (train, test) in enumerate(folds)]
    _, observed, null = refit_null_test(Y, operators, runs, n_perm=20, random_state=3,
                                        return_null=True, kept=kept)
    orders = np.vstack([np.arange(len(kept))[None],
                        null_indices(runs[kept], 20, "mirror", 10, 3)])
    expected = _brute_refit_null(Y, X, kept, folds, alphas, scored, orders)
    np.testing.assert_allclose(observed, expected[0], atol=2e-5)
    np.testing.assert_allclose(null, expected[1:], atol=2e-5)
    with pytest.raises(ValueError, match="outside `kept`"):
        refit_null_test(Y, operators, runs, n_perm=5, kept=kept[5:])


@pytest.mark.parametrize("clean", [True, False])
def test_p_values_do_not_depend_on_scrubbed_values(clean):
    """0, a motion spike or NaN at the scrubbed volumes: the same r, p and predictions."""
    X, Y, runs = planted(seed=6, n_targets=5)
    Y[:, 3:] = np.random.default_rng(7).standard_normal((len(runs), 2))   # noise targets
    scrubbed = np.array([10, 11, 70, 71, 150, 200, 201])
    keep = np.setdiff1d(np.arange(len(runs)), scrubbed)
    fits = []
    for value in (0.0, 30.0, np.nan):
        Ys = Y.copy()
        Ys[scrubbed] = value
        fits.append(fit_encoding(X, Ys, runs, delays=[0, 1], clean=clean, tr_s=TR_S,
                                 n_perm=200, sample_mask=keep, dtype="float64",
                                 backend="numpy"))
    for other in fits[1:]:
        np.testing.assert_allclose(other.r, fits[0].r, atol=1e-12)
        np.testing.assert_allclose(other.r_folds, fits[0].r_folds, atol=1e-12)
        np.testing.assert_array_equal(other.p_values, fits[0].p_values)
        np.testing.assert_allclose(other.predictions[keep], fits[0].predictions[keep], atol=1e-6)
    assert fits[0].valid_targets.all()
    assert np.all(fits[0].p_values[:3] < 0.01)


def test_refit_null_is_calibrated_with_spikes_at_scrubbed_volumes():
    """Pure-noise targets whose scrubbed volumes hold motion spikes: ~5% of p under .05."""
    rng = np.random.default_rng(2)
    runs = np.repeat(np.arange(3), 80)
    X, Y = rng.standard_normal((240, 4)), rng.standard_normal((240, 300))
    scrubbed = np.array([20, 21, 100, 101, 180, 181])
    Y[scrubbed] = 30.0
    keep = np.setdiff1d(np.arange(240), scrubbed)
    result = fit_encoding(X, Y, runs, tr_s=TR_S, n_perm=300, sample_mask=keep)
    assert 0.02 <= np.mean(result.p_values < 0.05) <= 0.09


def _cleaned_runs(Y, runs, cleaning):
    """Each run's nuisance residuals on its own basis (how a held-out run is cleaned, and
    how each training run of a leave-one-run-out fold is)."""
    out = np.empty_like(Y)
    for g in np.unique(runs):
        rows = runs == g
        basis = _nuisance_basis(int(rows.sum()), cleaning, TR_S, None)
        out[rows] = Y[rows] - basis @ np.linalg.lstsq(basis, Y[rows], rcond=None)[0]
    return out


@pytest.mark.parametrize("clean", [True, False])
def test_a_fold_where_a_target_is_flat_does_not_score_it(clean):
    """Target 1 is target 0 except constant in run 1 (signal dropout), target 2 is constant
    within every run: fold 1 does not score target 1 (NaN), whose r and r2 are the means
    over the other folds (brute-force float64 scores of the held-out predictions);
    target 2 has no score and no p-value."""
    rng = np.random.default_rng(0)
    runs = np.repeat(np.arange(3), 80)
    X = rng.standard_normal((240, 3))
    Y = rng.standard_normal((240, 3))
    Y[:, 0] += 2 * np.roll(X[:, 0], 2)
    Y[:, 1] = Y[:, 0]
    Y[runs == 1, 1] = 100.0
    Y[:, 2] = 5.0 * runs
    result = fit_encoding(X, Y, runs, clean=clean, tr_s=TR_S, n_perm=100, dtype="float64",
                          backend="numpy")
    assert np.isnan(result.r_folds[1, 1]) and np.isfinite(result.r_folds[[0, 2], 1]).all()
    assert np.isnan(result.r_folds[:, 2]).all()
    data = _cleaned_runs(Y, runs, Cleaning()) if clean else Y
    r_folds, r2_folds = np.zeros((3, 2)), np.zeros((3, 2))
    for g in range(3):
        test = runs == g
        if clean:   # z-scored with the training runs' residual standard deviation
            scale = data[~test].std(0)
        else:
            scale = np.ones(3)
        y = (data[test] / scale)[:, :2]
        prediction = result.predictions[test, :2].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):   # target 1 is flat in run 1
            r_folds[g] = _pearson(y, prediction)
            r2_folds[g] = 1 - ((y - prediction) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(result.r_folds[:, 0], r_folds[:, 0], atol=1e-5)
    np.testing.assert_allclose(result.r_folds[[0, 2], 1], r_folds[[0, 2], 1], atol=1e-5)
    np.testing.assert_allclose(result.r, [r_folds[:, 0].mean(), r_folds[[0, 2], 1].mean(),
                                          np.nan], atol=1e-5)
    np.testing.assert_allclose(result.r2, [r2_folds[:, 0].mean(), r2_folds[[0, 2], 1].mean(),
                                           np.nan], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.r, np.nanmean(result.r_folds[:, :2], 0).tolist() + [np.nan])
    assert np.all(result.p_values[:2] < 0.02) and np.isnan(result.p_values[2])
    by_predictions = fit_encoding(X, Y, runs, clean=clean, tr_s=TR_S, n_perm=100,
                                  null_scope="predictions", dtype="float64", backend="numpy")
    np.testing.assert_allclose(by_predictions.r, result.r, atol=1e-12)
    assert np.all(by_predictions.p_values[:2] < 0.02) and np.isnan(by_predictions.p_values[2])


def test_refit_null_is_calibrated_on_targets_flat_in_one_run():
    """Pure-noise targets, each constant in one run (cleaning on): ~5% of p under .05."""
    rng = np.random.default_rng(11)
    runs = np.repeat(np.arange(4), 60)
    X, Y = rng.standard_normal((240, 5)), rng.standard_normal((240, 300))
    dropout = rng.integers(0, 4, size=300)
    Y[runs[:, None] == dropout[None, :]] = 3.0
    result = fit_encoding(X, Y, runs, tr_s=TR_S, n_perm=300)
    assert (np.isnan(result.r_folds) == (np.arange(4)[:, None] == dropout[None, :])).all()
    assert np.isfinite(result.r).all() and np.all(np.abs(result.r2) < 1)
    assert 0.02 <= np.mean(result.p_values < 0.05) <= 0.09
