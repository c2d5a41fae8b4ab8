"""Random control neuron sets matched to a target set (study B's controls, done properly).

Study B compared its functional networks, which sit mostly in the last layers, with random
sets spread evenly over layers. A fair control matches what could explain the effect on its
own, so three matchings are offered, each over several seeds:

* :func:`count_matched`: the same number of neurons, uniform over the universe;
* :func:`layer_matched`: the same number per (site, layer);
* :func:`magnitude_matched`: each target neuron replaced by a random neuron of close mean
  absolute activation (from :func:`brainalign.interventions.neurons.activation_statistics`).

Controls never contain a neuron of the target set (``exclude_target=True``). numpy only.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

from brainalign.interventions.neurons import ActivationStatistics, NeuronSet, site_key
from brainalign.models.sites import resolve_sites
from brainalign.record.neurons import NeuronTable

logger = logging.getLogger(__name__)


def universe_table(model, site_names: Iterable[str] = ("mlp.out",),
                   layers: Iterable[int] | None = None) -> NeuronTable:
    """Every neuron of the given sites and layers of ``model`` (the controls' sampling frame)."""
    sites = resolve_sites(model, list(site_names), layers)
    return NeuronTable.from_sites((s.layer, s.name, s.width) for s in sites)


def _membership(neurons: NeuronTable, neuron_set: NeuronSet) -> np.ndarray:
    """Boolean (n_neurons,): which rows of ``neurons`` belong to ``neuron_set``."""
    inside = np.zeros(len(neurons), dtype=bool)
    keys = np.array([site_key(layer, site) for layer, site in zip(neurons.layer, neurons.site)])
    for key, units in neuron_set.units.items():
        rows = np.flatnonzero(keys == key)
        inside[rows[np.isin(neurons.unit[rows], units)]] = True
    found = int(inside.sum())
    if found != neuron_set.size:
        raise ValueError(
            f"{neuron_set.size - found} of the {neuron_set.size} target neurons are not in the "
            "universe NeuronTable; build the universe over the same sites and layers"
        )
    return inside


def count_matched(neuron_set: NeuronSet, universe: NeuronTable, seed: int = 0,
                  exclude_target: bool = True) -> NeuronSet:
    """As many neurons as ``neuron_set``, drawn uniformly from ``universe``."""
    inside = _membership(universe, neuron_set)
    pool = np.flatnonzero(~inside) if exclude_target else np.arange(len(universe))
    if pool.size < neuron_set.size:
        raise ValueError(f"universe has {pool.size} candidate neurons, need {neuron_set.size}")
    picked = np.random.default_rng(seed).choice(pool, size=neuron_set.size, replace=False)
    return NeuronSet.from_table(universe, picked, name=f"count-matched-seed{seed}")


def layer_matched(neuron_set: NeuronSet, universe: NeuronTable, seed: int = 0,
                  exclude_target: bool = True) -> NeuronSet:
    """The same number of neurons per (site, layer) as ``neuron_set``, drawn uniformly there.

    When a layer holds fewer non-target neurons than needed (a network can fill half of the
    last layer), all of them are taken and the shortfall is drawn from the nearest layers
    of the same site (deeper first on ties); this is logged, and the total count is kept.
    """
    inside = _membership(universe, neuron_set)
    rng = np.random.default_rng(seed)
    available = ~inside if exclude_target else np.ones(len(universe), dtype=bool)
    picked = []
    for (site, layer), count in neuron_set.layer_distribution().items():
        site_layers = np.unique(universe.layer[universe.site == site])
        # This layer first, then the others by distance (deeper first on ties).
        order = sorted(site_layers, key=lambda other: (abs(int(other) - layer), -int(other)))
        needed = count
        for other in order:
            rows = np.flatnonzero((universe.site == site) & (universe.layer == other) & available)
            take = min(needed, rows.size)
            if take:
                chosen = rng.choice(rows, size=take, replace=False)
                available[chosen] = False
                picked.append(chosen)
                needed -= take
            if other != layer and take:
                logger.info("layer-matched control: %d neuron(s) of layer %d drawn from layer %d", take, layer, other)
            if needed == 0:
                break
        if needed:
            raise ValueError(f"site {site}: not enough non-target neurons for {count} in layer {layer}")
    index = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    return NeuronSet.from_table(universe, index, name=f"layer-matched-seed{seed}")


def magnitude_matched(neuron_set: NeuronSet, statistics: ActivationStatistics, seed: int = 0,
                      n_candidates: int = 8, exclude_target: bool = True) -> NeuronSet:
    """Each target neuron swapped for a random one among the ``n_candidates`` free non-target
    neurons closest to it in mean absolute activation (without replacement: neurons taken
    for earlier targets are skipped, however far the walk must go).

    Parameters
    ----------
    statistics : ActivationStatistics
        Computed over a text (use the text the target set was found on, not held-out text).
    n_candidates : int
        How many of the nearest free neurons each pick is drawn from: larger gives more
        randomness and a looser match.
    """
    universe = statistics.neurons
    inside = _membership(universe, neuron_set)
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(~inside) if exclude_target else np.arange(len(universe))
    if pool.size < neuron_set.size:
        raise ValueError(f"universe has {pool.size} candidate neurons, need {neuron_set.size}")
    order = np.argsort(statistics.mean_abs[pool], kind="stable")
    pool_sorted = pool[order]
    pool_values = statistics.mean_abs[pool_sorted]
    taken = np.zeros(pool_sorted.size, dtype=bool)
    picked = []
    targets = np.flatnonzero(inside)
    for target in rng.permutation(targets):
        value = statistics.mean_abs[target]
        # Walk outwards from the target's rank, always to the closer free neighbour: the
        # first n_candidates reached are the free neurons nearest in value.
        below = int(np.searchsorted(pool_values, value)) - 1
        above = below + 1
        candidates: list[int] = []
        while len(candidates) < n_candidates and (below >= 0 or above < pool_sorted.size):
            while below >= 0 and taken[below]:
                below -= 1
            while above < pool_sorted.size and taken[above]:
                above += 1
            if below < 0 and above >= pool_sorted.size:
                break
            if above >= pool_sorted.size or (
                    below >= 0 and value - pool_values[below] <= pool_values[above] - value):
                candidates.append(below)
                below -= 1
            else:
                candidates.append(above)
                above += 1
        choice = candidates[int(rng.integers(len(candidates)))]
        taken[choice] = True
        picked.append(pool_sorted[choice])
    return NeuronSet.from_table(universe, np.array(picked, dtype=np.int64),
                                name=f"magnitude-matched-seed{seed}")


def matched_controls(
    neuron_set: NeuronSet,
    universe: NeuronTable,
    statistics: ActivationStatistics | None = None,
    kinds: Iterable[str] = ("count", "layer", "magnitude"),
    seeds: Iterable[int] = range(5),
) -> dict[str, list[NeuronSet]]:
    """Control sets of each kind over several seeds: ``{"count": [...], "layer": [...], ...}``.

    ``magnitude`` needs ``statistics`` (whose NeuronTable then replaces ``universe``).
    """
    makers = {
        "count": lambda s: count_matched(neuron_set, universe, seed=s),
        "layer": lambda s: layer_matched(neuron_set, universe, seed=s),
        "magnitude": lambda s: magnitude_matched(neuron_set, statistics, seed=s),
    }
    out = {}
    seeds = list(seeds)
    for kind in kinds:
        if kind not in makers:
            raise ValueError(f"unknown control kind {kind!r}; expected count, layer or magnitude")
        if kind == "magnitude" and statistics is None:
            raise ValueError("magnitude-matched controls need activation statistics")
        out[kind] = [makers[kind](seed) for seed in seeds]
    return out
