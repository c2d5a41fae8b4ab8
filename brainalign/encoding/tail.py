"""Permutation p-values that resolve below 1 / (n_perm + 1): a Pareto fit to the null's tail.

A permutation p-value counts the null draws at least as large as the observed statistic,
so with ``n_perm`` draws it cannot go below ``1 / (n_perm + 1)``. A multiple-comparison
correction over many tests needs smaller values than that, or it passes nothing however
strong the effect. :func:`permutation_p_values` follows Knijnenburg et al. (2009): where
enough null draws exceed the observed value, it keeps the ordinary (empirical) p-value;
where few do, it fits a generalised Pareto distribution (GPD) to the ``n_tail`` largest
null values, above a threshold ``t`` halfway between the ``n_tail``-th and the next
largest, and takes

    p = (n_tail / n_perm) * (1 - F_gpd(observed - t)).

The first tail tried is the largest tenth of the draws (at most 250, the start Knijnenburg
et al. use; on normal nulls of 1,000 draws a tenth extrapolated with less bias than a
quarter). An Anderson-Darling test checks each fit (critical values of Choulakian &
Stephens 2001, Table 2, both parameters estimated, at the 5% level); a rejected fit is
retried on a smaller tail (fewer, more extreme values) and, if none passes, the empirical
p-value is kept. The GPD parameters are estimated by the method of Zhang & Stephens (2009), a
weighted average of profile-likelihood solutions over a fixed grid: closed form, close to
maximum likelihood, and its fitted upper end point never lies below the largest null
value (probability-weighted moments can put it there when the tail is bounded, as the
tails of correlations are).

Beyond the largest null draw the fit is an extrapolation, and one from a few hundred draws
runs light: on nulls exchangeable with the observed value, a bounded fit gave p ~1e-17 to
a tenth of the tests that beat every draw, and BH-FDR over 25,000 pure-noise tests rejected
some in 4 of 4 repetitions. There the tail is taken no lighter than an exponential with the
tail's mean excess (:func:`_tail_survival`); the same check then rejects nothing, while an
observed value many mean excesses beyond the draws still gets p far below
1 / (n_perm + 1). Heavy-tailed nulls (a fitted shape > 0) keep the GPD's extrapolation,
which stays somewhat light there (Student t3 nulls: about 6x too many p < 5e-5).

Written by hand because no maintained Python library offers it for many tests at once:
``scipy.stats.genpareto.fit`` optimises one sample at a time (seconds for the thousands of
pattern x network or voxel tests of one study), and mne.stats has no tail approximation.
Everything here is vectorised over tests with numpy.

References
----------
Knijnenburg TA, Wessels LFA, Reinders MJT, Shmulevich I (2009). Fewer permutations, more
accurate P-values. Bioinformatics 25(12):i161-i168.
Zhang J, Stephens MA (2009). A new and efficient estimation method for the generalized
Pareto distribution. Technometrics 51(3):316-325.
Choulakian V, Stephens MA (2001). Goodness-of-fit tests for the generalized Pareto
distribution. Technometrics 43(4):478-484.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import softmax

#: p-value methods of :func:`permutation_p_values`.
TAILS = ("gpd", "empirical")
#: Per-test record of how each p-value was obtained.
METHODS = ("empirical", "gpd", "empirical_no_fit", "undefined")

# Choulakian & Stephens (2001), Table 2 (case 3: shape and scale estimated), upper 5%
# points of the Anderson-Darling statistic, by GPD shape xi (scipy's sign: xi < 0 bounded).
_AD_SHAPE = np.array([-0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.5, 0.9])
_AD_CRITICAL_5 = np.array([1.321, 1.221, 1.140, 1.074, 1.020, 0.974, 0.935, 0.903, 0.830,
                           0.771])
# Tests fitted at once (memory ~ grid x tail x block float64: 36 x 250 x 1024 = 74 MB).
_FIT_BLOCK = 1024


@dataclass
class PermutationPValues:
    """p-values of many tests and how each was obtained.

    Attributes
    ----------
    p_values : ndarray, shape (...tests)
        In (0, 1]; NaN where the observed statistic is not finite.
    method : ndarray of str, shape (...tests)
        ``"empirical"`` (``(1 + n_exceed) / (1 + n_perm)``), ``"gpd"`` (tail fit),
        ``"empirical_no_fit"`` (few exceedances, but no tail size passed the
        goodness-of-fit test) or ``"undefined"`` (observed not finite).
    n_exceed : ndarray of int, shape (...tests)
        Null draws >= the observed value.
    tail_size : ndarray of int, shape (...tests)
        Null values the GPD was fitted to (0 where no fit was used).
    shape, scale : ndarray, shape (...tests)
        Fitted GPD shape xi (negative: bounded tail) and scale, in the statistic's units
        (NaN where no fit was used).
    n_perm : int
    settings : dict
        The arguments of :func:`permutation_p_values`.
    """

    p_values: np.ndarray
    method: np.ndarray
    n_exceed: np.ndarray
    tail_size: np.ndarray
    shape: np.ndarray
    scale: np.ndarray
    n_perm: int
    settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Settings and the number of tests per method (for provenance and sidecars)."""
        counts = {name: int(np.sum(self.method == name)) for name in METHODS}
        return {"tail": self.settings.get("tail"), "n_perm": self.n_perm,
                "settings": dict(self.settings), "n_tests_by_method": counts,
                "reference": "Knijnenburg et al. 2009, Bioinformatics 25:i161 (GPD fit: "
                             "Zhang & Stephens 2009; fit check: Choulakian & Stephens 2001)"}


def gpd_fit(excess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zhang-Stephens estimates of the GPD shape and scale, column by column.

    Parameters
    ----------
    excess : ndarray, shape (n, n_tests)
        Positive exceedances over the threshold, sorted ascending in every column.

    Returns
    -------
    shape, scale : ndarray, shape (n_tests,)
        ``xi`` and ``sigma`` of ``F(z) = 1 - (1 + xi z / sigma) ** (-1 / xi)``. NaN where
        the sample cannot be fitted (e.g. a zero lower quartile).
    """
    n = excess.shape[0]
    n_grid = 20 + int(np.sqrt(n))
    quartile = excess[int(n / 4 + 0.5) - 1]
    j = np.arange(1, n_grid + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # grid of theta = -xi / sigma, all <= 1 / max: the end point 1 / theta >= max
        theta = 1.0 / excess[-1] + (1.0 - np.sqrt(n_grid / (j - 0.5))) / (3.0 * quartile)
        xi_grid = np.log1p(-theta[:, None, :] * excess[None]).mean(axis=1)
        profile = n * (np.log(-theta / xi_grid) - xi_grid - 1.0)      # log-likelihood
        # weight of grid point j: 1 / sum_i exp(profile_i - profile_j), a softmax
        weights = softmax(np.nan_to_num(profile, nan=-np.inf), axis=0)
        theta_hat = (weights * theta).sum(axis=0)
        shape = np.log1p(-theta_hat * excess).mean(axis=0)
        scale = -shape / theta_hat
    bad = ~(np.isfinite(shape) & np.isfinite(scale) & (scale > 0))
    return np.where(bad, np.nan, shape), np.where(bad, np.nan, scale)


def gpd_log_survival(excess: np.ndarray, shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """log(1 - F(z)) of the GPD (``-inf`` beyond the upper end point of a bounded tail).

    ``excess`` broadcasts against ``shape`` and ``scale`` (one value per test).
    """
    ratio = shape * excess / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_shape = np.where(shape == 0, 1.0, shape)
        log_survival = np.where(np.abs(shape) < 1e-12, -excess / scale,
                                -np.log1p(ratio) / safe_shape)
    return np.where(1.0 + ratio <= 0, -np.inf, log_survival)


def anderson_darling(excess: np.ndarray, shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Anderson-Darling statistic A² of each column of ``excess`` (sorted ascending) under
    its fitted GPD, shape (n_tests,); ``inf`` where a value falls outside the support."""
    n = excess.shape[0]
    log_survival = gpd_log_survival(excess, shape, scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_cdf = np.log(-np.expm1(log_survival))
        weight = (2.0 * np.arange(1, n + 1) - 1.0)[:, None]
        statistic = -n - (weight * (log_cdf + log_survival[::-1])).sum(axis=0) / n
    return np.where(np.isnan(statistic), np.inf, statistic)


def _ad_critical(shape: np.ndarray) -> np.ndarray:
    """5% critical value of A² at each fitted shape (table ends used beyond its range)."""
    return np.interp(np.nan_to_num(shape, nan=0.0), _AD_SHAPE, _AD_CRITICAL_5)


def _fit_tails(top: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, ...]:
    """Largest tail size whose GPD fit passes the check, per column.

    top : (max(sizes) + 1, n_tests), the largest null values, descending.
    Returns tail_size (0: none passed), threshold, shape, scale, each (n_tests,).
    """
    n_tests = top.shape[1]
    tail_size = np.zeros(n_tests, dtype=np.int64)
    threshold, shape, scale = (np.full(n_tests, np.nan) for _ in range(3))
    for size in sizes:
        todo = np.flatnonzero(tail_size == 0)
        if not todo.size:
            break
        cut = (top[size - 1, todo] + top[size, todo]) / 2.0
        excess = (top[:size, todo] - cut)[::-1]                 # ascending
        with np.errstate(invalid="ignore"):
            usable = np.all(np.isfinite(excess), axis=0) & (excess[0] > 0)
        fitted_shape, fitted_scale = gpd_fit(np.where(usable, excess, 1.0))
        fit = anderson_darling(excess, fitted_shape, fitted_scale)
        passed = usable & np.isfinite(fitted_shape) & (fit <= _ad_critical(fitted_shape))
        accepted = todo[passed]
        tail_size[accepted] = size
        threshold[accepted] = cut[passed]
        shape[accepted] = fitted_shape[passed]
        scale[accepted] = fitted_scale[passed]
    return tail_size, threshold, shape, scale


def _tail_survival(excess: np.ndarray, largest: np.ndarray, mean_excess: np.ndarray,
                   shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Survival of the fitted tail at ``excess`` over the threshold, never 0.

    Up to the largest null draw (``largest`` over the threshold) it is the GPD's. Beyond
    every draw the fit is an extrapolation, and a GPD fitted to a few hundred draws
    extrapolates too light a tail (a bounded fit, shape < 0, even puts 0 there: p-values of
    ~1e-17 for tests no null draw reached, which FDR then passes on pure noise). There the
    survival is the larger of the GPD's and of an exponential tail with the tail's mean
    excess (shape 0, the MLE of the exponential), the latter taken no higher than the
    GPD's value at the largest draw: continuous, decreasing in ``excess``.
    """
    survival = np.exp(gpd_log_survival(excess, shape, scale))
    beyond = excess > largest
    if beyond.any():
        at_largest = np.exp(gpd_log_survival(largest[beyond], shape[beyond], scale[beyond]))
        exponential = np.minimum(np.exp(-excess[beyond] / mean_excess[beyond]), at_largest)
        survival[beyond] = np.maximum(survival[beyond], exponential)
    return np.maximum(survival, np.finfo(np.float64).eps)


def permutation_p_values(observed, null, *, tail: str = "gpd", min_exceed: int = 10,
                         max_tail: int = 250, min_tail: int = 20, tail_step: int = 10
                         ) -> PermutationPValues:
    """One-sided permutation p-values, with a GPD tail where few null draws exceed.

    Parameters
    ----------
    observed : array, shape (...tests)
        Observed statistics; larger is more extreme (pass absolute values for a
        two-sided test).
    null : array, shape (n_perm, ...tests)
        Null draws of the same statistics. Ties with the observed value count as
        exceeding it; NaN draws count as never exceeding.
    tail : {"gpd", "empirical"}
        ``"empirical"`` gives ``(1 + n_exceed) / (1 + n_perm)`` everywhere.
    min_exceed : int
        With at least this many null draws >= observed, the empirical p-value is kept.
    max_tail : int
        Largest number of null values the GPD is fitted to; the first size tried is
        ``min(max_tail, n_perm // 10)``.
    min_tail : int
        Smallest tail size tried (must exceed ``min_exceed``).
    tail_step : int
        The tail shrinks by this many values after a rejected fit.

    Returns
    -------
    PermutationPValues
        Where the GPD is used, ``p = (tail_size / n_perm) * (1 - F(observed - t))``, at
        most the empirical p-value at ``min_exceed`` exceedances (so that p never rises
        as the observed value grows). Beyond every null draw ``F`` is not extrapolated
        lighter than an exponential tail (see :func:`_tail_survival`), and p is never 0.
    """
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    observed = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if null.ndim < 1 or null.shape[1:] != observed.shape:
        raise ValueError(f"null must be (n_perm, *observed.shape) = (n_perm, "
                         f"{', '.join(map(str, observed.shape))}), got {null.shape}")
    n_perm = null.shape[0]
    if n_perm < 1:
        raise ValueError("null has no draws")
    if min_tail <= min_exceed:
        raise ValueError(f"min_tail ({min_tail}) must exceed min_exceed ({min_exceed})")
    settings = dict(tail=tail, min_exceed=min_exceed, max_tail=max_tail, min_tail=min_tail,
                    tail_step=tail_step)

    flat_observed = observed.reshape(-1)
    flat_null = np.where(np.isnan(null), -np.inf, null).reshape(n_perm, -1)
    defined = np.isfinite(flat_observed)
    n_exceed = (flat_null >= flat_observed).sum(axis=0)
    p_values = np.where(defined, (1.0 + n_exceed) / (1.0 + n_perm), np.nan)
    method = np.where(defined, "empirical", "undefined").astype(object)
    tail_size = np.zeros(flat_observed.shape, dtype=np.int64)
    shape, scale = np.full(flat_observed.shape, np.nan), np.full(flat_observed.shape, np.nan)

    first = min(max_tail, n_perm // 10)
    sizes = list(range(first, min_tail - 1, -tail_step))
    few = np.flatnonzero(defined & (n_exceed < min_exceed))
    if tail == "gpd" and few.size:
        if not sizes:
            method[few] = "empirical_no_fit"
        else:
            ceiling = (1.0 + min_exceed) / (1.0 + n_perm)
            for start in range(0, few.size, _FIT_BLOCK):
                tests = few[start:start + _FIT_BLOCK]
                block = flat_null[:, tests]
                top = -np.partition(-block, first, axis=0)[:first + 1]
                top = -np.sort(-top, axis=0)
                size, cut, fitted_shape, fitted_scale = _fit_tails(top, sizes)
                ok = size > 0
                fitted = tests[ok]
                sums = np.cumsum(top[:, ok], axis=0)          # mean excess of each tail
                mean_excess = sums[size[ok] - 1, np.arange(ok.sum())] / size[ok] - cut[ok]
                survival = _tail_survival(flat_observed[fitted] - cut[ok], top[0, ok] - cut[ok],
                                          mean_excess, fitted_shape[ok], fitted_scale[ok])
                p_values[fitted] = np.minimum(size[ok] / n_perm * survival, ceiling)
                method[fitted] = "gpd"
                method[tests[~ok]] = "empirical_no_fit"
                tail_size[fitted] = size[ok]
                shape[fitted], scale[fitted] = fitted_shape[ok], fitted_scale[ok]

    def back(values: np.ndarray) -> np.ndarray:
        return values.reshape(observed.shape)

    return PermutationPValues(back(p_values), back(method.astype(str)), back(n_exceed),
                              back(tail_size), back(shape), back(scale), int(n_perm), settings)
