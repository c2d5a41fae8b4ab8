"""Readers that turn word-alignment files into a :class:`~brainalign.stimuli.story.Story`.

Formats (chosen by :func:`load_story` from the file extension):

- Praat TextGrid (``.TextGrid``), the long ("ooTextFile" with ``xmin = ...`` labels) and
  the short (values only) text formats, UTF-8 or UTF-16; the word tier is picked by name
  or by heuristics (:func:`read_textgrid`).
- Gentle forced-alignment JSON (``.json``); words Gentle could not align get times
  interpolated between their neighbours and are listed in
  ``story.metadata["interpolated_words"]`` (:func:`read_gentle`).
- TSV/CSV tables (``.tsv``, ``.csv``) with a header naming the columns word, onset,
  offset and optionally run (:func:`read_table`).
- Plain text (``.txt``) timed by a stated speech rate (:func:`read_text`, the model
  lives in :mod:`brainalign.stimuli.speech`).
- A story directory holding ``story.json`` and ``words.tsv`` (the bundled layout).

Silent intervals ("sp", "sil", "", "<sil>", ... see :data:`DEFAULT_SILENCES`) are skipped.
Timing is checked strictly: a negative time, an offset before its onset, onsets that go
back in time, or a word that starts before the previous one ends raise
:class:`StoryFormatError` naming the file, the line (or entry) and the reason. Only
overlaps up to :data:`OVERLAP_TOLERANCE_S` (1 ms, rounding in the aligners' output) pass,
and the times are then kept exactly as written.

Written by hand with the standard library (``re``, ``csv``, ``json``): the formats are
small, and errors that name the line need the parser's own bookkeeping.
"""

from __future__ import annotations

import bisect
import csv
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from brainalign.stimuli.speech import time_transcript
from brainalign.stimuli.story import Story, Word

logger = logging.getLogger(__name__)

#: Interval labels that mark silence or noise rather than a word (compared after
#: stripping spaces and case-folding): Praat/HTK ("sp", "sil", "<sil>"), Penn Forced
#: Aligner and MFA (empty labels), CMU Sphinx ("<s>", "</s>", "{sl}"), Buckeye-style
#: noise labels ("{lg}", "{ns}"), the Huth lab's TextGrids (LeBel et al. 2023: breath
#: "{BR}", cough "{CG}", "{IG}", "{LS}", "sentence_start", "sentence_end"), Kaldi-style
#: "[noise]", "[laughter]", "[vocalized-noise]", and "pau", "<p:>", "#". English words
#: ("silence", "pause") are deliberately not in the list: a story may say them.
DEFAULT_SILENCES: frozenset[str] = frozenset(
    {"", "sp", "sil", "<sil>", "pau", "<p:>", "#", "<s>", "</s>", "{sl}", "{lg}", "{ns}",
     "{br}", "{cg}", "{ig}", "{ls}", "sentence_start", "sentence_end", "[noise]",
     "[laughter]", "[vocalized-noise]"})

#: Largest overlap between consecutive words (seconds) accepted as rounding error.
OVERLAP_TOLERANCE_S = 1e-3

#: Tier names taken for the word tier without looking further (case-insensitive; MFA's
#: "speaker - words" also matches).
WORD_TIER_NAMES = ("words", "word", "wrd", "wrds")
#: Tier names never taken for the word tier by the search (a phone tier has more
#: intervals than the word tier, so "the most words" would pick it).
SUBWORD_TIER_NAMES = ("phones", "phone", "phn", "phns", "phonemes", "phoneme", "segments",
                      "segment", "syllables", "syllable", "syl", "chars", "characters")

#: Column names accepted in TSV/CSV files (first match wins), case-insensitive.
TABLE_COLUMNS = {
    "word": ("word", "text", "token"),
    "onset": ("onset", "onset_s", "start", "start_s"),
    "offset": ("offset", "offset_s", "end", "end_s"),
    "run": ("run",),
    "run_index": ("run_index",),
}

class StoryFormatError(ValueError):
    """A word-timing file that cannot be read: says which file, which line and why."""


@dataclass(frozen=True)
class _Timed:
    """A word as read from a file, with where it was found (for error messages)."""

    text: str
    onset_s: float
    offset_s: float
    where: str
    run: int = 0


def _fail(path: Path | str, where: str | None, why: str) -> StoryFormatError:
    place = f"{path}: {where}: " if where else f"{path}: "
    return StoryFormatError(place + why)


def _is_silence(text: str, silences: frozenset[str]) -> bool:
    return text.strip().casefold() in silences


def _silence_set(silences: Iterable[str] | None) -> frozenset[str]:
    return DEFAULT_SILENCES if silences is None else frozenset(
        s.strip().casefold() for s in silences)


def _check_timing(items: Sequence[_Timed], path: Path | str,
                 tolerance_s: float = OVERLAP_TOLERANCE_S) -> None:
    """Raise :class:`StoryFormatError` at the first item whose timing is impossible.

    Checks, in file order: times are finite numbers, no time is negative, an offset is
    not before its onset, runs do not go back, and within a run onsets never decrease and
    a word does not start more than ``tolerance_s`` before the previous one ends.
    """
    previous: _Timed | None = None
    for item in items:
        if not (math.isfinite(item.onset_s) and math.isfinite(item.offset_s)):
            raise _fail(path, item.where, f"time is not a finite number "
                        f"(onset {item.onset_s}, offset {item.offset_s})")
        if item.onset_s < 0 or item.offset_s < 0:
            raise _fail(path, item.where, f"negative time (onset {item.onset_s} s, offset "
                        f"{item.offset_s} s) for {item.text!r}")
        if item.offset_s < item.onset_s:
            raise _fail(path, item.where, f"offset before onset for {item.text!r}: "
                        f"{item.offset_s} s < {item.onset_s} s")
        if previous is not None and item.run < previous.run:
            raise _fail(path, item.where, f"run goes back from run {previous.run} to run "
                        f"{item.run}; rows of a run must be contiguous and in order")
        if previous is not None and item.run == previous.run:
            if item.onset_s < previous.onset_s:
                raise _fail(path, item.where, f"decreasing onsets: {item.text!r} starts at "
                            f"{item.onset_s} s, before the previous word {previous.text!r} "
                            f"({previous.where}) at {previous.onset_s} s")
            if item.onset_s < previous.offset_s - tolerance_s:
                raise _fail(path, item.where, f"overlapping words: {item.text!r} starts at "
                            f"{item.onset_s} s, but the previous word {previous.text!r} "
                            f"({previous.where}) ends at {previous.offset_s} s (tolerance "
                            f"{tolerance_s * 1e3:g} ms)")
        previous = item


def _story(name: str, items: Sequence[_Timed], path: Path, metadata: dict) -> Story:
    if not items:
        raise _fail(path, None, "no words found (only silence)")
    words = tuple(Word(i.text.strip(), float(i.onset_s), float(i.offset_s), i.run)
                  for i in items)
    metadata = {"files": [str(path)], **metadata}
    return Story(name, words, source=str(path), metadata=metadata)


def _read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise _fail(path, None, "file is empty")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise _fail(path, f"line {line}", "not valid UTF-8 (or UTF-16 with a byte-order "
                    "mark) text") from None


# --------------------------------------------------------------------------- TextGrid

_TEXTGRID_TOKEN = re.compile(r"""
    "(?P<string>(?:[^"]|"")*)"                                   # "text", "" is a quote
  | (?P<flag><exists>|<absent>)
  | (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?=[\s!]|\Z)
  | (?P<index>\[[^\]\n]*\])                                       # [1], [] : skipped
  | (?P<comment>![^\n]*)
  | (?P<word>[^\s"\[!]+)                                          # labels: xmin =, size =
""", re.VERBOSE)

#: Lines of the long format that carry no value (``item []:``, ``intervals [3]:``).
_STRUCTURE_LABELS = {"item", "intervals", "points"}


def _label(words: list[str]) -> str:
    """``['intervals:', 'size', '=']`` -> ``'intervals size'``."""
    return " ".join(" ".join(words).replace("=", " ").replace(":", " ").split()).casefold()


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "number" or "flag"
    value: str
    line: int
    label: str  # the text before the value on its line, e.g. "xmin" ("" in short format)


class _TextGridTokens:
    """The values of a Praat text file, in order, with their line and label."""

    def __init__(self, text: str, path: Path):
        self.path = path
        newlines = [m.start() for m in re.finditer("\n", text)]
        self.tokens: list[_Token] = []
        label_words: list[str] = []
        label_line = 1
        for match in _TEXTGRID_TOKEN.finditer(text):
            line = bisect.bisect_right(newlines, match.start()) + 1
            if label_words and line != label_line:
                self._check_dangling(label_words, label_line)
                label_words = []
            kind = match.lastgroup
            if kind == "word":
                label_words.append(match.group(kind))
                label_line = line
                continue
            if kind in ("index", "comment"):
                continue
            value = match.group(kind)
            if kind == "string":
                value = value.replace('""', '"')
            self.tokens.append(_Token(kind, value, line, _label(label_words)))
            label_words = []
        if label_words:
            self._check_dangling(label_words, label_line)
        self.position = 0
        self.long_format = False

    def _check_dangling(self, words: list[str], line: int) -> None:
        if _label(words) not in _STRUCTURE_LABELS:
            raise _fail(self.path, f"line {line}", f"malformed line {' '.join(words)!r}: "
                        "expected a number, a quoted text or <exists>")

    def take(self, kind: str, what: str, label: str | None = None) -> _Token:
        """The next value, which must be of ``kind`` (and carry ``label`` in long format)."""
        if self.position >= len(self.tokens):
            last = self.tokens[-1].line if self.tokens else 1
            raise _fail(self.path, f"line {last}", f"file ends early: expected {what}")
        token = self.tokens[self.position]
        self.position += 1
        shown = f'"{token.value}"' if token.kind == "string" else token.value
        if len(shown) > 40:
            shown = shown[:37] + "..."
        shown = shown.replace("\n", "\\n")
        if self.long_format and label is not None and token.label != label:
            self._raise(token, f"expected '{label} = ...' ({what}) but found "
                        f"'{token.label} = {shown}'")
        if token.kind != kind:
            self._raise(token, f"expected {what} "
                        f"({'a ' + kind if kind != 'flag' else '<exists>'}) but found {shown}")
        return token

    def _raise(self, token: _Token, why: str) -> None:
        """Fail at ``token``; point at a text before it that swallowed several lines."""
        previous = self.tokens[self.position - 2] if self.position >= 2 else None
        if previous is not None and previous.kind == "string" and "\n" in previous.value:
            why += (f" (the text that starts on line {previous.line} runs over several "
                    "lines: is its closing quote missing?)")
        raise _fail(self.path, f"line {token.line}", why)

    def number(self, what: str, label: str | None = None) -> tuple[float, int]:
        token = self.take("number", what, label)
        return float(token.value), token.line

    def count(self, what: str, label: str | None = None) -> int:
        token = self.take("number", what, label)
        value = float(token.value)
        if value < 0 or value != int(value):
            raise _fail(self.path, f"line {token.line}",
                        f"expected {what} (a count >= 0) but found {token.value}")
        return int(value)


@dataclass(frozen=True)
class _Tier:
    name: str
    tier_class: str
    intervals: tuple[tuple[float, float, str, int], ...]  # xmin, xmax, text, line


def _parse_textgrid(path: Path) -> tuple[list[_Tier], str]:
    with path.open("rb") as handle:
        binary = handle.read(len(b"ooBinaryFile")) == b"ooBinaryFile"
    if binary:
        raise _fail(path, "line 1", "binary TextGrid files are not supported: save it from "
                    "Praat as a text file (long or short format)")
    text = _read_text_file(path)
    tokens = _TextGridTokens(text, path)
    if not tokens.tokens:
        raise _fail(path, None, "file is empty (no values found)")
    first = tokens.take("string", 'the header File type = "ooTextFile"')
    if first.value == "ooBinaryFile":
        raise _fail(path, f"line {first.line}", "binary TextGrid files are not supported: "
                    "save it from Praat as a text file (long or short format)")
    if first.value not in ("ooTextFile", "ooTextFile short"):
        raise _fail(path, f"line {first.line}", f'not a Praat text file: expected '
                    f'File type = "ooTextFile", found "{first.value}"')
    kind = tokens.take("string", 'the header Object class = "TextGrid"')
    if kind.value.split()[0] != "TextGrid":
        raise _fail(path, f"line {kind.line}", f"the file holds a Praat {kind.value!r}, "
                    "not a TextGrid")
    if tokens.position < len(tokens.tokens):
        tokens.long_format = tokens.tokens[tokens.position].label == "xmin"
    tokens.number("the TextGrid's xmin", "xmin")
    tokens.number("the TextGrid's xmax", "xmax")
    exists = tokens.take("flag", "tiers? <exists>", "tiers?")
    if exists.value == "<absent>":
        raise _fail(path, f"line {exists.line}", "missing tier: the TextGrid has no tiers")
    n_tiers = tokens.count("the number of tiers", "size")
    tiers = []
    for t in range(1, n_tiers + 1):
        tier_class = tokens.take("string", f"the class of tier {t}", "class")
        name = tokens.take("string", f"the name of tier {t}", "name").value
        tokens.number(f"the xmin of tier {name!r}", "xmin")
        tokens.number(f"the xmax of tier {name!r}", "xmax")
        if tier_class.value == "IntervalTier":
            n = tokens.count(f"the number of intervals of tier {name!r}", "intervals size")
            intervals = []
            for i in range(1, n + 1):
                where = f"interval {i} of tier {name!r}"
                xmin, line = tokens.number(f"the xmin of {where}", "xmin")
                xmax, _ = tokens.number(f"the xmax of {where}", "xmax")
                label = tokens.take("string", f"the text of {where}", "text").value
                intervals.append((xmin, xmax, label, line))
        elif tier_class.value == "TextTier":
            n = tokens.count(f"the number of points of tier {name!r}", "points size")
            for i in range(1, n + 1):
                tokens.number(f"the time of point {i} of tier {name!r}", "number")
                tokens.take("string", f"the mark of point {i} of tier {name!r}", "mark")
            intervals = []
        else:
            raise _fail(path, f"line {tier_class.line}", f"unknown tier class "
                        f"{tier_class.value!r} (expected IntervalTier or TextTier)")
        tiers.append(_Tier(name, tier_class.value, tuple(intervals)))
    if tokens.position < len(tokens.tokens):
        extra = tokens.tokens[tokens.position]
        raise _fail(path, f"line {extra.line}", f"unexpected value {extra.value!r} after the "
                    f"last of the {n_tiers} tier(s) the header announced")
    return tiers, "long" if tokens.long_format else "short"


def _describe_tiers(tiers: Sequence[_Tier]) -> str:
    return ", ".join(f"{t.name!r} ({t.tier_class}, {len(t.intervals)} intervals)"
                     for t in tiers) or "none"


def _choose_tier(tiers: Sequence[_Tier], tier: str | None, silences: frozenset[str],
                 path: Path) -> _Tier:
    interval_tiers = [t for t in tiers if t.tier_class == "IntervalTier"]
    if tier is not None:
        exact = [t for t in interval_tiers if t.name == tier]
        folded = [t for t in interval_tiers if t.name.casefold() == tier.casefold()]
        if exact or folded:
            return (exact or folded)[0]
        raise _fail(path, None, f"missing tier: no interval tier named {tier!r}; the file "
                    f"has {_describe_tiers(tiers)}")
    by_name = [t for t in interval_tiers
               if t.name.split(" - ")[-1].strip().casefold() in WORD_TIER_NAMES]
    if by_name:
        if len(by_name) > 1:
            logger.warning("%s: several word tiers (%s); using the first, %r (pass tier=...)",
                           path, ", ".join(t.name for t in by_name), by_name[0].name)
        return by_name[0]

    def n_words(t: _Tier) -> int:
        return sum(not _is_silence(label, silences) for _, _, label, _ in t.intervals)

    candidates = [t for t in interval_tiers if n_words(t) > 0
                  and t.name.split(" - ")[-1].strip().casefold() not in SUBWORD_TIER_NAMES]
    if not candidates:
        raise _fail(path, None, "missing tier: no interval tier holds words; the file has "
                    f"{_describe_tiers(tiers)}; pass tier=NAME")
    if len(candidates) > 1:
        raise _fail(path, None, f"ambiguous tiers: no tier is named like "
                    f"{'/'.join(WORD_TIER_NAMES)} and {len(candidates)} could be the words "
                    f"({_describe_tiers(candidates)}); pass tier=NAME")
    logger.info("%s: no tier named like %s; using %r, the only interval tier with words "
                "besides phone-like tiers", path, "/".join(WORD_TIER_NAMES), candidates[0].name)
    return candidates[0]


def read_textgrid(path: str | os.PathLike, name: str | None = None, *,
                  tier: str | None = None, silences: Iterable[str] | None = None,
                  tolerance_s: float = OVERLAP_TOLERANCE_S) -> Story:
    """Read the word tier of a Praat TextGrid (long or short text format).

    Parameters
    ----------
    path : path-like
        The ``.TextGrid`` file (UTF-8, or UTF-16 with a byte-order mark, as Praat writes).
    name : str, optional
        The story name; default the file stem.
    tier : str, optional
        Name of the word tier (exact, else case-insensitive match). By default the first
        interval tier named like :data:`WORD_TIER_NAMES` (also "speaker - words"), else
        the interval tier with the most non-silent intervals.
    silences : iterable of str, optional
        Interval labels to skip (case-insensitive); default :data:`DEFAULT_SILENCES`.
    tolerance_s : float
        Overlap between consecutive intervals accepted as rounding error, in seconds.

    Returns
    -------
    Story
        One run (run 0); times are the TextGrid's own (seconds from the start of the
        audio). ``metadata`` holds ``format`` ("textgrid-long" or "textgrid-short"),
        ``tier`` and ``files``.

    Raises
    ------
    StoryFormatError
        Empty or malformed file, missing tier, or impossible timing, with the line number
        and interval index.
    """
    path = Path(path)
    silence_set = _silence_set(silences)
    tiers, layout = _parse_textgrid(path)
    chosen = _choose_tier(tiers, tier, silence_set, path)
    items = [_Timed(label, xmin, xmax, f"line {line} (tier {chosen.name!r}, interval {i})")
             for i, (xmin, xmax, label, line) in enumerate(chosen.intervals, start=1)]
    _check_timing(items, path, tolerance_s)
    words = [item for item in items if not _is_silence(item.text, silence_set)]
    return _story(name or path.stem, words, path,
                  {"format": f"textgrid-{layout}", "tier": chosen.name,
                   "n_silences_skipped": len(items) - len(words)})


# --------------------------------------------------------------------------- Gentle JSON


def read_gentle(path: str | os.PathLike, name: str | None = None, *,
                tolerance_s: float = OVERLAP_TOLERANCE_S) -> Story:
    """Read a Gentle forced-alignment JSON file.

    Words with ``"case": "success"`` keep Gentle's ``start``/``end``. Words Gentle did not
    find in the audio (``"not-found-in-audio"``, or any word without times) are kept and
    timed by interpolation: a stretch of k unaligned words shares the gap between the
    previous aligned word's end and the next aligned word's start equally (each gets
    gap / k; a zero gap gives zero-length words). Before the first aligned word, or after
    the last, each unaligned word gets the median aligned word duration. Their indices in
    ``story.words`` are listed in ``story.metadata["interpolated_words"]``. Entries that
    Gentle marks ``"not-found-in-transcript"`` are not transcript words; they are skipped
    and counted in ``metadata["skipped_entries"]``.

    Parameters
    ----------
    path : path-like
        The JSON file Gentle wrote (``{"transcript": ..., "words": [...]}``).
    name : str, optional
        The story name; default the file stem.
    tolerance_s : float
        Overlap between consecutive aligned words accepted as rounding error, in seconds.

    Returns
    -------
    Story
        One run (run 0).

    Raises
    ------
    StoryFormatError
        Not JSON, no ``words`` list, an entry without ``word``, no aligned word at all,
        or impossible timing; the message names the entry (1-based) of ``words``.
    """
    path = Path(path)
    text = _read_text_file(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(path, f"line {err.lineno}", f"malformed JSON: {err.msg}") from None
    entries = document.get("words") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _fail(path, None, 'expected a Gentle alignment: an object with a non-empty '
                    '"words" list')
    rows: list[tuple[str, float | None, float | None, str]] = []
    skipped = 0
    for i, entry in enumerate(entries, start=1):
        where = f"entry {i} of 'words'"
        if not isinstance(entry, dict) or not isinstance(entry.get("word"), str):
            raise _fail(path, where, 'malformed entry: expected an object with a "word" text')
        case = entry.get("case", "success")
        if case == "not-found-in-transcript":
            skipped += 1
            continue
        aligned = case == "success" and "start" in entry and "end" in entry
        if aligned:
            try:
                onset, offset = float(entry["start"]), float(entry["end"])
            except (TypeError, ValueError):
                raise _fail(path, where, f"start/end are not numbers: {entry['start']!r}, "
                            f"{entry['end']!r}") from None
            rows.append((entry["word"], onset, offset, where))
        else:
            rows.append((entry["word"], None, None, where))
    aligned_rows = [_Timed(w, a, b, where) for w, a, b, where in rows if a is not None]
    if not aligned_rows:
        raise _fail(path, None, f"none of the {len(rows)} words was aligned to the audio "
                    "(no entry with case 'success'): nothing to interpolate from")
    _check_timing(aligned_rows, path, tolerance_s)
    items, interpolated = _interpolate(rows)
    if interpolated:
        logger.warning("%s: %d of %d words (%.1f%%) were not aligned to the audio; their "
                       "times are interpolated between aligned neighbours (the story's "
                       "metadata lists them as interpolated_words)", path, len(interpolated),
                       len(items), 100 * len(interpolated) / len(items))
    _check_timing(items, path, tolerance_s)
    return _story(name or path.stem, items, path,
                  {"format": "gentle", "interpolated_words": interpolated,
                   "skipped_entries": skipped})


def _interpolate(rows: list[tuple[str, float | None, float | None, str]]
                 ) -> tuple[list[_Timed], list[int]]:
    """Fill the times of unaligned rows (None) from their aligned neighbours."""
    durations = sorted(b - a for _, a, b, _ in rows if a is not None)
    typical = durations[len(durations) // 2]
    items: list[_Timed] = []
    interpolated: list[int] = []
    i = 0
    while i < len(rows):
        if rows[i][1] is not None:
            text, onset, offset, where = rows[i]
            items.append(_Timed(text, onset, offset, where))
            i += 1
            continue
        j = i
        while j < len(rows) and rows[j][1] is None:
            j += 1
        k = j - i
        if i > 0 and j < len(rows):
            start, end = rows[i - 1][2], rows[j][1]
        elif j < len(rows):
            end = rows[j][1]
            start = max(0.0, end - k * typical)
        else:
            start = rows[i - 1][2]
            end = start + k * typical
        start = min(start, end)  # neighbours overlapping within the tolerance
        step = (end - start) / k
        for n in range(k):
            text, _, _, where = rows[i + n]
            interpolated.append(len(items))
            items.append(_Timed(text, start + n * step, start + (n + 1) * step, where))
        i = j
    return items, interpolated


# --------------------------------------------------------------------------- TSV / CSV


def _run_number(label: str) -> int | None:
    """The number in a run label (``"2"``, ``"run-02"``, ``"run2"``), None without one."""
    digits = re.fullmatch(r"(?:run[-_ ]?)?0*(\d+)", label.strip(), flags=re.IGNORECASE)
    return int(digits.group(1)) if digits else None


def read_table(path: str | os.PathLike, name: str | None = None, *,
               silences: Iterable[str] | None = None,
               tolerance_s: float = OVERLAP_TOLERANCE_S) -> Story:
    """Read word timings from a TSV or CSV table with a header.

    The header must name a word column (``word``, ``text`` or ``token``), an onset column
    (``onset``, ``onset_s``, ``start``, ``start_s``) and an offset column (``offset``,
    ``offset_s``, ``end``, ``end_s``), any case, in any order; other columns are ignored.
    An optional ``run`` column splits the words into runs: its distinct values, in order
    of appearance, become runs 0, 1, ... (the original labels are kept in
    ``metadata["run_labels"]``) and each run's rows must be contiguous; numbered labels
    (``2``, ``run-02``) out of numeric order are an error. A ``run_index``
    column (what :func:`~brainalign.stimuli.writers.write_table` writes) gives the 0-based
    run index itself, so a run without words keeps its place; it takes precedence over
    ``run``. The delimiter
    (tab, comma or semicolon) is sniffed from the header line. Tab-separated cells are
    taken verbatim (quotes are part of the word); comma- or semicolon-separated cells
    follow the CSV quoting rules. Rows whose word is a
    silence label are skipped (counted in ``metadata["n_silences_skipped"]``); blank
    lines are ignored.

    Parameters
    ----------
    path : path-like
        The table; times in seconds from the start of each run.
    name : str, optional
        The story name; default the file stem.
    silences : iterable of str, optional
        Word labels to skip (case-insensitive); default :data:`DEFAULT_SILENCES`.
    tolerance_s : float
        Overlap between consecutive words accepted as rounding error, in seconds.

    Returns
    -------
    Story

    Raises
    ------
    StoryFormatError
        Empty file, missing columns, a row with missing or non-numeric cells, or
        impossible timing; the message gives the line number (the header is line 1).
    """
    path = Path(path)
    silence_set = _silence_set(silences)
    text = _read_text_file(path)
    lines = [line.rstrip("\r") for line in text.split("\n")]
    header_index = next(i for i, line in enumerate(lines) if line.strip())
    header_line = lines[header_index]
    delimiter = max("\t,;", key=header_line.count)
    if header_line.count(delimiter) == 0:
        raise _fail(path, f"line {header_index + 1}", "header needs at least the columns "
                    f"word, onset and offset separated by tabs, commas or semicolons; found "
                    f"{header_line!r}")
    # Words may hold quote characters ("Hello,): a TSV is read verbatim, while a CSV
    # follows the usual quoting rules (a word holding a comma must be quoted).
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # each line keeps its end: a quoted CSV cell may span lines, and keeps its newline
    reader = csv.reader([line + "\n" for line in lines[header_index:]], delimiter=delimiter,
                        quoting=quoting)
    header = [cell.strip().casefold() for cell in next(reader)]
    columns = {}
    for role, aliases in TABLE_COLUMNS.items():
        found = [header.index(a) for a in aliases if a in header]
        if found:
            columns[role] = found[0]
        elif role not in ("run", "run_index"):
            raise _fail(path, f"line {header_index + 1}", f"header has no {role} column "
                        f"(expected one of {', '.join(aliases)}); found columns {header}")
    items = []
    run_labels: list[str] = []
    for row in reader:
        line = header_index + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise _fail(path, f"line {line}", f"malformed line: {len(row)} cell(s) but the "
                        f"header has {len(header)} columns: {row}")
        word = row[columns["word"]]
        try:
            onset = float(row[columns["onset"]])
            offset = float(row[columns["offset"]])
        except ValueError:
            raise _fail(path, f"line {line}", "malformed line: onset and offset must be "
                        f"numbers (seconds), found {row[columns['onset']]!r} and "
                        f"{row[columns['offset']]!r}") from None
        run = 0
        if "run_index" in columns:
            cell = row[columns["run_index"]].strip()
            if not cell.isdigit():
                raise _fail(path, f"line {line}", "malformed line: run_index must be a "
                            f"0-based integer, found {cell!r}")
            run = int(cell)
        elif "run" in columns:
            label = row[columns["run"]].strip()
            if label not in run_labels:
                run_labels.append(label)
            run = run_labels.index(label)
        items.append(_Timed(word, onset, offset, f"line {line}", run))
    numbers = [_run_number(label) for label in run_labels]
    if run_labels and None not in numbers and numbers != sorted(numbers):
        raise _fail(path, None, f"the run column lists runs {run_labels} in that order: run "
                    "numbers out of order would pair each run with another run's scan (runs "
                    "are taken in the order they appear); sort the rows by run, or give a "
                    "0-based run_index column")
    _check_timing(items, path, tolerance_s)
    words = [item for item in items if not _is_silence(item.text, silence_set)]
    metadata: dict = {"format": "table", "n_silences_skipped": len(items) - len(words)}
    if run_labels:
        metadata["run_labels"] = run_labels
    return _story(name or path.stem, words, path, metadata)


# --------------------------------------------------------------------------- plain text


def read_text(path: str | os.PathLike, name: str | None = None, *,
              words_per_s: float | None = None, syllables_per_s: float | None = None,
              sentence_pause_s: float = 0.0, clause_pause_s: float = 0.0,
              lead_in_s: float = 0.0) -> Story:
    """Time a plain-text transcript with a stated speech rate (no audio involved).

    The words (whitespace-separated, punctuation attached) are timed back to back by
    :func:`brainalign.stimuli.speech.time_transcript`: each lasts ``1 / words_per_s``
    or ``n_syllables / syllables_per_s``, with optional pauses after sentence ends and
    clause punctuation and a silent lead-in. The settings are kept in
    ``metadata["speech_model"]`` so the timing is reproducible.

    Parameters
    ----------
    path : path-like
        UTF-8 text file.
    name : str, optional
        The story name; default the file stem.
    words_per_s, syllables_per_s : float
        The speech rate; exactly one is required.
    sentence_pause_s, clause_pause_s, lead_in_s : float
        Silences in seconds (see :func:`~brainalign.stimuli.speech.time_transcript`).

    Returns
    -------
    Story
        One run (run 0).
    """
    path = Path(path)
    if words_per_s is None and syllables_per_s is None:
        raise TypeError(f"{path}: plain text has no timing; state a speech rate with "
                        "words_per_s=... or syllables_per_s=...")
    text = _read_text_file(path)
    settings = dict(words_per_s=words_per_s, syllables_per_s=syllables_per_s,
                    sentence_pause_s=sentence_pause_s, clause_pause_s=clause_pause_s,
                    lead_in_s=lead_in_s)
    try:
        words = time_transcript(text, **settings)
    except ValueError as err:
        raise _fail(path, None, str(err)) from None
    items = [_Timed(w.text, w.onset_s, w.offset_s, f"word {i}")
             for i, w in enumerate(words, start=1)]
    return _story(name or path.stem, items, path,
                  {"format": "text", "speech_model": settings})


# --------------------------------------------------------------------------- dispatcher


def read_story_dir(path: str | os.PathLike, name: str | None = None, **kwargs) -> Story:
    """Read a story directory: ``words.tsv`` (with a run column) and ``story.json``.

    ``story.json`` gives ``name``, and optionally the scan: ``tr_s``, ``n_volumes`` and
    ``first_volume_s`` (one per run: the stimulus time of each run's first volume), which
    are attached with :meth:`Story.with_scan` (words outside the scan are an error). A
    scan given in part is an error. The whole JSON is kept in
    ``metadata["story_json"]``. Keyword arguments go to :func:`read_table`.
    """
    path = Path(path)
    info_path, table_path = path / "story.json", path / "words.tsv"
    for needed in (info_path, table_path):
        if not needed.is_file():
            raise _fail(path, None, f"a story directory needs story.json and words.tsv; "
                        f"{needed.name} is missing")
    try:
        info = json.loads(_read_text_file(info_path))
    except json.JSONDecodeError as err:
        raise _fail(info_path, f"line {err.lineno}", f"malformed JSON: {err.msg}") from None
    story = read_table(table_path, name or info.get("name") or path.name, **kwargs)
    scan = {key: info.get(key) for key in ("tr_s", "n_volumes", "first_volume_s")}
    for key in ("n_volumes", "first_volume_s"):
        if scan[key] is not None and len(scan[key]) != story.n_runs:
            raise _fail(info_path, None, f"{key} has {len(scan[key])} entries but "
                        f"words.tsv has {story.n_runs} run(s)")
    given = [key for key, value in scan.items() if value is not None]
    if given and len(given) < len(scan):
        missing = [key for key in scan if key not in given]
        raise _fail(info_path, None, f"the scan is given in part ({', '.join(given)}) but "
                    f"{', '.join(missing)} is missing; give tr_s, n_volumes and first_volume_s "
                    "(the stimulus time of each run's first volume, s) or none of them")
    metadata = {**story.metadata, "story_json": info}
    story = Story(story.name, story.words, source=str(path), metadata=metadata)
    if given:
        try:
            story = story.with_scan(scan["tr_s"], scan["n_volumes"],
                                    first_volume_s=scan["first_volume_s"])
        except ValueError as err:
            raise _fail(info_path, None, str(err)) from None
    return story


#: The reader of each file extension (lower case) that :func:`load_story` knows.
READERS = {".textgrid": read_textgrid, ".json": read_gentle, ".tsv": read_table,
           ".csv": read_table, ".txt": read_text}


def _reader_for(path: Path):
    if path.is_dir():
        return read_story_dir
    reader = READERS.get(path.suffix.casefold())
    if reader is None:
        raise StoryFormatError(f"{path}: unknown story format {path.suffix!r}; expected one "
                               f"of {', '.join(sorted(READERS))} or a story directory")
    return reader


def load_story(path: str | os.PathLike | Sequence[str | os.PathLike],
               name: str | None = None, **kwargs) -> Story:
    """Read a story from one file, a story directory, or several files (one run each).

    The reader is chosen by extension: ``.TextGrid`` -> :func:`read_textgrid`,
    ``.json`` -> :func:`read_gentle`, ``.tsv``/``.csv`` -> :func:`read_table`,
    ``.txt`` -> :func:`read_text` (needs a speech rate), a directory ->
    :func:`read_story_dir`. Keyword arguments go to that reader.

    Given a list of paths, each file becomes the next run(s) (a table with a run column
    adds all its runs), in the order given; each run keeps its own time axis.
    ``metadata["files"]`` lists the files and ``metadata["interpolated_words"]`` (when a
    Gentle file had unaligned words) indexes the combined ``words``.

    Parameters
    ----------
    path : path-like or sequence of path-like
        The file(s).
    name : str, optional
        The story name; default the file stem (for several files, their common prefix
        without trailing ``_-`` or "run", else the first stem).
    **kwargs
        Options of the reader (``tier=``, ``silences=``, ``words_per_s=``, ...).

    Returns
    -------
    Story
    """
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"story file not found: {path}")
        return _reader_for(path)(path, name, **kwargs)
    paths = [Path(p) for p in path]
    if not paths:
        raise ValueError("load_story needs at least one path, got an empty list")
    if len(paths) == 1:
        return load_story(paths[0], name, **kwargs)
    parts = [load_story(p, None, **kwargs) for p in paths]
    words: list[Word] = []
    interpolated: list[int] = []
    files: list[str] = []
    for part in parts:
        interpolated += [len(words) + i for i in part.metadata.get("interpolated_words", [])]
        first_run = words[-1].run + 1 if words else 0
        words += [Word(w.text, w.onset_s, w.offset_s, first_run + w.run) for w in part.words]
        files += part.metadata.get("files", [part.source])
    metadata = {"format": sorted({p.metadata.get("format") for p in parts}, key=str),
                "files": files, "run_metadata": [p.metadata for p in parts]}
    if interpolated:
        metadata["interpolated_words"] = interpolated
    return Story(name or _common_name([p.stem for p in paths]), tuple(words),
                 source=", ".join(files), metadata=metadata)


def _common_name(stems: list[str]) -> str:
    prefix = os.path.commonprefix(stems)
    prefix = re.sub(r"(?i)[_\-. ]*(run)?[_\-. ]*$", "", prefix)
    return prefix or stems[0]
