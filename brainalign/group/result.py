"""GroupMap: a group-level map with family-wise error control, on disk as npz + JSON.

A group map directory holds ``arrays.npz`` (numpy arrays only, read with
``allow_pickle=False``) and ``group.json`` (method, permutations, tail, subjects, test
parameters, provenance). Nothing is pickled, so a map written on one machine loads on any
other with numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ARRAYS_FILE = "arrays.npz"
META_FILE = "group.json"
FORMAT_VERSION = 1


@dataclass
class GroupMap:
    """One-sample group statistics of per-subject maps, with FWE-corrected p-values.

    Attributes
    ----------
    t : ndarray, shape (n_targets,)
        One-sample t statistic across subjects (of the Fisher z maps when ``fisher_z``),
        positive where the group mean is above zero. NaN at untested targets.
    mean : ndarray, shape (n_targets,)
        Group mean in the units of the input maps: for r maps with ``fisher_z``, the
        back-transformed mean Fisher z, ``tanh(mean(arctanh(r)))``. NaN at untested targets.
    p_fwe : ndarray, shape (n_targets,)
        Family-wise error corrected p-value of each target over the tested family: the
        target's own (max-t, TFCE) or its cluster's (cluster) permutation p-value; 1 for
        targets outside every supra-threshold cluster. NaN at untested targets.
    tested : ndarray of bool, shape (n_targets,)
        Targets in the family: False where a subject's map has no value (NaN, with
        ``nan_policy="omit"``) or where all subjects hold the same value (no variance,
        e.g. a medial wall filled with zeros).
    method : {"maxt", "cluster", "tfce"}
    n_perm : int
        Sign-flip permutations requested (the identity is always counted in the null too).
    tail : {1, 0, -1}
        1: group mean > 0; -1: group mean < 0; 0: either.
    subjects : list of str
        Subject labels, in the order of the input maps.
    space : str or None
        The masker's space (``fsaverage5``, ``MNI152NLin2009cAsym``, ``roi``...).
    measure : str
        What the subject maps hold, e.g. ``"r"`` or ``"unique_r:atoms"``.
    fisher_z : bool
        Whether the maps were Fisher z transformed (``arctanh``) before testing.
    parameters : dict
        How the test ran: library function, cluster-forming threshold, TFCE steps,
        adjacency, seed, number of tested targets.
    provenance : dict
        Free description from the caller (model, site, study config hash...).
    """

    t: np.ndarray
    mean: np.ndarray
    p_fwe: np.ndarray
    tested: np.ndarray
    method: str
    n_perm: int
    tail: int
    subjects: list
    space: str | None = None
    measure: str = "r"
    fisher_z: bool = True
    parameters: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    _ARRAYS = ("t", "mean", "p_fwe", "tested")

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_targets(self) -> int:
        return int(self.t.shape[0])

    def significant(self, alpha: float = 0.05) -> np.ndarray:
        """Boolean mask (n_targets,) of targets with ``p_fwe < alpha`` (untested: False)."""
        return np.nan_to_num(self.p_fwe, nan=1.0) < alpha

    def save(self, path: str | Path) -> Path:
        """Write ``arrays.npz`` and ``group.json`` into directory ``path`` (created)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / ARRAYS_FILE,
                            **{name: np.asarray(getattr(self, name)) for name in self._ARRAYS})
        meta = {"format_version": FORMAT_VERSION, "method": self.method,
                "n_perm": int(self.n_perm), "tail": int(self.tail),
                "subjects": [str(s) for s in self.subjects], "space": self.space,
                "measure": self.measure, "fisher_z": bool(self.fisher_z),
                "parameters": self.parameters, "provenance": self.provenance}
        (path / META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GroupMap":
        """Read a group map written by :meth:`save`."""
        path = Path(path)
        if not (path / META_FILE).exists() or not (path / ARRAYS_FILE).exists():
            raise FileNotFoundError(f"{path} is not a group map directory (expected "
                                    f"{ARRAYS_FILE} and {META_FILE})")
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format_version {meta.get('format_version')!r}; "
                             f"expected {FORMAT_VERSION}")
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in cls._ARRAYS}
        meta.pop("format_version")
        return cls(**arrays, **meta)


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in {META_FILE}")
