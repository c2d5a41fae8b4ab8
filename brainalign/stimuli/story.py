"""The Story type: the words a listener heard, with their timing, split into scanner runs.

A Story is the stimulus contract every later stage relies on: word text with onset and
offset in seconds (relative to the start of the run it belongs to), the run of each word,
and optionally the repetition time (TR) and number of volumes of each run's scan.
Readers for alignment formats live in :mod:`brainalign.stimuli.readers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


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
    """A naturalistic stimulus: timed words grouped into runs.

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
    """

    name: str
    words: tuple[Word, ...]
    tr_s: float | None = None
    n_volumes: tuple[int, ...] | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.words:
            raise ValueError(f"story {self.name!r} has no words")
        if self.tr_s is not None and not self.tr_s > 0:
            raise ValueError(f"story {self.name!r}: tr_s must be > 0, got {self.tr_s}")
        if self.n_volumes is not None and len(self.n_volumes) != self.n_runs:
            raise ValueError(
                f"story {self.name!r}: n_volumes has {len(self.n_volumes)} entries but the "
                f"words span {self.n_runs} run(s)"
            )

    @property
    def n_runs(self) -> int:
        return max(w.run for w in self.words) + 1

    @property
    def texts(self) -> list[str]:
        return [w.text for w in self.words]

    def run_words(self, run: int) -> tuple[Word, ...]:
        """Words of one run, in order."""
        return tuple(w for w in self.words if w.run == run)

    def run_summary(self) -> list[dict]:
        """Per-run timing figures, one dict per run.

        Keys: ``run``, ``n_words``, ``first_onset_s``, ``last_offset_s``, ``speech_s``
        (last offset - first onset), ``words_per_s`` (n_words / speech_s; None for a
        zero-length run), ``n_volumes`` and ``scan_s`` (n_volumes * tr_s; None when the
        scan timing is unknown).
        """
        rows = []
        for run in range(self.n_runs):
            words = self.run_words(run)
            speech_s = words[-1].offset_s - words[0].onset_s if words else 0.0
            n_volumes = self.n_volumes[run] if self.n_volumes is not None else None
            rows.append({
                "run": run,
                "n_words": len(words),
                "first_onset_s": words[0].onset_s if words else None,
                "last_offset_s": words[-1].offset_s if words else None,
                "speech_s": speech_s,
                "words_per_s": len(words) / speech_s if speech_s > 0 else None,
                "n_volumes": n_volumes,
                "scan_s": n_volumes * self.tr_s if n_volumes is not None and self.tr_s else None,
            })
        return rows

    def with_scan(self, tr_s: float, n_volumes: Sequence[int]) -> "Story":
        """The same story with the timing of its fMRI acquisition attached."""
        return Story(self.name, self.words, float(tr_s), tuple(int(n) for n in n_volumes),
                     self.source, dict(self.metadata))
