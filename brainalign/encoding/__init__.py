"""Voxelwise ridge encoding models (himalaya) with honest held-out scores and statistics.

``fit_encoding`` runs the whole recipe: named feature bands (:class:`Band`) with their own
delays, the same cleaning of features and targets fitted inside each fold
(:class:`Cleaning`), nested run-wise CV, Pearson ``r`` and ``R²``, variance partitioning
across bands with a shift null per band, the permutation null of ``r``, FDR and a final
refit. ``EncodingModel`` (one band, ridge) and ``BandedEncodingModel`` (several bands,
banded ridge) are the scikit-learn estimators underneath; ``EncodingResult`` saves to
npz + JSON and loads without a GPU; ``pattern_maps`` gives one map per feature.
"""

from .backend import choose_backend, target_batch_size
from .banded import BandedEncodingModel
from .bands import Band, FoldFeatures, fold_features
from .ceiling import explainable_variance, intersubject_ceiling
from .cleaning import DEFAULT_HIGH_PASS_HZ, Cleaning
from .cv import contiguous_blocks, inner_splits, outer_splits
from .fit import fit_encoding
from .maps import DelayedCoefficients, mean_over_subjects, pattern_maps
from .null import FoldOperator, refit_null_test
from .result import EncodingResult, load
from .ridge import DEFAULT_ALPHAS, EncodingModel, choose_solver, valid_target_mask
from .stats import fdr, fold_mean_r, null_indices, pearson_r, permutation_test, r2_score

__all__ = [
    "DEFAULT_ALPHAS", "DEFAULT_HIGH_PASS_HZ", "Band", "BandedEncodingModel", "Cleaning",
    "DelayedCoefficients", "EncodingModel", "EncodingResult", "FoldFeatures", "FoldOperator",
    "choose_backend", "choose_solver", "contiguous_blocks", "explainable_variance", "fdr",
    "fit_encoding", "fold_features", "fold_mean_r", "inner_splits", "intersubject_ceiling",
    "load", "mean_over_subjects", "null_indices", "outer_splits", "pattern_maps", "pearson_r",
    "permutation_test",
    "r2_score", "refit_null_test", "target_batch_size", "valid_target_mask",
]
