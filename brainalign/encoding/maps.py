"""One brain map per feature (pattern) from a fitted encoding model.

An encoding model sees each feature of a band at every FIR delay of that band, so its
coefficients have one row per (delay, feature) column of the design, delay-major within
each band (:class:`brainalign.timecourse.Delayer`). A map of *feature* ``f`` is the sum of
its coefficients over the delays, the area under its estimated haemodynamic response: the
one way brainalign turns coefficients into per-pattern maps (the study pipeline, the
recovery benchmark and the network mapping all use :func:`pattern_maps`).

:class:`DelayedCoefficients` marks the raw coefficient matrix of an
:class:`~brainalign.encoding.result.EncodingResult`, so that functions expecting one map per
pattern (e.g. :func:`brainalign.networks.map_patterns`) can refuse it instead of treating
every (delay, feature) row as a pattern. Plain numpy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class DelayedCoefficients(np.ndarray):
    """Coefficients of a delayed design, shape (n_columns, n_targets), that know their layout.

    A numpy array (every numpy operation works on it) with one extra attribute,
    ``bands``: a list of dicts ``{"name", "n_features", "delays", "columns"}`` where
    ``columns`` is the ``[start, stop)`` row range of the band, delay-major inside.
    Slices, arithmetic results and reductions are plain :class:`numpy.ndarray`.
    """

    bands: list

    def __new__(cls, values, bands: Sequence[dict]):
        array = np.asarray(values).view(cls)
        array.bands = [dict(band) for band in bands]
        return array

    def __array_finalize__(self, obj):
        self.bands = getattr(obj, "bands", [])

    def __getitem__(self, key):
        return np.asarray(self).view(np.ndarray)[key]

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # results of ufuncs and reductions are plain arrays: they no longer hold coefficients
        plain = np.asarray(array).view(np.ndarray)
        return plain[()] if return_scalar else plain


def band_layout(bands: Sequence[dict] | None, n_columns: int, delays) -> list[dict]:
    """The band layout of a coefficient matrix; one band named ``"features"`` for results
    written before bands existed (``delays`` None means one undelayed copy)."""
    if bands:
        return [dict(band) for band in bands]
    delays = [] if delays is None else [int(d) for d in delays]
    n_copies = max(len(delays), 1)
    if n_columns % n_copies:
        raise ValueError(f"{n_columns} coefficient rows are not a multiple of {n_copies} delays")
    return [{"name": "features", "n_features": n_columns // n_copies, "delays": delays,
             "columns": [0, n_columns]}]


def pattern_maps(result, band: str | None = None) -> np.ndarray:
    """One map per feature of a band: its coefficients summed over the band's FIR delays.

    Parameters
    ----------
    result : EncodingResult
        A fitted encoding model (its final fit on all data).
    band : str, optional
        Which feature band; may be omitted when the model has one band.

    Returns
    -------
    maps : ndarray, shape (n_features_in_band, n_targets), float64
        Row ``f`` is ``sum over delays d of coef[d, f]``; NaN at targets that were not
        fitted (``result.valid_targets`` False: constant or NaN data), so that a mean over
        subjects (:func:`mean_over_subjects`) never counts a missing target as a 0.
    """
    coef = np.asarray(result.coef, dtype=np.float64)
    bands = band_layout(getattr(result, "bands", None), coef.shape[0], result.delays)
    names = [b["name"] for b in bands]
    if band is None:
        if len(bands) != 1:
            raise ValueError(f"the model has {len(bands)} feature bands {names}; name one "
                             f"with band=")
        chosen = bands[0]
    elif band in names:
        chosen = bands[names.index(band)]
    else:
        raise ValueError(f"no band {band!r} in this model; its bands are {names}")
    start, stop = chosen["columns"]
    block = coef[start:stop]
    n_features = int(chosen["n_features"])
    if block.shape[0] % n_features:
        raise ValueError(f"band {chosen['name']!r} has {block.shape[0]} coefficient rows, not "
                         f"a multiple of its {n_features} features")
    maps = block.reshape(-1, n_features, coef.shape[1]).sum(axis=0)
    valid = getattr(result, "valid_targets", None)
    if valid is not None:
        maps[:, ~np.asarray(valid, dtype=bool)] = np.nan
    return maps


def mean_over_subjects(maps) -> np.ndarray:
    """Mean of per-subject maps over the subjects that have a value at each target.

    Parameters
    ----------
    maps : sequence of ndarray, each shape (n_maps, n_targets)
        E.g. :func:`pattern_maps` of each subject (NaN at a subject's unfitted targets).

    Returns
    -------
    ndarray, shape (n_maps, n_targets)
        NaN where no subject has a value (never 0).
    """
    stack = np.asarray(maps, dtype=np.float64)
    count = np.isfinite(stack).sum(axis=0)
    total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
