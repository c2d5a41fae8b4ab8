"""Spatial evidence for a pattern -> network link, against maps of time-shifted patterns.

A spin test (:mod:`.nulls`) asks whether a pattern's brain map looks like a network more
than rotated copies of the network do. Where the background fluctuations are themselves
organised into networks (resting-state activity), the encoding map of *any* regressor,
one that drives nothing included, takes their shape: the rotated networks are then the
wrong reference, and the spin p-values of signal-free patterns fall below .05 far more
often than 5 % of the time (13.6 % on real resting-state noise in
``benchmarks/calibration_mapping.py``).

The test here keeps the brain data and moves the pattern instead. The pattern time
courses are reversed in time inside each run and circularly shifted by a random number of
TRs (the same surrogate for every pattern and subject); each subject's ridge model is
refitted on these surrogates and the subject-mean map of each pattern is correlated with
each network, exactly as for the real patterns. A surrogate keeps the pattern's power
spectrum (hence its autocorrelation) and meets the same network-shaped background, so a
pattern that drives nothing scores like its surrogates and its p-value is uniform.

Why reversed: a plain circular shift also keeps the spectrum, but a shift of a few TRs
leaves the pattern nearly where it was, so such shifts are usually left out
(``null="circular"`` keeps only shifts of at least ``min_shift_tr`` TRs from either end
of a run). The statistic changes slowly with the shift, though: the neighbours of a
large observed value are large too, and with them left out of its own null but not out
of the others', too many patterns come out in the top 5 %. On real resting-state noise
(``benchmarks/calibration_shift_nulls.py``: 2 subjects, 2 runs of 140 TRs, 16 AR(1)
patterns, Yeo-17 on fsaverage4, 40 null simulations of 500 surrogates, 10,880 p-values)
circular shifts of >= 10 TRs gave p < .05 for 6.7 % of the pattern x network pairs and
p < .01 for 2.1 %; every shift, the nearest ones included, gave 5.0 % and 1.0 %;
reversed-and-shifted surrogates 4.8 % and 1.0 %. A reversed
surrogate never lines up with the pattern (whatever the shift), so none has to be left
out, and a real link is not diluted by near-copies of the pattern in its own null.

The design is the one :func:`brainalign.encoding.fit_encoding` builds for a single band
of patterns on all rows: the patterns cleaned like the targets (:mod:`brainalign.encoding.
cleaning`, fitted on all rows), z-scored, delayed inside runs. The ridge penalty is one
per subject, the median of the per-target penalties that inner CV chooses on the real
patterns (:class:`brainalign.encoding.EncodingModel`), kept for every shift. Per-target
penalties would favour the real patterns: they are chosen lowest where the real pattern
happens to correlate with the data, so the real map would be shrunk least exactly where
it is large, and the shifted maps would not be (on network-shaped noise with runs of 100
TRs this raised the false-positive rate from 0.074 to 0.092). A pattern's map is its
coefficients summed over the delays, as :func:`brainalign.encoding.pattern_maps` sums
them. Each shift costs one SVD of the design and one product with the data per subject
(``n_tr x n_features x n_targets``).

The p-values take a generalised Pareto fit to the tail of the shift null where few
shifts reach the statistic (:mod:`brainalign.encoding.tail`).
:func:`~brainalign.networks.mapping.map_patterns` takes the result (``null="shift"``,
``spatial=``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from brainalign.networks.atlases import Atlas
from brainalign.timecourse.delays import DEFAULT_DELAYS
from brainalign.timecourse.runs import check_runs

logger = logging.getLogger(__name__)


@dataclass
class SpatialShiftTest:
    """Correlation of each pattern's subject-mean map with each network, and its shift null.

    Attributes
    ----------
    statistic : ndarray, shape (n_patterns, n_networks)
        Pearson r between the pattern's subject-mean map and the network's indicator (or
        probability) map, over the targets with data in every subject.
    p_values : ndarray, shape (n_patterns, n_networks)
        One-sided (or on absolute values, ``alternative="two-sided"``), against the maps of
        ``n_shifts`` surrogate patterns (reversed and shifted, or shifted; ``null``).
    p_method : ndarray of str, shape (n_patterns, n_networks)
    maps : ndarray, shape (n_patterns, n_targets)
        The subject-mean maps of the real patterns (NaN where a subject lacks data).
    alphas : list of float
        Each subject's ridge penalty.
    n_shifts, min_shift_tr, n_subjects : int
        ``min_shift_tr`` applies to ``null="circular"`` only.
    delays : list of int
    alternative : str
    p_value_method : dict
        ``PermutationPValues.describe()``.
    null : str
        ``"mirror"`` (reversed and shifted patterns) or ``"circular"`` (shifted only).
    """

    statistic: np.ndarray
    p_values: np.ndarray
    p_method: np.ndarray
    maps: np.ndarray
    alphas: list[float]
    n_shifts: int
    min_shift_tr: int
    n_subjects: int
    delays: list[int]
    alternative: str
    p_value_method: dict[str, Any]
    null: str = "mirror"

    def describe(self) -> dict[str, Any]:
        moved = ("reversed in time and circularly shifted by any number of TRs"
                 if self.null == "mirror" else
                 f"circularly shifted by at least {self.min_shift_tr} TRs")
        return {"statistic": "correlation of the subject-mean pattern map with the network",
                "null": f"maps of the patterns {moved} inside runs (ridge refitted per "
                        f"subject at one penalty, the median of the per-target penalties "
                        f"chosen on the real patterns)", "null_method": self.null,
                "alphas": self.alphas, "n_shifts": self.n_shifts,
                "min_shift_tr": self.min_shift_tr if self.null == "circular" else None,
                "n_subjects": self.n_subjects, "delays": self.delays,
                "alternative": self.alternative, "p_values": self.p_value_method}


def _design(patterns: np.ndarray, runs: np.ndarray, delays: Sequence[int], cleaner) -> np.ndarray:
    """The design ``fit_encoding`` builds for its final fit on one band of patterns (cleaned,
    z-scored, delayed inside runs), centred: (n_tr, n_delays * n_patterns), delay-major."""
    from brainalign.encoding.bands import band_design, fold_band_values, resolve_bands

    bands = resolve_bands(patterns, len(patterns), delays=list(delays))
    values = [fold_band_values(band, None, np.arange(len(patterns)), cleaner) for band in bands]
    design, _ = band_design(values, bands, runs)
    return design - design.mean(0)


def _mean_ridge_maps(design: np.ndarray, targets: Sequence[np.ndarray],
                     alphas: Sequence[float], n_patterns: int,
                     n_subjects: int | None = None) -> np.ndarray:
    """Subject-mean of the delay-summed ridge coefficients: (n_patterns, n_targets).

    ``design`` (n_tr, n_delays * n_patterns), delay-major and centred, is shared by the
    subjects; ``targets`` holds the centred (n_tr, n_targets) data of the subjects summed
    per ridge penalty, ``alphas`` those penalties (the coefficients are linear in the data
    at a fixed penalty, so subjects that share one share a sum), and ``n_subjects`` the
    number of subjects (default: one per entry).
    """
    U, s, Vt = np.linalg.svd(design, full_matrices=False)
    keep = s > s[0] * 1e-10
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    summed = Vt.T.reshape(-1, n_patterns, len(s)).sum(0)           # (n_patterns, rank)
    maps = np.zeros((n_patterns, targets[0].shape[1]))
    for Y, alpha in zip(targets, alphas):
        maps += (summed * (s / (s ** 2 + alpha))) @ (U.T @ Y)
    return maps / (len(targets) if n_subjects is None else n_subjects)


def spatial_shift_test(patterns: np.ndarray, bold: Sequence[np.ndarray], runs: np.ndarray,
                       atlas: Atlas, *, delays: Sequence[int] = DEFAULT_DELAYS,
                       n_shifts: int = 1000, null: str = "mirror", min_shift_tr: int = 10,
                       clean=True, tr_s: float | None = None, alternative: str = "greater",
                       tail: str = "gpd", random_state: int | None = 0) -> SpatialShiftTest:
    """Correlate every pattern's map with every network, against shifted patterns' maps.

    Parameters
    ----------
    patterns : ndarray, shape (n_tr, n_patterns)
        Pattern time courses on the fMRI TR grid (the regressors the encoding model saw).
    bold : sequence of ndarray, shape (n_tr, n_targets)
        One matrix per subject over the atlas's targets. Targets without data (non-finite
        or constant) in any subject, and the medial wall, are left out.
    runs : ndarray of int, shape (n_tr,)
    atlas : Atlas
    delays : sequence of int
        FIR delays in TRs, as in the encoding model.
    n_shifts : int
        Surrogates (null maps) per pattern.
    null : {"mirror", "circular"}
        Surrogate patterns: reversed in time and shifted by any number of TRs (default;
        calibrated, see the module docstring), or circularly shifted by at least
        ``min_shift_tr`` TRs (anti-conservative where the maps change slowly with the
        shift; kept for comparison).
    min_shift_tr : int
        Smallest shift from either end of a run, in TRs (``null="circular"`` only).
    clean : bool or Cleaning
        Nuisance removal applied to patterns and data alike, fitted on all rows
        (:func:`brainalign.encoding.cleaning.resolve_cleaning`; the high-pass needs
        ``tr_s``).
    tr_s : float, optional
        Repetition time in seconds.
    alternative : {"greater", "two-sided"}
        "two-sided" compares absolute correlations (maps of arbitrary sign).
    tail : {"gpd", "empirical"}
        p-value method (:func:`brainalign.encoding.tail.permutation_p_values`).
    random_state : int or None

    Returns
    -------
    SpatialShiftTest
    """
    from brainalign.encoding.cleaning import FoldCleaner, resolve_cleaning
    from brainalign.encoding.ridge import EncodingModel
    from brainalign.encoding.stats import null_indices
    from brainalign.encoding.tail import permutation_p_values
    from brainalign.networks.mapping import _correlations

    patterns = np.asarray(patterns, dtype=np.float64)
    if patterns.ndim != 2:
        raise ValueError(f"patterns must be (n_tr, n_patterns), got shape {patterns.shape}")
    runs = check_runs(runs, len(patterns))
    if not len(bold):
        raise ValueError("no subjects' BOLD given")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    if n_shifts < 1:
        raise ValueError(f"n_shifts must be >= 1, got {n_shifts}")
    if null not in ("mirror", "circular"):
        raise ValueError(f"null must be 'mirror' or 'circular', got {null!r}")
    valid = np.ones(atlas.n_targets, dtype=bool) if atlas.medial_wall is None else ~atlas.medial_wall
    for subject in bold:
        subject = np.asarray(subject)
        if subject.shape != (len(patterns), atlas.n_targets):
            raise ValueError(f"a subject's BOLD is {subject.shape}; expected ({len(patterns)}, "
                             f"{atlas.n_targets}): the patterns' TRs by the atlas's targets")
        finite = np.all(np.isfinite(subject), axis=0)
        valid &= finite
        valid[valid] &= subject[:, valid].std(axis=0) > 0
    cleaning = resolve_cleaning(clean, tr_s)
    cleaner = (None if cleaning is None
               else FoldCleaner(cleaning, runs, np.arange(len(patterns)), tr_s))
    n_patterns = patterns.shape[1]
    design = _design(patterns, runs, delays, cleaner)
    # subjects' data summed per ridge penalty: memory grows with the distinct penalties
    # (a few grid values), not with the subjects, which are read one at a time
    sums: dict[float, np.ndarray] = {}
    alphas = []
    for subject in bold:
        Y = np.asarray(subject, dtype=np.float64)[:, valid]
        if cleaner is not None:
            Y = cleaner.apply(Y)
        Y = Y - Y.mean(0)
        model = EncodingModel().fit(design, Y, runs)   # per-target alphas, as fit_encoding
        alphas.append(float(np.nanmedian(model.alphas_)))
        if alphas[-1] in sums:
            sums[alphas[-1]] += Y
        else:
            sums[alphas[-1]] = Y
        del Y
    targets, penalties = list(sums.values()), list(sums)
    networks = atlas.indicators()[:, valid]
    everywhere = np.ones(int(valid.sum()), dtype=bool)

    def mean_maps(shifted: np.ndarray) -> np.ndarray:
        return _mean_ridge_maps(_design(shifted, runs, delays, cleaner), targets, penalties,
                                n_patterns, len(alphas))

    def magnitude(values: np.ndarray) -> np.ndarray:
        return np.abs(values) if alternative == "two-sided" else values

    observed_maps = mean_maps(patterns)
    statistic = _correlations(observed_maps, networks, everywhere)
    order = null_indices(runs, n_shifts, method=null, block_tr=min_shift_tr,
                         random_state=random_state)
    logger.info("spatial shift test: %d subjects, %d patterns x %d networks, %d %s surrogates",
                len(bold), n_patterns, atlas.n_networks, n_shifts, null)
    surrogate = np.empty((n_shifts,) + statistic.shape)
    for index, rows in enumerate(order):
        surrogate[index] = _correlations(mean_maps(patterns[rows]), networks, everywhere)
    tested = permutation_p_values(magnitude(statistic), magnitude(surrogate), tail=tail)
    maps = np.full((n_patterns, atlas.n_targets), np.nan)
    maps[:, valid] = observed_maps
    p_values = np.where(np.isnan(tested.p_values), 1.0, tested.p_values)
    return SpatialShiftTest(statistic, p_values, tested.method, maps, alphas, int(n_shifts),
                            int(min_shift_tr), len(bold), [int(d) for d in delays], alternative,
                            tested.describe(), null)
