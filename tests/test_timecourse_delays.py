"""FIR delays: never across runs, standalone and inside a scikit-learn Pipeline with Ridge."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import Ridge
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

from brainalign.timecourse import Delayer, delay_features, delays_in_trs, runs_from_lengths


def delay_reference(X, delays, runs):
    """Explicit loop: entry (t, d, j) is X[t - d, j] if t - d lies in the run of t, else 0."""
    n_tr, n_features = X.shape
    out = np.zeros((n_tr, len(delays) * n_features))
    for t in range(n_tr):
        for i, d in enumerate(delays):
            source = t - d
            if 0 <= source < n_tr and runs[source] == runs[t]:
                out[t, i * n_features:(i + 1) * n_features] = X[source]
    return out


def test_delay_features_matches_loop_and_never_crosses_runs():
    rng = np.random.default_rng(0)
    runs = runs_from_lengths([7, 5, 9])
    X = rng.standard_normal((21, 3))
    delays = [-1, 0, 1, 2, 4]
    got = delay_features(X, delays, runs)
    np.testing.assert_array_equal(got, delay_reference(X, delays, runs))
    # a feature that is 1 only in run 0 never appears in later runs, whatever the delay
    marker = (runs == 0).astype(float)[:, None]
    assert np.all(delay_features(marker, [1, 2, 3, 6], runs)[7:] == 0)
    # a delay as long as a run leaves that run empty
    assert np.all(delay_features(X, [5], runs)[7:12] == 0)


def test_delays_in_seconds():
    assert delays_in_trs([2.0, 4.0, 6.0], unit="s", tr_s=2.0).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="whole numbers of TRs"):
        delays_in_trs([3.0], unit="s", tr_s=2.0)
    with pytest.raises(ValueError, match="tr_s"):
        delays_in_trs([2.0], unit="s")
    X = np.random.default_rng(1).standard_normal((10, 2))
    np.testing.assert_array_equal(Delayer([1.5, 3.0], unit="s", tr_s=1.5).fit_transform(X),
                                  Delayer([1, 2]).fit_transform(X))


def test_delayer_standalone_uses_runs_and_checks_lengths():
    rng = np.random.default_rng(2)
    runs = runs_from_lengths([6, 6])
    X = rng.standard_normal((12, 2))
    delayer = Delayer(delays=(1, 2), runs=runs).fit(X)
    np.testing.assert_array_equal(delayer.transform(X), delay_reference(X, [1, 2], runs))
    np.testing.assert_array_equal(Delayer((1, 2)).fit_transform(X, runs=runs),
                                  delay_reference(X, [1, 2], runs))
    with pytest.raises(ValueError, match="built with runs for 12 TRs but got 5"):
        delayer.transform(X[:5])
    assert delayer.get_feature_names_out(["a", "b"]).tolist() == [
        "a_delay1", "b_delay1", "a_delay2", "b_delay2"]
    with pytest.raises(ValueError, match="3 features"):
        delayer.transform(np.zeros((12, 3)))


def planted_problem(seed=3):
    """y is feature 0 two TRs ago (within each run) plus a little noise."""
    rng = np.random.default_rng(seed)
    runs = runs_from_lengths([40, 35, 45])
    X = rng.standard_normal((120, 2))
    y = delay_reference(X[:, :1], [2], runs)[:, 0] + 0.01 * rng.standard_normal(120)
    return X, y, runs


def test_delayer_in_pipeline_with_ridge_recovers_planted_delay():
    X, y, runs = planted_problem()
    pipe = make_pipeline(Delayer(delays=(1, 2, 3), runs=runs), Ridge(alpha=1e-3)).fit(X, y)
    coef = pipe[-1].coef_.reshape(3, 2)  # (n_delays, n_features), delay-major
    np.testing.assert_allclose(coef[1, 0], 1.0, atol=0.01)
    assert np.abs(np.delete(coef.ravel(), 2)).max() < 0.01
    manual = Ridge(alpha=1e-3).fit(delay_reference(X, [1, 2, 3], runs), y)
    np.testing.assert_allclose(pipe.predict(X), manual.predict(delay_reference(X, [1, 2, 3], runs)),
                               atol=1e-10)


def test_delayer_with_metadata_routing_in_cross_validation():
    X, y, runs = planted_problem(seed=4)
    delays = [1, 2, 3]
    with sklearn.config_context(enable_metadata_routing=True):
        delayer = Delayer(delays=delays).set_fit_request(runs=True).set_transform_request(runs=True)
        pipe = make_pipeline(delayer, Ridge(alpha=1e-3))
        folds = list(LeaveOneGroupOut().split(X, y, groups=runs))
        predicted = cross_val_predict(pipe, X, y, cv=folds, params={"runs": runs})
    # reference: each held-out run predicted from a model fitted on the other runs
    delayed = delay_reference(X, delays, runs)
    expected = np.empty_like(y)
    for run in np.unique(runs):
        test = runs == run
        expected[test] = Ridge(alpha=1e-3).fit(delayed[~test], y[~test]).predict(delayed[test])
    np.testing.assert_allclose(predicted, expected, atol=1e-10)
    # a delay applied across the concatenated runs (the leak) gives different predictions
    leaky = delay_reference(X, delays, np.zeros(len(runs), dtype=int))
    assert not np.allclose(leaky, delayed)


def test_delayer_passes_sklearn_estimator_checks():
    # row order is time: a delayed copy depends on neighbouring rows by design
    check_estimator(Delayer(), expected_failed_checks={
        "check_methods_sample_order_invariance": "rows are TRs; delays depend on their order",
        "check_methods_subset_invariance": "rows are TRs; delays depend on their neighbours",
    })
