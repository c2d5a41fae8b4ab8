"""The Story type: the words a listener heard, with their timing, split into scanner runs.

A Story is the stimulus contract every later stage relies on: word text with onset and
offset in seconds (relative to the start of the run it belongs to), the run of each word,
and optionally the scan each run was heard in: the repetition time (TR), the number of
volumes, and the stimulus time of the first volume on the run's word clock.

Time contract: volume ``k`` of run ``r`` is stamped ``first_volume_s[r] + k * tr_s`` on the
clock of that run's words and covers ``[that time, that time + tr_s)``. Nothing assumes
that the scan starts with the words: data that discarded volumes, or padded the audio,
state it in ``first_volume_s`` (:meth:`Story.with_scan`). Words outside the scan are an
error unless allowed explicitly, because they are the mark of a timing mistake (a scan
shifted by whole TRs against its words). Readers for alignment formats live in
:mod:`brainalign.stimuli.readers`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from brainalign.provenance import config_hash

logger = logging.getLogger(__name__)

#: Rounding in alignment files (seconds) tolerated when words are checked against a scan.
_TIME_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class Word:
    """One spoken word.

    Attributes
    ----------
    text : str
        The word as written in the transcript (punctuation attached as in the source).
    onset_s, offset_s : float
        Start and end of the word in seconds from the start of its run.
    run : int
        Index of the scanner run (0-based) the word was heard in.
    """

    text: str
    onset_s: float
    offset_s: float
    run: int = 0


@dataclass(frozen=True)
class Story:
    """A naturalistic stimulus: timed words grouped into runs, and the scan of each run.

    Attributes
    ----------
    name : str
        Short identifier used in file names (``alice``, ``the-lighthouse-keeper``).
    words : tuple of Word
        In presentation order; within a run, onsets never decrease.
    tr_s : float, optional
        Repetition time of the matching fMRI acquisition, in seconds.
    n_volumes : tuple of int, optional
        Number of fMRI volumes of each run (one entry per run).
    source : str, optional
        Path or description of the file the timing came from (provenance).
    metadata : dict
        Reader details (format, files, ...); not compared.
    first_volume_s : tuple of float, optional
        Stimulus time (s, on each run's word clock) of the first volume of each run (one
        entry per run): ``20.0`` when the first 10 volumes of a 2 s TR were discarded and
        the words are timed from the start of the acquisition. Attach it with
        :meth:`with_scan`; resampling refuses a scan without it.
    """

    name: str
    words: tuple[Word, ...]
    tr_s: float | None = None
    n_volumes: tuple[int, ...] | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict, compare=False)
    first_volume_s: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.words:
            raise ValueError(f"story {self.name!r} has no words")
        if self.tr_s is not None and not self.tr_s > 0:
            raise ValueError(f"story {self.name!r}: tr_s must be > 0, got {self.tr_s}")
        if self.n_volumes is not None and not all(isinstance(n, (int, np.integer)) and n >= 1
                                                  for n in self.n_volumes):
            raise ValueError(f"story {self.name!r}: n_volumes must be whole numbers >= 1, one "
                             f"per run; got {list(self.n_volumes)}")
        for label, values in (("n_volumes", self.n_volumes), ("first_volume_s", self.first_volume_s)):
            if values is not None and len(values) != self.n_runs:
                raise ValueError(
                    f"story {self.name!r}: {label} has {len(values)} entries but the "
                    f"words span {self.n_runs} run(s)")
        if self.first_volume_s is not None and not all(math.isfinite(t) for t in self.first_volume_s):
            raise ValueError(f"story {self.name!r}: first_volume_s must be finite numbers, "
                             f"got {list(self.first_volume_s)}")

    @property
    def n_runs(self) -> int:
        return max(w.run for w in self.words) + 1

    @property
    def texts(self) -> list[str]:
        return [w.text for w in self.words]

    def words_hash(self) -> str:
        """A hash of the words: text, onset, offset and run of each (not the name or scan)."""
        return config_hash({"words": [[w.text, w.onset_s, w.offset_s, w.run]
                                      for w in self.words]})

    @property
    def has_scan(self) -> bool:
        """Whether the scan is fully known: ``tr_s``, ``n_volumes`` and ``first_volume_s``."""
        return None not in (self.tr_s, self.n_volumes, self.first_volume_s)

    def run_words(self, run: int) -> tuple[Word, ...]:
        """Words of one run, in order."""
        return tuple(w for w in self.words if w.run == run)

    def run_summary(self) -> list[dict]:
        """Per-run timing figures of the words and the scan, one dict per run.

        Keys: ``run``, ``n_words``, ``first_onset_s``, ``last_offset_s``, ``speech_s``
        (last offset - first onset), ``words_per_s`` (n_words / speech_s; None for a
        zero-length run), ``n_volumes``, ``scan_s`` (n_volumes * tr_s), ``first_volume_s``,
        ``scan_end_s`` (first_volume_s + scan_s: the end of the last volume) and
        ``n_outside_scan`` (words that start before the first volume or end after the
        last one). Scan figures are None where the scan is not known.
        """
        rows = []
        by_run: list[list[Word]] = [[] for _ in range(self.n_runs)]
        for word in self.words:  # one pass: long corpus stories have 100k words in 100 runs
            by_run[word.run].append(word)
        for run, words in enumerate(by_run):
            speech_s = words[-1].offset_s - words[0].onset_s if words else 0.0
            n_volumes = self.n_volumes[run] if self.n_volumes is not None else None
            scan_s = n_volumes * self.tr_s if n_volumes is not None and self.tr_s else None
            first_s = self.first_volume_s[run] if self.first_volume_s is not None else None
            end_s = first_s + scan_s if first_s is not None and scan_s is not None else None
            outside = None if end_s is None else sum(
                w.onset_s < first_s - _TIME_TOLERANCE_S or w.offset_s > end_s + _TIME_TOLERANCE_S
                for w in words)
            rows.append({
                "run": run,
                "n_words": len(words),
                "first_onset_s": words[0].onset_s if words else None,
                "last_offset_s": words[-1].offset_s if words else None,
                "speech_s": speech_s,
                "words_per_s": len(words) / speech_s if speech_s > 0 else None,
                "n_volumes": n_volumes,
                "scan_s": scan_s,
                "first_volume_s": first_s,
                "scan_end_s": end_s,
                "n_outside_scan": outside,
            })
        return rows

    def check_scan(self, allow_words_outside_scan: bool = False) -> None:
        """Raise unless the scan is fully known and holds every word.

        Parameters
        ----------
        allow_words_outside_scan : bool, default False
            Accept words that start before the first volume or end after the last one
            (they are logged as a warning instead). Use it only where the data are known
            to cut the story, e.g. speech during discarded volumes.

        Raises
        ------
        ValueError
            When ``tr_s``, ``n_volumes`` or ``first_volume_s`` is missing (the message says
            how to attach them), or, unless allowed, naming each run with words outside
            its scan: the words' first onset and last offset against the scan's start
            and end.
        """
        missing = [name for name in ("tr_s", "n_volumes", "first_volume_s")
                   if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"story {self.name!r} has no complete scan timing (missing {', '.join(missing)}); "
                "attach it with story.with_scan(tr_s, n_volumes, first_volume_s=...), where "
                "first_volume_s is the stimulus time (s, on the words' clock) of each run's "
                "first volume")
        problems = [
            f"run {row['run']}: {row['n_outside_scan']} of {row['n_words']} word(s) outside the "
            f"scan: words {row['first_onset_s']:.3f} .. {row['last_offset_s']:.3f} s, scan "
            f"{row['first_volume_s']:.3f} .. {row['scan_end_s']:.3f} s ({row['n_volumes']} "
            f"volumes of {self.tr_s:g} s)"
            for row in self.run_summary() if row["n_outside_scan"]]
        if not problems:
            return
        message = f"story {self.name!r}: " + "; ".join(problems)
        if allow_words_outside_scan:
            logger.warning("%s (allowed by allow_words_outside_scan)", message)
            return
        raise ValueError(message + ". Check first_volume_s (the stimulus time of the first "
                         "kept volume) and n_volumes against the data, or pass "
                         "allow_words_outside_scan=True if the scan truly cuts the story")

    def with_scan(self, tr_s: float, n_volumes: Sequence[int], *,
                  first_volume_s: float | Sequence[float],
                  allow_words_outside_scan: bool = False) -> "Story":
        """The same story with the timing of its fMRI acquisition attached.

        Parameters
        ----------
        tr_s : float
            Repetition time in seconds.
        n_volumes : sequence of int
            Volumes of each run (one per run).
        first_volume_s : float or sequence of float
            Stimulus time (s, on each run's word clock) of each run's first volume; one
            number applies to every run. Required: a wrong value shifts every feature.
        allow_words_outside_scan : bool, default False
            See :meth:`check_scan`.

        Returns
        -------
        Story

        Raises
        ------
        ValueError
            When the scan does not hold the words (see :meth:`check_scan`).
        """
        first = [float(t) for t in np.atleast_1d(np.asarray(first_volume_s, dtype=np.float64))]
        if np.ndim(first_volume_s) == 0:  # one number for every run; a list is one per run
            first = first * self.n_runs
        volumes = tuple(int(n) if isinstance(n, (int, float, np.number)) and float(n).is_integer()
                        else n for n in n_volumes)  # 132.0 -> 132; anything else is refused
        story = Story(self.name, self.words, float(tr_s), volumes,
                      self.source, dict(self.metadata), tuple(first))
        story.check_scan(allow_words_outside_scan)
        return story
