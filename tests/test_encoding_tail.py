"""Permutation p-values with a generalised Pareto tail: the fit against scipy, accuracy on a
known null far in its tail, calibration on null data, monotonicity, and the fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from brainalign.encoding.tail import (anderson_darling, gpd_fit, gpd_log_survival,
                                      permutation_p_values)


@pytest.mark.parametrize("shape", [-0.3, 0.0, 0.2])
def test_gpd_fit_survival_and_fit_statistic_match_scipy(shape):
    rng = np.random.default_rng(0)
    sample = np.sort(stats.genpareto.rvs(shape, scale=2.0, size=2000, random_state=rng))
    fitted_shape, fitted_scale = gpd_fit(sample[:, None])
    mle_shape, _, mle_scale = stats.genpareto.fit(sample, floc=0)
    assert fitted_shape[0] == pytest.approx(mle_shape, abs=0.03)
    assert fitted_scale[0] == pytest.approx(mle_scale, rel=0.05)
    np.testing.assert_allclose(gpd_log_survival(sample, fitted_shape, fitted_scale),
                               stats.genpareto.logsf(sample, fitted_shape[0],
                                                     scale=fitted_scale[0]), rtol=1e-9)
    reference = stats.goodness_of_fit(
        stats.genpareto, sample[:200], statistic="ad", n_mc_samples=9,
        known_params=dict(c=fitted_shape[0], loc=0.0, scale=fitted_scale[0]), random_state=0)
    assert anderson_darling(sample[:200, None], fitted_shape, fitted_scale)[0] == \
        pytest.approx(reference.statistic, rel=1e-9)


def test_bounded_fit_never_ends_below_the_largest_value():
    """Zhang-Stephens: the end point of a fitted bounded tail covers the sample."""
    rng = np.random.default_rng(1)
    sample = np.sort(stats.genpareto.rvs(-0.5, size=(50, 300), random_state=rng), axis=0)
    shape, scale = gpd_fit(sample)
    assert np.all(shape < 0)
    assert np.all(scale / -shape >= sample[-1])
    assert np.all(np.isfinite(anderson_darling(sample, shape, scale)))


def test_far_tail_of_a_normal_null_is_estimated_where_counting_stops():
    """Observed at z = 3.3 (p = 4.8e-4), half the empirical floor of 1000 draws."""
    rng = np.random.default_rng(2)
    null = rng.standard_normal((1000, 400))
    exact = stats.norm.sf(3.3)
    tested = permutation_p_values(np.full(400, 3.3), null)
    counted = permutation_p_values(np.full(400, 3.3), null, tail="empirical")
    assert np.all(counted.p_values >= 1 / 1001) and np.mean(counted.n_exceed == 0) > 0.5
    assert np.all(tested.method == "gpd")
    ratio = tested.p_values / exact
    assert 0.5 < np.median(ratio) < 2.0
    assert np.mean((ratio > 1 / 3) & (ratio < 3)) > 0.6
    assert np.median(counted.p_values / exact) > 2.0           # counting overstates it


def test_calibrated_on_null_data():
    rng = np.random.default_rng(3)
    null = rng.standard_normal((1000, 20000))
    observed = rng.standard_normal(20000)
    p = permutation_p_values(observed, null).p_values
    assert 0.045 <= np.mean(p < 0.05) <= 0.055                # binomial sd 0.0015
    assert 0.008 <= np.mean(p < 0.01) <= 0.012                # 0.01 is in the tail part
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_monotone_in_the_observed_value_and_never_zero():
    rng = np.random.default_rng(4)
    null = np.repeat(rng.standard_normal((1000, 1)), 300, axis=1)
    observed = np.linspace(-3.0, 12.0, 300)
    tested = permutation_p_values(observed, null)
    assert np.all(np.diff(tested.p_values) <= 0)
    assert np.all(tested.p_values > 0)
    assert set(tested.method) == {"empirical", "gpd"}
    beyond = observed > null.max()
    assert np.all(tested.p_values[beyond] < 1 / 1001)
    # a bounded null far exceeded: the survival floor, (tail / n_perm) * eps, not 0
    uniform = rng.random((1000, 1))
    far = permutation_p_values(np.array([5.0]), uniform)
    assert far.method[0] == "gpd" and far.shape[0] < 0
    assert far.p_values[0] == pytest.approx(far.tail_size[0] / 1000 * np.finfo(float).eps)


def test_many_exceedances_keep_the_empirical_p_value_and_ties_count():
    rng = np.random.default_rng(5)
    null = rng.integers(0, 20, size=(500, 3, 4)).astype(float)     # ties everywhere
    observed = np.full((3, 4), 10.0)
    tested = permutation_p_values(observed, null)
    counted = (1 + (null >= 10).sum(axis=0)) / 501
    assert tested.p_values.shape == (3, 4) and np.all(tested.method == "empirical")
    np.testing.assert_array_equal(tested.p_values, counted)
    np.testing.assert_array_equal(tested.n_exceed, (null >= 10).sum(axis=0))


def test_rejected_or_impossible_fits_fall_back_to_counting():
    rng = np.random.default_rng(6)
    binary = rng.integers(0, 2, size=(1000, 2)).astype(float)       # no continuous tail
    tested = permutation_p_values(np.array([1.0, 2.0]), binary)
    assert tested.method.tolist() == ["empirical", "empirical_no_fit"]
    assert tested.p_values[1] == 1 / 1001 and tested.tail_size[1] == 0
    small = permutation_p_values(np.array([9.0]), rng.standard_normal((50, 1)))
    assert small.method[0] == "empirical_no_fit"                    # 50 draws: no tail to fit


def test_undefined_values_and_bad_input():
    null = np.random.default_rng(7).standard_normal((200, 3))
    null[:, 2] = np.nan                                             # never exceeds
    tested = permutation_p_values(np.array([np.nan, 0.0, 0.0]), null, tail="empirical")
    assert np.isnan(tested.p_values[0]) and tested.method[0] == "undefined"
    assert tested.p_values[2] == 1 / 201
    assert tested.describe()["n_tests_by_method"]["undefined"] == 1
    with pytest.raises(ValueError, match=r"\(n_perm, 4\)"):
        permutation_p_values(np.zeros(4), null)
    with pytest.raises(ValueError, match="tail must be one of"):
        permutation_p_values(np.zeros(3), null, tail="normal")


def test_fdr_passes_nothing_on_pure_noise_beyond_every_draw():
    """A complete null (an r-like, bounded statistic exchangeable with its 999 draws, as in
    a whole-brain fit): the tests no draw reached got p ~1e-17 from a bounded fitted tail,
    and BH at .05 rejected some in 4 of 4 repetitions; it should reject nothing in ~95%."""
    from brainalign.encoding.stats import fdr

    for seed in range(3):
        rng = np.random.default_rng(seed)
        draws = np.tanh(rng.standard_normal((1000, 20000)) / np.sqrt(47))
        tested = permutation_p_values(draws[0], draws[1:])
        rejected, _ = fdr(tested.p_values)
        assert rejected.sum() == 0
        beyond = tested.n_exceed == 0
        assert beyond.sum() > 5 and tested.p_values[beyond].min() > 1e-5
