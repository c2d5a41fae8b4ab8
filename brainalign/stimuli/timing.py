"""Stimulus timing of public story-listening fMRI datasets: which story each run heard, and when.

Public BIDS datasets ship word timings in their own layouts. The adapters here read one
layout from a raw BIDS root and map every fMRI run explicitly to a
:class:`RunStimulus`: the story (a :class:`~brainalign.stimuli.story.Story` without a
scan), the run (segment) of that story the fMRI run presented, and the onset.

Time convention
---------------
``onset_s`` is the time in seconds from the run's **first acquired volume** to ``t = 0``
of the story run's word clock (the clock of the alignment file: Gentle JSON, TextGrid or
table). Words timed ``w`` seconds on that clock were heard ``onset_s + w`` seconds after
the first volume. brainalign's ``first_volume_s`` (the words' clock time of the first
volume, see :meth:`Story.with_scan <brainalign.stimuli.story.Story.with_scan>`) is
therefore ``-onset_s`` (:meth:`StimulusTiming.first_volume_s`). An onset is never
defaulted: it comes from an events file (``source`` is that file's path) or from an
explicit ``onset_s=`` argument (``source`` is ``"argument onset_s"``).

Layouts
-------
``"narratives"`` (Nastase et al. 2021, OpenNeuro ds002345), :func:`narratives_timing`
    ``sub-<s>/func/sub-<s>_task-<t>[_run-<r>]_events.tsv`` (or a top-level
    ``task-<t>[_run-<r>]_events.tsv`` that applies to every subject) names the audio in
    its ``stim_file`` column; the word timing is the Gentle alignment
    ``stimuli/gentle/<stem without _audio>/align.json``. Story = task.
``"lebel2023"`` (LeBel et al. 2023, OpenNeuro ds003020), :func:`lebel_timing`
    One TextGrid per story, ``derivative/TextGrids/<story>.TextGrid``; each
    ``task-<story>`` presents that story whole (story run 0).
``"lepetitprince"`` (Li et al. 2022, OpenNeuro ds003643), :func:`lepetitprince_timing`
    One story ``lpp<language>`` in sections: ``task-lpp<language>_run-<n>`` presents
    section ``n``, timed in ``annotation/<language>/lpp<language>_section<n>.tsv``
    (story run ``n - 1``).

Files are found with :mod:`pathlib` globs (these layouts are few and fixed); entities are
parsed from the file names. Errors are :class:`StimulusTimingError`, one line naming the
file(s) and what is missing; errors inside a timing file are the readers'
:class:`~brainalign.stimuli.readers.StoryFormatError`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from brainalign.stimuli.readers import read_gentle, read_table, read_textgrid
from brainalign.stimuli.story import Story, Word

logger = logging.getLogger(__name__)

#: The layouts :func:`read_stimulus_timing` knows.
TIMING_LAYOUTS = ("narratives", "lebel2023", "lepetitprince")

#: ``source`` of an onset given as an argument rather than read from an events file.
ARGUMENT_SOURCE = "argument onset_s"

#: ``stim_file`` values that mean "no stimulus file" in an events table.
_NO_STIM = frozenset({"", "n/a"})

_SUBJECT_EVENTS = "sub-*/**/func/*_events.tsv"
_TOP_EVENTS = "task-*_events.tsv"
_BOLD = "sub-*/**/func/*_bold.*"


class StimulusTimingError(ValueError):
    """Stimulus timing that cannot be mapped: one line naming the file(s) and what is missing."""


@dataclass(frozen=True)
class RunStimulus:
    """What one fMRI run presented, and when.

    Attributes
    ----------
    subject : str or None
        BIDS subject label without ``sub-``; None when the entry applies to every subject.
    task : str
        BIDS task label.
    run : str or None
        BIDS run label exactly as in the file names (``"1"``, ``"01"``); None when the
        files have no run entity (then it applies to every run of the task, as BIDS
        inheritance reads such a file).
    story : str
        :attr:`Story.name` of the story presented.
    story_run : int
        0-based run (segment) of that story this fMRI run presents.
    onset_s : float
        Seconds from the run's first acquired volume to ``t = 0`` of the story run's word
        clock (``first_volume_s == -onset_s``).
    source : str
        Path of the events file the onset came from, or ``"argument onset_s"``.
    """

    subject: str | None
    task: str
    run: str | None
    story: str
    story_run: int
    onset_s: float
    source: str

    def __post_init__(self):
        if not math.isfinite(self.onset_s):
            raise ValueError(f"{self.source}: onset_s must be a finite number, got {self.onset_s}")
        if self.story_run < 0:
            raise ValueError(f"story_run must be >= 0, got {self.story_run}")


@dataclass
class StimulusTiming:
    """The stories of a dataset and the run -> (story, story run, onset) map of its fMRI runs.

    Attributes
    ----------
    layout : str
        One of :data:`TIMING_LAYOUTS`.
    stories : dict of str to Story
        Story name -> Story (words with run indices; no scan attached).
    runs : list of RunStimulus
        One entry per (subject or every subject, task, run).
    root : str, optional
        The BIDS root read.
    searched : tuple of str
        The files and patterns that were searched (named in :meth:`lookup` errors).
    """

    layout: str
    stories: dict[str, Story]
    runs: list[RunStimulus]
    root: str | None = None
    searched: tuple[str, ...] = field(default=())

    def lookup(self, subject: str | None, task: str, run: str | int | None) -> RunStimulus:
        """The entry of one fMRI run.

        Order of precedence: the subject's own entry for the run, the subject's entry
        without run entity, then the entries for every subject (subject None) in the same
        order. Run labels are compared as integers when both are digits (``"01"`` matches
        ``"1"``), else as text; ``sub-``/``task-``/``run-`` prefixes are ignored.

        Raises
        ------
        StimulusTimingError
            When no entry matches ("a run without its story"), naming sub/task/run and
            the layout and files searched.
        """
        subject = _strip(subject, "sub-")
        task = _strip(task, "task-")
        run = _strip(None if run is None else str(run), "run-")
        key = _run_key(run)
        candidates = [r for r in self.runs if r.task == task]
        for who in ([subject, None] if subject is not None else [None]):
            mine = [r for r in candidates if r.subject == who]
            exact = [r for r in mine if _run_key(r.run) == key]
            if exact:
                return exact[0]
            if run is not None:
                inherited = [r for r in mine if r.run is None]
                if inherited:
                    return inherited[0]
        known = sorted({_label(r.subject, r.run) for r in candidates})
        shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
        raise StimulusTimingError(
            f"a run without its story: no stimulus timing for {_label(subject, run, task)} in "
            f"the {self.layout} layout under {self.root} (searched "
            f"{', '.join(self.searched) or 'nothing'}); entries for task-{task}: "
            f"{shown or 'none'}")

    def first_volume_s(self, subject: str | None, task: str, run: str | int | None) -> float:
        """The words' clock time of the run's first volume: ``-lookup(...).onset_s``."""
        return 0.0 - self.lookup(subject, task, run).onset_s

    def to_dict(self) -> dict:
        """A JSON-able summary for provenance: layout, root, stories (runs, words), runs."""
        return {
            "layout": self.layout,
            "root": self.root,
            "stories": {name: {"n_runs": story.n_runs, "n_words": len(story.words),
                               "source": story.source}
                        for name, story in self.stories.items()},
            "runs": [asdict(r) for r in self.runs],
        }


# --------------------------------------------------------------------------- helpers


def _strip(value: str | None, prefix: str) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value[len(prefix):] if value.startswith(prefix) else value


def _run_key(run: str | None):
    """Comparable form of a run label: None, an int for digits, else the text."""
    if run is None:
        return None
    return int(run) if run.isdigit() else run


def run_sort_key(run: str | None) -> tuple:
    """Sort key of BIDS run labels: none first, then digits as numbers (run-2 before
    run-10), then other labels as text."""
    key = _run_key(run)
    return (0, 0, "") if key is None else (1, key, "") if isinstance(key, int) else (2, 0, key)


def _label(subject: str | None, run: str | None, task: str | None = None) -> str:
    parts = [f"sub-{subject}" if subject is not None else "every subject"]
    if task is not None:
        parts.append(f"task-{task}")
    parts.append(f"run-{run}" if run is not None else "no run entity")
    return " ".join(parts)


def _entities(path: Path) -> tuple[dict[str, str], str] | None:
    """BIDS entities and suffix of a file name, or None when the name is not BIDS-like."""
    parts = path.name.split(".")[0].split("_")
    entities = {}
    for part in parts[:-1]:
        key, dash, value = part.partition("-")
        if not dash or not key or not value:
            return None
        entities[key] = value
    return entities, parts[-1]


def _as_set(values: str | Iterable[str] | None, prefix: str) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return {_strip(v, prefix) for v in values}


@dataclass(frozen=True)
class _Events:
    """One events file: its entities and the row that gives the onset."""

    path: Path
    subject: str | None
    task: str
    run: str | None
    onset_s: float
    stim_file: str | None


def _read_events(path: Path, subject: str | None, task: str, run: str | None,
                 warn_several: bool) -> _Events:
    """The stimulus row of an events file: the first whose stim_file is set, else the first
    (with a warning when there are several: is it the row that starts the story?).

    Raises :class:`StimulusTimingError` for a file without an onset column or rows, or a
    row whose onset is not a finite number.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise StimulusTimingError(f"{path}: cannot read the events file ({err})") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    rows = [(n, cells) for n, cells in enumerate(
        csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE), start=1)
        if any(c.strip() for c in cells)]
    if not rows:
        raise StimulusTimingError(f"{path}: events file is empty")
    header = [c.strip().casefold() for c in rows[0][1]]
    if "onset" not in header:
        raise StimulusTimingError(f"{path}: events file has no onset column (found {header})")
    onset_col = header.index("onset")
    stim_col = header.index("stim_file") if "stim_file" in header else None
    body = rows[1:]
    if not body:
        raise StimulusTimingError(f"{path}: events file has a header but no rows")

    def cell(cells: list[str], col: int) -> str:
        return cells[col].strip() if col < len(cells) else ""

    stim_rows = [] if stim_col is None else [
        (n, cells) for n, cells in body if cell(cells, stim_col).casefold() not in _NO_STIM]
    if len(stim_rows) > 1 and warn_several:
        logger.warning("%s: %d rows name a stim_file (%s); using the first, line %d", path,
                       len(stim_rows), ", ".join(cell(c, stim_col) for _, c in stim_rows),
                       stim_rows[0][0])
    if not stim_rows and len(body) > 1:
        logger.warning("%s: %d rows and none names a stim_file; the story's onset is taken "
                       "from the first row, line %d (onsets %s%s): check that this row starts "
                       "the story", path, len(body), body[0][0],
                       ", ".join(cell(c, onset_col) for _, c in body[:5]),
                       "..." if len(body) > 5 else "")
    line, cells = (stim_rows or body)[0]
    raw = cell(cells, onset_col)
    try:
        onset = float(raw)
    except ValueError:
        onset = math.nan
    if not math.isfinite(onset):
        raise StimulusTimingError(f"{path}: line {line}: onset must be a number of seconds, "
                                  f"found {raw!r}")
    stim = cell(cells, stim_col) if stim_rows else None
    return _Events(path, subject, task, run, onset, stim)


def _find_events(root: Path, tasks: set[str] | None, subjects: set[str] | None,
                 warn_several: bool = False) -> list[_Events]:
    """Events files of the subjects (subject-level) and of every subject (top-level)."""
    found = []
    for path, top in ([(p, False) for p in sorted(root.glob(_SUBJECT_EVENTS))]
                      + [(p, True) for p in sorted(root.glob(_TOP_EVENTS))]):
        parsed = _entities(path)
        if parsed is None or parsed[1] != "events" or "task" not in parsed[0]:
            continue
        entities = parsed[0]
        subject = None if top else entities.get("sub")
        if not top and subject is None:
            continue
        if tasks is not None and entities["task"] not in tasks:
            continue
        if subjects is not None and subject is not None and subject not in subjects:
            continue
        found.append(_read_events(path, subject, entities["task"], entities.get("run"),
                                  warn_several))
    return found


def _find_bold(root: Path, tasks: set[str] | None, subjects: set[str] | None
               ) -> dict[tuple[str, str, str | None], Path]:
    """(subject, task, run) -> first BOLD file name of each run in the tree."""
    found: dict[tuple[str, str, str | None], Path] = {}
    for path in sorted(root.glob(_BOLD)):
        parsed = _entities(path)
        if parsed is None or parsed[1] != "bold":
            continue
        entities = parsed[0]
        if "sub" not in entities or "task" not in entities:
            continue
        if tasks is not None and entities["task"] not in tasks:
            continue
        if subjects is not None and entities["sub"] not in subjects:
            continue
        found.setdefault((entities["sub"], entities["task"], entities.get("run")), path)
    return found


def _combine(name: str, parts: list[Story], layout: str) -> Story:
    """Stories of one run each -> one Story whose run i is ``parts[i]``."""
    words: list[Word] = []
    interpolated: list[int] = []
    files: list[str] = []
    for run, part in enumerate(parts):
        if part.n_runs != 1:
            raise StimulusTimingError(f"{part.source}: expected the words of one story run, "
                                      f"found {part.n_runs} runs")
        interpolated += [len(words) + i for i in part.metadata.get("interpolated_words", [])]
        words += [Word(w.text, w.onset_s, w.offset_s, run) for w in part.words]
        files += part.metadata.get("files", [part.source])
    metadata = {"layout": layout, "format": parts[0].metadata.get("format"), "files": files,
                "run_metadata": [p.metadata for p in parts]}
    if interpolated:
        metadata["interpolated_words"] = interpolated
    return Story(name, tuple(words), source=", ".join(files), metadata=metadata)


def _add(entries: dict, entry: RunStimulus) -> None:
    """Add an entry; the same (subject, task, run) twice must agree (e.g. across sessions)."""
    key = (entry.subject, entry.task, _run_key(entry.run))
    previous = entries.get(key)
    if previous is None:
        entries[key] = entry
    elif (previous.story, previous.story_run, previous.onset_s) != (
            entry.story, entry.story_run, entry.onset_s):
        raise StimulusTimingError(
            f"conflicting timing for {_label(entry.subject, entry.run, entry.task)}: "
            f"{previous.source} gives {previous.story!r} run {previous.story_run} at "
            f"{previous.onset_s} s, {entry.source} gives {entry.story!r} run "
            f"{entry.story_run} at {entry.onset_s} s (several sessions of one run?)")


def _sorted_runs(entries: dict) -> list[RunStimulus]:
    return sorted(entries.values(), key=lambda r: (
        r.task, r.subject is None, r.subject or "", run_sort_key(r.run)))


def _check_onset_arg(onset_s: float | None) -> float | None:
    if onset_s is None:
        return None
    onset = float(onset_s)
    if not math.isfinite(onset):
        raise ValueError(f"onset_s must be a finite number of seconds, got {onset_s!r}")
    return onset


def _root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise StimulusTimingError(f"{path}: BIDS root not found (not a directory)")
    return path


# --------------------------------------------------------------------------- Narratives


def _gentle_name(stim_file: str) -> str:
    """``stimuli/pieman_audio.wav`` -> ``pieman``."""
    stem = Path(stim_file.replace("\\", "/")).name.split(".")[0]
    return stem[:-len("_audio")] if stem.endswith("_audio") else stem


def narratives_timing(root: str | os.PathLike, *, tasks: str | Iterable[str] | None = None,
                      subjects: str | Iterable[str] | None = None) -> StimulusTiming:
    """Stimulus timing of the Narratives layout (OpenNeuro ds002345).

    Every events file ``sub-<s>/[ses-<x>/]func/sub-<s>_task-<t>[_run-<r>]_events.tsv``
    (and a top-level ``task-<t>[_run-<r>]_events.tsv``, which applies to every subject:
    subject None) gives one entry. Its stimulus row is the **first** row whose
    ``stim_file`` is not empty or ``n/a`` (a file naming several stimuli, e.g. two
    stories in one scan, logs a warning and uses the first); the entry's ``onset_s`` is
    that row's onset and its ``source`` the events file. ``stim_file`` (``pieman_audio.wav``,
    possibly with a folder) names the Gentle alignment
    ``stimuli/gentle/<stem without a trailing _audio>/align.json``.

    The story is the task (``Story.name == task``). Its runs are the task's distinct
    alignments, ordered by the first fMRI run (run labels as integers, ``run-2`` before
    ``run-10``) that presents each: when every run names its own audio, the runs
    ``1, 2, ...`` are story runs ``0, 1, ...``; runs that name the same audio (repeated
    presentations) share a story run.

    Parameters
    ----------
    root : path-like
        The raw BIDS root.
    tasks : str or iterable of str, optional
        Only these task labels (default every task with events files).
    subjects : str or iterable of str, optional
        Only these subjects' events files (labels with or without ``sub-``); top-level
        events files are always read.

    Returns
    -------
    StimulusTiming

    Raises
    ------
    StimulusTimingError
        No events file found; an events file without a stimulus row; events files that
        name different stim_files for the same (task, run) (both files named: pass
        ``tasks=`` to leave such a task out); a missing ``align.json`` ("story without
        timing", naming the expected path and the events file that referred to it).
    StoryFormatError
        An alignment file that cannot be read.
    """
    root = _root(root)
    task_set, subject_set = _as_set(tasks, "task-"), _as_set(subjects, "sub-")
    events = _find_events(root, task_set, subject_set, warn_several=True)
    searched = (str(root / _SUBJECT_EVENTS), str(root / _TOP_EVENTS))
    if not events:
        raise StimulusTimingError(f"{root}: no events files found ({' or '.join(searched)}"
                                  + (f", tasks {sorted(task_set)}" if task_set else "") + ")")
    for ev in events:
        if ev.stim_file is None:
            raise StimulusTimingError(f"{ev.path}: no row names a stim_file (column stim_file "
                                      "empty, n/a or absent): cannot tell which story was heard")
    # One stim_file per (task, run), whoever's events say it.
    by_run: dict[tuple[str, object], _Events] = {}
    for ev in events:
        key = (ev.task, _run_key(ev.run))
        first = by_run.setdefault(key, ev)
        if _gentle_name(first.stim_file) != _gentle_name(ev.stim_file):
            raise StimulusTimingError(
                f"conflicting stim_file for task-{ev.task} "
                f"{'run-' + ev.run if ev.run is not None else '(no run entity)'}: "
                f"{first.path} names {first.stim_file!r}, {ev.path} names {ev.stim_file!r}")
    stories: dict[str, Story] = {}
    story_runs: dict[tuple[str, str], int] = {}
    for task in sorted({ev.task for ev in events}):
        ordered = sorted((ev for key, ev in by_run.items() if key[0] == task),
                         key=lambda ev: run_sort_key(ev.run))
        names: list[str] = []
        parts: list[Story] = []
        for ev in ordered:
            name = _gentle_name(ev.stim_file)
            if name in names:
                continue
            align = root / "stimuli" / "gentle" / name / "align.json"
            if not align.is_file():
                raise StimulusTimingError(
                    f"story without timing: {align} is missing (stim_file {ev.stim_file!r} "
                    f"in {ev.path})")
            names.append(name)
            parts.append(read_gentle(align, task))
        stories[task] = _combine(task, parts, "narratives")
        stories[task].metadata["alignments"] = names
        story_runs.update({(task, n): i for i, n in enumerate(names)})
    entries: dict = {}
    for ev in events:
        _add(entries, RunStimulus(ev.subject, ev.task, ev.run, ev.task,
                                  story_runs[(ev.task, _gentle_name(ev.stim_file))],
                                  ev.onset_s, str(ev.path)))
    return StimulusTiming("narratives", stories, _sorted_runs(entries), str(root),
                          searched + (str(root / "stimuli" / "gentle" / "*" / "align.json"),))


# --------------------------------------------------------------------------- onsets


def _onset_entries(layout: str, task: str, story: str, story_run_of, runs: dict,
                   events: list[_Events], onset_s: float | None, searched: tuple[str, ...]
                   ) -> list[RunStimulus]:
    """Entries of one task: from events files, else the argument onset for every run label.

    ``runs`` maps (subject, run) -> a BOLD path of the runs found in the tree;
    ``story_run_of(run_label)`` gives the story run.
    """
    out = [RunStimulus(ev.subject, task, ev.run, story, story_run_of(ev.run), ev.onset_s,
                       str(ev.path)) for ev in events]
    timed = {(ev.subject, _run_key(ev.run)) for ev in events}

    def has_events(subject: str, run: str | None) -> bool:
        key = _run_key(run)
        return any((who, k) in timed for who in (subject, None) for k in (key, None))

    untimed = {(s, r): p for (s, r), p in runs.items() if not has_events(s, r)}
    if not runs and not events:
        untimed = {(None, None): None}
    if not untimed:
        return out
    if onset_s is None:
        (subject, run), path = next(iter(sorted(untimed.items(), key=lambda kv: (
            kv[0][0] or "", run_sort_key(kv[0][1])))))
        where = f"{path}" if path is not None else f"task-{task}"
        raise StimulusTimingError(
            f"no onset for {where} ({len(untimed)} run(s) of task-{task} without an events "
            f"file; searched {', '.join(searched)}): pass onset_s=... (seconds from the first "
            f"acquired volume to the start of the {layout} word timing)")
    labels = sorted({r for _, r in untimed}, key=run_sort_key)
    out += [RunStimulus(None, task, run, story, story_run_of(run), onset_s, ARGUMENT_SOURCE)
            for run in labels]
    return out


# --------------------------------------------------------------------------- LeBel 2023


def lebel_timing(root: str | os.PathLike, *, textgrid_dir: str | os.PathLike | None = None,
                 onset_s: float | None = None, tasks: str | Iterable[str] | None = None
                 ) -> StimulusTiming:
    """Stimulus timing of the LeBel et al. 2023 layout (OpenNeuro ds003020).

    Each ``task-<story>`` presents one story whole: its TextGrid
    ``derivative/TextGrids/<story>.TextGrid`` (read with
    :func:`~brainalign.stimuli.readers.read_textgrid`, word tier picked by name) is story
    run 0. A task with several runs (or sessions) presents the same story each time
    (repeats): every one of them is story run 0.

    The tasks are those of the BOLD files ``sub-*/**/func/*_task-*_bold.*`` and of the
    events files in the tree, or ``tasks=``. The onset of a run comes from its events file
    when there is one (the first row naming a stim_file, else the first row; a top-level
    ``task-<t>_events.tsv`` applies to every subject), else from ``onset_s``.

    The dataset ships no events files. The authors' analysis code
    (HuthLab/deep-fMRI-dataset, ``encoding/ridge_utils/stimulus_utils.py``,
    ``load_simulated_trfiles``) places the sound start 10.0 s after the first trigger at a
    2.0 s TR, which implies ``onset_s=10.0`` for runs that keep every acquired volume.
    It is not a default: check it against your data (volumes dropped in preprocessing
    shift it by whole TRs) and pass it explicitly.

    Parameters
    ----------
    root : path-like
        The raw BIDS root.
    textgrid_dir : path-like, optional
        Folder of the ``<story>.TextGrid`` files; default ``root/derivative/TextGrids``.
    onset_s : float, optional
        Onset (s from the first acquired volume to t = 0 of the TextGrid) of every run
        without an events file; such entries have subject None, ``source ==
        "argument onset_s"``.
    tasks : str or iterable of str, optional
        Only these tasks (default every task found in the tree).

    Returns
    -------
    StimulusTiming

    Raises
    ------
    StimulusTimingError
        No task found; a task without its TextGrid ("story without timing", naming the
        expected path; pass ``tasks=`` to leave it out); a run with neither events file
        nor ``onset_s``; events files that disagree for one run (e.g. across sessions).
    StoryFormatError
        A TextGrid that cannot be read.
    """
    root = _root(root)
    onset_s = _check_onset_arg(onset_s)
    grids = Path(textgrid_dir) if textgrid_dir is not None else root / "derivative" / "TextGrids"
    task_set = _as_set(tasks, "task-")
    bold = _find_bold(root, task_set, None)
    events = _find_events(root, task_set, None)
    searched = (str(root / _BOLD), str(root / _SUBJECT_EVENTS), str(root / _TOP_EVENTS),
                str(grids / "*.TextGrid"))
    names = sorted(task_set if task_set is not None
                   else {t for _, t, _ in bold} | {ev.task for ev in events})
    if not names:
        raise StimulusTimingError(f"{root}: no task found (no {root / _BOLD} or events files); "
                                  "pass tasks=[...] to name the stories")
    stories: dict[str, Story] = {}
    entries: dict = {}
    for task in names:
        grid = grids / f"{task}.TextGrid"
        if not grid.is_file():
            raise StimulusTimingError(f"story without timing: task-{task} has no TextGrid, "
                                      f"expected {grid} (pass tasks=[...] to leave it out)")
        story = read_textgrid(grid, task)
        story.metadata["layout"] = "lebel2023"
        stories[task] = story
        runs = {(s, r): p for (s, t, r), p in bold.items() if t == task}
        for entry in _onset_entries("lebel2023", task, task, lambda run: 0, runs,
                                    [ev for ev in events if ev.task == task], onset_s,
                                    searched[:3]):
            _add(entries, entry)
    return StimulusTiming("lebel2023", stories, _sorted_runs(entries), str(root), searched)


# --------------------------------------------------------------------------- Le Petit Prince


_SECTION = re.compile(r"section(\d+)$")


def lepetitprince_timing(root: str | os.PathLike, *, language: str = "EN",
                         onset_s: float | None = None,
                         subjects: str | Iterable[str] | None = None) -> StimulusTiming:
    """Stimulus timing of the Le Petit Prince layout (OpenNeuro ds003643).

    One story, ``lpp<language>`` (e.g. ``lppEN``), whose sections are presented by the
    runs of ``task-lpp<language>``: ``run-<n>`` (``"1"`` or ``"01"``) presents section
    ``n``, story run ``n - 1``, timed in ``annotation/<language>/lpp<language>_section<n>.tsv``
    (columns word, onset, offset; read with :func:`~brainalign.stimuli.readers.read_table`).
    The story holds sections 1 .. N, N the highest section among the tables and the runs
    in the tree; every one of them must have its table.

    The onset of a run comes from its events file when there is one (first row naming a
    stim_file, else the first row), else from ``onset_s``. No value is assumed here: look
    up the offset between the first volume and the audio of each section in the dataset's
    documentation (Li et al. 2022, Scientific Data) for your data and pass it explicitly.

    Parameters
    ----------
    root : path-like
        The raw BIDS root.
    language : str
        ``"EN"``, ``"FR"`` or ``"CN"`` (as in the task label and the annotation folder).
    onset_s : float, optional
        Onset of every run without an events file (entries with subject None).
    subjects : str or iterable of str, optional
        Only these subjects (labels with or without ``sub-``).

    Returns
    -------
    StimulusTiming

    Raises
    ------
    StimulusTimingError
        No section table and no run found; a run label that is not a section number; a
        missing section table ("story without timing", naming the expected path); a run
        with neither events file nor ``onset_s``.
    StoryFormatError
        A section table that cannot be read.
    """
    root = _root(root)
    onset_s = _check_onset_arg(onset_s)
    task = f"lpp{language}"
    folder = root / "annotation" / language
    subject_set = _as_set(subjects, "sub-")
    bold = _find_bold(root, {task}, subject_set)
    events = _find_events(root, {task}, subject_set)
    searched = (str(root / _BOLD), str(root / _SUBJECT_EVENTS), str(root / _TOP_EVENTS),
                str(folder / f"{task}_section*.tsv"))
    sections = set()
    for path in folder.glob(f"{task}_section*.tsv"):
        match = _SECTION.search(path.stem)
        if match:
            sections.add(int(match.group(1)))
    for label, where in ([(r, p) for (_, _, r), p in bold.items()]
                         + [(ev.run, ev.path) for ev in events]):
        if label is None or not label.isdigit() or int(label) < 1:
            raise StimulusTimingError(f"{where}: run label {label!r} is not a section number "
                                      f"(task-{task}_run-<n>, n = 1, 2, ...)")
        sections.add(int(label))
    if not sections:
        raise StimulusTimingError(f"{root}: no section tables ({folder / f'{task}_section*.tsv'}) "
                                  f"and no task-{task} runs found")
    parts = []
    for n in range(1, max(sections) + 1):
        table = folder / f"{task}_section{n}.tsv"
        if not table.is_file():
            raise StimulusTimingError(f"story without timing: section {n} of {task} has no "
                                      f"table, expected {table}")
        parts.append(read_table(table, task))
    stories = {task: _combine(task, parts, "lepetitprince")}
    runs = {(s, r): p for (s, _, r), p in bold.items()}
    if not runs and not events and onset_s is not None:
        # No runs in the tree: one argument entry per section.
        entries = {(None, task, n): RunStimulus(None, task, str(n), task, n - 1, onset_s,
                                                ARGUMENT_SOURCE)
                   for n in range(1, max(sections) + 1)}
    else:
        entries = {}
        for entry in _onset_entries("lepetitprince", task, task, lambda run: int(run) - 1,
                                    runs, events, onset_s, searched[:3]):
            _add(entries, entry)
    return StimulusTiming("lepetitprince", stories, _sorted_runs(entries), str(root), searched)


# --------------------------------------------------------------------------- dispatcher


_ADAPTERS = {"narratives": narratives_timing, "lebel2023": lebel_timing,
             "lepetitprince": lepetitprince_timing}


def read_stimulus_timing(layout: str, root: str | os.PathLike, **options) -> StimulusTiming:
    """Read the stimulus timing of a BIDS root in one of :data:`TIMING_LAYOUTS`.

    ``options`` go to the layout's adapter (:func:`narratives_timing`,
    :func:`lebel_timing`, :func:`lepetitprince_timing`).

    Raises
    ------
    ValueError
        An unknown layout (the message lists :data:`TIMING_LAYOUTS`).
    """
    adapter = _ADAPTERS.get(str(layout).casefold())
    if adapter is None:
        raise ValueError(f"unknown stimulus timing layout {layout!r}; expected one of "
                         f"{', '.join(TIMING_LAYOUTS)}")
    return adapter(root, **options)
