"""Stability of study A's atoms: how much of a decomposition comes back in another fit.

A decomposition ``data (n_tr, n_neurons) ~= atoms (n_tr, K) @ loadings (K, n_neurons)``
is only worth interpreting when it is stable: refitted with another seed, or on another
half of the corpus, the same atoms, loadings and subgroups should come back. This module
makes that a first-class output.

- :func:`compare_patterns` compares two :class:`~brainalign.patterns.study_a.Patterns`
  of the same neurons: atoms are paired one-to-one on their loadings (Hungarian on
  |Pearson r|, :func:`~brainalign.patterns.matching.match_components`), then each pair is
  scored by the |r| of its loadings, the |r| of its atom time courses, and the IoU of its
  subgroups' neuron sets (:func:`~brainalign.patterns.matching.iou_matrix`); the whole
  partition of neurons into subgroups is scored by the adjusted Rand index.
- :func:`seed_stability` refits with other seeds on the same TRs;
  :func:`split_half_stability` fits the two halves of the training TRs (first vs second
  half with one run, alternating runs with several). ``fit_atoms(stability_seeds=...,
  split_half=True)`` calls them and stores their output in ``Patterns.stability``.
- :func:`subspace_agreement` (with :func:`principal_neuron_subspace`, reported by
  :func:`split_half_stability`) asks how much of the halves' disagreement lies in the data
  rather than in the fit: the canonical correlations of the two halves' leading
  K-dimensional principal subspaces over neurons. Where they are far below 1, no method
  that picks K directions in those subspaces can give matching loadings.
- :func:`stability_curve` tabulates all of this over candidate numbers of atoms K
  (:class:`StabilityCurve`); :func:`~brainalign.patterns.study_a.choose_n_atoms` with
  ``min_stability=`` uses the split-half loading r to rule out unstable K.

Atom time courses of two fits on different TRs (two halves of a corpus, two runs of a
story) cannot be compared through ``Patterns.atoms``, which live on each fit's own TRs.
Compare them on a common set of TRs instead: ``compare_patterns(a, b, common=data)``
computes both fits' atom time courses with :meth:`Patterns.transform` on ``common``
(least squares of the standardised neuron time courses on each fit's loadings) and
correlates those. Without ``common``, the fitted atoms themselves are compared when both
fits used the same TRs (equal ``fit_rows``, ``times_s`` and ``fit_stories``), and
atom r is not reported otherwise.

Everything is written by hand around scipy's Hungarian solver and scikit-learn's
:func:`~sklearn.metrics.adjusted_rand_score`; no library scores the stability of a
dictionary of time courses against its neuron codes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score

from brainalign.patterns.dictionary import randomized_right_singular_vectors
from brainalign.patterns.matching import abs_correlation, iou_matrix, match_components, match_sets
from brainalign.patterns.streaming import default_chunk_rows, resolve_device, row_chunks
from brainalign.patterns.study_a import (Patterns, _inputs, _training_matrix, _training_rows,
                                         fit_atoms)

logger = logging.getLogger(__name__)

MATCHING = "Hungarian on |Pearson r| of loadings (scipy.optimize.linear_sum_assignment)"


# -- comparing two fits ------------------------------------------------------------------

def _same_fit_trs(a: Patterns, b: Patterns) -> bool:
    """Whether both fits used the same TRs (their ``atoms`` share a time axis)."""
    if a.atoms.shape[0] != b.atoms.shape[0] or list(a.fit_stories) != list(b.fit_stories):
        return False
    both_rows = a.fit_rows is not None and b.fit_rows is not None
    if both_rows and not np.array_equal(a.fit_rows, b.fit_rows):
        return False
    return bool(np.array_equal(np.asarray(a.times_s), np.asarray(b.times_s)))


def _summary(name: str, values: np.ndarray | None) -> dict:
    """``name`` (list), ``name_mean`` and ``name_min``; None everywhere when ``values`` is None."""
    if values is None or len(values) == 0:
        return {name: None, f"{name}_mean": None, f"{name}_min": None}
    values = np.asarray(values, dtype=np.float64)
    return {name: values.tolist(), f"{name}_mean": float(values.mean()),
            f"{name}_min": float(values.min())}


def _subgroup_sets(subgroup: np.ndarray, n_atoms: int) -> list[np.ndarray]:
    return [np.flatnonzero(subgroup == k) for k in range(n_atoms)]


def compare_patterns(a: Patterns, b: Patterns, common=None, *, rows=None,
                     chunk_size: int | None = None) -> dict:
    """Match the atoms of two fits of the same neurons and score how well they agree.

    Atoms are paired one-to-one by their loadings (Hungarian on |Pearson r| between the
    rows of ``a.loadings`` and ``b.loadings``; sign and order are arbitrary); with
    different K, ``min(K_a, K_b)`` pairs are made.

    Parameters
    ----------
    a, b : Patterns
        Two fits of the same neurons (equal ``n_neurons``; K may differ).
    common : ndarray or memmap, shape (n_tr, n_neurons), or NeuronTimecourses, optional
        Neuron time courses on a common set of TRs (raw, as given to ``fit_atoms``). Each
        fit's atom time courses there come from :meth:`Patterns.transform`, and atom r is
        their |r|. Without it, atom r compares ``a.atoms`` and ``b.atoms`` when both were
        fitted on the same TRs, and is None otherwise.
    rows : array of int, optional
        Rows of ``common`` to compare on (default all); the projection is computed on
        every row of ``common`` (cheap: (n_tr, K)) and then restricted.
    chunk_size : int, optional
        Neurons per streamed block in :meth:`Patterns.transform`.

    Returns
    -------
    dict, JSON-serialisable, with
        ``n_atoms`` ([K_a, K_b]); ``matching`` (``a``, ``b``: matched atom indices, and how);
        ``loading_r``, ``loading_r_mean``, ``loading_r_min``: |r| of each matched pair's
        loadings (over neurons); ``atom_r``, ``atom_r_mean``, ``atom_r_min``: |r| of each
        matched pair's atom time courses (over TRs), or None; ``atom_r_on``: what they
        were computed on; ``atom_matching``: the pairing that Hungarian on the atom time
        courses alone would give (``a``, ``b``) and the fraction of loading pairs it
        agrees with (``agreement``), or None; ``subgroup_ari``: adjusted Rand index of
        the two partitions of neurons into subgroups (neurons with no atom, subgroup -1,
        count as one more group); ``subgroup_iou``, ``subgroup_iou_mean``,
        ``subgroup_iou_min``: IoU of the neuron sets of each matched pair's subgroups;
        ``subgroup_iou_set_matched_mean``: mean IoU when subgroups are paired by IoU
        itself (:func:`~brainalign.patterns.matching.match_sets`, unpaired count as 0).
        All correlations and IoUs are in [0, 1].
    """
    n_neurons = a.loadings.shape[1]
    if b.loadings.shape[1] != n_neurons:
        raise ValueError(f"patterns must describe the same neurons: {n_neurons} vs "
                         f"{b.loadings.shape[1]} columns of loadings")
    k_a, k_b = a.n_atoms, b.n_atoms
    rows_a, rows_b, loading_r = match_components(a.loadings, b.loadings)

    atoms_a = atoms_b = None
    atom_r_on = None
    if common is not None:
        data = common.data if hasattr(common, "neurons") else common  # NeuronTimecourses
        atoms_a = a.transform(data, chunk_size=chunk_size)
        atoms_b = b.transform(data, chunk_size=chunk_size)
        if rows is not None:
            rows = np.asarray(rows)
            atoms_a, atoms_b = atoms_a[rows], atoms_b[rows]
        atom_r_on = f"Patterns.transform on {atoms_a.shape[0]} common TRs"
    elif _same_fit_trs(a, b):
        atoms_a, atoms_b = a.atoms, b.atoms
        atom_r_on = f"fitted atoms (both fitted on the same {a.atoms.shape[0]} TRs)"
    atom_r = atom_matching = None
    if atoms_a is not None:
        corr = abs_correlation(atoms_a.T, atoms_b.T)
        atom_r = corr[rows_a, rows_b]
        own_a, own_b, _ = match_components(atoms_a.T, atoms_b.T)
        own = dict(zip(own_a.tolist(), own_b.tolist()))
        agreement = float(np.mean([own.get(i) == j
                                   for i, j in zip(rows_a.tolist(), rows_b.tolist())]))
        atom_matching = dict(a=own_a.tolist(), b=own_b.tolist(), agreement=agreement)

    sets_a, sets_b = _subgroup_sets(a.subgroup, k_a), _subgroup_sets(b.subgroup, k_b)
    subgroup_iou = iou_matrix(sets_a, sets_b, n_neurons)[rows_a, rows_b]
    set_pairs = match_sets(sets_a, sets_b, n_neurons, threshold=0.0)
    set_matched = sum(iou for _, _, iou in set_pairs) / max(min(k_a, k_b), 1)

    return dict(
        n_atoms=[int(k_a), int(k_b)],
        matching=dict(a=rows_a.tolist(), b=rows_b.tolist(), on="loadings", method=MATCHING),
        **_summary("loading_r", loading_r),
        **_summary("atom_r", atom_r), atom_r_on=atom_r_on, atom_matching=atom_matching,
        subgroup_ari=float(adjusted_rand_score(a.subgroup, b.subgroup)),
        **_summary("subgroup_iou", subgroup_iou),
        subgroup_iou_set_matched_mean=float(set_matched),
    )


# -- seeds and split halves --------------------------------------------------------------

def _mean_of(pairs: dict, key: str) -> float | None:
    values = [p[key] for p in pairs.values() if p.get(key) is not None]
    return float(np.mean(values)) if values else None


def seed_stability(timecourses, n_atoms: int = 64, seeds: Sequence[int] = (1, 2), *,
                   reference: Patterns | None = None, random_state: int | None = 0,
                   **fit_params) -> dict:
    """Refit with other seeds on the same TRs and compare each refit with the reference.

    Parameters
    ----------
    timecourses : NeuronTimecourses or ndarray/memmap, shape (n_tr, n_neurons)
        As in :func:`~brainalign.patterns.study_a.fit_atoms`.
    n_atoms : int
    seeds : sequence of int
        ``random_state`` of each refit.
    reference : Patterns, optional
        The fit to compare with (fitted on the same TRs with the same parameters);
        default: fitted here with ``random_state``.
    random_state : int or None
        Seed of the reference when it is fitted here.
    **fit_params
        Passed to ``fit_atoms`` (``train_runs`` or ``train_rows``, ``method``, ``alpha``,
        ``neurons``, ``runs``, ``device``, ...).

    Returns
    -------
    dict, JSON-serialisable
        ``reference_seed``, ``seeds``, ``pairs`` (seed as str -> :func:`compare_patterns`
        of reference and refit; atom r on the fitted atoms, which share the TRs) and the
        means over seeds ``atom_r_mean``, ``loading_r_mean``, ``subgroup_ari_mean``,
        ``subgroup_iou_mean``; ``matching`` says how atoms were paired.
    """
    if reference is None:
        reference = fit_atoms(timecourses, n_atoms, random_state=random_state, **fit_params)
    pairs = {}
    for seed in seeds:
        other = fit_atoms(timecourses, n_atoms, random_state=seed, **fit_params)
        pairs[str(int(seed))] = compare_patterns(reference, other)
    return dict(
        reference_seed=reference.params.get("random_state"), seeds=[int(s) for s in seeds],
        pairs=pairs, atom_r_mean=_mean_of(pairs, "atom_r_mean"),
        loading_r_mean=_mean_of(pairs, "loading_r_mean"),
        subgroup_ari_mean=_mean_of(pairs, "subgroup_ari"),
        subgroup_iou_mean=_mean_of(pairs, "subgroup_iou_mean"), matching=MATCHING)


def split_half_rows(runs: np.ndarray, rows: np.ndarray) -> tuple[list[np.ndarray], str]:
    """The two halves of the training ``rows``: alternating runs, or first vs second half.

    Parameters
    ----------
    runs : ndarray of int, shape (n_tr,)
        Run label of every TR of the data.
    rows : ndarray of int, shape (n_rows,)
        Sorted training rows.

    Returns
    -------
    halves : list of two ndarrays of int
    scheme : str
        ``"runs [0, 2] vs [1, 3]"`` with several runs, else a description of the cut.
    """
    train_runs = sorted(int(r) for r in np.unique(runs[rows]))
    if len(train_runs) >= 2:
        halves = [train_runs[0::2], train_runs[1::2]]
        return ([rows[np.isin(runs[rows], h)] for h in halves],
                f"runs {halves[0]} vs {halves[1]}")
    return ([rows[: len(rows) // 2], rows[len(rows) // 2:]],
            "first vs second half of the TRs of the single training run")


def split_half_stability(timecourses, n_atoms: int = 64, *, train_runs=None, train_rows=None,
                         held_out_runs=None, neurons=None, runs=None, times_s=None,
                         chunk_size: int | None = None, subspace: bool = True,
                         **fit_params) -> dict:
    """Fit the two halves of the training TRs separately and compare the two fits.

    With several training runs the halves are alternating runs (runs 0, 2, ... vs
    1, 3, ...); with one run, the first and second half of its TRs. Loadings are compared
    directly (the halves share neurons); atom time courses are compared on the union of
    both halves' TRs (the training TRs) through :meth:`Patterns.transform`, since each
    half's fitted atoms live on its own TRs.

    Parameters
    ----------
    timecourses : NeuronTimecourses or ndarray/memmap, shape (n_tr, n_neurons)
    n_atoms : int
    train_runs, train_rows, held_out_runs, neurons, runs, times_s
        As in :func:`~brainalign.patterns.study_a.fit_atoms` (the training TRs to split).
    chunk_size : int, optional
    subspace : bool, default=True
        Also compare the halves' leading K-dimensional principal subspaces over neurons
        (:func:`principal_neuron_subspace`, :func:`subspace_agreement`): the part of the
        disagreement that no choice of rotation within them can remove.
    **fit_params
        Passed to ``fit_atoms`` for each half (``method``, ``alpha``, ``random_state``,
        ``device``, ...).

    Returns
    -------
    dict, JSON-serialisable
        :func:`compare_patterns` of the two halves, plus ``scheme``, ``n_tr`` (TRs per
        half), ``compared`` and, with ``subspace``, ``subspace``
        (:func:`subspace_agreement` of the halves' principal subspaces).
    """
    inputs = _inputs(timecourses, neurons, runs, times_s)
    rows, _ = _training_rows(inputs.runs, train_runs, held_out_runs, train_rows)
    halves, scheme = split_half_rows(inputs.runs, rows)
    if min(len(h) for h in halves) < n_atoms:
        raise ValueError(f"split halves have {[len(h) for h in halves]} TRs, fewer than "
                         f"n_atoms={n_atoms}")
    fits = [fit_atoms(timecourses, n_atoms, train_rows=h, neurons=neurons, runs=runs,
                      times_s=times_s, chunk_size=chunk_size, **fit_params) for h in halves]
    summary = compare_patterns(*fits, common=inputs.data, rows=rows, chunk_size=chunk_size)
    if subspace:
        bases = [principal_neuron_subspace(timecourses, h, n_atoms, neurons=neurons,
                                           chunk_size=chunk_size,
                                           standardize=fit_params.get("standardize", True),
                                           in_memory=fit_params.get("in_memory", True),
                                           device=fit_params.get("device"),
                                           random_state=fit_params.get("random_state", 0))
                 for h in halves]
        summary["subspace"] = subspace_agreement(*bases)
    summary.update(scheme=scheme, n_tr=[int(len(h)) for h in halves],
                   compared="neuron loadings (the halves share neurons, not TRs); atom time "
                            "courses via Patterns.transform on the union of both halves' TRs")
    return summary


def principal_neuron_subspace(timecourses, rows: np.ndarray, k: int, *, neurons=None,
                              standardize: bool = True, in_memory: bool = True, device=None,
                              chunk_size: int | None = None,
                              random_state: int | None = 0) -> np.ndarray:
    """Orthonormal basis of the leading ``k`` principal directions over neurons, (n_neurons, k).

    The neurons' time courses on ``rows`` are standardised as :func:`fit_atoms` standardises
    them; the ``k`` leading left singular vectors of that (n_neurons, n_rows) matrix come
    from randomized subspace iteration (the dictionary's SVD initialisation), are centred
    over neurons (loadings are compared by Pearson r) and orthonormalised.

    Parameters
    ----------
    timecourses : NeuronTimecourses or ndarray/memmap, shape (n_tr, n_neurons)
    rows : ndarray of int
        TRs to use.
    k : int
    neurons : NeuronTable, optional
        For a plain array.
    standardize, in_memory, device, chunk_size
        As in :func:`fit_atoms` (``in_memory=False`` reads the TRs from disk in blocks).
    random_state : int or None
        Seed of the randomized iteration's start.
    """
    inputs = _inputs(timecourses, neurons, None, None)
    inputs.in_memory = bool(in_memory)
    device = resolve_device(device)
    X, _, _ = _training_matrix(inputs, rows, device, standardize, chunk_size)
    chunk_rows = default_chunk_rows(X.shape[1], chunk_size)
    rng = np.random.RandomState(random_state)
    V = randomized_right_singular_vectors(X, k, rng, chunk_rows).double()  # (k, n_rows)
    U = np.concatenate([(X[rows_].double() @ V.T).cpu().numpy()
                        for rows_ in row_chunks(X.shape[0], chunk_rows)])
    del X
    U -= U.mean(0)
    return np.linalg.qr(U)[0]


def subspace_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Canonical correlations of two K-dimensional subspaces of neurons (orthonormal bases).

    They are the cosines of the principal angles between the subspaces: all 1 when the two
    halves span the same K directions, whatever the rotation within. For any two sets of K
    orthonormal loading vectors lying in these subspaces (PCA, or ICA's whitened maps), the
    mean matched |r| cannot exceed their mean (von Neumann's trace inequality), so they say
    how much of the disagreement between two fits comes from the data rather than from the
    rotation a method picks. Sparse dictionary codes lie near, not in, these subspaces: for
    them the mean is a guide, not a bound.

    Returns
    -------
    dict
        ``canonical_r`` (descending), ``canonical_r_mean`` and ``canonical_r_min``.
    """
    cosines = np.clip(np.linalg.svd(a.T @ b, compute_uv=False), 0.0, 1.0)
    return dict(canonical_r=cosines.tolist(), canonical_r_mean=float(cosines.mean()),
                canonical_r_min=float(cosines.min()))


# -- stability over K --------------------------------------------------------------------

CURVE_METRICS = ("seed_atom_r", "seed_loading_r", "seed_subgroup_ari", "seed_subgroup_iou",
                 "split_half_loading_r", "split_half_atom_r", "split_half_subgroup_ari",
                 "split_half_subgroup_iou")


@dataclass
class StabilityCurve:
    """Stability of the atoms for each candidate number of atoms K.

    Every metric is an ndarray of shape (n_candidates,), NaN where not computed (no
    seeds, or ``split_half=False``); seed metrics are means over the seeds.

    Attributes
    ----------
    candidates : list of int
    seed_atom_r, seed_loading_r : ndarray
        Mean |r| of matched atoms (fitted time courses) and loadings, reference vs seeds.
    seed_subgroup_ari, seed_subgroup_iou : ndarray
        Adjusted Rand index of the subgroups and mean IoU of matched subgroups.
    split_half_loading_r, split_half_atom_r : ndarray
        Mean |r| of matched loadings and of atom time courses (on the training TRs) of
        the two split-half fits.
    split_half_subgroup_ari, split_half_subgroup_iou : ndarray
    details : list of dict
        ``Patterns.stability`` of the reference fit at each K (per-pair values).
    params : dict
        Seeds, split-half flag and fitting parameters (JSON-serialisable).
    """

    candidates: list
    seed_atom_r: np.ndarray
    seed_loading_r: np.ndarray
    seed_subgroup_ari: np.ndarray
    seed_subgroup_iou: np.ndarray
    split_half_loading_r: np.ndarray
    split_half_atom_r: np.ndarray
    split_half_subgroup_ari: np.ndarray
    split_half_subgroup_iou: np.ndarray
    details: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def best(self, metric: str = "split_half_loading_r") -> int:
        """The candidate K with the highest ``metric`` (one of :data:`CURVE_METRICS`)."""
        if metric not in CURVE_METRICS:
            raise ValueError(f"metric must be one of {CURVE_METRICS}, got {metric!r}")
        values = np.asarray(getattr(self, metric), dtype=np.float64)
        if np.all(np.isnan(values)):
            raise ValueError(f"{metric} was not computed for any candidate")
        return int(self.candidates[int(np.nanargmax(values))])

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN -> None)."""
        def listed(values):
            return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64)]
        return dict(candidates=[int(k) for k in self.candidates],
                    **{name: listed(getattr(self, name)) for name in CURVE_METRICS},
                    details=self.details, params=self.params)


def stability_curve(timecourses, candidates: Sequence[int] = (8, 16, 32, 64),
                    seeds: Sequence[int] = (1, 2), split_half: bool = True,
                    **fit_params) -> StabilityCurve:
    """Seed and split-half stability of the atoms for each candidate K.

    For each K, :func:`~brainalign.patterns.study_a.fit_atoms` is run with
    ``stability_seeds=seeds`` and ``split_half=split_half`` (see :func:`seed_stability`
    and :func:`split_half_stability`) and the summary numbers are tabulated.

    Parameters
    ----------
    timecourses : NeuronTimecourses or ndarray/memmap, shape (n_tr, n_neurons)
    candidates : sequence of int
        Numbers of atoms K to try.
    seeds : sequence of int
        Refit seeds (empty: no seed stability).
    split_half : bool
    **fit_params
        Passed to ``fit_atoms`` (``train_runs`` or ``train_rows``, ``held_out_runs``,
        ``method``, ``alpha``, ``random_state``, ``neurons``, ``runs``, ``device``, ...).

    Returns
    -------
    StabilityCurve
    """
    if not len(seeds) and not split_half:
        raise ValueError("nothing to compute: give seeds and/or split_half=True")
    metrics = {name: np.full(len(candidates), np.nan) for name in CURVE_METRICS}
    details = []
    for i, k in enumerate(candidates):
        patterns = fit_atoms(timecourses, int(k), stability_seeds=seeds, split_half=split_half,
                             **fit_params)
        seed = patterns.stability.get("seed", {})
        half = patterns.stability.get("split_half", {})
        for name, source, key in (("seed_atom_r", seed, "atom_r_mean"),
                                  ("seed_loading_r", seed, "loading_r_mean"),
                                  ("seed_subgroup_ari", seed, "subgroup_ari_mean"),
                                  ("seed_subgroup_iou", seed, "subgroup_iou_mean"),
                                  ("split_half_loading_r", half, "loading_r_mean"),
                                  ("split_half_atom_r", half, "atom_r_mean"),
                                  ("split_half_subgroup_ari", half, "subgroup_ari"),
                                  ("split_half_subgroup_iou", half, "subgroup_iou_mean")):
            if source.get(key) is not None:
                metrics[name][i] = source[key]
        details.append(patterns.stability)
        logger.info("K=%d: split-half loading r %s, seed loading r %s", k,
                    half.get("loading_r_mean"), seed.get("loading_r_mean"))
    params = dict(seeds=[int(s) for s in seeds], split_half=bool(split_half),
                  fit_params={key: value for key, value in fit_params.items()
                              if key not in ("neurons", "runs", "times_s")})
    return StabilityCurve([int(k) for k in candidates], **metrics, details=details,
                          params=_jsonable(params))


def _jsonable(value):
    """Numpy scalars/arrays and other objects in ``value`` made JSON-friendly."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
