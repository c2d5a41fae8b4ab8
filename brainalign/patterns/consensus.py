"""Consensus atoms: several fits of the same TRs, matched and averaged (ICASSO-like).

Dictionary learning, k-means and FastICA reach a different local optimum from each
seed. On SmolLM2 ``mlp.out`` over 100k words of Moby-Dick, two seeds give 64 atoms whose
neuron loadings match at r = 0.54 only, so a single fit carries much seed noise into
every result built on it. Averaging matched fits removes part of that noise, as ICASSO
(Himberg et al. 2004) does for ICA by clustering the components of many runs.

The consensus of ``R`` fits with ``K`` atoms each:

1. start from the first fit;
2. pair every fit's atoms one-to-one with the consensus atoms (Hungarian on |Pearson r|
   of the loadings, :func:`~brainalign.patterns.matching.match_components`'s rule) and
   flip each matched atom's sign to agree with the consensus (an atom and its loadings
   change sign together, so the product is unchanged);
3. the consensus loadings (atoms) are the mean of the matched, sign-aligned loadings
   (atom time courses) over the ``R`` fits; repeat from 2 until no pairing changes.

Each consensus atom gets a *reliability*: the mean over fits of the |r| between the
consensus loadings and that fit's matched loadings (ICASSO's cluster quality index plays
the same role). Averages keep the scale of the fits: dictionary codes of unit-norm atoms,
k-means indicators (averaged they become the share of fits that put the neuron in the
matched cluster), ICA's unit-variance neuron maps.

What it buys, measured (``analysis/pattern_stability.py``: SmolLM2 ``mlp.out``, K = 64
dictionary atoms, split halves of 100k words of Moby-Dick, 6 fits per half): matched
loading r 0.41 -> 0.51 and subgroup ARI 0.08 -> 0.11, but matched atom time-course r
0.64 -> 0.62, because averaged codes are denser and the least-squares atom regressors of
:meth:`~brainalign.patterns.study_a.Patterns.transform` become noisier. Use it where the neuron subgroups are the result; it is off by default.

The fits are seeded by :func:`consensus_seeds`, derived from one ``random_state`` with
:class:`numpy.random.SeedSequence`, so that two consensus fits with different
``random_state`` share no seed (seed stability of a consensus then compares disjoint
sets of fits).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from brainalign.patterns.matching import correlation

#: How consensus atoms are built, for provenance.
CONSENSUS = ("mean of the fits' matched, sign-aligned loadings and atoms; pairing by "
             "Hungarian on |Pearson r| of loadings against the running consensus, repeated "
             "until no pairing changes")


def consensus_seeds(random_state: int | None, n_fits: int) -> list[int]:
    """Seeds of ``n_fits`` fits: ``[random_state]`` for one fit, else drawn from a SeedSequence.

    Parameters
    ----------
    random_state : int or None
        Entropy of :class:`numpy.random.SeedSequence` (None: fresh entropy, not
        reproducible).
    n_fits : int
        Number of fits, at least 1.

    Returns
    -------
    list of int
        Distinct seeds in [0, 2**32).
    """
    if isinstance(n_fits, bool) or not isinstance(n_fits, (int, np.integer)) or n_fits < 1:
        raise ValueError(f"the number of consensus fits must be an integer >= 1, got {n_fits!r}")
    if n_fits == 1:
        return [random_state]
    seeds = np.random.SeedSequence(random_state).generate_state(n_fits)
    return [int(seed) for seed in seeds]


def consensus_decomposition(fits: Sequence[tuple[np.ndarray, np.ndarray]], max_iter: int = 20
                            ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Consensus atoms and loadings of several fits with the same K on the same TRs.

    Parameters
    ----------
    fits : sequence of (atoms, loadings)
        ``atoms`` of shape (n_time, K) and ``loadings`` of shape (K, n_neurons), all with
        the same shapes (the same TRs and neurons).
    max_iter : int, default=20
        Rounds of re-pairing at most.

    Returns
    -------
    atoms : ndarray, shape (n_time, K), float32
    loadings : ndarray, shape (K, n_neurons), float32
    info : dict, JSON-serialisable
        ``n_fits``; ``reliability`` (per atom) and ``reliability_mean``, ``reliability_min``:
        mean |r| between the consensus loadings and each fit's matched loadings;
        ``pairing`` (for each fit, the fit's atom matched to each consensus atom);
        ``n_iter`` and ``converged``; ``method``.
    """
    if len(fits) < 2:
        raise ValueError(f"a consensus needs at least 2 fits, got {len(fits)}")
    shapes = {(np.shape(a), np.shape(b)) for a, b in fits}
    if len(shapes) != 1:
        raise ValueError(f"every fit must have the same atoms and loadings shapes, got {sorted(shapes)}")
    consensus = np.asarray(fits[0][1], dtype=np.float64)
    pairing: list[np.ndarray] | None = None
    converged = False
    for n_iter in range(1, max_iter + 1):
        new_pairing, signs = [], []
        for _, loadings in fits:
            r = correlation(consensus, loadings)
            rows, cols = linear_sum_assignment(-np.abs(r))
            sign = np.sign(r[rows, cols])
            new_pairing.append(cols)
            signs.append(np.where(sign == 0, 1.0, sign))
        consensus = np.mean([sign[:, None] * np.asarray(loadings, dtype=np.float64)[cols]
                             for (_, loadings), cols, sign in zip(fits, new_pairing, signs)], 0)
        if pairing is not None and all(np.array_equal(a, b) for a, b in zip(pairing, new_pairing)):
            converged = True
            break
        pairing = new_pairing
    atoms = np.mean([np.asarray(a, dtype=np.float64)[:, cols] * sign
                     for (a, _), cols, sign in zip(fits, pairing, signs)], 0)
    reliability = np.mean([np.abs(np.diag(correlation(consensus, np.asarray(loadings)[cols])))
                           for (_, loadings), cols in zip(fits, pairing)], 0)
    info = dict(n_fits=len(fits), reliability=reliability.tolist(),
                reliability_mean=float(reliability.mean()),
                reliability_min=float(reliability.min()),
                pairing=[cols.tolist() for cols in pairing], n_iter=n_iter,
                converged=converged, method=CONSENSUS)
    return atoms.astype(np.float32), consensus.astype(np.float32), info
