"""Writers for story timings: TSV/CSV tables and Praat TextGrids.

The inverse of :mod:`brainalign.stimuli.readers`: what these functions write, the readers
read back to an equal :class:`~brainalign.stimuli.story.Story` (times are written with
Python's shortest round-trip float repr, so nothing is lost). Standard library only.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from brainalign.stimuli.readers import DEFAULT_SILENCES
from brainalign.stimuli.story import Story


def _seconds(value: float) -> str:
    return repr(float(value))


def _refuse_silence_labels(words, what: str) -> None:
    """A ValueError when a word is spelled like a silence label (:data:`DEFAULT_SILENCES`):
    the readers would drop it when the file is read back."""
    silent = sorted({w.text for w in words if w.text.strip().casefold() in DEFAULT_SILENCES})
    if silent:
        raise ValueError(f"the story has words spelled like silence labels ({silent}); a "
                         f"{what} reader skips those, so they would be lost on reading it "
                         "back; rename them before writing")


def write_table(story: Story, path: str | os.PathLike, *, delimiter: str = "\t") -> Path:
    """Write the words as a table with columns word, onset, offset, run_index.

    Parameters
    ----------
    story : Story
        The story to write; ``run_index`` is the 0-based run index (runs without words
        keep their place when :func:`~brainalign.stimuli.readers.read_table` reads it).
    path : path-like
        Output file (``.tsv`` for tabs, ``.csv`` with ``delimiter=","``).
    delimiter : str
        Column separator. With a tab, cells are written verbatim (a word must not hold a
        tab); otherwise CSV quoting applies.

    Raises
    ------
    ValueError
        A word spelled like a silence label (``#``, ``sp``...: :func:`read_table` would
        skip it), or a tab or newline in a word of a tab-separated table.

    Returns
    -------
    Path
        The file written.
    """
    path = Path(path)
    _refuse_silence_labels(story.words, "table")
    if delimiter == "\t" and any("\t" in w.text or "\n" in w.text for w in story.words):
        raise ValueError("a word holds a tab or newline; write a CSV (delimiter=',') instead")
    quoting = (dict(quoting=csv.QUOTE_NONE, quotechar=None) if delimiter == "\t"
               else dict(quoting=csv.QUOTE_MINIMAL))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n", **quoting)
        writer.writerow(["word", "onset", "offset", "run_index"])
        for word in story.words:
            writer.writerow([word.text, _seconds(word.onset_s), _seconds(word.offset_s),
                             word.run])
    return path


def _praat_text(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def write_textgrid(story: Story, path: str | os.PathLike, *, run: int = 0,
                   tier: str = "words", xmax_s: float | None = None,
                   short: bool = False) -> Path:
    """Write one run's words as a Praat TextGrid with one interval tier.

    Gaps between words (and before the first and after the last) become empty
    intervals, as Praat requires a tier to cover its whole time range.

    Parameters
    ----------
    story : Story
        The story; only the words of ``run`` are written.
    path : path-like
        Output ``.TextGrid`` file (UTF-8).
    run : int
        Which run to write.
    tier : str
        Name of the interval tier.
    xmax_s : float, optional
        End of the TextGrid in seconds; default the end of the run's scan
        (``first_volume_s[run] + n_volumes[run] * tr_s``) when the scan is known, else the
        last word's offset.
    short : bool
        Write Praat's short text format instead of the long one.

    Returns
    -------
    Path
        The file written.
    """
    words = story.run_words(run)
    if not words:
        raise ValueError(f"story {story.name!r} has no words in run {run}")
    _refuse_silence_labels(words, "TextGrid")
    end = words[-1].offset_s
    if xmax_s is None:
        xmax_s = story.run_summary()[run]["scan_end_s"]
    xmax_s = max(end, xmax_s if xmax_s is not None else end)
    intervals: list[tuple[float, float, str]] = []
    clock = 0.0
    for word in words:
        if word.onset_s < clock:
            raise ValueError(f"word {word.text!r} at {word.onset_s} s starts before the "
                             f"previous one ends ({clock} s): TextGrid intervals cannot overlap")
        if word.onset_s > clock:
            intervals.append((clock, word.onset_s, ""))
        intervals.append((word.onset_s, word.offset_s, word.text))
        clock = word.offset_s
    if xmax_s > clock:
        intervals.append((clock, xmax_s, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', ""]
    if short:
        lines += ["0", _seconds(xmax_s), "<exists>", "1", '"IntervalTier"', _praat_text(tier),
                  "0", _seconds(xmax_s), str(len(intervals))]
        for xmin, xmax, text in intervals:
            lines += [_seconds(xmin), _seconds(xmax), _praat_text(text)]
    else:
        lines += ["xmin = 0", f"xmax = {_seconds(xmax_s)}", "tiers? <exists>", "size = 1",
                  "item []:", "    item [1]:", '        class = "IntervalTier"',
                  f"        name = {_praat_text(tier)}", "        xmin = 0",
                  f"        xmax = {_seconds(xmax_s)}",
                  f"        intervals: size = {len(intervals)}"]
        for i, (xmin, xmax, text) in enumerate(intervals, start=1):
            lines += [f"        intervals [{i}]:", f"            xmin = {_seconds(xmin)}",
                      f"            xmax = {_seconds(xmax)}",
                      f"            text = {_praat_text(text)}"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
