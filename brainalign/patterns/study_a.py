"""Study A: representative temporal patterns (atoms) of neuron time courses, and subgroups.

Following Sun et al. (2024), the (TR x neuron) matrix of the *training* stories is
decomposed into K atoms, representative time courses, and a sparse code per neuron::

    data (n_tr, n_neurons)  ~=  atoms (n_tr, K) @ loadings (K, n_neurons)

A neuron's subgroup is the atom with the largest absolute loading, and its support is the
set of atoms with a non-zero loading.

Atom regressors: :meth:`Patterns.transform` is the one way to get atom time courses on
any TRs (the least-squares projection of the standardised neuron time courses on the
loadings), on the fitting TRs and on held-out TRs alike. ``Patterns.atoms`` is the fitted
dictionary itself, defined on the fitting TRs only (k-means centroids equal ``transform``
there; dictionary and ICA atoms come close). Inside cross-validation,
:class:`AtomTransformer` fits atoms on each fold's training rows
(``fit_encoding(..., preprocessing=AtomTransformer(64))`` or a :class:`~brainalign.encoding.Band`). The decomposition is sparse dictionary learning by
default (:class:`~brainalign.patterns.dictionary.DictionaryLearning`: atoms over time,
L1-sparse codes per neuron, codes by batched FISTA); k-means (atom = centroid time course,
loading = cluster membership) and spatial ICA (atom = mixing time course, loading =
unit-variance neuron map) are offered for comparison. Signs are fixed so that an atom is
the time course its neurons share: a dictionary atom's own subgroup has a positive median
loading, an ICA neuron map a positive skew (a mapping that tests for a positive relation
to a network would otherwise meet mirror-image maps of arbitrary atoms).

What this module adds around the estimators:

- a guard: atoms are fitted on the runs named in ``train_runs`` only, and
  :meth:`Patterns.assert_not_fit_on` refuses held-out runs later;
- neuron standardisation over the training TRs (zero mean, unit L2 norm by default, so
  codes are in correlation units and ``alpha`` is comparable across data sets);
- composition of subgroups by layer and site; stability across seeds and split halves
  (``fit_atoms(stability_seeds=..., split_half=True)``, computed by
  :mod:`brainalign.patterns.stability`, which builds on this module and is imported
  lazily here); consensus atoms averaged over several fits (``fit_atoms(consensus_fits=R)``,
  :mod:`brainalign.patterns.consensus`); choice of K by cross-validated encoding score through
  :func:`brainalign.encoding.fit_encoding`, optionally restricted to stable K;
- npz + JSON storage.

Data are streamed onto the device one block of neurons at a time (memory maps welcome),
and the device holds exactly one standardised copy, shaped (n_neurons, n_train_tr).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from brainalign.patterns.consensus import consensus_decomposition, consensus_seeds
from brainalign.patterns.dictionary import DictionaryLearning
from brainalign.patterns.ica import FastICA
from brainalign.patterns.kmeans import KMeans
from brainalign.patterns.streaming import (NeuronBlocks, default_chunk_rows, resolve_device,
                                           row_chunks, row_index)
from brainalign.provenance import config_hash, provenance_block
from brainalign.record.neurons import NeuronTable
from brainalign.timecourse.delays import DEFAULT_DELAYS

logger = logging.getLogger(__name__)

#: What fitted atoms are, beyond the settings: 2 since dictionary atoms have a fixed sign
#: (their subgroup's median loading > 0; before, the fit's arbitrary one). Part of the
#: study stages' cache keys.
PATTERNS_REVISION = 2

Method = Literal["dictionary", "kmeans", "ica"]
METHODS = ("dictionary", "kmeans", "ica")


@dataclass
class Patterns:
    """K atoms fitted on training runs, and every neuron's loadings and subgroup.

    Attributes
    ----------
    atoms : ndarray, shape (n_time, K)
        The fitted dictionary: representative time courses on the training TRs
        (``times_s``). Regressors on any TRs come from :meth:`transform`.
    loadings : ndarray, shape (K, n_neurons)
        Code of each neuron (dictionary: sparse L1 codes; k-means: 1 for the neuron's
        cluster; ICA: the unit-variance neuron map).
    subgroup : ndarray of int, shape (n_neurons,)
        Atom with the largest |loading|; -1 for neurons whose loadings are all zero.
    neurons : NeuronTable
    fit_stories : list of str
        Stories whose TRs were used for fitting (from the time courses' provenance).
    fit_runs : list of int
        Run labels of the TRs used for fitting.
    fit_rows : ndarray of int, shape (n_time,), optional
        Rows (TRs of the input) used for fitting.
    method : {"dictionary", "kmeans", "ica"}
    times_s : ndarray, shape (n_time,)
        Times of the training TRs.
    neuron_mean, neuron_scale : ndarray, shape (n_neurons,)
        Standardisation learned on the training TRs (mean 0 and scale 1 when off).
    stability : dict
        Filled by :func:`fit_atoms` when asked (``seed`` and/or ``split_half`` entries).
    params : dict
        Fitting parameters.
    provenance : dict
    """

    atoms: np.ndarray
    loadings: np.ndarray
    subgroup: np.ndarray
    neurons: NeuronTable
    fit_stories: list
    fit_runs: list
    method: str
    times_s: np.ndarray
    neuron_mean: np.ndarray
    neuron_scale: np.ndarray
    stability: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    fit_rows: np.ndarray | None = None

    def __post_init__(self):
        n_time, k = self.atoms.shape
        if self.loadings.shape != (k, len(self.neurons)):
            raise ValueError(f"loadings must have shape (K={k}, n_neurons={len(self.neurons)}), "
                             f"got {self.loadings.shape}")
        if self.subgroup.shape != (len(self.neurons),):
            raise ValueError(f"subgroup must have shape ({len(self.neurons)},), got {self.subgroup.shape}")

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[1]

    @property
    def support(self) -> np.ndarray:
        """Boolean (K, n_neurons): the atoms each neuron loads on (non-zero code)."""
        return self.loadings != 0

    def assert_not_fit_on(self, runs: Sequence[int]) -> None:
        """Raise ValueError if any of ``runs`` was used to fit the atoms."""
        overlap = sorted(set(int(r) for r in np.atleast_1d(runs)) & set(self.fit_runs))
        if overlap:
            raise ValueError(f"runs {overlap} were used to fit these atoms (fit_runs="
                             f"{self.fit_runs}); evaluate on held-out runs only")

    def composition(self, by: Literal["layer", "site"] = "layer", normalize: bool = False) -> pd.DataFrame:
        """Neurons per subgroup (rows, -1 = no atom) and layer or site (columns).

        Parameters
        ----------
        by : {"layer", "site"}
        normalize : bool
            Divide each row by its total (fraction of the subgroup in each layer/site).
        """
        if by not in ("layer", "site"):
            raise ValueError(f"by must be 'layer' or 'site', got {by!r}")
        table = pd.crosstab(pd.Series(self.subgroup, name="subgroup"),
                            pd.Series(getattr(self.neurons, by), name=by))
        return table.div(table.sum(1), axis=0) if normalize else table

    def transform(self, data, chunk_size: int | None = None) -> np.ndarray:
        """Atom regressors on any TRs: least squares of standardised ``data`` on the loadings.

        Parameters
        ----------
        data : ndarray or memmap, shape (n_tr, n_neurons)
            Time courses of the same neurons (e.g. held-out runs); read in neuron chunks.

        Returns
        -------
        atom_timecourses : ndarray, shape (n_tr, K)
        """
        if data.ndim != 2 or data.shape[1] != len(self.neurons):
            raise ValueError(f"data must be (n_tr, {len(self.neurons)}), got {data.shape}")
        chunk = default_chunk_rows(data.shape[0], chunk_size)
        projected = np.zeros((data.shape[0], self.n_atoms))
        for cols in row_chunks(data.shape[1], chunk):
            block = (np.asarray(data[:, cols], dtype=np.float64) - self.neuron_mean[cols]) / self.neuron_scale[cols]
            projected += block @ self.loadings[:, cols].T.astype(np.float64)
        gram = self.loadings.astype(np.float64) @ self.loadings.T.astype(np.float64)
        return np.linalg.lstsq(gram, projected.T, rcond=None)[0].T.astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write ``patterns.npz`` (arrays) and ``patterns.json`` (everything else) to a directory."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path / "patterns.npz", atoms=self.atoms, loadings=self.loadings, subgroup=self.subgroup,
            times_s=self.times_s, neuron_mean=self.neuron_mean, neuron_scale=self.neuron_scale,
            layer=self.neurons.layer, site=self.neurons.site.astype(str), unit=self.neurons.unit,
            **({} if self.fit_rows is None else {"fit_rows": np.asarray(self.fit_rows)}))
        document = dict(method=self.method, fit_stories=list(self.fit_stories),
                        fit_runs=[int(r) for r in self.fit_runs], stability=self.stability,
                        params=self.params, provenance=self.provenance)
        (path / "patterns.json").write_text(json.dumps(document, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Patterns":
        """Read a directory written by :meth:`save`."""
        path = Path(path)
        document = json.loads((path / "patterns.json").read_text())
        with np.load(path / "patterns.npz") as arrays:
            neurons = NeuronTable(arrays["layer"], arrays["site"], arrays["unit"])
            return cls(atoms=arrays["atoms"], loadings=arrays["loadings"],
                       subgroup=arrays["subgroup"], neurons=neurons,
                       fit_stories=document["fit_stories"], fit_runs=document["fit_runs"],
                       method=document["method"], times_s=arrays["times_s"],
                       neuron_mean=arrays["neuron_mean"], neuron_scale=arrays["neuron_scale"],
                       stability=document["stability"], params=document["params"],
                       provenance=document["provenance"],
                       fit_rows=arrays["fit_rows"] if "fit_rows" in arrays.files else None)


# -- inputs ------------------------------------------------------------------------------

@dataclass
class _Inputs:
    """The parts of a NeuronTimecourses (or a plain array) that fitting needs."""

    data: np.ndarray
    times_s: np.ndarray
    runs: np.ndarray
    neurons: NeuronTable
    stories: list
    provenance: dict
    in_memory: bool = True


def _inputs(timecourses, neurons: NeuronTable | None, runs, times_s) -> _Inputs:
    if hasattr(timecourses, "data") and hasattr(timecourses, "neurons"):
        provenance = dict(getattr(timecourses, "provenance", {}) or {})
        stories = provenance.get("stories") or ([provenance["story"]] if "story" in provenance else [])
        return _Inputs(timecourses.data, np.asarray(timecourses.times_s),
                       np.asarray(timecourses.runs), timecourses.neurons, list(stories), provenance)
    data = timecourses
    if not hasattr(data, "ndim"):
        data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"time courses must be 2-D (n_tr, n_neurons), got shape {data.shape}")
    n_tr, n_neurons = data.shape
    if neurons is None:
        raise ValueError("a plain array needs neurons=NeuronTable(...) for its columns")
    if len(neurons) != n_neurons:
        raise ValueError(f"neurons table has {len(neurons)} rows for {n_neurons} columns")
    runs = np.zeros(n_tr, dtype=int) if runs is None else np.asarray(runs)
    times_s = np.arange(n_tr, dtype=np.float64) if times_s is None else np.asarray(times_s)
    if runs.shape != (n_tr,) or times_s.shape != (n_tr,):
        raise ValueError(f"runs and times_s must have shape ({n_tr},), got {runs.shape} and {times_s.shape}")
    return _Inputs(data, times_s, runs, neurons, [], {})


def _training_rows(runs: np.ndarray, train_runs, held_out_runs, train_rows=None
                   ) -> tuple[np.ndarray, list[int]]:
    if (train_runs is None) == (train_rows is None):
        raise ValueError("give exactly one of train_runs (run labels or 'all') and train_rows "
                         "(the training rows of a split)")
    if train_rows is not None:
        return _explicit_rows(runs, train_rows, held_out_runs)
    available = sorted(int(r) for r in np.unique(runs))
    if isinstance(train_runs, str):
        if train_runs != "all":
            raise ValueError(f"train_runs must be a list of run labels or 'all', got {train_runs!r}")
        train = available
    else:
        train = sorted(set(int(r) for r in np.atleast_1d(train_runs)))
    held_out = sorted(set(int(r) for r in np.atleast_1d(held_out_runs))) if held_out_runs is not None else []
    if isinstance(train_runs, str):
        train = [r for r in train if r not in held_out]
    overlap = sorted(set(train) & set(held_out))
    if overlap:
        raise ValueError(f"train_runs {train} include held-out runs {overlap}: atoms must be "
                         "fitted on training runs only")
    missing = sorted(set(train) - set(available))
    if missing or not train:
        raise ValueError(f"train_runs {train} must be non-empty run labels of the data "
                         f"(available runs: {available})")
    return np.flatnonzero(np.isin(runs, train)), train


def _explicit_rows(runs: np.ndarray, train_rows, held_out_runs) -> tuple[np.ndarray, list[int]]:
    """Validated training rows given as indices or a boolean mask, and the runs they touch."""
    rows = np.asarray(train_rows)
    if rows.dtype == bool:
        if rows.shape != runs.shape:
            raise ValueError(f"a boolean train_rows mask must have shape {runs.shape}, got {rows.shape}")
        rows = np.flatnonzero(rows)
    if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError("train_rows must be a non-empty 1-D array of row indices or a boolean mask")
    if rows.min() < 0 or rows.max() >= len(runs) or len(np.unique(rows)) != len(rows):
        raise ValueError(f"train_rows must be distinct row indices in [0, {len(runs)}), got "
                         f"values from {rows.min()} to {rows.max()} ({len(rows)} rows)")
    rows = np.sort(rows)
    touched = sorted(int(r) for r in np.unique(runs[rows]))
    held_out = sorted(set(int(r) for r in np.atleast_1d(held_out_runs))) if held_out_runs is not None else []
    overlap = sorted(set(touched) & set(held_out))
    if overlap:
        raise ValueError(f"train_rows include rows of held-out runs {overlap}: atoms must be "
                         "fitted on training rows only")
    return rows, touched


def _standardized_neurons(data, rows: np.ndarray, device: torch.device, standardize: bool,
                          chunk_size: int | None):
    """Training TRs of every neuron on the device, shape (n_neurons, n_rows), plus mean and scale.

    Read one block of neurons (columns of ``data``) at a time; each neuron is centred and
    scaled to unit L2 norm over the training TRs when ``standardize``.
    """
    n_neurons = data.shape[1]
    out = torch.empty(n_neurons, len(rows), dtype=torch.float32, device=device)
    mean = np.zeros(n_neurons, dtype=np.float64)
    scale = np.ones(n_neurons, dtype=np.float64)
    index = row_index(rows)
    for cols in row_chunks(n_neurons, default_chunk_rows(len(rows), chunk_size)):
        block = torch.from_numpy(np.array(data[index, cols], dtype=np.float64)).to(device)
        if not torch.isfinite(block).all():
            raise ValueError(f"time courses contain NaN or inf (neurons {cols.start}..{cols.stop - 1})")
        if standardize:
            block_mean = block.mean(0)
            block = block - block_mean
            norm = block.norm(dim=0)
            norm = torch.where(norm > 1e-12, norm, torch.ones_like(norm))
            block = block / norm
            mean[cols], scale[cols] = block_mean.cpu().numpy(), norm.cpu().numpy()
        out[cols] = block.T.to(torch.float32)
    return out, mean, scale


def _decompose(X: torch.Tensor, n_atoms: int, method: str, random_state, device, chunk_size,
               estimator_params: dict) -> tuple[np.ndarray, np.ndarray]:
    """atoms (n_time, K) and loadings (K, n_neurons) of X (n_neurons, n_time)."""
    common = dict(random_state=random_state, device=device, chunk_size=chunk_size)
    if method == "dictionary":
        model = DictionaryLearning(n_atoms, **common, **estimator_params)
        codes = model.fit_transform(X)
        return _oriented(model.components_.T.copy(), codes.T.copy())
    if method == "kmeans":
        model = KMeans(n_atoms, **common, **estimator_params).fit(X)
        loadings = np.zeros((n_atoms, X.shape[0]), dtype=np.float32)
        loadings[model.labels_, np.arange(X.shape[0])] = 1.0
        return model.cluster_centers_.T.copy(), loadings
    if method == "ica":
        model = FastICA(n_atoms, **common, **estimator_params)
        sources = model.fit_transform(X)  # (n_neurons, K) neuron maps
        skew = ((sources - sources.mean(0)) ** 3).mean(0)
        sign = np.where(skew < 0, -1.0, 1.0).astype(np.float32)
        return (model.mixing_ * sign).astype(np.float32), (sources * sign).T.copy()
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _oriented(atoms: np.ndarray, loadings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dictionary atoms and codes with each atom's sign fixed (the fit leaves it arbitrary,
    and a flipped atom's encoding map is its network's mirror image): the median loading
    of the atom's own subgroup is positive, so the atom is the time course its neurons
    share; an atom without a subgroup gets a positive sum of loadings. The product
    ``atoms @ loadings`` is unchanged."""
    subgroup = _subgroups(loadings)
    sign = np.ones(loadings.shape[0], dtype=atoms.dtype)
    for k in range(loadings.shape[0]):
        own = loadings[k, subgroup == k]
        value = np.median(own) if own.size else loadings[k].sum()
        sign[k] = -1.0 if value < 0 else 1.0
    return atoms * sign, loadings * sign[:, None]


def _subgroups(loadings: np.ndarray) -> np.ndarray:
    magnitude = np.abs(loadings)
    subgroup = magnitude.argmax(0).astype(np.int64)
    subgroup[magnitude.max(0) == 0] = -1
    return subgroup


def _training_matrix(inputs: _Inputs, rows: np.ndarray, device, standardize: bool,
                     chunk_size) -> tuple:
    """The standardised (n_neurons, n_rows) training matrix, on the device or on disk
    (:class:`NeuronBlocks`) as ``inputs.in_memory`` says, plus each neuron's mean and scale."""
    if inputs.in_memory:
        return _standardized_neurons(inputs.data, rows, device, standardize, chunk_size)
    X = NeuronBlocks.standardized(inputs.data, rows, device, standardize)
    return X, X.mean, X.scale


def _fit_rows(inputs: _Inputs, rows: np.ndarray, n_atoms: int, method: str, standardize: bool,
              seeds: Sequence, device, chunk_size, estimator_params) -> tuple:
    """One (atoms, loadings) per seed on the standardised training rows, plus mean and scale."""
    X, mean, scale = _training_matrix(inputs, rows, device, standardize, chunk_size)
    fits = []
    for i, seed in enumerate(seeds):
        logger.info("fitting %d %s atoms on %d TRs x %d neurons (%s)%s", n_atoms, method,
                    X.shape[1], X.shape[0], device,
                    f", consensus fit {i + 1}/{len(seeds)}" if len(seeds) > 1 else "")
        atoms, loadings = _decompose(X, n_atoms, method, seed, device, chunk_size,
                                     estimator_params)
        fits.append((atoms.astype(np.float32), loadings.astype(np.float32)))
    del X
    return fits, mean, scale


# -- public API --------------------------------------------------------------------------

def fit_atoms(
    timecourses,
    n_atoms: int = 64,
    *,
    train_runs: Sequence[int] | Literal["all"] | None = None,
    train_rows: Sequence[int] | np.ndarray | None = None,
    held_out_runs: Sequence[int] | None = None,
    method: Method = "dictionary",
    alpha: float = 0.1,
    standardize: bool = True,
    neurons: NeuronTable | None = None,
    runs: np.ndarray | None = None,
    times_s: np.ndarray | None = None,
    consensus_fits: int = 1,
    stability_seeds: Sequence[int] = (),
    split_half: bool = False,
    random_state: int | None = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    in_memory: bool = True,
    **estimator_params,
) -> Patterns:
    """Fit K atoms on the training runs of a (TR x neuron) matrix (study A).

    Parameters
    ----------
    timecourses : NeuronTimecourses or ndarray/memmap, shape (n_tr, n_neurons)
        A ``brainalign.timecourse.NeuronTimecourses`` (its ``data``, ``runs``,
        ``times_s``, ``neurons`` and ``provenance["story"]`` are used), or a plain array
        with ``neurons`` (and optionally ``runs``, ``times_s``) given separately.
    n_atoms : int, default=64
        Number of atoms K.
    train_runs : sequence of int or "all"
        Runs whose TRs the atoms are fitted on. Give this or ``train_rows`` (one of them
        is required: choose explicitly).
    train_rows : array of int or bool mask, optional
        The training rows of any split instead (e.g. the training blocks of a single
        run); the runs they touch become ``fit_runs``.
    held_out_runs : sequence of int, optional
        Runs reserved for evaluation; overlapping ``train_runs`` raises ValueError, and
        with ``train_runs="all"`` they are left out.
    method : {"dictionary", "kmeans", "ica"}
    alpha : float, default=0.1
        L1 penalty of dictionary learning. With ``standardize`` every neuron has unit
        norm, so a code below about ``alpha`` (in correlation units) is set to zero.
    standardize : bool, default=True
        Centre each neuron and scale it to unit L2 norm over the training TRs.
    neurons, runs, times_s
        For a plain array input.
    consensus_fits : int, default=1
        Number of fits (seeds drawn from ``random_state`` by
        :func:`~brainalign.patterns.consensus.consensus_seeds`) whose matched,
        sign-aligned atoms and loadings are averaged into consensus atoms
        (:func:`~brainalign.patterns.consensus.consensus_decomposition`); 1 keeps the
        single fit seeded by ``random_state``. Each atom's reliability goes to
        ``Patterns.stability["consensus"]``. Seed and split-half refits use the same
        number of fits.
    stability_seeds : sequence of int
        Extra seeds to refit with; Hungarian-matched atom and loading correlations,
        subgroup ARI and IoU go to ``Patterns.stability["seed"]`` (see
        :func:`brainalign.patterns.stability.seed_stability`).
    split_half : bool
        Also fit the two halves of the training runs (alternating runs; first vs second
        half of the TRs with one run) and record matched loading and atom time-course
        correlations, subgroup ARI and IoU in ``Patterns.stability["split_half"]`` (see
        :func:`brainalign.patterns.stability.split_half_stability`).
    random_state : int or None
    device : str, torch.device or None
        None: CUDA when available.
    chunk_size : int, optional
        Neurons per streamed block.
    in_memory : bool, default=True
        Copy the standardised training TRs onto the device once (fast). ``False`` leaves
        them on disk: the estimator reads one block of neurons at a time from
        ``timecourses`` (a memory map), two passes per iteration, so resident memory does
        not grow with the number of TRs (a long reference corpus). Dictionary learning
        (full batch) and k-means only; ICA needs the TR x TR covariance.
    **estimator_params
        Passed to the estimator (e.g. ``max_iter``, ``batch_size``, ``init``, ``n_init``).

    Returns
    -------
    Patterns
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    inputs = _inputs(timecourses, neurons, runs, times_s)
    inputs.in_memory = bool(in_memory)
    if not in_memory and method == "ica":
        raise ValueError("in_memory=False supports method='dictionary' or 'kmeans'; ICA whitens "
                         "with the (n_tr, n_tr) covariance, which grows with the recording")
    rows, train = _training_rows(inputs.runs, train_runs, held_out_runs, train_rows)
    if not 1 <= n_atoms <= min(len(rows), inputs.data.shape[1]):
        raise ValueError(f"n_atoms must be between 1 and min(n_train_tr={len(rows)}, "
                         f"n_neurons={inputs.data.shape[1]}), got {n_atoms}")
    device = resolve_device(device)
    params = dict(estimator_params)
    if method == "dictionary":
        params["alpha"] = alpha
    seeds = consensus_seeds(random_state, consensus_fits)
    fits, mean, scale = _fit_rows(inputs, rows, n_atoms, method, standardize, seeds, device,
                                  chunk_size, params)
    consensus = None
    if len(fits) == 1:
        atoms, loadings = fits[0]
    else:
        atoms, loadings, consensus = consensus_decomposition(fits)
        consensus["seeds"] = seeds
        logger.info("consensus of %d fits: mean reliability %.3f", len(fits),
                    consensus["reliability_mean"])
    config = dict(n_atoms=n_atoms, method=method, standardize=standardize,
                  random_state=random_state, train_runs=train, **params)
    if consensus_fits > 1:
        config["consensus_fits"] = int(consensus_fits)
    patterns = Patterns(
        atoms=atoms, loadings=loadings, subgroup=_subgroups(loadings), neurons=inputs.neurons,
        fit_stories=inputs.stories, fit_runs=train, method=method, times_s=inputs.times_s[rows],
        neuron_mean=mean, neuron_scale=scale, params=config, fit_rows=rows,
        provenance=provenance_block(stage="patterns", study="A", config_hash=config_hash(config),
                                    device=str(device), in_memory=bool(in_memory),
                                    n_train_tr=int(len(rows)),
                                    n_neurons=int(inputs.data.shape[1]),
                                    timecourses=inputs.provenance))
    if consensus is not None:
        patterns.stability["consensus"] = consensus
    if len(stability_seeds) or split_half:
        # stability builds on fit_atoms, so it is imported here, not at module level
        from brainalign.patterns.stability import seed_stability, split_half_stability

        refit = dict(train_rows=rows, neurons=neurons, runs=runs, times_s=times_s,
                     method=method, standardize=standardize, device=device,
                     in_memory=in_memory, chunk_size=chunk_size,
                     consensus_fits=consensus_fits, **params)
        if len(stability_seeds):
            patterns.stability["seed"] = seed_stability(timecourses, n_atoms, stability_seeds,
                                                        reference=patterns, **refit)
        if split_half:
            patterns.stability["split_half"] = split_half_stability(
                timecourses, n_atoms, random_state=random_state, **refit)
    return patterns


class ProjectedAtoms(TransformerMixin, BaseEstimator):
    """Atoms fitted elsewhere (e.g. on a reference corpus) applied to new time courses.

    ``fit(X)`` learns only each neuron's mean and standard deviation over the rows it is
    given (a fold's training rows); ``transform(X)`` standardises with them and projects
    on the fixed loadings (:meth:`Patterns.transform`). The atoms themselves never see
    ``X``, so nothing about the held-out rows enters: use it as a band's preprocessing,
    ``Band(neurons, preprocessing=ProjectedAtoms(corpus_patterns))``.

    Parameters
    ----------
    patterns : Patterns
        The fitted atoms; ``X`` must have its neurons as columns, in order.

    Attributes
    ----------
    mean_, scale_ : ndarray, shape (n_neurons,)
    n_features_in_ : int
    """

    def __init__(self, patterns: Patterns | None = None):
        self.patterns = patterns

    def fit(self, X, y=None) -> "ProjectedAtoms":
        """Learn each neuron's mean and standard deviation over the rows of ``X``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.patterns.neurons):
            raise ValueError(f"X must be (n_tr, {len(self.patterns.neurons)}), the neurons of "
                             f"the patterns, got shape {X.shape}")
        self.mean_ = X.mean(0)
        scale = X.std(0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        """Atom regressors of any rows, shape (n_rows, n_atoms)."""
        check_is_fitted(self, "mean_")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must be (n_tr, {self.n_features_in_}), got shape {X.shape}")
        return replace(self.patterns, neuron_mean=self.mean_,
                       neuron_scale=self.scale_).transform(X)


class AtomTransformer(TransformerMixin, BaseEstimator):
    """Study A's atoms as a scikit-learn transformer: fitted on the rows it is given.

    ``fit(X)`` fits :func:`fit_atoms` on every row of ``X`` (a cross-validation passes the
    training rows of one fold, single-run data included); ``transform(X)`` gives the atom
    regressors of any rows (:meth:`Patterns.transform`). Use it as the reduction of a
    feature band, so that atoms are fitted inside every outer fold:
    ``fit_encoding({"atoms": Band(neurons, preprocessing=AtomTransformer(64))}, ...)``.

    Parameters
    ----------
    n_atoms, method, alpha, standardize, consensus_fits, random_state, device, chunk_size
        As in :func:`fit_atoms`.

    Attributes
    ----------
    patterns_ : Patterns
        The fitted atoms (neurons named ``unit`` 0..n_features-1 unless ``neurons`` given).
    n_features_in_ : int
    """

    def __init__(self, n_atoms: int = 64, method: Method = "dictionary", alpha: float = 0.1,
                 standardize: bool = True, consensus_fits: int = 1,
                 random_state: int | None = 0, device=None, chunk_size: int | None = None,
                 neurons: NeuronTable | None = None):
        self.n_atoms = n_atoms
        self.method = method
        self.alpha = alpha
        self.standardize = standardize
        self.consensus_fits = consensus_fits
        self.random_state = random_state
        self.device = device
        self.chunk_size = chunk_size
        self.neurons = neurons

    def fit(self, X, y=None) -> "AtomTransformer":
        """Fit the atoms on every row of ``X`` (n_rows, n_neurons)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_tr, n_neurons), got shape {X.shape}")
        neurons = self.neurons if self.neurons is not None else NeuronTable(
            np.zeros(X.shape[1], dtype=np.int32), np.full(X.shape[1], "unit"),
            np.arange(X.shape[1], dtype=np.int32))
        self.patterns_ = fit_atoms(X, self.n_atoms, train_runs="all", method=self.method,
                                   alpha=self.alpha, standardize=self.standardize,
                                   consensus_fits=self.consensus_fits, neurons=neurons,
                                   random_state=self.random_state, device=self.device,
                                   chunk_size=self.chunk_size)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        """Atom regressors of any rows, shape (n_rows, n_atoms)."""
        check_is_fitted(self, "patterns_")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must be (n_tr, {self.n_features_in_}) like the data the atoms "
                             f"were fitted on, got shape {X.shape}")
        return self.patterns_.transform(X)


@dataclass
class AtomCountSelection:
    """Cross-validated encoding score of each candidate number of atoms.

    Attributes
    ----------
    candidates : list of int
    scores : ndarray, shape (n_candidates, n_folds)
        Mean held-out Pearson r over valid brain targets, per candidate and fold.
    held_out : list of int
        The training run held out in each fold (atoms refitted without it).
    best : int
        The chosen candidate: the highest mean score, among the stable candidates when
        ``min_stability`` was given.
    stability : ndarray, shape (n_candidates,), optional
        Split-half loading r (mean |r| of matched loadings) of each candidate, when
        ``min_stability`` was given.
    min_stability : float, optional
        Threshold on ``stability`` below which a candidate was ruled out.
    best_by_score : int, optional
        Candidate with the highest mean score, stability ignored (equals ``best`` when
        no threshold was given).
    rule : str
        How ``best`` was chosen.
    """

    candidates: list
    scores: np.ndarray
    held_out: list
    best: int
    stability: np.ndarray | None = None
    min_stability: float | None = None
    best_by_score: int | None = None
    rule: str = "highest mean held-out encoding score"

    @property
    def eligible(self) -> list:
        """Candidates whose split-half stability reaches ``min_stability`` (all without it)."""
        if self.stability is None or self.min_stability is None:
            return list(self.candidates)
        return [k for k, s in zip(self.candidates, self.stability) if s >= self.min_stability]

    def to_dict(self) -> dict:
        return dict(candidates=self.candidates, scores=self.scores.tolist(),
                    mean_scores=self.scores.mean(1).tolist(), held_out=self.held_out,
                    best=self.best,
                    best_by_score=self.best if self.best_by_score is None else self.best_by_score,
                    stability=None if self.stability is None else
                    [float(v) for v in self.stability],
                    stability_metric="split-half loading r (mean |r| of matched loadings)",
                    min_stability=None if self.min_stability is None else float(self.min_stability),
                    eligible=[int(k) for k in self.eligible], rule=self.rule)


def choose_n_atoms(timecourses, brain, *, train_runs: Sequence[int] | Literal["all"],
                   candidates: Sequence[int] = (16, 32, 64), held_out_runs=None,
                   delays: Sequence[int] | None = DEFAULT_DELAYS,
                   method: Method = "dictionary",
                   encoding_params: dict | None = None, min_stability: float | None = None,
                   **fit_params) -> AtomCountSelection:
    """Choose K by the encoding score of the atoms on runs left out of the atom fit.

    For each training run ``r`` and each K: fit atoms on the other training runs, compute
    atom time courses on all training runs (:meth:`Patterns.transform`), fit the voxelwise
    encoding model with :func:`brainalign.encoding.fit_encoding` (run-wise CV), and keep
    the held-out ``r`` of the fold that tests on run ``r``, the one run whose neuron data
    the atoms never saw. Held-out runs never enter.

    With ``min_stability``, K is chosen by stability and encoding together: each K's
    split-half loading r is computed on the training runs
    (:func:`brainalign.patterns.stability.split_half_stability`, alternating runs), K
    below the threshold are ruled out, and the best encoding score among the rest wins
    (the most stable K when none reaches it, with a warning). Both are recorded.

    Parameters
    ----------
    timecourses : NeuronTimecourses (or array with ``neurons=``/``runs=`` in fit_params)
    brain : ndarray, shape (n_tr, n_targets), or an object with ``.data``
        Brain time courses on the same TR grid.
    train_runs, held_out_runs
        As in :func:`fit_atoms`; at least two training runs are needed.
    candidates : sequence of int
    delays : sequence of int or None
        FIR delays (TRs) for :func:`~brainalign.encoding.fit_encoding` (default
        :data:`brainalign.timecourse.DEFAULT_DELAYS`).
    encoding_params : dict, optional
        Extra arguments of ``fit_encoding`` (``n_perm`` defaults to 0 here).
    min_stability : float, optional
        Smallest split-half loading r (in [0, 1]) a candidate needs; None (default):
        choose by encoding score alone.
    **fit_params
        Passed to :func:`fit_atoms`.
    """
    from brainalign.encoding import fit_encoding

    inputs = _inputs(timecourses, fit_params.pop("neurons", None), fit_params.pop("runs", None),
                     fit_params.pop("times_s", None))
    Y = np.asarray(getattr(brain, "data", brain))
    if Y.ndim != 2 or Y.shape[0] != inputs.data.shape[0]:
        raise ValueError(f"brain must be (n_tr={inputs.data.shape[0]}, n_targets), got {Y.shape}")
    rows, train = _training_rows(inputs.runs, train_runs, held_out_runs)
    if len(train) < 2:
        raise ValueError(f"choosing K by cross-validation needs >= 2 training runs, got {train}")
    encoding_params = {"n_perm": 0, **(encoding_params or {})}
    scores = np.zeros((len(candidates), len(train)))
    for j, left_out in enumerate(train):
        fit_runs = [r for r in train if r != left_out]
        for i, k in enumerate(candidates):
            patterns = fit_atoms(inputs.data, k, train_runs=fit_runs, held_out_runs=[left_out],
                                 method=method, neurons=inputs.neurons, runs=inputs.runs,
                                 times_s=inputs.times_s, **fit_params)
            patterns.assert_not_fit_on([left_out])
            features = patterns.transform(inputs.data)[rows]
            result = fit_encoding(features, Y[rows], inputs.runs[rows], delays=delays,
                                  **encoding_params)
            fold = [g for g in result.cv["outer_test_groups"]].index([left_out])
            scores[i, j] = float(np.nanmean(result.r_folds[fold][result.valid_targets]))
            logger.info("K=%d, held-out run %d: mean r %.4f", k, left_out, scores[i, j])
    candidates = [int(k) for k in candidates]
    best_by_score = candidates[int(np.argmax(scores.mean(1)))]
    if min_stability is None:
        return AtomCountSelection(candidates, scores, train, best_by_score)
    from brainalign.patterns.stability import split_half_stability

    stability = np.array([split_half_stability(
        inputs.data, k, train_rows=rows, neurons=inputs.neurons, runs=inputs.runs,
        times_s=inputs.times_s, method=method, **fit_params)["loading_r_mean"]
        for k in candidates])
    stable = stability >= min_stability
    if stable.any():
        mean_scores = np.where(stable, scores.mean(1), -np.inf)
        best = candidates[int(np.argmax(mean_scores))]
        rule = (f"highest mean held-out encoding score among candidates with split-half "
                f"loading r >= {min_stability}")
    else:
        best = candidates[int(np.argmax(stability))]
        rule = (f"no candidate reached split-half loading r {min_stability}: the most "
                "stable candidate")
        logger.warning("choose_n_atoms: %s (stabilities %s)", rule, stability.round(3).tolist())
    return AtomCountSelection(candidates, scores, train, best, stability=stability,
                              min_stability=float(min_stability), best_by_score=best_by_score,
                              rule=rule)
