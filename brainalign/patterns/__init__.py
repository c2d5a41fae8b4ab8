"""Representative patterns and functional networks of neurons (studies A and B).

Estimators on a torch device (CPU or CUDA), with scikit-learn's interface:
:class:`KMeans`, :class:`DictionaryLearning`, :class:`FastICA`, :class:`GroupICA`.
Study A (:mod:`~brainalign.patterns.study_a`): :func:`fit_atoms` -> :class:`Patterns`,
:class:`AtomTransformer` (atoms fitted inside cross-validation folds), :class:`ProjectedAtoms`
(atoms fitted elsewhere, e.g. a corpus, applied with per-fold standardisation), :func:`choose_n_atoms`;
stability (:mod:`~brainalign.patterns.stability`): :func:`compare_patterns`,
:func:`seed_stability`, :func:`split_half_stability`, :func:`subspace_agreement`,
:func:`stability_curve`; consensus atoms over several fits
(:mod:`~brainalign.patterns.consensus`, ``fit_atoms(consensus_fits=R)``). Study B (:mod:`~brainalign.patterns.study_b`):
:func:`find_functional_networks` -> :class:`FunctionalNetworks`, :func:`group_templates`,
:func:`match_networks`, :func:`recurrence_counts`.
"""

from brainalign.patterns.consensus import consensus_decomposition, consensus_seeds
from brainalign.patterns.dictionary import DictionaryLearning, dictionary_objective, sparse_codes
from brainalign.patterns.ica import FastICA, GroupICA
from brainalign.patterns.kmeans import KMeans
from brainalign.patterns.matching import iou_matrix, match_components, match_sets
from brainalign.patterns.study_a import (AtomCountSelection, AtomTransformer, Patterns,
                                         ProjectedAtoms,
                                         choose_n_atoms, fit_atoms)
from brainalign.patterns.stability import (StabilityCurve, compare_patterns,
                                           principal_neuron_subspace, seed_stability,
                                           split_half_stability, stability_curve,
                                           subspace_agreement)
from brainalign.patterns.study_b import (DEFAULT_Z_THRESHOLD, SAME_NETWORK_IOU, STUDY_Z_THRESHOLD,
                                         FunctionalNetworks, find_functional_networks,
                                         group_templates, match_networks, networks_from_maps,
                                         recurrence_counts)

__all__ = [
    "AtomCountSelection", "AtomTransformer", "ProjectedAtoms", "DEFAULT_Z_THRESHOLD", "DictionaryLearning", "FastICA",
    "FunctionalNetworks", "GroupICA", "KMeans", "Patterns", "SAME_NETWORK_IOU",
    "STUDY_Z_THRESHOLD", "choose_n_atoms", "dictionary_objective", "find_functional_networks",
    "fit_atoms", "group_templates", "iou_matrix", "match_components", "match_networks",
    "match_sets", "networks_from_maps", "recurrence_counts", "sparse_codes",
    "StabilityCurve", "compare_patterns", "seed_stability", "split_half_stability",
    "stability_curve", "consensus_decomposition", "consensus_seeds",
    "principal_neuron_subspace", "subspace_agreement",
]
