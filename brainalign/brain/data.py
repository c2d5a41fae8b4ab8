"""BrainData: cleaned fMRI targets on the TR grid, checked against the stimulus.

Every BrainData knows when its volumes were acquired on the stimulus clock:
``first_volume_s`` holds, per run, the stimulus time (s, on the clock of that run's words)
of the first volume kept in the data, e.g. 20 s when the first 10 volumes of a 2 s TR were
discarded. It is required: a wrong value shifts every stimulus feature by whole TRs.

:func:`load_brain` reads images or tables through a masker, takes the expected volumes
and the first-volume times from a :class:`~brainalign.stimuli.Story` with its scan (or from
explicit arguments), checks that each run has as many volumes as the stimulus has TRs (a
mismatch is an error unless ``truncate=True``, which keeps the first volumes, logs it and
records it in the provenance), cleans each run, and flags targets that are constant or
hold NaN/inf: they are reported, zeroed and marked False in ``valid_targets`` so that no
later stage scores them silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from brainalign.brain.base import BrainMasker, _stack_confounds
from brainalign.provenance import provenance_block
from brainalign.stimuli.story import Story
from brainalign.timecourse.runs import check_runs, run_slices, runs_from_lengths

logger = logging.getLogger(__name__)

_EPS = 1e-10


def find_invalid_targets(data: np.ndarray, names: Sequence[str] | None = None,
                         eps: float = _EPS) -> tuple[np.ndarray, dict]:
    """Targets that cannot be modelled: any NaN/inf, or no variance over time.

    Parameters
    ----------
    data : ndarray, shape (n_tr, n_targets)
    names : sequence of str, optional
        Target names used in the report (indices otherwise).
    eps : float
        Standard deviations at or below this count as constant.

    Returns
    -------
    valid : ndarray of bool, shape (n_targets,)
    report : dict
        ``n_non_finite``, ``n_constant`` and the first 20 of each (names or indices).
    """
    data = np.asarray(data)
    non_finite = ~np.isfinite(data).all(axis=0)
    with np.errstate(invalid="ignore"):
        constant = ~non_finite & (np.nanstd(data, axis=0) <= eps)
    report = _exclusion_report(non_finite, constant, names)
    return ~(non_finite | constant), report


@dataclass
class BrainData:
    """fMRI targets on the TR grid.

    Attributes
    ----------
    data : ndarray, shape (n_tr, n_targets), float32
        Cleaned signals; columns marked invalid are zero when made by :func:`load_brain`.
    runs : ndarray of int, shape (n_tr,)
    space : str or None
        ``"MNI152NLin2009cAsym"``, ``"fsaverage5"``, ``"roi"``, ...
    masker : BrainMasker
        Fitted masker: ``inverse_transform`` maps (n_targets,) values back to images.
    target_names : list of str, optional
        ROI names (None for voxels and vertices).
    valid_targets : ndarray of bool, shape (n_targets,), optional
        False for constant or non-finite targets; computed (and reported) when None.
    provenance : dict
    first_volume_s : tuple of float (keyword only, required)
        Stimulus time (s, on each run's word clock) of the first volume of each run in
        ``data``; one entry per run (a single number is taken for every run).
    """

    data: np.ndarray
    runs: np.ndarray
    space: str | None
    masker: BrainMasker | None = None
    target_names: list[str] | None = None
    valid_targets: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)
    first_volume_s: tuple[float, ...] = field(kw_only=True)

    def __post_init__(self):
        if self.data.ndim != 2:
            raise ValueError(f"data must be 2-D (n_tr, n_targets), got shape {self.data.shape}")
        self.runs = check_runs(self.runs, self.data.shape[0])
        self.first_volume_s = _per_run(self.first_volume_s, len(self.run_lengths),
                                       "first_volume_s")
        if self.target_names is not None and len(self.target_names) != self.data.shape[1]:
            raise ValueError(f"{len(self.target_names)} target names for {self.data.shape[1]} targets")
        if self.valid_targets is None:
            self.valid_targets, report = find_invalid_targets(self.data, self.target_names)
            _log_invalid(report, self.data.shape[1])
        self.valid_targets = np.asarray(self.valid_targets, dtype=bool)
        if self.valid_targets.shape != (self.data.shape[1],):
            raise ValueError(f"valid_targets must have shape ({self.data.shape[1]},), "
                             f"got {self.valid_targets.shape}")

    @property
    def n_tr(self) -> int:
        return self.data.shape[0]

    @property
    def n_targets(self) -> int:
        return self.data.shape[1]

    @property
    def run_lengths(self) -> tuple[int, ...]:
        """Number of TRs of each run; ``story.with_scan(tr_s, brain.run_lengths,
        first_volume_s=brain.first_volume_s)`` gives the story this data's scan."""
        return tuple(s.stop - s.start for s in run_slices(self.runs))

    @property
    def valid_data(self) -> np.ndarray:
        """The valid targets only, shape (n_tr, n_valid)."""
        return self.data[:, self.valid_targets]


def _exclusion_report(non_finite: np.ndarray, constant: np.ndarray,
                      names: Sequence[str] | None) -> dict:
    label = (lambda i: str(names[i])) if names is not None else int
    return {
        "n_non_finite": int(non_finite.sum()), "n_constant": int(constant.sum()),
        "non_finite": [label(i) for i in np.flatnonzero(non_finite)[:20]],
        "constant": [label(i) for i in np.flatnonzero(constant)[:20]],
    }


def _log_invalid(report: dict, n_targets: int) -> None:
    if report["n_non_finite"] or report["n_constant"]:
        logger.warning("%d of %d targets excluded: %d with NaN/inf (%s), %d constant (%s)",
                       report["n_non_finite"] + report["n_constant"], n_targets,
                       report["n_non_finite"], report["non_finite"], report["n_constant"],
                       report["constant"])


def _per_run(values: float | Sequence[float] | None, n_runs: int, name: str) -> tuple[float, ...]:
    """One float per run from a number (every run) or a sequence; clear errors otherwise."""
    if values is None:
        raise ValueError(f"{name} is required: the stimulus time (s, on the words' clock) of "
                         f"the first volume of each of the {n_runs} run(s)")
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, n_runs):
        raise ValueError(f"{name} must be one number or one per run ({n_runs}), got "
                         f"{values.tolist()}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite, got {values.tolist()}")
    return tuple(float(v) for v in np.broadcast_to(values, (n_runs,)))


def _expected_scan(story: Story | None, n_volumes: Sequence[int] | None,
                   first_volume_s: float | Sequence[float] | None
                   ) -> tuple[list[int] | None, float | Sequence[float]]:
    """(expected volumes per run or None, first-volume times) from a story or the arguments."""
    if story is not None:
        if n_volumes is not None or first_volume_s is not None:
            raise ValueError("give either story (with its scan) or n_volumes/first_volume_s, "
                             "not both")
        if not story.has_scan:
            story.check_scan()  # raises, naming what is missing and how to attach it
        return list(story.n_volumes), story.first_volume_s
    if first_volume_s is None:
        raise ValueError("load_brain needs the stimulus time of the first volume of each run: "
                         "pass story= (a Story with its scan, see Story.with_scan) or "
                         "first_volume_s= (s, on the words' clock; e.g. 20.0 when the first "
                         "10 volumes of a 2 s TR were discarded)")
    return (None if n_volumes is None else [int(n) for n in n_volumes]), first_volume_s


def load_brain(imgs, masker: BrainMasker, *, confounds=None, story: Story | None = None,
               n_volumes: Sequence[int] | None = None,
               first_volume_s: float | Sequence[float] | None = None,
               truncate: bool = False) -> BrainData:
    """Read, check and clean brain data into a :class:`BrainData`.

    Parameters
    ----------
    imgs : input(s) for ``masker`` (one per run as a list, or one holding every run)
    masker : VolumeMasker, SurfaceMasker or RoiTableMasker
        Fitted on ``imgs`` here when not fitted yet.
    confounds : array (n_tr, n_confounds), path, or a list with one per run, optional
    story : Story, optional
        Stimulus with its scan (:meth:`Story.with_scan`): the data must have its
        ``n_volumes`` per run, and take its ``first_volume_s``.
    n_volumes : sequence of int, optional
        The expected volumes per run, when there is no Story (not checked when None).
    first_volume_s : float or sequence of float, optional
        Stimulus time (s, on each run's word clock) of each run's first volume in
        ``imgs``; required when there is no Story.
    truncate : bool, default False
        When a run's volume count differs from the stimulus, keep its first
        ``min(n_brain, n_stimulus)`` volumes instead of raising. The stimulus side must
        then be cut to ``BrainData.run_lengths``. Logged and recorded in ``provenance``.

    Returns
    -------
    BrainData
        With ``first_volume_s`` set (truncation keeps each run's first volumes, so it
        does not change them).

    Raises
    ------
    ValueError
        When neither a story nor ``first_volume_s`` is given, or volumes and stimulus
        disagree (unless ``truncate``), naming the runs and both counts.
    """
    expected, first_volume_s = _expected_scan(story, n_volumes, first_volume_s)
    if not hasattr(masker, "n_targets_"):
        masker.fit(imgs)
    signals, lengths = masker.extract_signals(imgs)
    confounds = _stack_confounds(confounds)
    if confounds is not None and len(confounds) != len(signals):
        raise ValueError(f"confounds have {len(confounds)} rows for {len(signals)} volumes")
    truncation = None
    if expected is not None:
        if len(expected) != len(lengths):
            raise ValueError(f"the brain data has {len(lengths)} run(s) {lengths} but the stimulus "
                             f"has {len(expected)} {expected}")
        mismatched = [(r, b, s) for r, (b, s) in enumerate(zip(lengths, expected)) if b != s]
        if mismatched and not truncate:
            detail = "; ".join(f"run {r}: {b} volumes vs {s} stimulus TRs" for r, b, s in mismatched)
            raise ValueError(f"brain volumes and stimulus TRs differ ({detail}). Fix the timing, or "
                             "pass truncate=True to keep the first min(volumes, TRs) of each run")
        if mismatched:
            keep = np.concatenate([np.arange(b) < min(b, s) for b, s in zip(lengths, expected)])
            signals = signals[keep]
            confounds = None if confounds is None else confounds[keep]
            truncation = [{"run": r, "brain_volumes": b, "stimulus_trs": s, "kept": min(b, s)}
                          for r, b, s in mismatched]
            logger.warning("truncated runs to match the stimulus: %s", truncation)
            lengths = [min(b, s) for b, s in zip(lengths, expected)]
    runs = runs_from_lengths(lengths)
    first_volume_s = _per_run(first_volume_s, len(lengths), "first_volume_s")
    names = masker.target_names_
    raw_valid, _ = find_invalid_targets(signals, names)
    cleaned = np.zeros_like(signals)
    if raw_valid.any():
        cleaned[:, raw_valid] = masker.clean_signals(signals[:, raw_valid], runs, confounds)
    valid = raw_valid.copy()
    valid[raw_valid] = find_invalid_targets(cleaned[:, raw_valid])[0]
    non_finite = ~np.isfinite(signals).all(axis=0)
    report = _exclusion_report(non_finite, ~valid & ~non_finite, names)
    _log_invalid(report, len(valid))
    data = np.asarray(cleaned, dtype=np.float32)
    data[:, ~valid] = 0.0
    provenance = provenance_block(
        stage="brain", masker=type(masker).__name__, masker_params=masker.get_params(),
        space=masker.space_, run_lengths=lengths, first_volume_s=list(first_volume_s),
        truncation=truncation, excluded_targets=report,
    )
    return BrainData(data, runs, masker.space_, masker, names, valid, provenance,
                     first_volume_s=first_volume_s)
