"""What every brainalign masker shares: run bookkeeping and signal cleaning.

A masker turns brain images (a 4D NIfTI, GIfTI surface time series, or an ROI table)
into a matrix (n_tr, n_targets) and maps per-target values back into an image
(nilearn's fit / transform / inverse_transform contract). The work splits in two steps
so that :func:`brainalign.brain.data.load_brain` can cut volumes between them:

1. :meth:`BrainMasker.extract_signals` reads raw signals and the length of each run;
2. :meth:`BrainMasker.clean_signals` removes confounds, detrends, filters and
   standardises each run separately with :func:`nilearn.signal.clean`.

``transform`` is the two in a row. Subclasses implement reading and inverse mapping.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from brainalign.brain.tables import read_table
from brainalign.timecourse.runs import check_runs, runs_from_lengths

#: Docstring of the cleaning parameters, shared by every masker.
CLEANING_PARAMETERS = """
    detrend : bool, default False
        Remove a linear trend from each run.
    standardize : {False, "zscore_sample", "zscore", "psc"}, default False
        Standardise each target within each run (nilearn's options).
    high_pass, low_pass : float, optional
        Butterworth filter cut-offs in Hz (need ``t_r``).
    t_r : float, optional
        Repetition time in seconds.
    standardize_confounds : bool, default True
        Z-score confounds before regressing them out.
    run_lengths : sequence of int, optional
        Number of TRs of each run when a single image or table holds several runs
        concatenated. Ignored when ``transform`` receives one image per run or ``runs``.
"""


class BrainMasker(TransformerMixin, BaseEstimator):
    """Base class: cleaning parameters and per-run handling (see module docstring).

    Fitted attributes set by subclasses: ``n_targets_`` (int), ``target_names_``
    (list of str or None), ``space_`` (str or None).
    """

    def __init__(self, detrend: bool = False, standardize: Any = False,
                 high_pass: float | None = None, low_pass: float | None = None,
                 t_r: float | None = None, standardize_confounds: bool = True,
                 run_lengths: Sequence[int] | None = None):
        self.detrend = detrend
        self.standardize = standardize
        self.high_pass = high_pass
        self.low_pass = low_pass
        self.t_r = t_r
        self.standardize_confounds = standardize_confounds
        self.run_lengths = run_lengths

    # subclasses -----------------------------------------------------------------------------
    def _read_one(self, img) -> np.ndarray:
        """Raw signals of one image/table, shape (n_tr, n_targets)."""
        raise NotImplementedError

    def _is_run_list(self, imgs) -> bool:
        """Whether ``imgs`` is a list of per-run inputs rather than one input."""
        raise NotImplementedError

    def _count_one(self, img) -> int:
        """Number of volumes (TRs) of one image/table, read as cheaply as the format allows."""
        raise NotImplementedError

    # shared ---------------------------------------------------------------------------------
    def count_volumes(self, imgs) -> list[int]:
        """Number of volumes of each input, without reading or cleaning the signals where
        the format allows (NIfTI: the header); the masker need not be fitted.

        Parameters
        ----------
        imgs : one input or a list with one input per run

        Returns
        -------
        list of int
            One entry per input (a single input holding several runs gives one total).
        """
        parts = list(imgs) if self._is_run_list(imgs) else [imgs]
        return [int(self._count_one(part)) for part in parts]

    def extract_signals(self, imgs) -> tuple[np.ndarray, list[int]]:
        """Raw (uncleaned) signals and run lengths.

        Parameters
        ----------
        imgs : one input or a list with one input per run

        Returns
        -------
        signals : ndarray, shape (n_tr, n_targets), float64
        run_lengths : list of int
            One entry per run; from the list of inputs, else from ``run_lengths``, else one run.
        """
        check_is_fitted(self, "n_targets_")
        parts = list(imgs) if self._is_run_list(imgs) else [imgs]
        signals = [np.asarray(self._read_one(part), dtype=np.float64) for part in parts]
        for i, block in enumerate(signals):
            if block.ndim != 2 or block.shape[1] != self.n_targets_:
                raise ValueError(f"input {i} gives signals of shape {block.shape}; expected "
                                 f"(n_tr, {self.n_targets_}) as at fit time")
        signals_all = np.vstack(signals)
        if len(parts) > 1:
            lengths = [len(block) for block in signals]
        elif self.run_lengths is not None:
            lengths = [int(n) for n in self.run_lengths]
            if sum(lengths) != len(signals_all):
                raise ValueError(f"run_lengths {lengths} sum to {sum(lengths)} TRs but the input "
                                 f"has {len(signals_all)}")
        else:
            lengths = [len(signals_all)]
        return signals_all, lengths

    def clean_signals(self, signals: np.ndarray, runs: np.ndarray | None = None,
                      confounds=None) -> np.ndarray:
        """Confound removal, detrending, filtering and standardising, run by run.

        Parameters
        ----------
        signals : ndarray, shape (n_tr, n_targets)
        runs : ndarray of int, shape (n_tr,), optional
        confounds : array (n_tr, n_confounds), path to a TSV/text file, or a list of those
            (one per run, stacked in order), optional

        Returns
        -------
        ndarray, shape (n_tr, n_targets), float64
        """
        from nilearn.signal import clean

        runs = check_runs(runs, len(signals))
        confounds = _stack_confounds(confounds)
        if confounds is not None and len(confounds) != len(signals):
            raise ValueError(f"confounds have {len(confounds)} rows for {len(signals)} TRs")
        nothing_to_do = (not self.detrend and not self.standardize and confounds is None
                         and self.high_pass is None and self.low_pass is None)
        if nothing_to_do:
            return np.asarray(signals, dtype=np.float64)
        filtering = self.high_pass is not None or self.low_pass is not None
        if filtering and self.t_r is None:
            raise ValueError("high_pass/low_pass filtering needs t_r (repetition time in seconds)")
        return clean(np.asarray(signals, dtype=np.float64), runs=runs, detrend=self.detrend,
                     standardize=self.standardize or None, confounds=confounds,
                     standardize_confounds=self.standardize_confounds,
                     filter="butterworth" if filtering else False,
                     high_pass=self.high_pass, low_pass=self.low_pass, t_r=self.t_r)

    def transform(self, imgs, confounds=None, runs: np.ndarray | None = None) -> np.ndarray:
        """Cleaned signals, shape (n_tr, n_targets).

        Parameters
        ----------
        imgs : one input or a list with one input per run
        confounds : see :meth:`clean_signals`
        runs : ndarray of int, shape (n_tr,), optional
            Run label of each TR; overrides the run lengths found by :meth:`extract_signals`.
        """
        signals, lengths = self.extract_signals(imgs)
        runs = runs_from_lengths(lengths) if runs is None else runs
        return self.clean_signals(signals, runs, confounds)

    def fit_transform(self, imgs, y=None, confounds=None, runs=None) -> np.ndarray:
        """``fit(imgs)`` then ``transform(imgs, confounds, runs)``."""
        return self.fit(imgs).transform(imgs, confounds=confounds, runs=runs)

    def _check_values(self, values) -> tuple[np.ndarray, bool]:
        """Values to map back: (n_maps, n_targets) and whether the input was 1-D."""
        check_is_fitted(self, "n_targets_")
        values = np.asarray(values)
        single = values.ndim == 1
        values = values[None, :] if single else values
        if values.ndim != 2 or values.shape[1] != self.n_targets_:
            raise ValueError(f"values must have shape ({self.n_targets_},) or (n_maps, "
                             f"{self.n_targets_}), got {np.shape(values)}")
        return values, single


def _stack_confounds(confounds) -> np.ndarray | None:
    """Confounds as one array (n_tr, n_confounds); a list or tuple holds one entry per run."""
    if confounds is None:
        return None
    if isinstance(confounds, (list, tuple)):
        return np.vstack([_confound_array(part) for part in confounds])
    return _confound_array(confounds)


def _confound_array(confounds) -> np.ndarray:
    """One run's confounds from an array, a DataFrame or a text/TSV file path."""
    if isinstance(confounds, str) or hasattr(confounds, "__fspath__"):
        confounds = read_table(confounds)[0]
    confounds = np.asarray(confounds, dtype=np.float64)
    return confounds[:, None] if confounds.ndim == 1 else confounds
