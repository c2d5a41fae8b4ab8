"""NeuronTable: which artificial neuron each column of an activation matrix is.

Every matrix with a neuron axis (recordings, TR-grid time courses, pattern loadings)
carries one of these, so a column can always be traced to (layer, site, unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class NeuronTable:
    """Identity of ``n_neurons`` columns.

    Attributes
    ----------
    layer : ndarray of int, shape (n_neurons,)
        Block index (0-based).
    site : ndarray of str, shape (n_neurons,)
        Site name (``mlp.inner``, ``mlp.out``, ``resid``, ``attn.out``).
    unit : ndarray of int, shape (n_neurons,)
        Index of the unit inside its site.
    """

    layer: np.ndarray
    site: np.ndarray
    unit: np.ndarray

    def __post_init__(self):
        n = len(self.layer)
        if not (len(self.site) == len(self.unit) == n):
            raise ValueError(
                f"NeuronTable columns differ in length: layer {n}, site {len(self.site)}, "
                f"unit {len(self.unit)}"
            )

    def __len__(self) -> int:
        return len(self.layer)

    @classmethod
    def from_sites(cls, blocks: Iterable[tuple[int, str, int]]) -> "NeuronTable":
        """Concatenate ``(layer, site_name, width)`` blocks in the given order."""
        layers, sites, units = [], [], []
        for layer, site, width in blocks:
            layers.append(np.full(width, layer, dtype=np.int32))
            sites.append(np.full(width, site, dtype=object))
            units.append(np.arange(width, dtype=np.int32))
        return cls(np.concatenate(layers), np.concatenate(sites).astype(str), np.concatenate(units))

    def select(self, index: Sequence[int] | np.ndarray) -> "NeuronTable":
        """Rows ``index`` (integer indices or a boolean mask)."""
        index = np.asarray(index)
        return NeuronTable(self.layer[index], self.site[index], self.unit[index])

    def mask(self, sites: Iterable[str] | None = None, layers: Iterable[int] | None = None) -> np.ndarray:
        """Boolean mask of neurons at the given sites and layers (all when None)."""
        keep = np.ones(len(self), dtype=bool)
        if sites is not None:
            keep &= np.isin(self.site, list(sites))
        if layers is not None:
            keep &= np.isin(self.layer, list(layers))
        return keep

    def to_dict(self) -> dict[str, list]:
        """Column lists, for JSON or a DataFrame."""
        return {"layer": self.layer.tolist(), "site": self.site.tolist(), "unit": self.unit.tolist()}
