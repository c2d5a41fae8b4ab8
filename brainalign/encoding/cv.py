"""Cross-validation schemes for encoding models: runs (or stories) are the unit.

fMRI time points are autocorrelated, so a held-out score is honest only when the
held-out samples come from a run the model never saw. Two levels are used:

* the *outer* split gives held-out scores: leave one run (or story) out; when the data
  hold a single run, ``n_blocks`` contiguous blocks of time stand in for runs;
* the *inner* split chooses one ridge alpha per target inside each outer training set:
  grouped by run in the same way (k-fold over whole runs, or contiguous blocks when the
  training set holds a single run).

Run labels are validated by :func:`brainalign.timecourse.runs.check_runs` (runs are
contiguous blocks of rows). Splits are plain lists of ``(train, test)`` index arrays, which scikit-learn's and
himalaya's ``check_cv`` accept directly. Built on :class:`sklearn.model_selection.GroupKFold`
and :class:`sklearn.model_selection.KFold` (no shuffling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, KFold

from brainalign.timecourse.runs import check_runs


@dataclass(frozen=True)
class Split:
    """One train/test partition of the time points.

    Attributes
    ----------
    train, test : ndarray of int
        Indices of time points (rows of X and Y).
    test_groups : tuple of int
        Runs (or contiguous blocks) that make up the test set.
    """

    train: np.ndarray
    test: np.ndarray
    test_groups: tuple[int, ...]


def contiguous_blocks(n_samples: int, n_blocks: int) -> np.ndarray:
    """Label each of ``n_samples`` time points with one of ``n_blocks`` contiguous blocks."""
    if n_blocks < 2 or n_blocks > n_samples:
        raise ValueError(f"need 2 <= n_blocks <= n_samples ({n_samples}), got {n_blocks}")
    return np.floor(np.arange(n_samples) * n_blocks / n_samples).astype(int)


def cv_groups(runs: np.ndarray, n_blocks: int) -> tuple[np.ndarray, str]:
    """Groups used for splitting: the runs, or contiguous blocks when there is one run.

    Returns
    -------
    groups : ndarray of int, shape (n_samples,)
    scheme : str
        ``"leave-one-run-out"`` or ``"contiguous-blocks"``.
    """
    if len(np.unique(runs)) >= 2:
        return runs, "leave-one-run-out"
    return contiguous_blocks(len(runs), n_blocks), "contiguous-blocks"


def outer_splits(runs, n_samples: int | None = None, n_blocks: int = 5,
                 groups=None) -> tuple[list[Split], str]:
    """Leave-one-run-out splits (contiguous blocks for a single run), or leave one group
    of runs out (e.g. a story told over several runs).

    Parameters
    ----------
    runs : array of int, shape (n_samples,), or None
        Run (or story) of each time point.
    n_samples : int, optional
        Needed only when ``runs`` is None.
    n_blocks : int
        Number of contiguous blocks when there is a single run.
    groups : array of int, shape (n_samples,), optional
        A label per time point (e.g. the story); every run lies inside one group, and
        there are at least 2 groups. Each split holds one group out.

    Returns
    -------
    splits : list of Split
    scheme : str
    """
    if runs is None:
        if n_samples is None:
            raise ValueError("give runs or n_samples")
        runs = np.zeros(n_samples, dtype=int)
    runs = check_runs(runs, len(runs))
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != runs.shape:
            raise ValueError(f"outer groups need one label per time point ({len(runs)}), got "
                             f"shape {groups.shape}")
        split_runs = [int(r) for r in np.unique(runs) if len(np.unique(groups[runs == r])) > 1]
        if split_runs:
            raise ValueError(f"run(s) {split_runs} span several outer groups; each run must "
                             "lie inside one group (e.g. one story)")
        if len(np.unique(groups)) < 2:
            raise ValueError("leave-one-group-out needs at least 2 outer groups (e.g. 2 "
                             f"stories), got {len(np.unique(groups))}")
        return ([Split(np.flatnonzero(groups != g), np.flatnonzero(groups == g), (int(g),))
                 for g in np.unique(groups)], "leave-one-group-out")
    groups, scheme = cv_groups(runs, n_blocks)
    splits = [Split(np.flatnonzero(groups != g), np.flatnonzero(groups == g), (int(g),))
              for g in np.unique(groups)]
    return splits, scheme


def inner_splits(runs: np.ndarray, n_splits: int = 5) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Splits for choosing alphas inside one training set.

    Whole runs are held out together (GroupKFold with ``min(n_splits, n_runs)`` folds);
    with a single run, ``n_splits`` contiguous blocks are used instead (KFold, no
    shuffling).

    Parameters
    ----------
    runs : array of int, shape (n_train,)
        Run label of each training time point.
    n_splits : int

    Returns
    -------
    splits : list of (train, validation) index arrays into the training set
    scheme : str
    """
    runs = check_runs(runs, len(runs))
    n_runs = len(np.unique(runs))
    if n_runs >= 2:
        folds = GroupKFold(n_splits=min(n_splits, n_runs))
        splits = list(folds.split(np.zeros(len(runs)), groups=runs))
        return splits, f"group-k-fold over runs ({min(n_splits, n_runs)} folds)"
    splits = list(KFold(n_splits=n_splits, shuffle=False).split(np.zeros(len(runs))))
    return splits, f"contiguous blocks ({n_splits} folds)"
