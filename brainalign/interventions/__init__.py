"""Causal tests: edit neurons (study B) or parameter regions (study C) and measure the effect.

- :mod:`.neurons`: :class:`NeuronSet`, :func:`lesion`, :func:`keep_only`, :func:`scale`,
  :func:`add` (context managers over ``brainalign.models.sites.site_hooks``),
  :func:`activation_statistics`.
- :mod:`.controls`: random sets matched by count, layer distribution or magnitude.
- :mod:`.evaluation`: sliding-window perplexity, pseudo-perplexity, top-1 accuracy.
- :mod:`.corpora`: offline UDHR and prose readers, fit / held-out splits.
- :mod:`.regions`: parameter importance, top/bottom/random regions, zeroing, freezing.
"""

from brainalign.interventions.controls import (count_matched, layer_matched, magnitude_matched,
                                               matched_controls, universe_table)
from brainalign.interventions.corpora import (TextSplit, UDHRText, prose_split, read_prose, read_udhr,
                                              udhr_languages, udhr_split)
from brainalign.interventions.evaluation import (LMScore, causal_perplexity, pseudo_perplexity,
                                                 score_languages, score_text, sliding_windows, tokenize)
from brainalign.interventions.neurons import (ActivationStatistics, NeuronSet, activation_statistics, add,
                                              edit_neurons, keep_only, lesion, scale, token_activations)
from brainalign.interventions.regions import (LanguageImportance, Region, block_matrices, continue_training,
                                              dimension_parameter, dimension_profile, edit_region,
                                              language_importance, monolingual_region, parameter_importance,
                                              scale_region, select_region, zero_region)

__all__ = [
    "ActivationStatistics", "LMScore", "LanguageImportance", "NeuronSet", "Region", "TextSplit", "UDHRText",
    "activation_statistics", "add", "block_matrices", "causal_perplexity", "continue_training",
    "count_matched", "dimension_parameter", "dimension_profile", "edit_neurons", "edit_region",
    "keep_only", "language_importance", "layer_matched", "lesion", "magnitude_matched",
    "matched_controls", "monolingual_region", "parameter_importance", "prose_split",
    "pseudo_perplexity", "read_prose", "read_udhr", "scale", "scale_region", "score_languages",
    "score_text", "select_region", "sliding_windows", "token_activations", "tokenize", "udhr_languages", "udhr_split",
    "universe_table", "zero_region",
]
