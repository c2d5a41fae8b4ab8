"""Study B: functional networks of neurons found with ICA (Liu et al., ICML 2025).

An input text gives a (tokens x neurons) activation matrix, every token a time point and
every neuron (a block's MLP output unit, all layers concatenated) a "voxel". Spatial ICA
(:class:`~brainalign.patterns.ica.FastICA` with the neurons as samples) gives
``n_components`` independent maps over neurons; each map is z-scored across neurons,
signed so its heavy tail is positive (positive skewness; our choice, the paper is silent),
and thresholded:

- one-sided (default): neurons with ``z > z_threshold``;
- two-sided: neurons with ``|z| > z_threshold``.

The study used ``z > 3.6`` for its lesion experiments; its code's default is 1.96 (two
of the paper's numbers, see PAPERS.md). brainalign's default is 1.96; pass
``z_threshold=3.6`` to reproduce the lesion networks. Note that z-scoring caps the size
of a network: if a fraction ``p`` of the neurons share one high value and the rest sit
at zero, members reach ``z = sqrt((1 - p) / p)``, so at z > 3.6 a network can hold at
most about 7% of the neurons (at 1.96, about 21%).

Across inputs, networks are compared by intersection over union (IoU > 0.2 = "the same
network", :func:`brainalign.patterns.matching.match_sets`). :func:`group_templates` runs
CanICA-style group ICA (:class:`~brainalign.patterns.ica.GroupICA`) over many inputs to
get template networks, and :func:`recurrence_counts` counts on how many individual inputs
each template reappears.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from brainalign.patterns.ica import FastICA, GroupICA
from brainalign.patterns.matching import iou_matrix, match_sets
from brainalign.provenance import provenance_block
from brainalign.record.neurons import NeuronTable

#: Threshold of the study's lesion experiments (one-sided z).
STUDY_Z_THRESHOLD = 3.6
#: Default threshold (the study code's default).
DEFAULT_Z_THRESHOLD = 1.96
#: IoU above which two networks count as the same network.
SAME_NETWORK_IOU = 0.2


@dataclass
class FunctionalNetworks:
    """Neuron sets from thresholded ICA maps.

    Attributes
    ----------
    networks : list of ndarray of int
        Neuron (column) indices of each network, sorted.
    maps : ndarray, shape (n_components, n_neurons)
        z-scored maps (positive tail = network side).
    neurons : NeuronTable
    z_threshold : float
    two_sided : bool
    provenance : dict
    """

    networks: list
    maps: np.ndarray
    neurons: NeuronTable
    z_threshold: float
    two_sided: bool
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.networks)

    @property
    def n_neurons(self) -> int:
        return len(self.neurons)

    def union(self) -> np.ndarray:
        """Sorted indices of neurons in any network."""
        if not self.networks:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(self.networks))

    def layer_distribution(self, normalize: bool = False) -> pd.DataFrame:
        """Network neurons per layer: rows = networks (plus "union"), columns = layers."""
        layers = np.unique(self.neurons.layer)
        rows = {f"network_{i}": np.array([np.sum(self.neurons.layer[net] == l) for l in layers])
                for i, net in enumerate(self.networks)}
        union = self.union()
        rows["union"] = np.array([np.sum(self.neurons.layer[union] == l) for l in layers])
        table = pd.DataFrame(rows, index=pd.Index(layers, name="layer")).T
        if normalize:
            table = table.div(table.sum(1).replace(0, 1), axis=0)
        return table

    def save(self, path: str | Path) -> Path:
        """Write ``networks.npz`` and ``networks.json`` to a directory."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sizes = np.array([len(n) for n in self.networks], dtype=np.int64)
        flat = np.concatenate(self.networks) if self.networks else np.zeros(0, np.int64)
        np.savez_compressed(path / "networks.npz", maps=self.maps, members=flat, sizes=sizes,
                            layer=self.neurons.layer, site=self.neurons.site.astype(str),
                            unit=self.neurons.unit)
        document = dict(z_threshold=self.z_threshold, two_sided=self.two_sided,
                        provenance=self.provenance)
        (path / "networks.json").write_text(json.dumps(document, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FunctionalNetworks":
        """Read a directory written by :meth:`save`."""
        path = Path(path)
        document = json.loads((path / "networks.json").read_text())
        with np.load(path / "networks.npz") as arrays:
            bounds = np.concatenate([[0], np.cumsum(arrays["sizes"])])
            networks = [arrays["members"][a:b] for a, b in zip(bounds[:-1], bounds[1:])]
            neurons = NeuronTable(arrays["layer"], arrays["site"], arrays["unit"])
            return cls(networks, arrays["maps"], neurons, document["z_threshold"],
                       document["two_sided"], document["provenance"])


def zscore_maps(maps: np.ndarray) -> np.ndarray:
    """z-score each row of ``maps`` (n_components, n_neurons) across neurons, skew-positive."""
    maps = np.asarray(maps, dtype=np.float64)
    std = maps.std(1, keepdims=True)
    z = (maps - maps.mean(1, keepdims=True)) / np.where(std > 0, std, 1.0)
    skew = (z ** 3).mean(1)
    return (z * np.where(skew < 0, -1.0, 1.0)[:, None]).astype(np.float32)


def networks_from_maps(maps: np.ndarray, neurons: NeuronTable,
                       z_threshold: float = DEFAULT_Z_THRESHOLD, two_sided: bool = False,
                       provenance: dict | None = None) -> FunctionalNetworks:
    """Threshold component maps (n_components, n_neurons) into neuron sets.

    Maps are z-scored across neurons and signed skew-positive first
    (:func:`zscore_maps`).
    """
    maps = np.asarray(maps)
    if maps.ndim != 2 or maps.shape[1] != len(neurons):
        raise ValueError(f"maps must be (n_components, n_neurons={len(neurons)}), got {maps.shape}")
    if z_threshold <= 0:
        raise ValueError(f"z_threshold must be positive, got {z_threshold}")
    z = zscore_maps(maps)
    selected = np.abs(z) > z_threshold if two_sided else z > z_threshold
    networks = [np.flatnonzero(row).astype(np.int64) for row in selected]
    return FunctionalNetworks(networks, z, neurons, float(z_threshold), bool(two_sided),
                              dict(provenance or {}))


def find_functional_networks(
    activations,
    neurons: NeuronTable,
    n_components: int = 10,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
    two_sided: bool = False,
    random_state: int | None = 0,
    *,
    max_iter: int = 200,
    tol: float = 1e-4,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> FunctionalNetworks:
    """Functional networks of one input by spatial ICA over tokens x neurons.

    Parameters
    ----------
    activations : ndarray, memmap or torch.Tensor, shape (n_tokens, n_neurons)
        Neuron activations, one row per token (all layers' neurons as columns).
    neurons : NeuronTable
        Identity of the columns.
    n_components : int, default=10
        ICA components (the study's k).
    z_threshold : float, default=1.96
        Threshold on the z-scored maps; the study's lesion networks used 3.6.
    two_sided : bool, default=False
        Keep ``|z| > z_threshold`` instead of ``z > z_threshold``.
    random_state : int or None
    max_iter, tol, device, chunk_size
        Passed to :class:`~brainalign.patterns.ica.FastICA`.

    Returns
    -------
    FunctionalNetworks
    """
    if activations.ndim != 2 or activations.shape[1] != len(neurons):
        raise ValueError(f"activations must be (n_tokens, n_neurons={len(neurons)}), "
                         f"got shape {tuple(activations.shape)}")
    for start in range(0, activations.shape[0], 4096):  # in blocks: may be memory-mapped
        block = np.asarray(activations[start:start + 4096])
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(1))[0])
            raise ValueError(f"activations hold NaN or infinite values (first at token row "
                             f"{row}); allowed: finite values only")
    ica = FastICA(n_components, max_iter=max_iter, tol=tol, random_state=random_state,
                  device=device, chunk_size=chunk_size)
    maps = ica.fit_transform(activations.T).T  # neurons are the samples: maps over neurons
    return networks_from_maps(
        maps, neurons, z_threshold, two_sided,
        provenance_block(stage="patterns", study="B", method="spatial FastICA (logcosh, parallel)",
                         n_components=n_components, n_tokens=int(activations.shape[0]),
                         n_neurons=len(neurons), random_state=random_state,
                         n_iter=int(ica.n_iter_)))


def group_templates(
    inputs: Sequence,
    neurons: NeuronTable,
    n_components: int = 10,
    z_threshold: float = DEFAULT_Z_THRESHOLD,
    two_sided: bool = False,
    random_state: int | None = 0,
    *,
    n_components_per_input: int | None = None,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> FunctionalNetworks:
    """Template networks shared by many inputs, by CanICA-style group ICA.

    Parameters
    ----------
    inputs : sequence of arrays, each (n_tokens_i, n_neurons)
        Activations of each input (the study used 100 inputs for 10 templates).
    neurons, n_components, z_threshold, two_sided, random_state
        As in :func:`find_functional_networks`.
    n_components_per_input : int, optional
        PCA components kept per input (default ``2 * n_components``).
    """
    group = GroupICA(n_components, n_components_per_input=n_components_per_input,
                     random_state=random_state, device=device, chunk_size=chunk_size).fit(inputs)
    if group.n_features_in_ != len(neurons):
        raise ValueError(f"inputs have {group.n_features_in_} neurons, table has {len(neurons)}")
    return networks_from_maps(
        group.components_, neurons, z_threshold, two_sided,
        provenance_block(stage="patterns", study="B", method="group ICA (CanICA-style)",
                         n_components=n_components, n_inputs=len(inputs),
                         n_components_per_input=n_components_per_input or 2 * n_components,
                         random_state=random_state))


def match_networks(a: FunctionalNetworks, b: FunctionalNetworks,
                   threshold: float = SAME_NETWORK_IOU) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(i, j, iou)`` of networks of ``a`` and ``b`` with IoU > threshold."""
    if a.n_neurons != b.n_neurons:
        raise ValueError(f"networks over different neuron sets ({a.n_neurons} vs {b.n_neurons})")
    return match_sets(a.networks, b.networks, a.n_neurons, threshold)


def recurrence_counts(templates: FunctionalNetworks, individual: Sequence[FunctionalNetworks],
                      threshold: float = SAME_NETWORK_IOU) -> np.ndarray:
    """For each template, on how many inputs some individual network has IoU > threshold.

    Parameters
    ----------
    templates : FunctionalNetworks
        Group templates (:func:`group_templates`).
    individual : sequence of FunctionalNetworks
        Networks of individual inputs (:func:`find_functional_networks`), ideally
        inputs not used for the templates.

    Returns
    -------
    counts : ndarray of int, shape (n_templates,)
    """
    counts = np.zeros(len(templates), dtype=np.int64)
    for networks in individual:
        if networks.n_neurons != templates.n_neurons:
            raise ValueError(f"networks over {networks.n_neurons} neurons, templates over "
                             f"{templates.n_neurons}")
        if len(networks) == 0 or len(templates) == 0:
            continue
        best = iou_matrix(templates.networks, networks.networks, templates.n_neurons).max(1)
        counts += best > threshold
    return counts
