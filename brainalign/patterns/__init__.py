"""Representative patterns and functional networks of neurons (studies A and B).

Estimators on a torch device (CPU or CUDA), with scikit-learn's interface:
:class:`KMeans`, :class:`DictionaryLearning`, :class:`FastICA`, :class:`GroupICA`.
"""

from brainalign.patterns.dictionary import DictionaryLearning, dictionary_objective, sparse_codes
from brainalign.patterns.ica import FastICA, GroupICA
from brainalign.patterns.kmeans import KMeans

__all__ = [
    "DictionaryLearning", "FastICA", "GroupICA", "KMeans", "dictionary_objective",
    "sparse_codes",
]
