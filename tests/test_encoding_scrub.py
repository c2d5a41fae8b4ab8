"""Scrubbed volumes (sample_mask) and leave-one-story-out splits in fit_encoding."""

import numpy as np
import pytest

from brainalign.encoding import Cleaning, fit_encoding
from brainalign.encoding.cleaning import FoldCleaner, _nuisance_basis
from brainalign.encoding.cv import outer_splits
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


def test_censored_rows_leave_the_nuisance_fit():
    """A run's nuisance coefficients come from its uncensored rows (float64 least squares),
    and are applied to every row of the run."""
    rng = np.random.default_rng(3)
    n = 80
    runs = np.zeros(n, dtype=int)
    cleaning = Cleaning(high_pass_hz=0.01)
    basis = _nuisance_basis(n, cleaning, TR_S, None)
    values = basis @ rng.standard_normal((basis.shape[1], 2)) + rng.standard_normal((n, 2))
    censored = np.array([10, 11, 40, 79])
    values[censored] = 1e5
    cleaned = FoldCleaner(cleaning, runs, np.arange(n), TR_S, censored=censored) \
        .remove_nuisance(values)
    fit = np.setdiff1d(np.arange(n), censored)
    coef, *_ = np.linalg.lstsq(basis[fit], values[fit], rcond=None)
    np.testing.assert_allclose(cleaned, values - basis @ coef, atol=1e-6)
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
