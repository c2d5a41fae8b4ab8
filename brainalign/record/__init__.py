"""Recording: neuron values, word by word, while a model reads a story.

- :mod:`~brainalign.record.alignment`: each word's own tokens, from character offsets.
- :mod:`~brainalign.record.recorder`: :func:`record_story` (context windows, on-device
  pooling to words, streaming to disk, resumable) and :func:`record_timecourses` (the same
  recording on the TR grid, held in memory).
- :mod:`~brainalign.record.store`: the on-disk format and :class:`Recording`.
- :mod:`~brainalign.record.neurons`: :class:`NeuronTable` (layer, site, unit of each column).
- :mod:`~brainalign.record.corpus`: :func:`record_corpus` (a long reference text straight
  to TR time courses on disk).
"""

from brainalign.record.alignment import AlignmentError, WordAlignment, align_words
from brainalign.record.corpus import load_corpus_timecourses, record_corpus
from brainalign.record.neurons import NeuronTable
from brainalign.record.recorder import (DEFAULT_CONTEXT_TOKENS, POOLINGS, ContextPolicy,
                                        Window, context_policy, plan_windows, pool_to_words,
                                        record_story, record_timecourses)
from brainalign.record.store import IncompleteRecordingError, Recording

__all__ = ["record_story", "record_timecourses", "Recording", "NeuronTable", "align_words", "WordAlignment",
           "AlignmentError", "ContextPolicy", "Window", "context_policy", "plan_windows",
           "pool_to_words", "IncompleteRecordingError", "DEFAULT_CONTEXT_TOKENS", "POOLINGS",
           "load_corpus_timecourses", "record_corpus"]
