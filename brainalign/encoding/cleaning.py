"""The same cleaning for features and targets, fitted on the training rows of each fold.

Whatever is done to the brain data before an encoding model (removing confounds, slow
drifts and each run's mean, z-scoring) must be done to the features too, or the model is
asked to predict a filtered signal from unfiltered regressors (measured on the Alice ROI
data: held-out r moved by 0.13-0.20 when the features were filtered like the targets). And
it must be fitted on the training rows of each cross-validation fold only, or held-out
rows shape the cleaning of the rows that train the model.

Cleaning here is a nuisance regression per run followed by z-scoring:

* the nuisance basis of run ``r`` holds a constant, a linear trend (``detrend``), the
  discrete cosine drift set below ``high_pass_hz`` (SPM's high-pass filter, built by
  :func:`nilearn.glm.first_level.make_first_level_design_matrix`) and the run's rows of
  any confounds (z-scored within the run);
* its coefficients are fitted on the run's *training* rows and remove the nuisance from
  those rows only, so the cleaning of the rows that train a model never sees a held-out
  row;
* held-out rows are cleaned on their own: each contiguous block of them (a held-out run,
  or a held-out block of a single run) gets the nuisance basis of a run of its length,
  fitted on its own rows. That is a fixed projection of the block, identical for features
  and targets, which uses nothing of the training data. (Extrapolating the training rows'
  drift fit into a held-out block instead made held-out r erratic on the Alice ROI data:
  word rate alone gave r from 0.04 to 0.58 across ROIs, against 0.36-0.50 this way and
  0.36-0.49 with whole-run cleaning.);
* z-scoring divides each column by its standard deviation over the training rows.

Because the operation before z-scoring is linear in the data (a matrix acting on time,
:meth:`FoldCleaner.matrix`), it commutes with any fixed linear map of the feature columns,
and the permutation null of :mod:`brainalign.encoding.null` can apply it to surrogate data.
Written by hand around nilearn's drift basis: nilearn's ``signal.clean`` cleans whole runs
and cannot be fitted on some rows and applied to others.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from brainalign.timecourse.runs import check_runs, run_slices

logger = logging.getLogger(__name__)

#: High-pass cut-off (Hz) of the default cleaning: 1/128 Hz, the SPM default.
DEFAULT_HIGH_PASS_HZ = 1.0 / 128.0


@dataclass(frozen=True)
class Cleaning:
    """What the cleaning removes, the same for features and targets.

    Parameters
    ----------
    detrend : bool
        Remove a linear trend per run (each run's mean is always removed).
    high_pass_hz : float or None
        Cut-off of the cosine drift basis, in Hz; needs the repetition time. None: no
        high-pass filter.
    standardize : bool
        Divide every column by its standard deviation over the training rows.
    """

    detrend: bool = True
    high_pass_hz: float | None = DEFAULT_HIGH_PASS_HZ
    standardize: bool = True

    def __post_init__(self):
        if self.high_pass_hz is not None and not self.high_pass_hz > 0:
            raise ValueError(f"high_pass_hz must be > 0 Hz or None, got {self.high_pass_hz!r}")

    def describe(self) -> dict:
        return asdict(self)


def resolve_cleaning(clean, tr_s: float | None) -> Cleaning | None:
    """The cleaning a fit uses: ``True`` is :class:`Cleaning` with its defaults (no high-pass
    filter when ``tr_s`` is unknown), ``False``/None is none, a :class:`Cleaning` is kept."""
    if clean is None or clean is False:
        return None
    if clean is True:
        if tr_s is None:
            logger.warning("cleaning without tr_s: run means and linear trends are removed, "
                           "but no high-pass filter (slower drifts remain and can correlate "
                           "features with targets); pass tr_s (seconds) to filter them")
            return Cleaning(high_pass_hz=None)
        return Cleaning()
    if not isinstance(clean, Cleaning):
        raise TypeError(f"clean must be True, False or a Cleaning, got {type(clean).__name__}")
    if clean.high_pass_hz is not None and tr_s is None:
        raise ValueError(f"high-pass filtering at {clean.high_pass_hz} Hz needs the repetition "
                         "time: pass tr_s (seconds)")
    return clean


def _nuisance_basis(n_rows: int, cleaning: Cleaning, tr_s: float | None,
                    confounds: np.ndarray | None) -> np.ndarray:
    """Nuisance regressors of one run, shape (n_rows, n_regressors); constant first."""
    columns = [np.ones((n_rows, 1))]
    if cleaning.detrend and n_rows > 1:
        trend = np.arange(n_rows, dtype=np.float64)
        columns.append(((trend - trend.mean()) / trend.std())[:, None])
    if cleaning.high_pass_hz is not None and n_rows > 1:
        from nilearn.glm.first_level import make_first_level_design_matrix

        frame_times = tr_s * np.arange(n_rows, dtype=np.float64)
        drifts = make_first_level_design_matrix(frame_times, drift_model="cosine",
                                                high_pass=cleaning.high_pass_hz)
        drifts = drifts.drop(columns="constant").to_numpy(dtype=np.float64)
        columns.append(drifts)
    if confounds is not None:
        spread = confounds.std(axis=0)
        keep = spread > 0
        columns.append((confounds[:, keep] - confounds[:, keep].mean(0)) / spread[keep])
    return np.hstack(columns)


class FoldCleaner:
    """Cleaning of one fold: nuisance coefficients and scales fitted on its training rows.

    Parameters
    ----------
    cleaning : Cleaning
    runs : array of int, shape (n_tr,)
    train : array of int
        Training rows of the fold.
    tr_s : float, optional
        Repetition time (s), for the high-pass filter.
    confounds : array, shape (n_tr, n_confounds), optional
        Nuisance time courses (e.g. motion), regressed out within each run.
    censored : array of int, optional
        Scrubbed rows (e.g. high motion): every segment is cleaned as without them, its
        nuisance coefficients fitted on its other rows and applied to all of its rows (a
        censored row is cleaned, not dropped, so that FIR delays of the features stay on the
        acquisition grid), and they do not enter the z-scoring scale. The caller keeps them
        out of model fits and scores.

    Attributes
    ----------
    segments : list of (rows, basis, coef_map)
        Rows cleaned together: per run its training rows (the run's nuisance basis on
        those rows), and each contiguous block of its held-out rows (a basis of its own,
        as for a run of that length); ``coef_map`` (n_regressors, n_rows) maps the
        segment's values to its nuisance coefficients (zero columns at censored rows).
    own_fit_runs : list of int
        Runs with no training rows (held out whole).
    """

    def __init__(self, cleaning: Cleaning, runs, train, tr_s: float | None = None,
                 confounds=None, censored=None):
        runs = check_runs(runs, len(runs))
        self.cleaning = cleaning
        self.n_rows = len(runs)
        is_train = np.zeros(self.n_rows, dtype=bool)
        is_train[np.asarray(train)] = True
        self.is_censored = np.zeros(self.n_rows, dtype=bool)
        if censored is not None:
            self.is_censored[np.asarray(censored, dtype=int)] = True
        self.train = np.flatnonzero(is_train & ~self.is_censored)
        if confounds is not None:
            confounds = np.asarray(confounds, dtype=np.float64)
            confounds = confounds[:, None] if confounds.ndim == 1 else confounds
            if confounds.shape[0] != self.n_rows or not np.isfinite(confounds).all():
                raise ValueError(f"confounds must be finite with {self.n_rows} rows (one per TR), "
                                 f"got shape {confounds.shape}")
        self.segments = []
        self.own_fit_runs = []
        for index, part in enumerate(run_slices(runs)):
            n_run = part.stop - part.start
            run_confounds = None if confounds is None else confounds[part]
            basis = _nuisance_basis(n_run, cleaning, tr_s, run_confounds)
            fit_rows = np.flatnonzero(is_train[part])
            if len(fit_rows):
                self._add_segment(part.start + fit_rows, basis[fit_rows])
            else:
                self.own_fit_runs.append(index)
            # held-out rows: each contiguous block is cleaned on its own, as a run of its
            # length would be (never with coefficients extrapolated from the training rows)
            held_out = np.flatnonzero(~is_train[part])
            for block in np.split(held_out, np.flatnonzero(np.diff(held_out) > 1) + 1):
                if len(block) == 0:
                    continue
                block_basis = _nuisance_basis(len(block), cleaning, tr_s,
                                              None if run_confounds is None else run_confounds[block])
                self._add_segment(part.start + block, block_basis)

    def _add_segment(self, rows: np.ndarray, basis: np.ndarray) -> None:
        """Rows cleaned together, with coefficients fitted on their uncensored rows."""
        fit = ~self.is_censored[rows]
        coef_map = np.zeros((basis.shape[1], len(rows)))
        if fit.any():
            coef_map[:, fit] = np.linalg.pinv(basis[fit])
        self.segments.append((rows, basis, coef_map))

    def matrix(self) -> np.ndarray:
        """The nuisance removal as one (n_tr, n_tr) matrix (block-diagonal over segments)."""
        out = np.zeros((self.n_rows, self.n_rows))
        for rows, basis, coef_map in self.segments:
            out[np.ix_(rows, rows)] = np.eye(len(rows)) - basis @ coef_map
        return out

    def remove_nuisance(self, values: np.ndarray) -> np.ndarray:
        """Residuals of the nuisance fits, shape like ``values`` (n_tr, n_columns), float64.

        Censored rows do not enter the coefficients, whatever they hold (a NaN there stays
        in its own row and spreads nowhere)."""
        out = np.array(values, dtype=np.float64)
        for rows, basis, coef_map in self.segments:
            fit = ~self.is_censored[rows]
            out[rows] -= basis @ (coef_map[:, fit] @ out[rows[fit]])
        return out

    def rescale(self, residuals: np.ndarray) -> np.ndarray:
        """Divide nuisance residuals (float64, changed in place and returned) by their
        standard deviation over the training rows, when the cleaning z-scores (columns
        constant on the training rows keep scale 1)."""
        if self.cleaning.standardize:
            scale = residuals[self.train].std(axis=0)
            residuals /= np.where(scale > 0, scale, 1.0)
        return residuals

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Clean ``values`` (n_tr, n_columns): nuisance removal, then z-scoring with the
        training rows' standard deviation (:meth:`rescale`). Returns float64."""
        return self.rescale(self.remove_nuisance(values))
