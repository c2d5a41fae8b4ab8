"""Map pattern encoding maps onto functional brain networks, with spatial nulls.

This module owns :func:`map_patterns`, the :class:`NetworkMapping` result and the helpers
that pass a pattern's network on to the neurons of its subgroup. For every pattern map
(one map per pattern, e.g. :func:`brainalign.encoding.pattern_maps` of an encoding
model, or z maps over vertices, voxels or ROIs) and every network of an
:class:`~brainalign.networks.atlases.Atlas` it computes:

- ``correlation``: Pearson correlation between the map and the network's indicator (or
  probability) map, over the targets with data;
- with a ``significant`` mask (e.g. FDR-significant targets of the encoding model):
  ``dice`` = 2|S n N| / (|S| + |N|), ``jaccard`` = |S n N| / |S u N|, and ``enrichment``
  = (|S n N| / |S|) / (|N| / n_targets), the share of significant targets inside the
  network divided by the network's share of all targets (1 = chance);

and p-values of each statistic under a spatial null from :mod:`.nulls` (spin test of the
network maps on fsaverage meshes; phase-randomised surrogates of the pattern maps on
volumes, whose surrogate significant set is the same number of top-valued targets;
permutation for ROIs), or, for the correlation, against the maps of time-reversed, shifted
patterns (``null="shift"`` with ``spatial=``, a
:class:`~brainalign.networks.spatial.SpatialShiftTest`). The spatial nulls of
:mod:`.nulls` ask whether a map looks like a network; on network-organised background
activity every map does, whatever its pattern, so only the shift null keeps its
false-positive rate at alpha there (it is the study pipeline's default). The null statistics are kept, so that p-values resolve below
1 / (n_perm + 1) where few null draws exceed the observation: a generalised Pareto fit to
the null's tail (:func:`brainalign.encoding.tail.permutation_p_values`; ``tail=``), whose
method per test is recorded (``p_method`` and the ``inference`` sidecar block).

Multiple comparisons, one pattern at a time: each pattern's p-values are FDR-corrected
over the networks of the atlas (``mne.stats.fdr_correction``, Benjamini-Hochberg, one
family per pattern), so whether a pattern gets a network never depends on how many other
patterns do. For a pattern that drives no network this bounds the chance that it is
assigned one at ``alpha``.

Assignment: a pattern goes to the network with the largest statistic (its absolute value
when ``alternative="two-sided"``) among those that pass (``passes``: corrected p < alpha
and a positive statistic), else to ``"none"``. Its confidence is 1 - p_fdr of that best
network (reported for "none" too, where it is below 1 - alpha; with a temporal test, the
larger p_fdr of the two).

A spatial null cannot tell a pattern that drives a network from one that merely
correlates with the pattern that does, or with network-shaped background fluctuations.
Given ``temporal=`` (a :class:`~brainalign.networks.temporal.TemporalTest`: the pattern's
unique held-out r on each network's mean signal against circular shifts of itself), the
mapping also holds the statistic ``unique_r`` with its p-values, corrected the same way,
and a network passes only where both tests pass (an intersection-union test: its level
stays alpha).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from brainalign.encoding.maps import DelayedCoefficients
from brainalign.encoding.tail import permutation_p_values
from brainalign.networks.atlases import Atlas
from brainalign.networks.nulls import (fsaverage_sphere, permutation_indices,
                                       phase_randomized_surrogates, spin_indices)
from brainalign.networks.spatial import SpatialShiftTest
from brainalign.networks.temporal import TemporalTest
from brainalign.provenance import provenance_block

#: Statistics computed for each pattern x network pair (the last three need `significant`).
STATISTICS = ("correlation", "dice", "jaccard", "enrichment")
NULLS = ("auto", "spin", "volume", "permutation", "shift")


@dataclass
class NetworkMapping:
    """Pattern x network statistics, spatial-null p-values and each pattern's network.

    Attributes
    ----------
    patterns : list of str
        Pattern names (n_patterns,).
    networks : list of str
        Network names (n_networks,).
    statistics : dict of str -> ndarray (n_patterns, n_networks)
        Observed statistics (see :data:`STATISTICS`; ``unique_r`` with a temporal test).
    p_values : dict of str -> ndarray (n_patterns, n_networks)
        One-sided p-values of each statistic under its null (1 where the test is
        undefined, e.g. an empty network or a NaN temporal p-value).
    p_fdr : dict of str -> ndarray (n_patterns, n_networks)
        Benjamini-Hochberg adjusted p-values, one family per pattern (its networks).
    statistic : str
        Statistic used for the assignment.
    assigned : list of str
        Each pattern's network, or ``"none"``.
    confidence : ndarray (n_patterns,)
        1 - p_fdr of the best network (the larger of the spatial and temporal p_fdr when
        the temporal test is required).
    null : str
        Null model used: "spin", "volume" or "permutation".
    n_perm : int
        Null draws.
    alpha : float
        FDR level of the assignment.
    atlas : dict
        ``Atlas.describe()`` of the atlas.
    provenance : dict
    temporal : dict
        ``TemporalTest.describe()`` when the temporal test was required (statistic
        ``unique_r``), else empty.
    passes : dict of str -> ndarray of bool (n_patterns, n_networks)
        ``"spatial"``: the assignment statistic's p_fdr < alpha with a positive statistic;
        ``"temporal"`` (with a temporal test): the same for ``unique_r``; ``"assigned"``:
        the pattern's assigned network (at most one True per row), the passing network
        (of every required test) with the largest statistic.
    p_method : dict of str -> ndarray of str (n_patterns, n_networks)
        How each p-value was obtained (``"empirical"``, ``"gpd"``, ...; see
        :class:`~brainalign.encoding.tail.PermutationPValues`).
    inference : dict
        The p-value method, its settings and counts per statistic, and the correction
        and assignment rules, in words (written to every sidecar).
    """

    patterns: list[str]
    networks: list[str]
    statistics: dict[str, np.ndarray]
    p_values: dict[str, np.ndarray]
    p_fdr: dict[str, np.ndarray]
    statistic: str
    assigned: list[str]
    confidence: np.ndarray
    null: str
    n_perm: int
    alpha: float
    atlas: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    temporal: dict[str, Any] = field(default_factory=dict)
    passes: dict[str, np.ndarray] = field(default_factory=dict)
    p_method: dict[str, np.ndarray] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)

    @property
    def assigned_index(self) -> np.ndarray:
        """0-based network index per pattern, -1 for "none" (n_patterns,)."""
        return np.array([self.networks.index(a) if a in self.networks else -1
                         for a in self.assigned])

    def table(self) -> pd.DataFrame:
        """Long table: one row per pattern x network; statistic, p, p_fdr and p_method
        columns per statistic, and one ``passes_<test>`` column per pass mask."""
        pattern, network = np.meshgrid(self.patterns, self.networks, indexing="ij")
        columns: dict[str, Any] = {"pattern": pattern.ravel(), "network": network.ravel()}
        for name, values in self.statistics.items():
            columns[name] = values.ravel()
            columns[f"p_{name}"] = self.p_values[name].ravel()
            columns[f"p_fdr_{name}"] = self.p_fdr[name].ravel()
            if name in self.p_method:
                columns[f"p_method_{name}"] = self.p_method[name].ravel()
        for test, mask in self.passes.items():
            columns[f"passes_{test}"] = mask.ravel()
        return pd.DataFrame(columns)

    def matrix(self, statistic: str | None = None) -> pd.DataFrame:
        """Pattern x network matrix of one statistic (default: the assignment statistic)."""
        values = self.statistics[statistic or self.statistic]
        return pd.DataFrame(values, index=pd.Index(self.patterns, name="pattern"),
                            columns=pd.Index(self.networks, name="network"))

    def assignments(self) -> pd.DataFrame:
        """One row per pattern: network, confidence, statistic(s) and p_fdr at that network.

        For a "none" pattern the columns describe the network its confidence refers to:
        the one with the smallest p_fdr (of the weakest required test).
        """
        index = self.assigned_index
        rows = np.arange(len(self.patterns))
        best = np.where(index >= 0, index,
                        np.argmin(_pair_p_fdr(self.p_fdr, self.statistic), axis=1))
        columns = {"pattern": self.patterns, "network": self.assigned,
                   "confidence": self.confidence}
        for name in dict.fromkeys([self.statistic, "unique_r"]):
            if name in self.statistics:
                columns[name] = self.statistics[name][rows, best]
                columns[f"p_fdr_{name}"] = self.p_fdr[name][rows, best]
        return pd.DataFrame(columns)

    def to_tsv(self, path: str | Path) -> Path:
        """Write the long table to ``path`` and the assignments beside it, plus a sidecar.

        Files: ``<path>`` (pattern x network), ``<stem>_assignments.tsv`` and
        ``<stem>.json`` (settings, p-value method and provenance). Returns the table's path.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table().to_csv(path, sep="\t", index=False, float_format="%.6g")
        stem = path.name[:-4] if path.name.endswith(".tsv") else path.name
        self.assignments().to_csv(path.with_name(f"{stem}_assignments.tsv"), sep="\t",
                                  index=False, float_format="%.6g")
        path.with_name(f"{stem}.json").write_text(json.dumps(self._header(), indent=2,
                                                             default=str))
        return path

    def _header(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "null": self.null, "n_perm": self.n_perm,
                "alpha": self.alpha, "patterns": self.patterns, "networks": self.networks,
                "atlas": self.atlas, "temporal": self.temporal, "inference": self.inference,
                "provenance": self.provenance}

    def to_json(self, path: str | Path) -> Path:
        """Write everything (arrays as nested lists) to one JSON file; see :meth:`load`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = self._header()
        document.update({
            "assigned": self.assigned, "confidence": _json_array(self.confidence),
            "statistics": {k: _json_array(v) for k, v in self.statistics.items()},
            "p_values": {k: _json_array(v) for k, v in self.p_values.items()},
            "p_fdr": {k: _json_array(v) for k, v in self.p_fdr.items()},
            "passes": {k: np.asarray(v, dtype=bool).tolist() for k, v in self.passes.items()},
            "p_method": {k: np.asarray(v, dtype=str).tolist()
                         for k, v in self.p_method.items()}})
        path.write_text(json.dumps(document, indent=1, default=str, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NetworkMapping":
        """Read a mapping written by :meth:`to_json`."""
        doc = json.loads(Path(path).read_text())
        arrays = {key: {k: np.asarray(v, dtype=np.float64) for k, v in doc[key].items()}
                  for key in ("statistics", "p_values", "p_fdr")}
        return cls(doc["patterns"], doc["networks"], arrays["statistics"], arrays["p_values"],
                   arrays["p_fdr"], doc["statistic"], doc["assigned"],
                   np.asarray(doc["confidence"]), doc["null"], doc["n_perm"], doc["alpha"],
                   doc["atlas"], doc["provenance"], doc["temporal"],
                   {k: np.asarray(v, dtype=bool) for k, v in doc["passes"].items()},
                   {k: np.asarray(v, dtype=str) for k, v in doc["p_method"].items()},
                   doc["inference"])


def _json_array(values: np.ndarray) -> list:
    """Nested lists with NaN/inf as null (strict JSON; np.asarray(..., float) reads NaN)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, None).tolist()


# --------------------------------------------------------------------------- statistics

def _correlations(maps: np.ndarray, networks: np.ndarray, valid: np.ndarray,
                  maps_squared: np.ndarray | None = None) -> np.ndarray:
    """Pearson r of each map with each network over `valid` targets, (n_maps, n_networks).

    maps (n_maps, n_targets), networks (n_networks, n_targets), valid (n_targets,) bool.
    Sums are weighted by the valid mask so that no sub-array is copied per permutation;
    ``maps_squared`` (maps ** 2) may be passed to reuse it across permutations.
    """
    weight = valid.astype(np.float64)
    count = weight.sum()
    sum_x, sum_y = maps @ weight, networks @ weight
    squared = maps ** 2 if maps_squared is None else maps_squared
    sum_xx, sum_yy = squared @ weight, (networks ** 2) @ weight
    sum_xy = maps @ (networks * weight).T
    covariance = count * sum_xy - np.outer(sum_x, sum_y)
    variance_x = count * sum_xx - sum_x ** 2
    variance_y = count * sum_yy - sum_y ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return covariance / np.sqrt(np.outer(variance_x, variance_y))


def _overlaps(significant: np.ndarray, inside: np.ndarray, valid: np.ndarray
              ) -> dict[str, np.ndarray]:
    """Dice, Jaccard and enrichment of significant masks vs hard network masks.

    significant (n_maps, n_targets) float 0/1, inside (n_networks, n_targets) float 0/1.
    """
    weight = valid.astype(np.float64)
    n_valid = weight.sum()
    intersection = significant @ (inside * weight).T
    size_s = (significant @ weight)[:, None]
    size_n = (inside @ weight)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"dice": 2 * intersection / (size_s + size_n),
                "jaccard": intersection / (size_s + size_n - intersection),
                "enrichment": (intersection / size_s) / (size_n / n_valid)}


def _all_statistics(maps, significant, networks, inside, valid, maps_squared=None
                    ) -> dict[str, np.ndarray]:
    out = {"correlation": _correlations(maps, networks, valid, maps_squared)}
    if significant is not None:
        out.update(_overlaps(significant, inside, valid))
    return out


def _choose_null(null: str, atlas: Atlas) -> str:
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {null!r}")
    if null != "auto":
        return null
    if atlas.space.startswith("fsaverage"):
        return "spin"
    if atlas.grid_mask is not None:
        return "volume"
    return "permutation"


def _null_draws(maps: np.ndarray, significant: np.ndarray | None, networks: np.ndarray,
                inside: np.ndarray, valid: np.ndarray, atlas: Atlas, kind: str, n_perm: int,
                rng: np.random.Generator, sphere, device: str | None):
    """Yield the statistics of each null draw (dicts like :func:`_all_statistics`)."""
    if kind == "volume":
        if atlas.grid_mask is None:
            raise ValueError("null='volume' needs a volume atlas (with grid_mask)")
        # surrogate significant sets: the same number of top-valued targets of the surrogate
        n_significant = None if significant is None else significant.sum(axis=1).astype(int)
        for surrogate in phase_randomized_surrogates(maps, atlas.grid_mask, n_perm, rng,
                                                     device=device):
            surrogate_significant = None
            if n_significant is not None:
                rank = np.argsort(np.argsort(-surrogate, axis=1), axis=1)
                surrogate_significant = (rank < n_significant[:, None]).astype(np.float64)
            yield _all_statistics(surrogate, surrogate_significant, networks, inside, valid)
        return
    if kind == "spin":
        if sphere is None:
            sphere = fsaverage_sphere(atlas.space)
        n_mesh = len(sphere[0]) + len(sphere[1])
        vertices = (np.arange(atlas.n_targets) if atlas.surface_vertices is None
                    else atlas.surface_vertices)
        if vertices.max() >= n_mesh or (atlas.surface_vertices is None
                                        and n_mesh != atlas.n_targets):
            raise ValueError(f"sphere has {n_mesh} vertices, atlas has "
                             f"{atlas.n_targets} targets")
        # mesh vertex -> target position (-1: not a target, treated like medial wall)
        position = np.full(n_mesh, -1)
        position[vertices] = np.arange(atlas.n_targets)
        indices = position[spin_indices(sphere[0], sphere[1], n_perm, rng)[:, vertices]]
    else:
        indices = permutation_indices(atlas.n_targets, n_perm, rng)
    maps_squared = maps ** 2
    for index in indices:
        moved_valid = valid & (index >= 0) & valid[index]
        index = np.where(index >= 0, index, 0)
        yield _all_statistics(maps, significant, networks[:, index], inside[:, index],
                              moved_valid, maps_squared)


def _fdr_per_pattern(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values within each row (one family per pattern).

    p_values (n_patterns, n_networks), without NaN: mne would make a row with one NaN all
    NaN (map_patterns counts an undefined test as p = 1 first).
    """
    from mne.stats import fdr_correction

    return np.array([fdr_correction(row, alpha=alpha)[1] for row in p_values])


def _pair_p_fdr(p_fdr: dict[str, np.ndarray], statistic: str) -> np.ndarray:
    """Each pattern x network pair's evidence, its weakest test (n_patterns, n_networks):
    the spatial statistic's p_fdr, or the larger of it and ``unique_r``'s (temporal test)."""
    if "unique_r" in p_fdr:
        return np.maximum(p_fdr[statistic], p_fdr["unique_r"])
    return p_fdr[statistic]


def map_patterns(maps: np.ndarray, atlas: Atlas, significant: np.ndarray | None = None, *,
                 null: str = "auto", n_perm: int = 1000, statistic: str = "correlation",
                 alternative: str = "greater", alpha: float = 0.05, tail: str = "gpd",
                 pattern_names: Sequence[str] | None = None,
                 sphere: tuple[np.ndarray, np.ndarray] | None = None,
                 threshold: float = 0.5, device: str | None = None,
                 temporal: TemporalTest | None = None,
                 spatial: SpatialShiftTest | None = None,
                 random_state: int | np.random.Generator | None = 0) -> NetworkMapping:
    """Compare each pattern's brain map with each network of an atlas.

    Parameters
    ----------
    maps : ndarray, shape (n_patterns, n_targets)
        One brain map per pattern (e.g. ``brainalign.encoding.pattern_maps(result)``, or
        z or t values) over the same targets as ``atlas`` (vertices L then R, masked
        voxels in C order, or ROIs). Non-finite values mark targets without data; they
        are left out. An encoding model's raw coefficients (``EncodingResult.coef``, one
        row per delay and feature) are refused.
    atlas : Atlas
        Network atlas in the maps' space (see :func:`~brainalign.networks.load_atlas`).
    significant : ndarray of bool, shape (n_patterns, n_targets) or (n_targets,), optional
        Targets significant after FDR correction (e.g. ``EncodingResult.p_fdr < .05``
        per pattern); enables dice, jaccard and enrichment.
    null : {"auto", "spin", "volume", "permutation", "shift"}
        Spatial null (see :mod:`brainalign.networks.nulls`). ``"auto"``: spin on fsaverage
        meshes, phase-randomised surrogates on volumes, permutation otherwise.
        ``"shift"``: the correlation and its p-values come from ``spatial`` (maps of
        time-shifted patterns; ``n_perm`` is then its number of shifts).
    n_perm : int
        Null draws (rotations, surrogates or permutations). The per-pattern FDR needs
        p-values below ``alpha / n_networks``; 1000 draws resolve that empirically for
        up to 50 networks at alpha .05, and the tail fit refines it.
    statistic : {"correlation", "dice", "jaccard", "enrichment"}
        Statistic used to assign patterns to networks.
    alternative : {"greater", "two-sided"}
        "greater" tests for a positive association; "two-sided" compares absolute values
        (for maps whose sign is arbitrary, e.g. ICA components).
    alpha : float
        FDR level of the assignment (per pattern, over its networks).
    tail : {"gpd", "empirical"}
        p-values: generalised Pareto tail where few null draws exceed the observation,
        or the plain count (see :func:`brainalign.encoding.tail.permutation_p_values`).
    pattern_names : sequence of str, optional
        Default ``pattern_000`` ...
    sphere : (left, right) ndarrays, optional
        Sphere coordinates for the spin test on meshes other than fsaverage5/4/3.
    threshold : float
        Probabilistic atlases: weight above which a target is inside a network for the
        overlap statistics.
    device : str, optional
        Torch device for the volume null's FFTs (e.g. "cuda"); None: numpy on the CPU.
        Use ``"cuda" if torch.cuda.is_available() else None`` to take a GPU when present.
    temporal : TemporalTest, optional
        From :func:`~brainalign.networks.temporal.temporal_network_test` on the same
        patterns and atlas: a network then passes only where its test passes too.
    spatial : SpatialShiftTest, optional
        From :func:`~brainalign.networks.spatial.spatial_shift_test` on the same patterns
        and atlas; required by, and only used with, ``null="shift"``.
    random_state : int, Generator or None
        Seed of the null.

    Returns
    -------
    NetworkMapping
    """
    if isinstance(maps, DelayedCoefficients):
        raise ValueError(
            f"maps is an encoding model's coefficient matrix ({maps.shape[0]} rows, one per "
            f"FIR delay and feature), not one map per pattern; pass "
            f"brainalign.encoding.pattern_maps(result, band=...), which sums each pattern's "
            f"coefficients over its delays")
    maps = np.atleast_2d(np.asarray(maps, dtype=np.float64))
    if maps.shape[1] != atlas.n_targets:
        raise ValueError(f"maps have {maps.shape[1]} targets but atlas {atlas.name!r} in "
                         f"space {atlas.space!r} has {atlas.n_targets}; load the atlas in "
                         f"the maps' space (load_atlas(..., target=masker))")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if statistic != "correlation" and significant is None:
        raise ValueError(f"statistic={statistic!r} needs the `significant` mask")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    names = list(pattern_names) if pattern_names is not None else [
        f"pattern_{k:03d}" for k in range(len(maps))]
    if len(names) != len(maps):
        raise ValueError(f"{len(names)} pattern names for {len(maps)} maps")
    shape = (len(maps), atlas.n_networks)
    if temporal is not None and temporal.p_values.shape != shape:
        raise ValueError(f"temporal test is {temporal.p_values.shape} (patterns x networks) "
                         f"but the mapping is {shape}")
    kind = _choose_null(null, atlas)
    if (kind == "shift") != (spatial is not None):
        raise ValueError("null='shift' and spatial= (a SpatialShiftTest) go together; got "
                         f"null={null!r} and spatial={type(spatial).__name__}")
    if spatial is not None:
        if spatial.p_values.shape != shape:
            raise ValueError(f"spatial test is {spatial.p_values.shape} (patterns x networks) "
                             f"but the mapping is {shape}")
        if statistic != "correlation" or significant is not None:
            raise ValueError("null='shift' tests the correlation only: use "
                             "statistic='correlation' and no significant mask")
        if spatial.alternative != alternative:
            raise ValueError(f"the spatial test is {spatial.alternative!r}, the mapping "
                             f"{alternative!r}")
        n_perm = spatial.n_shifts

    valid = np.all(np.isfinite(maps), axis=0)
    if atlas.medial_wall is not None:
        valid &= ~atlas.medial_wall
    maps = np.where(valid, maps, 0.0)
    maps -= maps[:, valid].mean(axis=1, keepdims=True)        # conditioning of the sums
    if significant is not None:
        significant = np.broadcast_to(np.asarray(significant, dtype=bool), maps.shape)
        significant = significant.astype(np.float64)
    networks = atlas.indicators()
    inside = (networks > threshold).astype(np.float64) if atlas.probabilistic else networks

    def magnitude(values: np.ndarray) -> np.ndarray:
        return np.abs(values) if alternative == "two-sided" else values

    p_values, p_method, described = {}, {}, {}
    if spatial is not None:
        observed = {"correlation": np.asarray(spatial.statistic, dtype=np.float64)}
        p_values["correlation"] = np.asarray(spatial.p_values, dtype=np.float64)
        p_method["correlation"] = np.asarray(spatial.p_method, dtype=str)
        described["correlation"] = spatial.p_value_method
    else:
        observed = _all_statistics(maps, significant, networks, inside, valid)
        rng = np.random.default_rng(random_state)
        null_statistics = {name: np.empty((n_perm,) + shape) for name in observed}
        for draw, values in enumerate(_null_draws(maps, significant, networks, inside, valid,
                                                  atlas, kind, n_perm, rng, sphere, device)):
            for name, value in values.items():
                null_statistics[name][draw] = value
        for name, values in observed.items():
            tested = permutation_p_values(magnitude(values), magnitude(null_statistics[name]),
                                          tail=tail)
            p_values[name] = tested.p_values
            p_method[name] = tested.method
            described[name] = tested.describe()
    # the settings are the same for every statistic; the counts per method are not
    inference = {"p_values": {**described[statistic], "n_tests_by_method": {
                     name: value["n_tests_by_method"] for name, value in described.items()}},
                 "correction": "Benjamini-Hochberg FDR over the networks of each pattern "
                               "(mne.stats.fdr_correction; one family per pattern)",
                 "assignment": "the network with the largest statistic among those passing "
                               "every required test (p_fdr < alpha, positive statistic)"}
    if temporal is not None:
        observed["unique_r"] = np.asarray(temporal.statistic, dtype=np.float64)
        p_values["unique_r"] = np.asarray(temporal.p_values, dtype=np.float64)
        p_method["unique_r"] = np.asarray(temporal.p_method, dtype=str)
    # an undefined test (NaN p: empty network, constant map, ...) counts as p = 1, in the
    # spatial, shift and temporal p-values alike
    p_values = {name: np.where(np.isnan(p), 1.0, p) for name, p in p_values.items()}
    p_fdr = {name: _fdr_per_pattern(p, alpha) for name, p in p_values.items()}

    score = np.nan_to_num(magnitude(observed[statistic]), nan=-np.inf)
    passes = {"spatial": (p_fdr[statistic] < alpha) & (score > 0)}
    if temporal is not None:
        passes["temporal"] = (p_fdr["unique_r"] < alpha) & (observed["unique_r"] > 0)
    p_pair = _pair_p_fdr(p_fdr, statistic)
    passing = np.logical_and.reduce(list(passes.values()))
    has_network = passing.any(axis=1)
    # the best passing network, else (for the confidence of "none") the best-supported one
    best = np.where(has_network, np.argmax(np.where(passing, score, -np.inf), axis=1),
                    np.argmin(p_pair, axis=1))
    rows = np.arange(len(maps))
    assigned = [atlas.labels[b] if has else "none" for b, has in zip(best, has_network)]
    passes["assigned"] = np.zeros(shape, dtype=bool)
    passes["assigned"][rows[has_network], best[has_network]] = True
    confidence = 1.0 - p_pair[rows, best]
    provenance = provenance_block(stage="networks.map_patterns", null=kind, n_perm=n_perm,
                                  statistic=statistic, alternative=alternative, alpha=alpha,
                                  tail=tail, threshold=threshold,
                                  random_state=str(random_state),
                                  n_valid_targets=int(valid.sum()),
                                  temporal=None if temporal is None else temporal.describe(),
                                  spatial=None if spatial is None else spatial.describe())
    return NetworkMapping(names, list(atlas.labels), observed, p_values, p_fdr, statistic,
                          assigned, confidence, kind, n_perm, alpha, atlas.describe(),
                          provenance, {} if temporal is None else temporal.describe(),
                          passes, p_method, inference)


# --------------------------------------------------------------------------- subgroups

def subgroup_networks(mapping: NetworkMapping, subgroup: np.ndarray,
                      layer: np.ndarray | None = None) -> pd.DataFrame:
    """Each neuron inherits the network of its subgroup's pattern.

    Parameters
    ----------
    mapping : NetworkMapping
        Mapping whose pattern ``k`` is subgroup ``k`` (as in ``Patterns.subgroup``).
    subgroup : ndarray of int, shape (n_neurons,)
        Pattern index of each neuron; negative values mean no subgroup.
    layer : ndarray of int, shape (n_neurons,), optional
        Layer of each neuron (``NeuronTable.layer``), copied into the table.

    Returns
    -------
    DataFrame with one row per neuron: neuron, subgroup, pattern, network, confidence
    (and layer).
    """
    subgroup = np.asarray(subgroup, dtype=np.int64)
    if subgroup.size and subgroup.max() >= len(mapping.patterns):
        raise ValueError(f"subgroup index {int(subgroup.max())} but the mapping has "
                         f"{len(mapping.patterns)} patterns")
    has = subgroup >= 0
    safe = np.where(has, subgroup, 0)
    table = pd.DataFrame({
        "neuron": np.arange(len(subgroup)), "subgroup": subgroup,
        "pattern": np.where(has, np.asarray(mapping.patterns, dtype=object)[safe], "none"),
        "network": np.where(has, np.asarray(mapping.assigned, dtype=object)[safe], "none"),
        "confidence": np.where(has, mapping.confidence[safe], np.nan)})
    if layer is not None:
        table.insert(1, "layer", np.asarray(layer))
    return table


def layer_network_composition(neuron_table: pd.DataFrame, networks: Sequence[str]
                              ) -> pd.DataFrame:
    """Layer x network neuron counts from :func:`subgroup_networks` output (with layer).

    Columns are the atlas networks then ``"none"``; rows are layers in increasing order.
    """
    if "layer" not in neuron_table:
        raise ValueError("the neuron table has no 'layer' column: pass layer= to "
                         "subgroup_networks")
    columns = list(networks) + ["none"]
    counts = pd.crosstab(neuron_table["layer"], pd.Categorical(neuron_table["network"],
                                                               categories=columns),
                         dropna=False)
    counts.columns = pd.Index(columns, name="network")
    return counts
