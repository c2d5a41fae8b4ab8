"""Feature bands: named feature sets of an encoding model, each with its own delays.

An encoding model of naturalistic fMRI usually holds several feature sets: low-level
controls (word rate, sound power), a study's published predictors, and the language
model's features. A :class:`Band` names one of them and says how it enters the design:

* ``delays``: FIR delays in TRs (:data:`brainalign.timecourse.DEFAULT_DELAYS` unless
  said otherwise). Regressors that are already convolved with a haemodynamic response
  (``hrf_convolved=True``) get none by default: delaying them again shifts their
  response past the data and, measured on the Alice data, makes the ridge choose the
  largest penalty and score negative held-out r;
* ``preprocessing``: a scikit-learn transformer (e.g. ``PCA(20)`` or atoms from
  :class:`brainalign.patterns.AtomTransformer`) fitted on the training rows of every
  cross-validation fold only;
* ``values``: the (n_tr, n_features) array, or :class:`FoldFeatures` made beforehand by
  :func:`fold_features`, when the same fold-wise reduction serves several fits (e.g.
  atoms fitted once per fold and reused for every subject).

Inside each fold (:func:`fold_band_values`) a band's values are cleaned like the targets
(:mod:`brainalign.encoding.cleaning`), reduced by its transformer fitted on the training
rows, z-scored with the training rows' mean and standard deviation, and delayed within
runs. Plain numpy and scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import clone

from brainalign.timecourse.delays import DEFAULT_DELAYS, delay_features
from brainalign.timecourse.runs import check_runs

from .cleaning import FoldCleaner, resolve_cleaning
from .cv import outer_splits

#: Marks a band whose delays follow ``fit_encoding(delays=...)`` (none if HRF-convolved).
INHERIT = "inherit"


@dataclass
class FoldFeatures:
    """A band's values made per outer fold by a transformer fitted on that fold's training rows.

    Attributes
    ----------
    train_rows : list of ndarray of int
        Training rows of each outer fold (checked against the folds of the fit).
    features : list of ndarray, shape (n_tr, n_out)
        The transformer's output on every row, one array per fold.
    full : ndarray, shape (n_tr, n_out)
        The output of the transformer fitted on all rows (for the final fit).
    description : dict
        What made them (transformer, cleaning, folds).
    """

    train_rows: list
    features: list
    full: np.ndarray
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        shapes = {np.shape(f) for f in self.features} | {np.shape(self.full)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"fold features must be 2-D arrays of one shape, got {sorted(shapes)}")
        if len(self.train_rows) != len(self.features):
            raise ValueError(f"{len(self.train_rows)} folds of training rows for "
                             f"{len(self.features)} feature arrays")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.full))

    def fold(self, index: int, train: np.ndarray) -> np.ndarray:
        """Features of outer fold ``index``, after checking that its training rows match."""
        if index >= len(self.features) or not np.array_equal(self.train_rows[index], train):
            raise ValueError("these fold features were made for other cross-validation folds "
                             "than the fit uses; build them with fold_features() on the same "
                             "runs and n_blocks")
        return np.asarray(self.features[index], dtype=np.float64)


@dataclass
class Band:
    """One named feature set of an encoding model.

    Parameters
    ----------
    values : array (n_tr, n_features) or FoldFeatures
    delays : sequence of int, None, or "inherit"
        FIR delays in TRs (>= 0). None or ``()``: the band enters undelayed. ``"inherit"``
        (default): ``fit_encoding(delays=...)``, or none when ``hrf_convolved``.
    hrf_convolved : bool
        The values are already convolved with a haemodynamic response.
    preprocessing : scikit-learn transformer, optional
        Fitted on each fold's training rows (after cleaning, before z-scoring).
    """

    values: Any
    delays: Any = INHERIT
    hrf_convolved: bool = False
    preprocessing: Any = None


@dataclass
class ResolvedBand:
    """A band ready for fitting: name, values, concrete delays (list, possibly empty)."""

    name: str
    values: Any
    delays: list
    hrf_convolved: bool
    preprocessing: Any

    @property
    def n_copies(self) -> int:
        return max(len(self.delays), 1)

    def describe(self) -> dict:
        return {"name": self.name, "delays": list(self.delays),
                "hrf_convolved": self.hrf_convolved,
                "preprocessing": None if self.preprocessing is None else repr(self.preprocessing),
                "fold_features": (self.values.description if isinstance(self.values, FoldFeatures)
                                  else None)}


def _check_delays(name: str, delays) -> list[int]:
    from brainalign.timecourse.delays import check_fir_delays

    return check_fir_delays(delays, f"band {name!r}: delays")


def resolve_bands(X, n_tr: int, delays=DEFAULT_DELAYS, preprocessing=None) -> list[ResolvedBand]:
    """Normalise ``fit_encoding``'s ``X`` into a list of bands.

    Parameters
    ----------
    X : array (n_tr, n_features), FoldFeatures, Band, or mapping name -> any of these
        One array is one band named ``"features"``.
    n_tr : int
        Rows every band must have.
    delays : sequence of int or None
        Delays of bands that inherit them.
    preprocessing : transformer, optional
        Applies to a single unnamed array only (a Band carries its own).

    Returns
    -------
    list of ResolvedBand
    """
    if isinstance(X, Mapping):
        if not X:
            raise ValueError("no feature bands given")
        if preprocessing is not None:
            raise ValueError("with named bands, give each band its own preprocessing: "
                             "Band(values, preprocessing=...)")
        items = list(X.items())
    else:
        items = [("features", X if isinstance(X, Band) else Band(X, preprocessing=preprocessing))]
    bands = []
    for name, band in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"band names must be non-empty strings, got {name!r}")
        band = band if isinstance(band, Band) else Band(band)
        values = band.values
        if not isinstance(values, FoldFeatures):
            values = np.asarray(values)
            values = values[:, None] if values.ndim == 1 else values
            if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
                raise ValueError(f"band {name!r} must be a numeric (n_tr, n_features) array, got "
                                 f"shape {values.shape} of {values.dtype}")
            if not np.isfinite(values).all():
                raise ValueError(f"band {name!r} holds NaN or inf")
        if values.shape[0] != n_tr:
            raise ValueError(f"band {name!r} has {values.shape[0]} rows but the brain data have "
                             f"{n_tr} TRs; put both on the same TR grid")
        if values.shape[1] == 0:
            raise ValueError(f"band {name!r} has no features")
        if band.delays == INHERIT:
            band_delays = [] if band.hrf_convolved else delays
        else:
            band_delays = band.delays
        bands.append(ResolvedBand(name, values, _check_delays(name, band_delays),
                                  bool(band.hrf_convolved), band.preprocessing))
    names = [b.name for b in bands]
    if len(set(names)) != len(names):
        raise ValueError(f"band names repeat: {names}")
    return bands


def _reduce(values: np.ndarray, transformer, cleaner: FoldCleaner | None,
            train: np.ndarray) -> np.ndarray:
    """Clean ``values`` with the fold's cleaner and apply a transformer fitted on ``train``."""
    if cleaner is not None:
        values = cleaner.apply(values)
    if transformer is None:
        return np.asarray(values, dtype=np.float64)
    fitted = clone(transformer).fit(values[train])
    return np.asarray(fitted.transform(values), dtype=np.float64)


def fold_band_values(band: ResolvedBand, fold: int | None, train: np.ndarray,
                     cleaner: FoldCleaner | None, standardize: bool = True,
                     fold_rows: np.ndarray | None = None) -> np.ndarray:
    """A band's values in one fold, before delays, shape (n_tr, n_out), float64: cleaned,
    reduced, and (``standardize``) z-scored with the training rows' mean and standard
    deviation.

    ``fold`` None is the final fit on all rows (``train`` is then every kept row).
    ``fold_rows``: the fold's training rows before scrubbing (default ``train``), which
    identify the fold of :class:`FoldFeatures` (made from features, which scrubbing of
    the brain data does not touch).
    """
    if isinstance(band.values, FoldFeatures):
        values = (band.values.full if fold is None else
                  band.values.fold(fold, train if fold_rows is None else fold_rows))
        values = _reduce(values, None, cleaner, train)
    else:
        values = _reduce(band.values, band.preprocessing, cleaner, train)
    if not standardize:
        return values
    values = values - values[train].mean(0)
    scale = values[train].std(0)
    return values / np.where(scale > 0, scale, 1.0)


def band_design(values: Sequence[np.ndarray], bands: Sequence[ResolvedBand], runs: np.ndarray
                ) -> tuple[np.ndarray, list[dict]]:
    """The delayed design of all bands side by side, and its column layout.

    Returns
    -------
    design : ndarray, shape (n_tr, n_columns)
    layout : list of dict
        Per band ``{"name", "n_features", "delays", "columns": [start, stop]}``.
    """
    blocks, layout, start = [], [], 0
    for band, band_values in zip(bands, values):
        block = delay_features(band_values, band.delays, runs) if band.delays else band_values
        blocks.append(block)
        layout.append({"name": band.name, "n_features": int(band_values.shape[1]),
                       "delays": list(band.delays), "columns": [start, start + block.shape[1]]})
        start += block.shape[1]
    return np.hstack(blocks), layout


def fold_features(values, runs, transformer, *, n_blocks: int = 5, clean=True,
                  tr_s: float | None = None, confounds=None, outer_groups=None) -> FoldFeatures:
    """Fit ``transformer`` on each outer fold's training rows (and on all rows), once.

    Use it when the same reduction feeds several encoding fits, e.g. atoms per fold shared
    by every subject of a study; pass the result as a band's values. The folds, the
    cleaning and the training rows are those :func:`~brainalign.encoding.fit_encoding`
    uses with the same ``runs``, ``n_blocks``, ``clean``, ``tr_s`` and ``confounds``.

    Parameters
    ----------
    values : array, shape (n_tr, n_features)
        E.g. neuron time courses on the TR grid.
    runs : array of int, shape (n_tr,), or None
    transformer : scikit-learn transformer
    n_blocks, clean, tr_s, confounds, outer_groups
        As in :func:`~brainalign.encoding.fit_encoding`.

    Returns
    -------
    FoldFeatures
    """
    values = np.asarray(values)
    n_tr = values.shape[0]
    runs = check_runs(runs, n_tr)
    cleaning = resolve_cleaning(clean, tr_s)
    splits, scheme = outer_splits(runs, n_blocks=n_blocks, groups=outer_groups)
    features, train_rows = [], []
    for split in splits:
        cleaner = None if cleaning is None else FoldCleaner(cleaning, runs, split.train, tr_s,
                                                            confounds)
        features.append(_reduce(values, transformer, cleaner, split.train).astype(np.float32))
        train_rows.append(split.train)
    every_row = np.arange(n_tr)
    cleaner = None if cleaning is None else FoldCleaner(cleaning, runs, every_row, tr_s, confounds)
    full = _reduce(values, transformer, cleaner, every_row).astype(np.float32)
    description = {"transformer": repr(transformer), "outer": scheme, "n_folds": len(splits),
                   "cleaning": None if cleaning is None else cleaning.describe(), "tr_s": tr_s}
    return FoldFeatures(train_rows, features, full, description)
