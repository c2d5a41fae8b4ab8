"""Unique held-out r with a circular-shift null: exact against scikit-learn refits, a driving
feature is found, a correlated bystander is not, and the null is calibrated on smooth noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from brainalign.encoding.ridge import EncodingModel
from brainalign.encoding.stats import null_indices
from brainalign.encoding.unique import UniqueR, shift_test_p_values, unique_r_shift_test
from brainalign.timecourse import Delayer
from brainalign.simulate.noise import ar1_filter

RUNS = np.repeat([0, 1], [90, 110])
DELAYS = [1, 2]


def reference_unique_r(X, Y, feature, order=None):
    """Leave-one-run-out r(all) - r(all but feature) by scikit-learn Ridge refits, with the
    alphas chosen on the unshifted design and the feature replaced by X[order]."""
    columns = np.tile(np.arange(X.shape[1]), len(DELAYS))
    out = np.zeros(Y.shape[1])
    for run in (0, 1):
        train, test = RUNS != run, RUNS == run
        Xz = StandardScaler().fit(X[train]).transform(X)
        design = Delayer(DELAYS).fit_transform(Xz, runs=RUNS)
        alphas = EncodingModel().fit(design[train], Y[train], runs=RUNS[train]).alphas_
        if order is not None:
            Xz[:, feature] = Xz[order, feature]
            design = Delayer(DELAYS).fit_transform(Xz, runs=RUNS)
        reduced = design[:, columns != feature]
        for target in range(Y.shape[1]):
            full = Ridge(alpha=alphas[target]).fit(design[train], Y[train, target])
            less = Ridge(alpha=alphas[target]).fit(reduced[train], Y[train, target])
            r_full = np.corrcoef(full.predict(design[test]), Y[test, target])[0, 1]
            r_less = np.corrcoef(less.predict(reduced[test]), Y[test, target])[0, 1]
            out[target] += (r_full - r_less) / 2
    return out


def test_observed_and_null_equal_scikit_learn_refits_at_the_same_alphas():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    Y = rng.standard_normal((200, 2))
    Y[1:, 0] += X[:-1, 0]
    result = unique_r_shift_test(X, Y, RUNS, delays=DELAYS, n_shifts=5, clean=False,
                                 random_state=3)
    order = null_indices(RUNS, 5, "circular", 10, 3)
    for feature in range(3):
        np.testing.assert_allclose(result.observed[feature], reference_unique_r(X, Y, feature),
                                   atol=1e-9)
    np.testing.assert_allclose(result.null[2, 1], reference_unique_r(X, Y, 1, order[2]),
                               atol=1e-9)
    np.testing.assert_allclose(result.null[4, 0], reference_unique_r(X, Y, 0, order[4]),
                               atol=1e-9)


def test_a_driving_feature_passes_and_a_correlated_bystander_does_not():
    rng = np.random.default_rng(1)
    driver = ar1_filter(rng.standard_normal((200, 1)), RUNS, 0.5)[:, 0]
    bystander = 0.8 * driver + 0.6 * rng.standard_normal(200)   # r ~ 0.8, drives nothing
    X = np.column_stack([driver, bystander, rng.standard_normal(200)])
    Y = np.zeros((200, 1))
    Y[2:, 0] = driver[:-2]
    Y += rng.standard_normal(Y.shape)
    result = unique_r_shift_test(X, Y, RUNS, delays=DELAYS, n_shifts=200, random_state=0)
    statistic, tested = shift_test_p_values([result])
    p = tested.p_values
    # beyond every shift: the empirical p-value sits at its floor, the tail fit goes below
    assert shift_test_p_values([result], tail="empirical")[1].p_values[0, 0] == 1 / 201
    assert tested.method[0, 0] == "gpd" and 0 < p[0, 0] < 1 / 201
    assert statistic[0, 0] > 0.05 > abs(statistic[1, 0])
    # the bystander alone would predict Y well; its unique contribution is nil
    assert np.corrcoef(bystander[:-2], Y[2:, 0])[0, 1] > 0.4
    assert p[1, 0] > 0.1 and p[2, 0] > 0.1


def test_shift_null_is_calibrated_on_smooth_noise():
    """Autocorrelated features and targets unrelated to each other: about 5% of p < .05."""
    p_values = []
    for seed in range(24):
        rng = np.random.default_rng(100 + seed)
        X = ar1_filter(rng.standard_normal((200, 3)), RUNS, 0.8)
        Y = ar1_filter(rng.standard_normal((200, 4)), RUNS, 0.8)
        result = unique_r_shift_test(X, Y, RUNS, delays=DELAYS, n_shifts=99, random_state=seed)
        p_values.append(shift_test_p_values([result])[1].p_values.ravel())
    p_values = np.concatenate(p_values)                       # 288 tests
    assert 0.01 <= np.mean(p_values < 0.05) <= 0.11           # binomial 99.9% range
    assert np.mean(p_values < 0.5) == pytest.approx(0.5, abs=0.1)


def test_subjects_share_shifts_and_their_nulls_average():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 2))
    subjects = [unique_r_shift_test(X, rng.standard_normal((200, 2)), RUNS, delays=DELAYS,
                                    n_shifts=20, random_state=7) for _ in range(2)]
    statistic, tested = shift_test_p_values(subjects, tail="empirical")
    np.testing.assert_allclose(statistic, (subjects[0].observed + subjects[1].observed) / 2)
    null = (subjects[0].null + subjects[1].null) / 2
    np.testing.assert_allclose(tested.p_values, (1 + (null >= statistic - 1e-12).sum(0)) / 21)
    other = unique_r_shift_test(X, rng.standard_normal((200, 2)), RUNS, delays=DELAYS,
                                n_shifts=20, random_state=8)
    with pytest.raises(ValueError, match="same arguments"):
        shift_test_p_values([subjects[0], other])
    with pytest.raises(ValueError, match="no unique-r"):
        shift_test_p_values([])
    assert isinstance(other, UniqueR) and other.n_shifts == 20


def test_bad_input_is_named():
    X = np.random.default_rng(3).standard_normal((200, 2))
    with pytest.raises(ValueError, match="same"):
        unique_r_shift_test(X, np.ones((150, 2)), RUNS)
    Y = np.random.default_rng(4).standard_normal((200, 2))
    Y[:, 1] = 1.0
    with pytest.raises(ValueError, match="non-constant"):
        unique_r_shift_test(X, Y, RUNS)
    with pytest.raises(ValueError, match="n_shifts"):
        unique_r_shift_test(X, Y[:, :1], RUNS, n_shifts=0)


def test_single_feature_unique_r_is_its_held_out_r():
    """Without other features the reduced model predicts a constant (r = 0)."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((200, 1))
    Y = rng.standard_normal((200, 2))
    Y[1:, 0] += X[:-1, 0]
    result = unique_r_shift_test(X, Y, RUNS, delays=DELAYS, n_shifts=3, clean=False)
    expected = np.zeros(2)
    for run in (0, 1):
        train, test = RUNS != run, RUNS == run
        design = Delayer(DELAYS).fit_transform(StandardScaler().fit(X[train]).transform(X),
                                               runs=RUNS)
        alphas = EncodingModel().fit(design[train], Y[train], runs=RUNS[train]).alphas_
        for target in range(2):
            model = Ridge(alpha=alphas[target]).fit(design[train], Y[train, target])
            expected[target] += np.corrcoef(model.predict(design[test]), Y[test, target])[0, 1] / 2
    np.testing.assert_allclose(result.observed[0], expected, atol=1e-9)
    assert result.observed[0, 0] > 0.5


def test_drifts_shared_by_a_pattern_and_the_bold_are_cleaned_inside_the_folds():
    """A pattern drifting over each run and a scanner drift in the BOLD, with no stimulus
    link: on uncleaned data most of its shift tests passed; cleaned inside each fold as
    fit_encoding cleans (run mean, trend, drifts below 1/128 Hz), about alpha of them do."""
    from brainalign.simulate.noise import ar1_filter

    runs = np.repeat([0, 1, 2], 150)
    trend = np.tile(np.linspace(-1, 1, 150), 3)
    passed = {"raw": [], "cleaned": []}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        X = ar1_filter(rng.standard_normal((450, 3)), runs, 0.5)
        X[:, 0] += trend
        Y = ar1_filter(rng.standard_normal((450, 8)), runs, 0.5) + 0.7 * trend[:, None]
        for name, options in (("raw", dict(clean=False)), ("cleaned", dict(tr_s=2.0))):
            result = unique_r_shift_test(X, Y, runs, delays=[1, 2, 3, 4], n_shifts=99,
                                         random_state=seed, **options)
            passed[name].append(shift_test_p_values([result])[1].p_values[0] < 0.05)
    assert np.mean(passed["raw"]) > 0.5
    assert np.mean(passed["cleaned"]) < 0.15
