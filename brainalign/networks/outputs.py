"""Result files of the network stage: tables with sidecars and maps of assignments.

Tables (TSV + JSON sidecar with provenance):

- pattern x network statistics and per-pattern assignments (:meth:`NetworkMapping.to_tsv`);
- subgroup -> network (one row per neuron, from :func:`subgroup_networks`);
- layer x network composition (neuron counts, from :func:`layer_network_composition`).

Maps (through :func:`brainalign.export.save_map`, so NIfTI for volumes, one GIfTI per
hemisphere for surfaces, TSV for ROI tables, each with a JSON sidecar):

- ``stat-winner``: per target, the 1-based index of the pattern with the largest map value
  (winner-take-all over patterns);
- ``stat-network``: per target, the 1-based network index assigned to that winning
  pattern (0 = "none"); the sidecar lists the network names and every assignment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from brainalign.networks.mapping import (NetworkMapping, layer_network_composition,
                                         subgroup_networks)
from brainalign.provenance import provenance_block


def _write_table(table, path: Path, description: Mapping[str, Any]) -> Path:
    table.to_csv(path, sep="\t", index=table.index.name is not None, float_format="%.6g")
    sidecar = provenance_block(**dict(description), file=path.name)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str))
    return path


def write_mapping_tables(mapping: NetworkMapping, out_dir: str | Path, *,
                         subgroup: np.ndarray | None = None, layer: np.ndarray | None = None,
                         prefix: str = "networks") -> dict[str, Path]:
    """Write the pattern x network, subgroup -> network and layer x network tables.

    Parameters
    ----------
    mapping : NetworkMapping
    out_dir : path
        Created if needed.
    subgroup : ndarray of int, shape (n_neurons,), optional
        Atom of each neuron (``Patterns.subgroup``); enables the subgroup table.
    layer : ndarray of int, shape (n_neurons,), optional
        Layer of each neuron (``NeuronTable.layer``); enables the layer composition.
    prefix : str
        File-name prefix.

    Returns
    -------
    dict table name -> Path ("patterns", "assignments", "subgroups", "layers")
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"patterns": mapping.to_tsv(out_dir / f"{prefix}_patterns.tsv")}
    paths["assignments"] = out_dir / f"{prefix}_patterns_assignments.tsv"
    description = {"stage": "networks", "atlas": mapping.atlas.get("name"),
                   "space": mapping.atlas.get("space"), "null": mapping.null,
                   "statistic": mapping.statistic, "alpha": mapping.alpha,
                   "mapping_provenance": mapping.provenance}
    if subgroup is not None:
        neurons = subgroup_networks(mapping, subgroup, layer=layer)
        paths["subgroups"] = _write_table(neurons, out_dir / f"{prefix}_subgroups.tsv",
                                          {**description, "table": "neuron -> subgroup -> "
                                                                    "network"})
        if layer is not None:
            composition = layer_network_composition(neurons, mapping.networks)
            paths["layers"] = _write_table(composition, out_dir / f"{prefix}_layers.tsv",
                                           {**description, "table": "layer x network "
                                                                     "neuron counts"})
    return paths


def assignment_maps(mapping: NetworkMapping, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winner-take-all pattern per target and the network assigned to it.

    Parameters
    ----------
    mapping : NetworkMapping
    maps : ndarray, shape (n_patterns, n_targets)
        The pattern maps that were mapped (non-finite = no data).

    Returns
    -------
    winner : ndarray (n_targets,) float32, 1-based pattern index, 0 where no data
    network : ndarray (n_targets,) float32, 1-based network index, 0 = none / no data
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape[0] != len(mapping.patterns):
        raise ValueError(f"{maps.shape[0]} maps for {len(mapping.patterns)} patterns")
    has_data = np.all(np.isfinite(maps), axis=0)
    best = np.argmax(np.where(np.isfinite(maps), maps, -np.inf), axis=0)
    network_of_pattern = mapping.assigned_index + 1          # 0 for "none"
    winner = np.where(has_data, best + 1, 0).astype(np.float32)
    network = np.where(has_data, network_of_pattern[best], 0).astype(np.float32)
    return winner, network


def save_assignment_maps(mapping: NetworkMapping, maps: np.ndarray, brain, out_dir: str | Path,
                         entities: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the winner-pattern and assigned-network maps with sidecars.

    Parameters
    ----------
    mapping : NetworkMapping
    maps : ndarray, shape (n_patterns, n_targets)
    brain : BrainData or fitted brainalign masker (volume, surface or ROI table)
    out_dir : path
    entities : mapping, optional
        File-name entities (``stat`` and ``desc`` are set here).

    Returns
    -------
    dict {"winner": Path, "network": Path}
    """
    from brainalign.export import save_map

    winner, network = assignment_maps(mapping, maps)
    sidecar = {"stage": "networks", "atlas": mapping.atlas.get("name"),
               "networks": {str(k + 1): name for k, name in enumerate(mapping.networks)},
               "patterns": {str(k + 1): name for k, name in enumerate(mapping.patterns)},
               "assigned": dict(zip(mapping.patterns, mapping.assigned)),
               "confidence": dict(zip(mapping.patterns, mapping.confidence.tolist())),
               "null": mapping.null, "statistic": mapping.statistic, "alpha": mapping.alpha}
    base = {**dict(entities or {}), "desc": "networks"}
    return {
        "winner": save_map(winner, brain, out_dir, {**base, "stat": "winner"},
                           {**sidecar, "values": "1-based index of the pattern with the "
                                                 "largest map value; 0 = no data"}),
        "network": save_map(network, brain, out_dir, {**base, "stat": "network"},
                            {**sidecar, "values": "1-based network assigned to the winning "
                                                  "pattern; 0 = none or no data"})}
