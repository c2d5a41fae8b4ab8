"""FIR delays: stack time-shifted copies of TR-grid features, never across run boundaries.

An encoding model sees each feature at several delays so it can learn the shape of the
haemodynamic response (a finite impulse response model). Shifting a concatenation of
runs (or stories) as one array would pull the end of one run into the start of the next;
here every shift is done inside each run and the TRs a shift leaves empty are zero.

Sign convention (as MNE's receptive-field estimators): a positive delay ``d`` means the
feature at TR ``t - d`` is used to predict the response at TR ``t`` (stimulus precedes
response). The output columns are delay-major: column ``i_delay * n_features + i_feature``
holds feature ``i_feature`` at delay ``delays[i_delay]``.

:class:`Delayer` is a scikit-learn transformer. Inside a :class:`~sklearn.pipeline.Pipeline`
the run labels reach it in one of two ways:

* ``Delayer(delays, runs=runs)`` when the pipeline is fitted and applied to the full
  arrays those labels describe;
* scikit-learn metadata routing (``sklearn.set_config(enable_metadata_routing=True)`` and
  ``Delayer(...).set_fit_request(runs=True).set_transform_request(runs=True)``), which
  passes ``runs`` to ``fit``/``transform`` and splits it with the samples in
  cross-validation.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from brainalign.timecourse.runs import check_runs, run_slices

#: The one FIR delay default of brainalign, in TRs: 1-4 TRs (2-8 s at TR 2 s) covers the
#: rise and peak of the haemodynamic response. ``fit_encoding``, the temporal network test,
#: the Delayer and the study configuration all use it.
DEFAULT_DELAYS: tuple[int, ...] = (1, 2, 3, 4)


def check_fir_delays(delays, key: str = "delays", allow_empty: bool = True) -> list[int]:
    """FIR delays of an encoding model as a list of int, or a one-line ValueError.

    The encoding models take whole TR counts ``>= 0`` (see the sign convention above: a
    negative delay would let the stimulus *after* a volume predict it), each once. The
    same check serves ``fit_encoding(delays=...)``, a band's own delays and the study
    configuration's ``encoding.delays``, so all three give the same message after ``key``.
    """
    given = [] if delays is None else delays
    try:
        values = list(np.atleast_1d(np.asarray(given, dtype=object)).ravel().tolist())
    except Exception:  # pragma: no cover - anything numpy cannot hold
        values = [given]
    ok = all(isinstance(d, (int, float, np.integer, np.floating)) and not isinstance(d, bool)
             and float(d).is_integer() and d >= 0 for d in values)
    shown = values if not isinstance(delays, str) else delays
    allowed = f"allowed: a {'' if allow_empty else 'non-empty '}list of distinct integers >= 0"
    if not ok or isinstance(delays, str):
        raise ValueError(f"{key} = {shown!r}: FIR delays must be whole numbers of TRs >= 0 "
                         f"(the stimulus precedes the response); {allowed}")
    if not values and not allow_empty:
        raise ValueError(f"{key} = []: {allowed}")
    if len(set(int(d) for d in values)) != len(values):
        raise ValueError(f"{key} = {shown!r}: delays repeat; {allowed}")
    return [int(d) for d in values]


def delays_in_trs(delays: Sequence[float], unit: Literal["tr", "s"] = "tr",
                  tr_s: float | None = None) -> np.ndarray:
    """Delays as integer TR counts.

    Parameters
    ----------
    delays : sequence of float
        Delays in TRs (``unit="tr"``) or seconds (``unit="s"``).
    unit : {"tr", "s"}
    tr_s : float, optional
        Repetition time in seconds; required for ``unit="s"``. Delays in seconds must
        be whole multiples of ``tr_s``.

    Returns
    -------
    ndarray of int, shape (n_delays,)
    """
    delays = np.atleast_1d(np.asarray(delays, dtype=np.float64))
    if delays.ndim != 1 or delays.size == 0:
        raise ValueError(f"delays must be a non-empty 1-D sequence, got {delays!r}")
    if unit == "s":
        if tr_s is None or not tr_s > 0:
            raise ValueError(f"delays in seconds need tr_s > 0, got tr_s={tr_s!r}")
        in_trs = delays / tr_s
    elif unit == "tr":
        in_trs = delays
    else:
        raise ValueError(f"unit must be 'tr' or 's', got {unit!r}")
    rounded = np.rint(in_trs)
    if not np.allclose(in_trs, rounded, atol=1e-6):
        raise ValueError(
            f"delays must be whole numbers of TRs; got {delays.tolist()} {unit}"
            + (f" with tr_s={tr_s}" if unit == "s" else "")
        )
    return rounded.astype(int)


def delay_features(X: np.ndarray, delays_tr: Sequence[int], runs: np.ndarray | None = None) -> np.ndarray:
    """Stack copies of ``X`` shifted by each delay inside each run.

    Parameters
    ----------
    X : ndarray, shape (n_tr, n_features)
    delays_tr : sequence of int
        Delays in TRs (positive: the past of the feature predicts the present).
    runs : ndarray of int, shape (n_tr,), optional
        Run label of each TR; None is a single run.

    Returns
    -------
    ndarray, shape (n_tr, n_delays * n_features), delay-major columns, same dtype as X
    """
    X = np.asarray(X)
    n_tr, n_features = X.shape
    runs = check_runs(runs, n_tr)
    out = np.zeros((n_tr, len(delays_tr) * n_features), dtype=X.dtype)
    for part in run_slices(runs):
        block = X[part]
        length = block.shape[0]
        for i_delay, delay in enumerate(delays_tr):
            delay = int(delay)
            if abs(delay) >= length:
                continue
            columns = slice(i_delay * n_features, (i_delay + 1) * n_features)
            target = out[part, columns]
            if delay >= 0:
                target[delay:] = block[:length - delay]
            else:
                target[:delay] = block[-delay:]
    return out


class Delayer(TransformerMixin, BaseEstimator):
    """Scikit-learn transformer adding FIR delays that never cross run boundaries.

    Parameters
    ----------
    delays : sequence of float, default :data:`DEFAULT_DELAYS`
        Delays in TRs (``unit="tr"``) or seconds (``unit="s"``).
    unit : {"tr", "s"}, default "tr"
    tr_s : float, optional
        Repetition time (s); needed when ``unit="s"``.
    runs : array of int, shape (n_tr,), optional
        Run labels used when ``fit``/``transform`` get none and the row count matches.
        Without any run labels all rows are one run.

    Attributes
    ----------
    delays_tr_ : ndarray of int, shape (n_delays,)
    n_features_in_ : int

    Examples
    --------
    >>> pipe = make_pipeline(Delayer(delays=(1, 2, 3), runs=runs), Ridge())  # doctest: +SKIP
    """

    def __init__(self, delays: Sequence[float] = DEFAULT_DELAYS, unit: Literal["tr", "s"] = "tr",
                 tr_s: float | None = None, runs: np.ndarray | None = None):
        self.delays = delays
        self.unit = unit
        self.tr_s = tr_s
        self.runs = runs

    def _sklearn_expected_failed_checks(self) -> dict[str, str]:
        """scikit-learn estimator checks expected to fail, with the reason (pass it as
        ``expected_failed_checks`` to ``check_estimator``/``parametrize_with_checks``)."""
        reason = ("rows are consecutive time points (TRs): a delayed copy of row t is row "
                  "t - d, so transforming {} changes the output by design")
        return {"check_methods_sample_order_invariance": reason.format("shuffled rows"),
                "check_methods_subset_invariance": reason.format("a subset of the rows")}

    def _runs_for(self, n_tr: int, runs: np.ndarray | None) -> np.ndarray:
        if runs is None and self.runs is not None:
            if len(self.runs) != n_tr:
                raise ValueError(
                    f"Delayer was built with runs for {len(self.runs)} TRs but got {n_tr} rows; "
                    "pass the run labels of these rows as `runs=` (in a Pipeline, enable "
                    "scikit-learn metadata routing and call set_transform_request(runs=True))"
                )
            runs = self.runs
        return check_runs(runs, n_tr)

    def fit(self, X, y=None, runs: np.ndarray | None = None) -> "Delayer":
        """Check the delays and the feature count.

        Parameters
        ----------
        X : array, shape (n_tr, n_features)
        y : ignored
        runs : array of int, shape (n_tr,), optional
        """
        X = validate_data(self, X, dtype=(np.float64, np.float32))
        self._runs_for(X.shape[0], runs)
        self.delays_tr_ = delays_in_trs(self.delays, self.unit, self.tr_s)
        return self

    def transform(self, X, runs: np.ndarray | None = None) -> np.ndarray:
        """Delayed copies of ``X``.

        Parameters
        ----------
        X : array, shape (n_tr, n_features)
        runs : array of int, shape (n_tr,), optional

        Returns
        -------
        ndarray, shape (n_tr, n_delays * n_features), delay-major columns
        """
        check_is_fitted(self, "delays_tr_")
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        return delay_features(X, self.delays_tr_, self._runs_for(X.shape[0], runs))

    def fit_transform(self, X, y=None, runs: np.ndarray | None = None) -> np.ndarray:
        """``fit`` then ``transform`` with the same run labels."""
        return self.fit(X, y, runs=runs).transform(X, runs=runs)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names ``<feature>_delay<d>`` in the output column order."""
        check_is_fitted(self, "delays_tr_")
        if input_features is None:
            input_features = [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray([f"{name}_delay{d}" for d in self.delays_tr_ for name in input_features],
                          dtype=object)
