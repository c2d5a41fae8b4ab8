"""Neuron sets and the context managers that edit them during a forward pass (studies B, A).

A :class:`NeuronSet` names artificial neurons by site key (``"L27.mlp.out"``) and unit index.
The context managers :func:`lesion` (set to 0), :func:`keep_only` (set every other neuron
of the same sites to 0), :func:`scale` (x c) and :func:`add` (+ c) are all built on
:func:`brainalign.models.sites.site_hooks`, the package's one hook mechanism, so they
compose with each other (nested contexts apply in the order they were entered) and with
recording (:func:`brainalign.record.record_story` inside a lesion context records the
lesioned model, and the edit in force is part of the recording's settings, so a recording
of another edit is never reused: :func:`brainalign.models.sites.edit_in_force`) and with
evaluation (:mod:`brainalign.interventions.evaluation`). Hooks are removed when a context
exits, also on exceptions. Sites are those of the model's declared layout, if it has one
(:func:`brainalign.models.sites.declare_layout`), as for recordings.

:func:`activation_statistics` streams a text through the model and keeps, per neuron, the
mean activation and mean absolute activation, which the magnitude-matched controls of
:mod:`brainalign.interventions.controls` need. Leans on torch only.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Mapping

import numpy as np
import torch

from brainalign.models.sites import (MOE_SITE_NAMES, SITE_NAMES, Site, edit_in_force,
                                     resolve_sites, site_hooks)
from brainalign.record.neurons import NeuronTable

_KEY_PATTERN = re.compile(r"^L(\d+)\.(.+)$")


#: Sites a neuron set can name: every block's sites, and the router weights of
#: mixture-of-experts blocks (one unit per expert; editing them re-weights the experts
#: already chosen, see :mod:`brainalign.models.sites`).
EDITABLE_SITE_NAMES = SITE_NAMES + MOE_SITE_NAMES


def parse_site_key(key: str) -> tuple[int, str]:
    """``"L03.mlp.out"`` -> ``(3, "mlp.out")``; raises ValueError for anything else."""
    match = _KEY_PATTERN.match(key)
    if match is None or match.group(2) not in EDITABLE_SITE_NAMES:
        raise ValueError(
            f"bad site key {key!r}: expected 'L<layer>.<site>' with site one of "
            f"{list(EDITABLE_SITE_NAMES)}, e.g. 'L03.mlp.out'"
        )
    return int(match.group(1)), match.group(2)


def site_key(layer: int, site_name: str) -> str:
    """The key of a site, e.g. ``site_key(3, "mlp.out") == "L03.mlp.out"``."""
    return f"L{int(layer):02d}.{site_name}"


@dataclass(frozen=True)
class NeuronSet:
    """A set of artificial neurons: unit indices per site.

    Attributes
    ----------
    units : dict of str to ndarray of int
        Site key (``"L27.mlp.out"``) -> sorted unique unit indices at that site. Sites with
        no unit are dropped.
    name : str
        Label used in result tables (``"union"``, ``"random-count-seed0"``...).
    """

    units: Mapping[str, np.ndarray]
    name: str = ""

    def __post_init__(self):
        clean: dict[str, np.ndarray] = {}
        for key, index in self.units.items():
            layer, site = parse_site_key(key)
            raw = np.asarray(index)
            if raw.size and not (np.issubdtype(raw.dtype, np.integer) or (
                    np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.rint(raw)))):
                raise ValueError(f"site {key}: unit indices must be integers, got "
                                 f"{raw.ravel()[:5].tolist()}")
            index = np.unique(raw.astype(np.int64).ravel())
            if index.size and index[0] < 0:
                raise ValueError(f"site {key}: negative unit index {index[0]}; allowed: "
                                 "0 <= unit < the site's width")
            if index.size:
                # "L0.mlp.out" and "L00.mlp.out" name the same site: keep the padded key
                # (the one Site.key uses), merging duplicates
                padded = site_key(layer, site)
                clean[padded] = np.union1d(clean[padded], index) if padded in clean else index
        object.__setattr__(self, "units", dict(sorted(clean.items(), key=lambda kv: parse_site_key(kv[0]))))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_table(cls, neurons: NeuronTable, selection: np.ndarray | Iterable[int],
                   name: str = "") -> "NeuronSet":
        """The neurons of ``neurons`` picked by a boolean mask or integer indices.

        Parameters
        ----------
        neurons : NeuronTable, length n_neurons
        selection : ndarray of bool, shape (n_neurons,), or integer indices into it
        """
        selection = np.asarray(selection)
        if selection.dtype == bool:
            if selection.shape != (len(neurons),):
                raise ValueError(
                    f"boolean selection has shape {selection.shape}, expected ({len(neurons)},) "
                    "to match the NeuronTable"
                )
            selection = np.flatnonzero(selection)
        picked = neurons.select(selection.astype(np.int64))
        units: dict[str, list[int]] = {}
        for layer, site, unit in zip(picked.layer, picked.site, picked.unit):
            units.setdefault(site_key(layer, site), []).append(int(unit))
        return cls({k: np.array(v) for k, v in units.items()}, name=name)

    @classmethod
    def from_dict(cls, data: Mapping) -> "NeuronSet":
        """Inverse of :meth:`to_dict` (JSON-friendly).

        Raises
        ------
        ValueError
            When ``data`` is not ``{"name": ..., "units": {site key: [unit, ...]}}``.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("units"), Mapping):
            raise ValueError('expected a JSON object {"name": ..., "units": {"L27.mlp.out": '
                             f"[3, 17, ...]}}}}, got {_short(data)}")
        units = {}
        for key, value in data["units"].items():
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(u, int) and not isinstance(u, bool) for u in value):
                raise ValueError(f"units[{key!r}] = {_short(value)}; allowed: a list of "
                                 "integer unit indices")
            units[key] = np.asarray(value, dtype=np.int64)
        return cls(units, name=data.get("name", ""))

    def to_dict(self) -> dict:
        """``{"name": ..., "units": {site key: [unit, ...]}}`` for JSON."""
        return {"name": self.name, "units": {k: v.tolist() for k, v in self.units.items()}}

    def to_table(self) -> NeuronTable:
        """The neurons as a :class:`NeuronTable` (site order, then unit order)."""
        layers, sites, units = [], [], []
        for key, index in self.units.items():
            layer, site = parse_site_key(key)
            layers.append(np.full(index.size, layer, dtype=np.int32))
            sites.append(np.full(index.size, site, dtype=object))
            units.append(index.astype(np.int32))
        if not layers:
            return NeuronTable(np.zeros(0, np.int32), np.zeros(0, dtype=str), np.zeros(0, np.int32))
        return NeuronTable(np.concatenate(layers), np.concatenate(sites).astype(str),
                           np.concatenate(units))

    # -- set algebra and description ----------------------------------------------------
    def union(self, *others: "NeuronSet", name: str | None = None) -> "NeuronSet":
        """Neurons in this set or any of ``others``."""
        merged: dict[str, list[np.ndarray]] = {}
        for neuron_set in (self, *others):
            for key, index in neuron_set.units.items():
                merged.setdefault(key, []).append(index)
        return NeuronSet({k: np.concatenate(v) for k, v in merged.items()},
                         name=self.name if name is None else name)

    __or__ = union

    def difference(self, other: "NeuronSet", name: str | None = None) -> "NeuronSet":
        """Neurons in this set and not in ``other``."""
        return NeuronSet({k: np.setdiff1d(v, other.units.get(k, np.zeros(0, np.int64)))
                          for k, v in self.units.items()},
                         name=self.name if name is None else name)

    @property
    def size(self) -> int:
        """Number of neurons."""
        return int(sum(index.size for index in self.units.values()))

    def __len__(self) -> int:
        return self.size

    @property
    def site_keys(self) -> list[str]:
        return list(self.units)

    def layer_distribution(self) -> dict[tuple[str, int], int]:
        """Number of neurons per (site name, layer)."""
        out: dict[tuple[str, int], int] = {}
        for key, index in self.units.items():
            layer, site = parse_site_key(key)
            out[(site, layer)] = out.get((site, layer), 0) + int(index.size)
        return out

    def layer_histogram(self, n_layers: int) -> np.ndarray:
        """Neurons per layer (all sites together), shape (n_layers,)."""
        hist = np.zeros(n_layers, dtype=np.int64)
        for (_, layer), count in self.layer_distribution().items():
            hist[layer] += count
        return hist

    def sites(self, model: torch.nn.Module) -> list[Site]:
        """The model's :class:`Site` objects for this set's keys, checking unit ranges."""
        return _sites_for_keys(model, self.units, self.units)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _sites_for_keys(model: torch.nn.Module, keys: Iterable[str],
                    units: Mapping[str, np.ndarray]) -> list[Site]:
    wanted = [parse_site_key(k) for k in keys]
    sites = []
    for site_name in sorted({s for _, s in wanted}):
        layers = sorted({layer for layer, s in wanted if s == site_name})
        try:
            sites.extend(resolve_sites(model, [site_name], layers))
        except ValueError as err:
            named = [site_key(layer, site_name) for layer in layers]
            raise ValueError(f"neuron set site(s) {named}: {err}") from None
    bad = []
    for site in sites:
        index = units.get(site.key)
        if index is not None and index.size and index[-1] >= site.width:
            outside = index[index >= site.width]
            bad.append(f"site {site.key} has {site.width} units (allowed 0..{site.width - 1}) "
                       f"but the neuron set names unit(s) {outside[:5].tolist()}"
                       + (f" and {outside.size - 5} more" if outside.size > 5 else ""))
    if bad:
        raise ValueError("; ".join(bad))
    return sites


EditMode = Literal["zero", "keep_only", "scale", "add"]


@contextlib.contextmanager
def edit_neurons(
    model: torch.nn.Module,
    neuron_set: NeuronSet,
    mode: EditMode,
    value: float | None = None,
    universe: Iterable[str] | None = None,
) -> Iterator[NeuronSet]:
    """Edit the neurons of ``neuron_set`` at every token position while the context is open.

    Parameters
    ----------
    model : torch.nn.Module
    neuron_set : NeuronSet
    mode : {"zero", "keep_only", "scale", "add"}
        ``zero``: set them to 0 (lesion). ``keep_only``: set every *other* unit of the
        ``universe`` sites to 0. ``scale``: multiply by ``value``. ``add``: add ``value``.
    value : float
        The factor (scale) or constant (add); required for those modes (a default factor of
        0 would make a scale a lesion), refused for the others.
    universe : iterable of str, optional
        For ``keep_only``: the site names (``"mlp.out"``) or keys (``"L03.mlp.out"``) whose
        other units are zeroed. Default: every layer of each site name in the set.

    Yields
    ------
    NeuronSet
        The set being edited.
    """
    if mode not in ("zero", "keep_only", "scale", "add"):
        raise ValueError(f"mode must be 'zero', 'keep_only', 'scale' or 'add', got {mode!r}")
    if (mode in ("scale", "add")) != (value is not None):
        raise ValueError(f"mode {mode!r} takes a value (the factor of scale, the constant of "
                         "add)" if value is None else
                         f"value={value!r} is for mode 'scale' or 'add', not {mode!r}")
    if mode == "keep_only" and universe is None and neuron_set.size == 0:
        raise ValueError(f"keep_only of the empty neuron set {neuron_set.name!r} without a "
                         "universe: the sites to silence come from the set's own sites, so "
                         "nothing would be edited; pass universe=[\"mlp.out\"] (every unit of "
                         "those sites zeroed) or a non-empty set")
    if mode == "keep_only":
        names = sorted({parse_site_key(k)[1] for k in neuron_set.units}) if universe is None else list(universe)
        keys: list[str] = []
        for name in names:
            if name in EDITABLE_SITE_NAMES:
                keys.extend(s.key for s in resolve_sites(model, [name]))
            else:
                keys.append(site_key(*parse_site_key(name)))
        sites = _sites_for_keys(model, keys, neuron_set.units)
    else:
        sites = neuron_set.sites(model)
    index_cpu = {key: torch.as_tensor(index) for key, index in neuron_set.units.items()}
    cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    def unit_index(site: Site, device: torch.device) -> torch.Tensor:
        if (site.key, device) not in cache:
            index = index_cpu.get(site.key, torch.zeros(0, dtype=torch.long))
            if mode == "keep_only":
                drop = torch.ones(site.width, dtype=torch.bool)
                drop[index] = False
                index = torch.nonzero(drop).ravel()
            cache[(site.key, device)] = index.to(device)
        return cache[(site.key, device)]

    def callback(site: Site, tensor: torch.Tensor) -> torch.Tensor:
        index = unit_index(site, tensor.device)
        if mode in ("zero", "keep_only"):
            return tensor.index_fill(-1, index, 0.0)
        picked = tensor.index_select(-1, index)
        picked = picked * value if mode == "scale" else picked + value
        return tensor.index_copy(-1, index, picked)

    description = {"kind": "neurons", "mode": mode, "set": neuron_set.name,
                   "n_units": neuron_set.size, "units_sha256": _units_hash(neuron_set.units)}
    if mode in ("scale", "add"):
        description["value"] = float(value)
    if mode == "keep_only":
        description["universe"] = sorted(s.key for s in sites)
    with edit_in_force(model, description), site_hooks(model, sites, callback):
        yield neuron_set


def _units_hash(units: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a set's site keys and unit indices (what identifies the edited units)."""
    digest = hashlib.sha256()
    for key, index in units.items():
        digest.update(key.encode() + b"\0" + np.asarray(index, dtype="<i8").tobytes())
    return digest.hexdigest()


def lesion(model: torch.nn.Module, neuron_set: NeuronSet):
    """Context manager: the set's neurons read 0 at every position (study B's lesion)."""
    return edit_neurons(model, neuron_set, "zero")


def keep_only(model: torch.nn.Module, neuron_set: NeuronSet, universe: Iterable[str] | None = None):
    """Context manager: every neuron of the ``universe`` sites outside the set reads 0."""
    return edit_neurons(model, neuron_set, "keep_only", universe=universe)


def scale(model: torch.nn.Module, neuron_set: NeuronSet, factor: float):
    """Context manager: the set's neurons are multiplied by ``factor``."""
    return edit_neurons(model, neuron_set, "scale", value=factor)


def add(model: torch.nn.Module, neuron_set: NeuronSet, constant: float):
    """Context manager: ``constant`` is added to the set's neurons (study B's amplification)."""
    return edit_neurons(model, neuron_set, "add", value=constant)


@dataclass
class ActivationStatistics:
    """Per-neuron activation statistics over a text.

    Attributes
    ----------
    neurons : NeuronTable, length n_neurons
    mean : ndarray, shape (n_neurons,)
        Mean activation over the scored tokens.
    mean_abs : ndarray, shape (n_neurons,)
        Mean absolute activation (the "magnitude" of magnitude-matched controls).
    n_tokens : int
    """

    neurons: NeuronTable
    mean: np.ndarray
    mean_abs: np.ndarray
    n_tokens: int

    @classmethod
    def from_activations(cls, activations: np.ndarray, neurons: NeuronTable) -> "ActivationStatistics":
        """Statistics of an in-memory (n_tokens, n_neurons) matrix (e.g. from
        :func:`token_activations`), accumulated in float64."""
        if activations.ndim != 2 or activations.shape[1] != len(neurons):
            raise ValueError(f"activations must be (n_tokens, {len(neurons)}), got {activations.shape}")
        mean = np.zeros(len(neurons))
        mean_abs = np.zeros(len(neurons))
        for start in range(0, activations.shape[0], 1024):
            block = activations[start:start + 1024].astype(np.float64)
            mean += block.sum(0)
            mean_abs += np.abs(block).sum(0)
        n = max(activations.shape[0], 1)
        return cls(neurons, mean / n, mean_abs / n, int(activations.shape[0]))


@torch.no_grad()
def _stream_sites(model: torch.nn.Module, token_ids: torch.Tensor, sites: list[Site], window: int,
                  on_chunk: Callable[[Site, int, torch.Tensor], None],
                  prefix_ids: tuple[int, ...] = ()) -> None:
    """Run ``token_ids`` through the model in non-overlapping windows of ``window`` tokens
    (each after ``prefix_ids``), calling ``on_chunk(site, start, values (n_window_tokens,
    width))`` for every site; the prefix positions are left out."""
    if window < 1:
        raise ValueError(f"window must be >= 1 token, got {window}")
    device = next(model.parameters()).device
    prefix = torch.tensor(prefix_ids, dtype=torch.long)
    state = {"start": 0}
    with site_hooks(model, sites, lambda site, tensor: on_chunk(site, state["start"], tensor[0, prefix.numel():])):
        for start in range(0, token_ids.numel(), window):
            state["start"] = start
            model(input_ids=torch.cat([prefix, token_ids[start:start + window]])[None].to(device))


def activation_statistics(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    site_names: Iterable[str] = ("mlp.out",),
    layers: Iterable[int] | None = None,
    window: int = 256,
    prefix_ids: tuple[int, ...] = (),
) -> ActivationStatistics:
    """Stream ``token_ids`` through the model in non-overlapping windows and keep running
    per-neuron sums (nothing of size n_tokens x n_neurons is held).

    Parameters
    ----------
    token_ids : LongTensor, shape (n_tokens,)
    window : int
        Tokens per forward pass.
    prefix_ids : tuple of int
        Tokens put before every window (e.g. ``<bos>``), not counted.
    """
    token_ids = torch.as_tensor(token_ids).ravel()
    sites = resolve_sites(model, list(site_names), layers)
    device = next(model.parameters()).device
    sums = {s.key: torch.zeros(s.width, dtype=torch.float64, device=device) for s in sites}
    abs_sums = {s.key: torch.zeros(s.width, dtype=torch.float64, device=device) for s in sites}

    def on_chunk(site: Site, start: int, values: torch.Tensor) -> None:
        values = values.double()
        sums[site.key] += values.sum(0)
        abs_sums[site.key] += values.abs().sum(0)

    _stream_sites(model, token_ids, sites, window, on_chunk, prefix_ids)
    n = max(token_ids.numel(), 1)
    table = NeuronTable.from_sites((s.layer, s.name, s.width) for s in sites)
    mean = np.concatenate([(sums[s.key] / n).cpu().numpy() for s in sites])
    mean_abs = np.concatenate([(abs_sums[s.key] / n).cpu().numpy() for s in sites])
    return ActivationStatistics(table, mean, mean_abs, int(token_ids.numel()))


def token_activations(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    site_names: Iterable[str] = ("mlp.out",),
    layers: Iterable[int] | None = None,
    window: int = 256,
    prefix_ids: tuple[int, ...] = (),
) -> tuple[np.ndarray, NeuronTable]:
    """Every token's value at every neuron (study B's input to ICA: a token is a time point).

    Windows do not overlap, so a token's context is the part of its window before it (after
    ``prefix_ids``, e.g. :func:`brainalign.interventions.evaluation.text_prefix`, which are
    not returned).

    Returns
    -------
    activations : ndarray, shape (n_tokens, n_neurons), float32
        Filled window by window (the only array of that size).
    neurons : NeuronTable, length n_neurons
    """
    token_ids = torch.as_tensor(token_ids).ravel()
    sites = resolve_sites(model, list(site_names), layers)
    offsets = np.cumsum([0] + [s.width for s in sites])
    column = {s.key: offsets[i] for i, s in enumerate(sites)}
    out = np.empty((token_ids.numel(), int(offsets[-1])), dtype=np.float32)

    def on_chunk(site: Site, start: int, values: torch.Tensor) -> None:
        out[start:start + values.shape[0], column[site.key]:column[site.key] + site.width] = (
            values.float().cpu().numpy())

    _stream_sites(model, token_ids, sites, window, on_chunk, prefix_ids)
    return out, NeuronTable.from_sites((s.layer, s.name, s.width) for s in sites)
