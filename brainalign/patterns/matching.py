"""Matching components between two decompositions: Hungarian on |r|, and IoU of neuron sets.

Components from different seeds, halves of the data or inputs come in arbitrary order
and sign; :func:`match_components` pairs them one-to-one by the largest total absolute
correlation (the Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`).
Neuron sets (study B's functional networks) are compared by intersection over union
(:func:`iou_matrix`); :func:`match_sets` pairs them one-to-one by IoU and keeps the pairs
above a threshold (0.2 is study B's "same network").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every row of ``a`` (m, n) and every row of ``b`` (k, n), shape (m, k).

    Constant rows give 0; rounding beyond +-1 (identical rows: 1 + 2e-16) is clipped.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need 2-D arrays with the same number of columns, got {a.shape} and {b.shape}")
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    a_norm = np.linalg.norm(a, axis=1, keepdims=True)
    b_norm = np.linalg.norm(b, axis=1, keepdims=True)
    a = np.divide(a, a_norm, out=np.zeros_like(a), where=a_norm > 0)
    b = np.divide(b, b_norm, out=np.zeros_like(b), where=b_norm > 0)
    return np.clip(a @ b.T, -1.0, 1.0)


def abs_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson r| between every row of ``a`` (m, n) and every row of ``b`` (k, n), shape (m, k)."""
    return np.abs(correlation(a, b))


def match_components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one pairing of the rows of ``a`` (m, n) and ``b`` (k, n) maximising total |r|.

    Returns
    -------
    rows_a, rows_b : ndarray of int, shape (min(m, k),)
        Matched row indices.
    r : ndarray, shape (min(m, k),)
        |r| of each matched pair.
    """
    corr = abs_correlation(a, b)
    rows_a, rows_b = linear_sum_assignment(-corr)
    return rows_a, rows_b, corr[rows_a, rows_b]


def iou_matrix(sets_a: Sequence[np.ndarray], sets_b: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Intersection over union of every pair of index sets, shape (len(sets_a), len(sets_b)).

    Parameters
    ----------
    sets_a, sets_b : sequences of integer index arrays
    n_items : int
        Size of the universe the indices point into (the number of neurons).
    """
    def indicator(sets):
        out = np.zeros((len(sets), n_items), dtype=np.float64)
        for i, index in enumerate(sets):
            out[i, np.asarray(index, dtype=int)] = 1.0
        return out

    a, b = indicator(sets_a), indicator(sets_b)
    intersection = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match_sets(sets_a: Sequence[np.ndarray], sets_b: Sequence[np.ndarray], n_items: int,
               threshold: float = 0.2) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(i, j, iou)`` maximising total IoU, keeping ``iou > threshold``."""
    if len(sets_a) == 0 or len(sets_b) == 0:
        return []
    iou = iou_matrix(sets_a, sets_b, n_items)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(rows, cols) if iou[i, j] > threshold]
