"""Voxelwise ridge encoding models (himalaya) with honest held-out scores and statistics.

``fit_encoding`` runs the whole recipe (nested run-wise CV, Pearson ``r`` and ``R²``,
permutation null, FDR, final refit); ``EncodingModel`` is the scikit-learn estimator
underneath; ``EncodingResult`` saves to npz + JSON and loads without a GPU.
"""

from .backend import choose_backend, target_batch_size
from .ceiling import explainable_variance, intersubject_ceiling
from .cv import contiguous_blocks, inner_splits, outer_splits
from .fit import fit_encoding
from .maps import DelayedCoefficients, pattern_maps
from .null import FoldOperator, refit_null_test
from .result import EncodingResult, load
from .ridge import DEFAULT_ALPHAS, EncodingModel, choose_solver, valid_target_mask
from .stats import fdr, fold_mean_r, null_indices, pearson_r, permutation_test, r2_score

__all__ = [
    "DEFAULT_ALPHAS", "DelayedCoefficients", "EncodingModel", "EncodingResult", "FoldOperator", "choose_backend", "choose_solver",
    "contiguous_blocks", "explainable_variance", "fdr", "fit_encoding", "fold_mean_r", "inner_splits",
    "intersubject_ceiling", "load", "null_indices", "outer_splits", "pattern_maps", "pearson_r",
    "permutation_test", "r2_score", "refit_null_test", "target_batch_size", "valid_target_mask",
]
