"""Temporal evidence for a pattern -> network link: unique held-out r on network signals.

A spatial null (:mod:`.nulls`) asks whether a pattern's brain map looks like a network.
Two things make a map look like a network without the pattern driving it: shared weight
with a correlated pattern that does drive the network (ridge spreads coefficients over
correlated regressors), and chance correlation with background fluctuations that are
themselves organised into networks (resting-state activity). The test here asks whether
the pattern *adds* held-out prediction of the network's mean signal, beyond every other
pattern, more than circularly shifted copies of the pattern do
(:func:`brainalign.encoding.unique.unique_r_shift_test`, one call per subject with the
same shifts, subject-mean statistic against the subject-mean null).

The p-values take a generalised Pareto fit to the tail of the shift null where few shifts
reach the statistic (:mod:`brainalign.encoding.tail`), so that they resolve below
``1 / (n_shifts + 1)``. :func:`~brainalign.networks.mapping.map_patterns` takes the result
(``temporal=``) and then assigns a pattern to a network only where both the spatial and
this temporal test pass (FDR over each pattern's networks at ``alpha``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from brainalign.networks.atlases import Atlas
from brainalign.timecourse.delays import DEFAULT_DELAYS

logger = logging.getLogger(__name__)


@dataclass
class TemporalTest:
    """Subject-mean unique held-out r of each pattern on each network's mean signal.

    Attributes
    ----------
    statistic : ndarray, shape (n_patterns, n_networks)
        ``r(all patterns) - r(all but this one)``, mean over outer folds and subjects.
    p_values : ndarray, shape (n_patterns, n_networks)
        One-sided, against ``n_shifts`` circular shifts of the pattern inside runs.
    n_shifts : int
    min_shift_tr : int
    n_subjects : int
    delays : list of int
    p_method : ndarray of str, shape (n_patterns, n_networks)
        How each p-value was obtained (``"empirical"``, ``"gpd"``, ...).
    p_value_method : dict
        ``PermutationPValues.describe()``: tail method, settings, tests per method.
    """

    statistic: np.ndarray
    p_values: np.ndarray
    n_shifts: int
    min_shift_tr: int
    n_subjects: int
    delays: list[int]
    p_method: np.ndarray
    p_value_method: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"statistic": "unique held-out r on network-mean signals",
                "null": "circular shifts of the pattern inside runs", "n_shifts": self.n_shifts,
                "min_shift_tr": self.min_shift_tr, "n_subjects": self.n_subjects,
                "delays": self.delays, "p_values": self.p_value_method}


def network_signals(bold: np.ndarray, atlas: Atlas) -> np.ndarray:
    """Mean time course of each network over its targets with data.

    Parameters
    ----------
    bold : ndarray, shape (n_tr, n_targets)
        Over the atlas's targets. Targets with non-finite values, constant targets and
        the medial wall are left out; probabilistic atlases weight targets by membership.
    atlas : Atlas

    Returns
    -------
    signals : ndarray, shape (n_tr, n_networks)
    """
    bold = np.asarray(bold)
    if bold.ndim != 2 or bold.shape[1] != atlas.n_targets:
        raise ValueError(f"bold must be (n_tr, {atlas.n_targets}) over the atlas's targets, "
                         f"got shape {bold.shape}")
    usable = np.all(np.isfinite(bold), axis=0)
    usable[usable] = bold[:, usable].std(axis=0) > 0
    if atlas.medial_wall is not None:
        usable &= ~atlas.medial_wall
    weights = atlas.indicators()[:, usable]
    sizes = weights.sum(axis=1)
    empty = [label for label, size in zip(atlas.labels, sizes) if size == 0]
    if empty:
        raise ValueError(f"networks {empty} have no target with data; nothing to average")
    return (np.asarray(bold[:, usable], dtype=np.float64) @ weights.T) / sizes


def temporal_network_test(patterns: np.ndarray, bold: Sequence[np.ndarray], runs: np.ndarray,
                          atlas: Atlas, *, delays: Sequence[int] = DEFAULT_DELAYS,
                          n_shifts: int = 1000, min_shift_tr: int = 10, tail: str = "gpd",
                          clean=True, tr_s: float | None = None,
                          random_state: int | None = 0) -> TemporalTest:
    """Unique held-out r of every pattern on every network's signal, with a shift null.

    Parameters
    ----------
    patterns : ndarray, shape (n_tr, n_patterns)
        Pattern time courses (e.g. ``Patterns.atoms``) on the fMRI TR grid.
    bold : sequence of ndarray, shape (n_tr, n_targets)
        One matrix per subject over the atlas's targets.
    runs : ndarray of int, shape (n_tr,)
    atlas : Atlas
    delays : sequence of int
        FIR delays in TRs, as in the encoding model (default
        :data:`brainalign.timecourse.DEFAULT_DELAYS`).
    n_shifts : int
        Circular shifts per pattern. The per-pattern FDR of the mapping needs p-values
        below ``alpha / n_networks``; the empirical p-value stops at
        ``1 / (n_shifts + 1)``, the tail fit goes below it.
    min_shift_tr : int
    tail : {"gpd", "empirical"}
        p-value method (:func:`brainalign.encoding.tail.permutation_p_values`).
    clean : bool or Cleaning
        Nuisance removal of patterns and network signals alike, inside each outer fold, as
        in the encoding model (:func:`brainalign.encoding.unique.unique_r_shift_test`).
    tr_s : float, optional
        Repetition time in seconds (the high-pass part of the cleaning needs it).
    random_state : int or None

    Returns
    -------
    TemporalTest
    """
    from brainalign.encoding.unique import shift_test_p_values, unique_r_shift_test

    patterns = np.asarray(patterns, dtype=np.float64)
    if not len(bold):
        raise ValueError("no subjects' BOLD given")
    results = []
    for index, subject in enumerate(bold):
        logger.info("temporal test: subject %d/%d, %d patterns x %d networks, %d shifts",
                    index + 1, len(bold), patterns.shape[1], atlas.n_networks, n_shifts)
        if len(subject) != len(patterns):
            raise ValueError(f"patterns have {len(patterns)} TRs but a subject's BOLD has "
                             f"{len(subject)}")
        results.append(unique_r_shift_test(patterns, network_signals(subject, atlas), runs,
                                           delays=list(delays), n_shifts=n_shifts,
                                           min_shift_tr=min_shift_tr, clean=clean, tr_s=tr_s,
                                           random_state=random_state))
    statistic, tested = shift_test_p_values(results, tail=tail)
    return TemporalTest(statistic, tested.p_values, int(n_shifts), int(min_shift_tr), len(bold),
                        [int(d) for d in delays], tested.method, tested.describe())
