"""The stories bundled with brainalign, and how a story directory is built from text.

A story directory (``data/stories/<name>/`` in the repository) holds the text of each
scanner run (``run-1.txt``, ...), one Praat TextGrid per run, ``words.tsv`` with the
same timings and a run column, and ``story.json`` (name, title, the scan: ``tr_s``,
``n_volumes`` and ``first_volume_s`` per run, how the timings were produced, license). :func:`bundled_story` reads one;
:func:`build_story_dir` writes one from run texts with the speech-rate model of
:mod:`brainalign.stimuli.speech`, which is how the bundled timings were made (there is
no recording). Standard library only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from brainalign.stimuli.readers import read_story_dir
from brainalign.stimuli.speech import time_transcript
from brainalign.stimuli.story import Story
from brainalign.stimuli.writers import write_table, write_textgrid

#: Name of the default bundled story.
BUNDLED_STORY = "the-lighthouse-keeper"

#: Environment variable that may point at a directory of story directories.
STORIES_ENV = "BRAINALIGN_STORIES"

#: The speech model the bundled story was timed with (see :func:`build_story_dir`):
#: 4 syllables/s (about 2.6 words/s with pauses), 0.5 s after a sentence, 0.25 s after
#: a comma, semicolon or colon, 10 s of silence before the first word of each run.
BUNDLED_SPEECH = {"syllables_per_s": 4.0, "sentence_pause_s": 0.5, "clause_pause_s": 0.25,
                  "lead_in_s": 10.0}


def stories_dir() -> Path:
    """The directory holding the bundled story directories.

    ``$BRAINALIGN_STORIES`` when set, else ``data/stories`` next to the package in a
    source checkout (also what an editable install sees).

    Raises
    ------
    FileNotFoundError
        When neither exists, saying where it looked.
    """
    tried = []
    if os.environ.get(STORIES_ENV):
        tried.append(Path(os.environ[STORIES_ENV]))
    tried.append(Path(__file__).resolve().parents[2] / "data" / "stories")
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "bundled stories not found; looked in " + ", ".join(str(p) for p in tried) +
        ". They ship in the data/stories folder of the brainalign source checkout: install "
        f"from a clone (pip install -e .) or set {STORIES_ENV} to a copy of data/stories.")


def list_bundled_stories() -> list[str]:
    """Names of the bundled stories (directories holding a story.json)."""
    return sorted(p.name for p in stories_dir().iterdir() if (p / "story.json").is_file())


def bundled_story(name: str | None = None) -> Story:
    """A bundled story, with its scan (``tr_s``, ``n_volumes``, ``first_volume_s``) attached.

    Parameters
    ----------
    name : str, optional
        Which story; default :data:`BUNDLED_STORY`.

    Returns
    -------
    Story
        Words with onsets and offsets in seconds from the start of each run;
        ``metadata["story_json"]`` holds the story's ``story.json``.
    """
    name = name or BUNDLED_STORY
    path = stories_dir() / name
    if not (path / "story.json").is_file():
        raise FileNotFoundError(f"no bundled story named {name!r} (no {path / 'story.json'});"
                                f" bundled stories: {', '.join(list_bundled_stories())}")
    return read_story_dir(path)


def build_story_dir(run_texts: Sequence[str], out_dir: str | os.PathLike, *, name: str,
                    title: str, tr_s: float = 2.0, speech: dict | None = None,
                    silence_after_s: float = 10.0, license: str = "CC0-1.0") -> Story:
    """Write a story directory whose word timings come from the speech-rate model.

    Each run's text is timed by :func:`~brainalign.stimuli.speech.time_transcript` with
    the ``speech`` settings (its own lead-in silence). The run's scan starts with its
    audio: the first volume is at 0 s of the run's clock (``first_volume_s = 0``, written
    to story.json), and it has ``n_volumes = ceil((last offset + silence_after_s) / tr_s)``
    volumes, so the volumes cover the whole run. Same inputs, same files, byte for byte.

    Parameters
    ----------
    run_texts : sequence of str
        The text heard in each scanner run, in order.
    out_dir : path-like
        The story directory to write (created if needed; files in it are replaced).
    name, title : str
        Short identifier and human title.
    tr_s : float
        Repetition time of the matching scan, in seconds.
    speech : dict, optional
        Keyword arguments of ``time_transcript``; default :data:`BUNDLED_SPEECH`.
    silence_after_s : float
        Silence kept after the last word of each run, in seconds.
    license : str
        License of the text, recorded in story.json.

    Returns
    -------
    Story
        The story as read back from the written directory.
    """
    speech = dict(BUNDLED_SPEECH if speech is None else speech)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    words, n_volumes, runs = [], [], []
    for run, text in enumerate(run_texts):
        timed = time_transcript(text, run=run, **speech)
        n_volumes.append(math.ceil((timed[-1].offset_s + silence_after_s) / tr_s))
        words += timed
        stem = f"run-{run + 1}"
        (out_dir / f"{stem}.txt").write_text(text.strip() + "\n", encoding="utf-8")
        runs.append({"run": run, "text": f"{stem}.txt", "textgrid": f"{stem}.TextGrid",
                     "n_words": len(timed), "n_volumes": n_volumes[-1],
                     "first_onset_s": timed[0].onset_s, "last_offset_s": timed[-1].offset_s})
    first_volume_s = [0.0] * len(n_volumes)
    story = Story(name, tuple(words)).with_scan(tr_s, n_volumes, first_volume_s=first_volume_s)
    for run in range(story.n_runs):
        write_textgrid(story, out_dir / f"run-{run + 1}.TextGrid", run=run)
    write_table(story, out_dir / "words.tsv")
    info = {
        "name": name,
        "title": title,
        "tr_s": tr_s,
        "n_volumes": n_volumes,
        "first_volume_s": first_volume_s,
        "n_words": len(words),
        "words_file": "words.tsv",
        "runs": runs,
        "timing": {
            "method": "speech-rate model, no audio recording (synthetic timings)",
            "function": "brainalign.stimuli.speech.time_transcript",
            **speech,
            "silence_after_s": silence_after_s,
            "n_volumes_rule": "ceil((last offset + silence_after_s) / tr_s)",
            "first_volume_rule": "the scan starts with the audio: first volume at 0 s",
        },
        "license": license,
    }
    (out_dir / "story.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    return read_story_dir(out_dir)


def rebuild_story_dir(story_dir: str | os.PathLike,
                      out_dir: str | os.PathLike | None = None) -> Story:
    """Re-time an existing story directory from its run texts and its story.json settings.

    Parameters
    ----------
    story_dir : path-like
        A directory written by :func:`build_story_dir`.
    out_dir : path-like, optional
        Where to write; default ``story_dir`` itself.

    Returns
    -------
    Story
        The rebuilt story.
    """
    story_dir = Path(story_dir)
    info = json.loads((story_dir / "story.json").read_text(encoding="utf-8"))
    timing = dict(info["timing"])
    silence_after_s = timing.pop("silence_after_s")
    speech = {key: timing[key] for key in ("words_per_s", "syllables_per_s",
                                           "sentence_pause_s", "clause_pause_s",
                                           "lead_in_s") if key in timing}
    texts = [(story_dir / run["text"]).read_text(encoding="utf-8") for run in info["runs"]]
    return build_story_dir(texts, out_dir or story_dir, name=info["name"], title=info["title"],
                           tr_s=info["tr_s"], speech=speech, silence_after_s=silence_after_s,
                           license=info["license"])
