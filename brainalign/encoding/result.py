"""EncodingResult: the fitted encoding model and its held-out statistics, on disk as npz + JSON.

A result directory holds ``arrays.npz`` (numpy arrays only, loaded with
``allow_pickle=False``) and ``result.json`` (solver, CV scheme, delays, provenance). It
loads on any machine with numpy, with or without a GPU; nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .maps import DelayedCoefficients, band_layout

ARRAYS_FILE = "arrays.npz"
META_FILE = "result.json"
FORMAT_VERSION = 1


@dataclass
class EncodingResult:
    """Held-out scores, statistics and final coefficients of a voxelwise encoding model.

    Attributes
    ----------
    r : ndarray, shape (n_targets,)
        The headline score. Held-out Pearson r: within each outer test fold, averaged
        over folds (the mean of ``r_folds`` over the folds where it is not NaN), which
        keeps the offset each fold's model adds out of the score. NaN for invalid targets
        and for targets flat in every test fold.
    r2 : ndarray, shape (n_targets,)
        Held-out coefficient of determination (1 - SS_res / SS_tot) within each outer
        fold, averaged over the same folds as ``r``; not r squared.
    alphas : ndarray, shape (n_targets,)
        Ridge alpha per target chosen by the inner CV of the final fit on all data
        (banded ridge: ``1 / sum(exp(deltas))``).
    coef : DelayedCoefficients, shape (n_columns, n_targets)
        Coefficients of the final fit on all data, one row per column of the delayed
        design: the bands one after another, delay-major inside each band (column
        i_delay * n_features + i_feature, as :class:`brainalign.timecourse.Delayer` lays
        them out). One map per feature: :func:`brainalign.encoding.pattern_maps`.
    intercept : ndarray, shape (n_targets,)
    p_values : ndarray, shape (n_targets,)
        One-sided permutation p-value of ``r`` (NaN if not computed or invalid target).
    p_fdr : ndarray, shape (n_targets,)
        Benjamini-Hochberg adjusted p-values.
    solver : str
        ``"primal"`` or ``"kernel"``.
    cv : dict
        Outer and inner scheme, folds, alpha grid, permutation settings.
    valid_targets : ndarray of bool, shape (n_targets,)
        False for targets excluded because they are constant or contain NaN.
    noise_ceiling : ndarray, shape (n_targets,), or None
    r_folds : ndarray, shape (n_outer_folds, n_targets)
        Pearson r within each outer test fold: NaN where the target's held-out data are
        flat in that fold (constant up to the rounding cleaning leaves, e.g. signal
        dropout in that run), 0 where the fold's prediction is constant.
    delays : list of int, or None
        FIR delays in TRs applied to the features (None if X came pre-delayed).
    provenance : dict
    bands : list of dict, optional
        Layout of the coefficient rows: ``{"name", "n_features", "delays", "columns"}``
        per feature band (one band ``"features"`` when not given).
    r_concat : ndarray, shape (n_targets,), optional
        Pearson r of the held-out predictions concatenated over folds (secondary).
    predictions : ndarray, shape (n_tr, n_targets), optional
        Held-out predictions, each TR predicted by the model of the fold that held it out
        (of the targets as cleaned in that fold).
    alphas_folds : ndarray, shape (n_outer_folds, n_targets), optional
        Alpha chosen per target in each outer fold.
    deltas : ndarray, shape (n_bands, n_targets), optional
        Banded ridge: log band weights of the final fit (himalaya's convention).
    partition : dict, optional
        Several bands: ``bands`` (names) and arrays (n_bands, n_targets), each a mean over
        outer folds: ``r_alone``, ``r2_alone`` (the band alone), ``r_without``,
        ``r2_without`` (all other bands), ``r_unique``, ``r2_unique`` (full minus
        without), ``r2_split`` (himalaya's split of the full R^2), ``p_unique`` and
        ``p_unique_fdr`` (the unique r against circular shifts of the band; FDR over
        targets per band).
    """

    r: np.ndarray
    r2: np.ndarray
    alphas: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    p_values: np.ndarray
    p_fdr: np.ndarray
    solver: str
    cv: dict
    valid_targets: np.ndarray
    noise_ceiling: np.ndarray | None = None
    r_folds: np.ndarray | None = None
    delays: list | None = None
    provenance: dict = field(default_factory=dict)
    bands: list | None = None
    r_concat: np.ndarray | None = None
    predictions: np.ndarray | None = None
    alphas_folds: np.ndarray | None = None
    deltas: np.ndarray | None = None
    partition: dict | None = None

    def __post_init__(self):
        self.bands = band_layout(self.bands, np.shape(self.coef)[0], self.delays)
        self.coef = DelayedCoefficients(self.coef, self.bands)

    _ARRAYS = ("r", "r2", "alphas", "coef", "intercept", "p_values", "p_fdr", "valid_targets",
               "noise_ceiling", "r_folds", "r_concat", "predictions", "alphas_folds", "deltas")

    @property
    def n_targets(self) -> int:
        return int(self.r.shape[0])

    def significant(self, q: float = 0.05) -> np.ndarray:
        """Boolean mask of targets with FDR-adjusted p below ``q``."""
        return np.nan_to_num(self.p_fdr, nan=1.0) < q

    def save(self, path: str | Path) -> Path:
        """Write ``arrays.npz`` and ``result.json`` into directory ``path`` (created)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS
                  if getattr(self, name) is not None}
        partition_bands = None
        if self.partition is not None:
            partition_bands = list(self.partition["bands"])
            arrays.update({f"partition_{key}": np.asarray(value)
                           for key, value in self.partition.items() if key != "bands"})
        np.savez_compressed(path / ARRAYS_FILE, **arrays)
        meta = {"format_version": FORMAT_VERSION, "solver": self.solver, "cv": self.cv,
                "delays": self.delays, "provenance": self.provenance, "bands": self.bands,
                "partition_bands": partition_bands, "arrays": sorted(arrays)}
        (path / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EncodingResult":
        """Read a result written by :meth:`save` (numpy only; works without a GPU)."""
        return load(path)


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in result.json")


def load(path: str | Path) -> EncodingResult:
    """Load an :class:`EncodingResult` from a directory written by ``save``."""
    path = Path(path)
    if not (path / META_FILE).exists() or not (path / ARRAYS_FILE).exists():
        raise FileNotFoundError(f"{path} is not an encoding result directory "
                                f"(expected {ARRAYS_FILE} and {META_FILE})")
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {meta.get('format_version')!r}")
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    known = {f.name for f in fields(EncodingResult)}
    values = {name: arrays.get(name) for name in EncodingResult._ARRAYS if name in known}
    partition = None
    if meta.get("partition_bands") is not None:
        partition = {"bands": meta["partition_bands"]}
        partition.update({name[len("partition_"):]: value for name, value in arrays.items()
                          if name.startswith("partition_")})
    return EncodingResult(solver=meta["solver"], cv=meta["cv"], delays=meta["delays"],
                          provenance=meta["provenance"], bands=meta.get("bands"),
                          partition=partition, **values)
